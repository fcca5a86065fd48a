"""`concord demo` as a user runs it: a subprocess with its own devnet (free ports, a temp state dir).

- Ctrl-C mid-round (and SIGHUP at the start) leaves nothing running: no anvil, IPFS peer (one per node
  and the initiator's), trainer or validator process it started, nor anything else in their process groups.
- A short run with the cheater: the settlement catches and slashes it, pays both validators a
  bounty, and the conservation check holds (the JSON line says so).
- `--netns`: the same short run with each node and its peer in its own namespace (links limited);
  every node's process ran in its namespace, and namespaces, veths and the bridge are gone after,
  also after a SIGTERM mid-round.
- The verdict's rules on hand-made outcomes, and the pay check (scripts.pay) it shares with
  `concord bench network --rounds`: an honest node's unpaid round names the node, round and what is missing.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest
from own_devnet import TASK_FILE, port_flags

from concord.client import chain
from concord.client.chain import Role
from concord.client.runtime import procs
from scripts import REPO_ROOT, devnet, netns, pay
from scripts.demo import CURVE_FILE, NODES_FILE, Outcome, demo_nodes
from scripts.harness import Actor, Conservation, Ledger, wait_for


def demo_cmd(state: Path, *extra: str) -> list[str]:
    args = ["--task-file", str(TASK_FILE), "--state-dir", str(state), "--no-live", *port_flags(), *extra]
    return [sys.executable, "-m", "scripts.demo", *args]


def group_members(pgids: set[int]) -> list[int]:
    """Live processes whose process group is one of ``pgids``."""
    return [pid for pid, fields in procs.live_processes().items() if int(fields[2]) in pgids]


def running(proc: subprocess.Popen):
    """For harness.wait_for: the demo's exit, if it exited."""
    return lambda: None if proc.poll() is None else f"demo exited with {proc.returncode}"


@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.parametrize(
    "sig, when",
    [(signal.SIGINT, "submitted"), (signal.SIGHUP, "started")],
    ids=["ctrl-c-mid-round", "sighup-at-start"],  # SIGTERM: test_sigterm_mid_round_on_namespaces_...
)
def test_interrupt_mid_run_leaves_nothing_running(tmp_path: Path, sig: signal.Signals, when: str):
    out = tmp_path / "demo.out"
    with open(out, "wb") as fh:
        proc = subprocess.Popen(
            demo_cmd(tmp_path / "state", "--rounds", "5"), cwd=REPO_ROOT, stdout=fh, stderr=subprocess.STDOUT
        )
    daemons: list[procs.Daemon] = []
    try:
        state = tmp_path / "state"
        wait_for(
            "all 6 nodes to start",
            lambda: (state / NODES_FILE).exists() and len(json.loads((state / NODES_FILE).read_text())) == 6,
            alive=running(proc),
            poll=0.2,
        )
        daemons = devnet.load(state).daemon_list()
        daemons += [procs.Daemon.from_json(d) for d in json.loads((state / NODES_FILE).read_text())]
        assert {d.name for d in daemons} >= {"anvil", "ipfs", "trainer-1", "cheater", "validator-2"}
        assert [d.name for d in daemons].count("ipfs") == 7  # the initiator's peer + one per node
        apis = [d.argv[d.argv.index("--ipfs-api") + 1] for d in daemons if "--ipfs-api" in d.argv]
        assert len(apis) == 6 and len(set(apis)) == 6  # each node talks to its own peer
        wait_for(
            f"trainer-1 to log {when}",
            lambda: f'"event":"{when}"' in (state / "logs" / "trainer-1.log").read_text(),
            alive=running(proc),
            poll=0.2,
        )
        assert all(procs.is_ours(d) for d in daemons)  # truly mid-run: every node and daemon is up
        proc.send_signal(sig)
        assert proc.wait(timeout=90) == 130, out.read_text()[-2000:]
        assert [d.name for d in daemons if procs.is_ours(d)] == []
        assert group_members({d.pid for d in daemons}) == []
        assert not devnet.state_file(state).exists()  # devnet down ran
        assert f"interrupted ({sig.name})" in out.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for d in daemons:
            procs.stop(d, timeout=2.0)


@pytest.mark.slow
@pytest.mark.e2e
def test_short_demo_slashes_the_cheater_and_conserves_tokens(tmp_path: Path):
    state = tmp_path / "state"
    run = subprocess.run(demo_cmd(state, "--rounds", "2"), cwd=REPO_ROOT, capture_output=True, text=True, timeout=240)
    lines = [json.loads(x) for x in run.stdout.splitlines() if x.startswith('{"demo"')]
    assert len(lines) == 1, run.stdout[-3000:] + run.stderr[-3000:]
    doc = lines[0]["demo"]
    assert (doc["rounds"], doc["cheater_slashed"], doc["bounties_paid"], doc["conservation"]) == (2, True, True, True)
    # every honest trainer rewarded for each submission, each validator's fee for each round (chain events)
    assert (doc["honest_paid"], doc["honest_unpaid"], doc["honest_unpaid_detail"]) == (True, 0, []), doc
    assert "honest nodes paid every round yes" in run.stdout
    assert len(doc["reward_per_round"]) == 2 and all(-1 < x < 1 for x in doc["reward_per_round"])  # 0: chance
    assert run.returncode == (0 if doc["ok"] else 1)
    assert "Settlement of task 1 after 2 rounds" in run.stdout and "verdict:" in run.stdout
    assert re.search(r"dashboard: http://127\.0\.0\.1:\d+/ \(live while the demo runs\)", run.stdout)
    png = state / CURVE_FILE
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not devnet.state_file(state).exists()
    nodes = [procs.Daemon.from_json(d) for d in json.loads((state / NODES_FILE).read_text())]
    assert len(nodes) == 6 and not any(procs.is_ours(d) for d in nodes)
    assert "a block every 1s; an IPFS peer per node" in run.stdout
    peer_logs = [state / "ipfs.log", *((state / "ipfs" / f"{s.name}.log") for s in demo_nodes())]  # initiator's first
    assert all("SIGTERM: stopping" in log.read_text() for log in peer_logs)  # each node's peer ran, and was stopped


@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.skipif(netns.available() is not None, reason=str(netns.available()))
def test_short_demo_on_namespaces_pays_honest_nodes_and_leaves_no_namespace(tmp_path: Path):
    state = tmp_path / "state"
    cmd = demo_cmd(state, "--rounds", "2", "--netns", "--no-dashboard")
    run = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    lines = [json.loads(x) for x in run.stdout.splitlines() if x.startswith('{"demo"')]
    assert len(lines) == 1, run.stdout[-3000:] + run.stderr[-3000:]
    doc = lines[0]["demo"]
    assert (doc["cheater_slashed"], doc["bounties_paid"], doc["conservation"]) == (True, True, True)
    assert (doc["honest_paid"], doc["honest_unpaid"]) == (True, 0), doc
    found = re.search(r"namespaces (cn[0-9a-f]+)-<node> on bridge \1br, links \(Mbit/s both ways\): (.*)", run.stdout)
    assert found, run.stdout[-3000:]
    tag = found.group(1)
    assert "trainer-1 100, trainer-2 20" in found.group(2) and "validator-1 1000" in found.group(2)
    nodes = [procs.Daemon.from_json(d) for d in json.loads((state / NODES_FILE).read_text())]
    assert [list(d.argv[:4]) for d in nodes] == [["ip", "netns", "exec", f"{tag}-{d.name}"] for d in nodes]
    assert not any(procs.is_ours(d) for d in nodes) and not devnet.state_file(state).exists()
    assert tag not in netns.tags()  # namespaces, veths (and their qdiscs) and the bridge removed by devnet down


@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.skipif(netns.available() is not None, reason=str(netns.available()))
def test_sigterm_mid_round_on_namespaces_leaves_no_namespace_or_process(tmp_path: Path):
    state = tmp_path / "state"
    out = tmp_path / "demo.out"
    with open(out, "wb") as fh:
        cmd = demo_cmd(state, "--rounds", "5", "--netns", "--no-dashboard")
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=fh, stderr=subprocess.STDOUT)
    daemons: list[procs.Daemon] = []
    try:
        wait_for(
            "all 6 nodes to start",
            lambda: (state / NODES_FILE).exists() and len(json.loads((state / NODES_FILE).read_text())) == 6,
            alive=running(proc),
            poll=0.2,
        )
        tag = devnet.load(state).netns
        daemons = devnet.load(state).daemon_list()
        daemons += [procs.Daemon.from_json(d) for d in json.loads((state / NODES_FILE).read_text())]
        assert len(daemons) == 1 + 7 + 6 and tag in netns.tags()  # anvil, 7 peers, 6 nodes; the namespaces
        wait_for(
            "trainer-1 to log submitted",
            lambda: '"event":"submitted"' in (state / "logs" / "trainer-1.log").read_text(),
            alive=running(proc),
            poll=0.2,
        )
        assert all(procs.is_ours(d) for d in daemons)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=90) == 130, out.read_text()[-2000:]
        assert [d.name for d in daemons if procs.is_ours(d)] == []
        assert group_members({d.pid for d in daemons}) == []
        assert tag not in netns.tags() and not devnet.state_file(state).exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for d in daemons:
            procs.stop(d, timeout=2.0)


# ----------------------------------------------------------------------------- the verdict's rules


def _outcome(curve, cheater_events: list, bounty: dict[str, int], holds: bool = True) -> Outcome:
    specs = demo_nodes(honest=1, cheat="inflated_rewards", validators=2)
    actors = tuple(Actor(s.name, s.role, None) for s in specs)  # Actor.address needs a signer: fake it below
    ledger = Ledger()
    ledger.bounty = defaultdict(int, bounty)
    cons = Conservation(10, 4, 6, 0) if holds else Conservation(11, 4, 6, 0)
    return Outcome(
        1, len(curve), tuple(curve), (), ledger, cons, actors, (specs[1].address,), tuple(cheater_events), 1.0
    )


def test_verdict_rules(monkeypatch):
    specs = demo_nodes(honest=1, cheat="inflated_rewards", validators=2)
    addr = {s.name: s.address for s in specs}
    monkeypatch.setattr(Actor, "address", property(lambda a: addr[a.name]))
    meta = chain.EventMeta(0, "0x" + "00" * 32, 0)
    sub = chain.Submitted(meta, 1, 0, addr["cheater"], 1, 0, b"\x01" * 32, b"\x02" * 32, 10)
    slash = chain.SubmissionRejected(meta, 1, 0, addr["cheater"], 1, 80, 40)
    paid = {addr["validator-1"]: 20, addr["validator-2"]: 20}

    good = _outcome([0.1, 0.12, 0.2], [sub, slash], paid)
    assert good.ok and good.verdict_line().startswith("verdict: PASS")
    assert not _outcome([0.2, 0.12, 0.1], [sub, slash], paid).reward_rising
    assert not _outcome([0.1, 0.2], [sub], paid).cheater_slashed  # submitted, never slashed
    assert not _outcome([0.1, 0.2], [], paid).cheater_slashed  # a cheater that never submitted
    unpaid = _outcome([0.1, 0.2], [sub, slash], {addr["validator-1"]: 40})
    assert not unpaid.bounties_paid and "validators paid bounty NO" in unpaid.verdict_line()
    broken = _outcome([0.1, 0.2], [sub, slash], paid, holds=False)
    assert not broken.ok and "conservation VIOLATED" in broken.verdict_line()
    assert [s.role for s in specs] == [Role.TRAINER, Role.TRAINER, Role.VALIDATOR, Role.VALIDATOR]


# ----------------------------------------------------------------------------- the pay check

META = chain.EventMeta(0, "0x" + "00" * 32, 0)


def _round_events(
    addr: dict[str, str],
    r: int,
    *,
    honest_ok: bool = True,
    reveal: tuple[str, ...] = ("validator-1", "validator-2"),
    paid: tuple[str, ...] = ("validator-1", "validator-2"),
    void: bool = False,
) -> list:
    """Round ``r`` of task 1: trainer-1 (index 0) and the cheater (index 1) submit; the cheater is
    slashed, trainer-1 rewarded (or, not ``honest_ok``, rejected); ``reveal`` reveal, ``paid`` get the fee."""
    d = b"\x01" * 32
    evs: list = [
        chain.Submitted(META, 1, r, addr["trainer-1"], 0, r, d, d, 10),
        chain.Submitted(META, 1, r, addr["cheater"], 1, r, d, d, 10),
    ]
    evs += [chain.Revealed(META, 1, r, addr[v], (), d) for v in reveal]
    if not void:
        if honest_ok:
            evs.append(chain.SubmissionRewarded(META, 1, r, addr["trainer-1"], 0, 50))
        else:
            evs.append(chain.SubmissionRejected(META, 1, r, addr["trainer-1"], 0, 80, 40))
        evs.append(chain.SubmissionRejected(META, 1, r, addr["cheater"], 1, 80, 40))
        evs += [chain.ValidatorPaid(META, 1, r, addr[v], 5) for v in paid]
    evs.append(chain.RoundFinalized(META, 1, r, d, void, 10, 0))
    return evs


def test_pay_check_names_the_honest_node_round_and_what_is_missing(monkeypatch):
    specs = demo_nodes(honest=1, cheat="inflated_rewards", validators=2)
    addr = {s.name: s.address for s in specs}
    monkeypatch.setattr(Actor, "address", property(lambda a: addr[a.name]))
    paid = {addr["validator-1"]: 20, addr["validator-2"]: 20}

    def outcome(events: list) -> Outcome:
        return _outcome([0.1, 0.2], events, paid)

    good = outcome(_round_events(addr, 0) + _round_events(addr, 1))
    assert good.honest_paid and good.ok and "honest nodes paid every round yes" in good.verdict_line()
    assert good.to_json()["honest_unpaid"] == 0
    # the cheater's slashed submissions are unpaid too, but it is not honest: the raw check names it
    assert {(u.round, u.role) for u in pay.unpaid(good.events)} == {(0, "trainer"), (1, "trainer")}

    rejected = outcome(_round_events(addr, 0) + _round_events(addr, 1, honest_ok=False))
    assert not rejected.ok and rejected.verdict_line().startswith("verdict: FAIL")
    assert "NO (trainer-1 round 1 reward: submission 0 rejected, 80 slashed)" in rejected.verdict_line()
    doc = rejected.to_json()
    assert (doc["honest_paid"], doc["honest_unpaid"]) == (False, 1)
    assert doc["honest_unpaid_detail"] == [
        {"round": 1, "address": addr["trainer-1"].lower(), "role": "trainer", "node": "trainer-1",
         "missing": "reward: submission 0 rejected, 80 slashed"}
    ]  # fmt: skip

    silent = outcome(_round_events(addr, 0, reveal=("validator-1",), paid=("validator-1",)) + _round_events(addr, 1))
    assert [(n, u.round, u.missing) for n, u in silent.honest_unpaid] == [("validator-2", 0, "fee: no reveal")]
    unfee = outcome(_round_events(addr, 0) + _round_events(addr, 1, paid=("validator-2",)))
    assert [(n, u.round, u.missing[:22]) for n, u in unfee.honest_unpaid] == [
        ("validator-1", 1, "fee: revealed, not pai")
    ]
    assert "validator-1 round 1 fee: revealed, not paid" in unfee.verdict_line()

    # a void round pays nobody: the demo's verdict fails on it; the bench (void judged apart) drops it
    void = outcome(_round_events(addr, 0) + _round_events(addr, 1, void=True))
    assert {(n, u.round, u.void) for n, u in void.honest_unpaid} == {
        ("trainer-1", 1, True), ("validator-1", 1, True), ("validator-2", 1, True)
    }  # fmt: skip
    assert not void.ok
    # an unsettled round is not judged; a round that decided nothing owes no fee (the contract pays none)
    d = b"\x01" * 32
    undecided = [
        chain.Revealed(META, 1, 0, addr["validator-1"], (), d),
        chain.RoundFinalized(META, 1, 0, d, False, 0, 0),
        chain.Submitted(META, 1, 1, addr["trainer-1"], 0, 1, d, d, 10),
    ]
    assert pay.unpaid(undecided, 1, [addr["validator-2"]]) == []
    undecided.append(chain.RoundFinalized(META, 1, 1, d, False, 0, 0))  # round 1 settles, the submission undecided
    assert [u.missing for u in pay.unpaid(undecided, 1)] == ["reward: submission 0 not rewarded (undecided)"]
    assert pay.unpaid(undecided, 2) == []  # another task's events


def test_bench_network_charges_unpaid_work_to_nodes_that_stayed_up_through_the_pay_check():
    """`concord bench network --rounds`'s honest_unpaid is the same check (scripts.pay): unpaid work of a
    node that was up the whole round counts; of a churned node, apart; a void round, never (judged apart)."""
    from scripts.bench.network_rounds import NodeProcess, Run, judge_churn
    from scripts.demo import Progress

    t = NodeProcess("t0", Role.TRAINER, 1, None, [], Path("t0.log"))  # type: ignore[arg-type]
    v = NodeProcess("v0", Role.VALIDATOR, 2, None, [], Path("v0.log"))  # type: ignore[arg-type]
    t.down.append((1.0, 2.0))  # t0 was down during round 0 (it ran 0-10 s)
    d = b"\x01" * 32
    ta, va = t.address, v.address
    events = [
        chain.Submitted(META, 1, 0, ta, 0, 0, d, d, 10),  # round 0: t0 rejected, but it was down
        chain.Revealed(META, 1, 0, va, (), d),
        chain.SubmissionRejected(META, 1, 0, ta, 0, 80, 40),
        chain.ValidatorPaid(META, 1, 0, va, 5),
        chain.RoundFinalized(META, 1, 0, d, False, 0, 0),
        chain.Submitted(META, 1, 1, ta, 0, 1, d, d, 10),  # round 1: t0 up, rewarded; v0 up, revealed, no fee
        chain.Revealed(META, 1, 1, va, (), d),
        chain.SubmissionRewarded(META, 1, 1, ta, 0, 50),
        chain.RoundFinalized(META, 1, 1, d, False, 10, 0),
        chain.Submitted(META, 1, 2, ta, 0, 2, d, d, 10),  # round 2: void
        chain.RoundFinalized(META, 1, 2, d, True, 0, 0),
    ]
    progress = Progress(1, events=events)
    for r, phase in ((0, "finalized"), (1, "finalized"), (2, "void")):
        progress.row(r).phase = phase
    run = Run(1, [t, v], progress, 0.0, seen={0: (0.0, 10.0), 1: (10.0, 20.0), 2: (20.0, 30.0)})
    judged = judge_churn({"run": run, "min_validators": 1})
    missing = "fee: revealed, not paid (not the majority's model?)"
    assert judged["honest_unpaid"] == [
        {"round": 1, "address": va, "role": "validator", "missing": missing, "node": "v0"}
    ]
    assert [(u["node"], u["round"]) for u in judged["churned_unpaid"]] == [("t0", 0)]
    assert [x["round"] for x in judged["void_rounds"]] == [2] and judged["rounds"] == 2

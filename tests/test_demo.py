"""`concord demo` as a user runs it: a subprocess with its own devnet (free ports, a temp state dir).

- Ctrl-C (and SIGTERM) mid-run leaves nothing running: no anvil, IPFS peer (one per node and the
  initiator's), trainer or validator process it started, nor anything else in their process groups.
- A short run with the cheater: the settlement catches and slashes it, pays both validators a
  bounty, and the conservation check holds (the JSON line says so).
- The verdict's rules on hand-made outcomes.
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
from scripts import REPO_ROOT, devnet
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
    [(signal.SIGINT, "submitted"), (signal.SIGTERM, "started")],
    ids=["ctrl-c-mid-round", "sigterm-at-start"],
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
        assert "interrupted" in out.read_text()
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

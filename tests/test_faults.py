"""Faults the nodes must survive, against real Anvil + js-ipfs + torch (issue 4 "Tests", fault tolerance).

Not repeated here (tests/test_validator_node.py covers them): a validator SIGKILLed after its
commit while the commit phase is still open and restarted in the reveal phase reveals its plan;
a trainer stopped cleanly after its submission does not resubmit. Added here:

* a trainer process SIGKILLed twice mid-round (right after a submission while its round is
  still open, and while it generates the next one) resumes from chain state, submits every
  round exactly once, and is paid exactly once per round;
* a validator SIGKILLed between commit and reveal that stays down past the reveal deadline:
  the round voids by the rules (too few reveals: no trainer paid or slashed, no fee, the
  non-revealer slashed, the pool back in the budget), and the restarted validator goes on
  with the next round, which settles normally;
* the nodes' own IPFS daemon down: a trainer that cannot upload and a validator that cannot
  fetch say so (the API address in the log line), retry, and carry on when it returns; the
  honest submission is accepted, not rejected for the validator's outage.

The token-conservation invariant (protocol balance = escrow + stakes + credited) is checked
after every scenario.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from client import chain, devnet, keys, procs
from client.chain import Role
from client.node import NodeConfig, connect_node, load_task_context, model_for_round
from client.task_cli import load_task_file, publish_task
from client.trainer import TrainerConfig, run_trainer
from validator import node as vnode

TOKEN = 10 ** 18
STAKE = 100 * TOKEN
SLASH = 80 * TOKEN
INITIATOR, VICTIM, PEER, VAL_A, VAL_B = 0, 6, 7, 8, 9

TASK_TOML = (Path(__file__).parent / "data" / "small_task.toml").read_text()


# ----------------------------------------------------------------------------- helpers

def wait_for(what: str, pred: Callable[[], bool], timeout: float = 90.0,
             alive: Callable[[], str | None] = lambda: None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        problem = alive()
        if problem:
            raise AssertionError(f"{what}: {problem}")
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def publish(chain_env, ipfs_api: str, tmp: Path, rounds: int, min_validators: int) -> int:
    path = tmp / "task.toml"
    path.write_text(TASK_TOML.format(inner_steps=2, max_rounds=rounds, min_validators=min_validators))
    node = connect_node(node_cfg(chain_env, ipfs_api, tmp, 0, INITIATOR, "initiator"))
    return publish_task(node.client, node.signer, node.store, load_task_file(path)).task_id


def node_cfg(chain_env, ipfs_api: str, tmp: Path, task_id: int, account: int, name: str,
             role: str = "trainer") -> NodeConfig:
    return NodeConfig(role=role, rpc_url=chain_env.anvil.url, deployment=chain_env.client.deployment,
                      ipfs_api=ipfs_api, task_id=task_id, state_dir=tmp / name, devnet_account=account,
                      poll_interval=0.05, heartbeat=0.5, ipfs_timeout=5.0)


def enrol(chain_env, account: int, role: Role, task_id: int) -> str:
    signer = chain_env.signer(account)
    chain_env.enrol(signer, role, STAKE, task_id)
    return signer.address


def assert_conserved(client) -> None:
    """DESIGN 3 invariant: the protocol's token balance is exactly what it owes."""
    totals = client.concord.totals()
    assert client.token.balance_of(client.concord.address) == totals.liabilities, totals


def events(client, task_id: int, name: str) -> list:
    return [e for e in client.concord.events(client.deployment.block_number, "latest", [name])
            if getattr(e, "task_id", task_id) == task_id]


def node_argv(module: str, chain_env, ipfs_api: str, tmp: Path, task_id: int, account: int, name: str,
              rounds: int) -> list[str]:
    dep = tmp / "deployment.json"
    if not dep.exists():
        chain_env.client.deployment.save(dep)
    return [sys.executable, "-m", module, "run", "--task", str(task_id), "--rpc-url", chain_env.anvil.url,
            "--deployment", str(dep), "--ipfs-api", ipfs_api, "--devnet-account", str(account),
            "--state-dir", str(tmp / name), "--rounds", str(rounds), "--json-logs", "--poll-interval", "0.05"]


class NodeProcess:
    """A node CLI as a child process whose JSON log lines are read by a thread (and kept)."""

    def __init__(self, argv: list[str]) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONCORD_")}
        self.proc = subprocess.Popen(argv, cwd=procs.REPO_ROOT, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self.lines: list[dict] = []
        self.raw: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.raw.append(line)
            if line.startswith("{"):
                self.lines.append(json.loads(line))

    def saw(self, event: str, **match) -> bool:
        return any(x.get("event") == event and all(x.get(k) == v for k, v in match.items()) for x in list(self.lines))

    def failed(self) -> str | None:
        code = self.proc.poll()
        return None if code in (None, 0) else f"process exited with {code}: {''.join(self.raw[-5:])}"

    def kill(self) -> None:
        """SIGKILL: no handler runs, nothing is flushed or cleaned up."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self._reader.join(timeout=10)


@pytest.fixture
def node_processes() -> Iterator[list[NodeProcess]]:
    started: list[NodeProcess] = []
    try:
        yield started
    finally:
        for p in started:
            p.kill()


class NodeThread:
    """run_trainer / run_validator in a thread with its own stop event; errors are kept, not lost."""

    def __init__(self, name: str, fn: Callable[[threading.Event], object]) -> None:
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.result: object = None

        def target() -> None:
            try:
                self.result = fn(self.stop)
            except Exception as e:  # reported through failed() and the test's assertions
                self.errors.append(e)

        self.thread = threading.Thread(target=target, name=name, daemon=True)
        self.thread.start()

    def failed(self) -> str | None:
        return repr(self.errors[0]) if self.errors else None

    def join(self, timeout: float = 60.0) -> None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"{self.thread.name} did not finish"
        assert not self.errors, self.errors


@pytest.fixture
def node_threads() -> Iterator[list[NodeThread]]:
    started: list[NodeThread] = []
    try:
        yield started
    finally:
        for t in started:
            t.stop.set()
        for t in started:
            t.thread.join(timeout=60)


def any_failed(*nodes) -> Callable[[], str | None]:
    return lambda: next((f"{n}: {p}" for n in nodes if (p := n.failed())), None)


# ----------------------------------------------------------------------------- (a) trainer SIGKILL

@pytest.mark.slow
def test_trainer_sigkilled_mid_round_resumes_and_never_submits_twice(chain_env, ipfs, tmp_path: Path,
                                                                    node_processes, node_threads):
    client, rounds = chain_env.client, 3
    task_id = publish(chain_env, ipfs.api, tmp_path, rounds, min_validators=1)
    victim = enrol(chain_env, VICTIM, Role.TRAINER, task_id)     # both joined: a round waits for both
    other = enrol(chain_env, PEER, Role.TRAINER, task_id)
    enrol(chain_env, VAL_A, Role.VALIDATOR, task_id)

    argv = node_argv("client.trainer", chain_env, ipfs.api, tmp_path, task_id, VICTIM, "victim", rounds)
    first = NodeProcess(argv)
    node_processes.append(first)
    wait_for("the victim's round 0 submission", lambda: first.saw("submitted", round=0), alive=any_failed(first))
    # round 0 is still taking submissions (the peer has not submitted): kill the trainer now
    assert client.concord.phase_of(task_id, 0) == chain.Phase.SUBMIT
    first.kill()

    second = NodeProcess(argv)              # restart: chain says round 0 is done; it must wait for round 1
    node_processes.append(second)
    validator = NodeThread("validator", lambda stop: vnode.run_validator(vnode.ValidatorConfig(
        node_cfg(chain_env, ipfs.api, tmp_path, task_id, VAL_A, "validator", "validator"), rounds=rounds), stop))
    peer = NodeThread("peer", lambda stop: run_trainer(TrainerConfig(
        node_cfg(chain_env, ipfs.api, tmp_path, task_id, PEER, "peer"), rounds=rounds), stop))
    node_threads += [validator, peer]
    alive = any_failed(second, validator, peer)
    # round 0 is done on chain, so the only round this process ever generates is round 1
    wait_for("the restarted victim to start generating round 1",
             lambda: any(x.get("step") == "generating + training" for x in list(second.lines)), alive=alive)
    second.kill()                           # killed mid-round 1 (whatever it had sent stays on chain)

    third = NodeProcess(argv)
    node_processes.append(third)
    alive = any_failed(third, validator, peer)
    wait_for("all rounds to finalize", lambda: client.concord.task_state(task_id).finalized_rounds >= rounds,
             timeout=150, alive=alive)
    third.proc.wait(timeout=60)
    assert third.proc.returncode == 0, "".join(third.raw[-10:])
    validator.join()
    peer.join()

    # each start read its last submitted round from chain state
    assert [x["last_submitted"] for x in second.lines if x.get("event") == "started"] == [0]
    (third_start,) = [x for x in third.lines if x.get("event") == "started"]
    assert third_start["last_submitted"] == (1 if second.saw("submitted", round=1) else 0)
    subs = [(e.round, e.trainer) for e in events(client, task_id, "Submitted")]
    assert sorted(subs) == sorted((r, a) for r in range(rounds) for a in (victim, other))   # once each, never twice
    paid = [(e.round, e.trainer) for e in events(client, task_id, "SubmissionRewarded")]
    assert sorted(paid) == sorted(subs)
    assert events(client, task_id, "SubmissionRejected") == [] and events(client, task_id, "ValidatorSlashed") == []
    assert not any(e.is_void for e in events(client, task_id, "RoundFinalized"))
    reward = {e.trainer: 0 for e in events(client, task_id, "SubmissionRewarded")}
    for e in events(client, task_id, "SubmissionRewarded"):
        reward[e.trainer] += e.reward
    assert client.concord.balance_of(victim) == reward[victim] > 0
    assert client.concord.node_info(victim).stake == STAKE
    assert_conserved(client)


# ----------------------------------------------------------------------------- (b) validator down past the reveal

@pytest.mark.slow
def test_validator_down_past_the_reveal_deadline_voids_the_round_and_resumes(chain_env, ipfs, tmp_path: Path,
                                                                             node_processes, node_threads):
    from client.bundle import make_bundle
    from client.submission import put_submission

    client, rounds = chain_env.client, 2
    task_id = publish(chain_env, ipfs.api, tmp_path, rounds, min_validators=2)
    trainer = chain_env.signer(PEER)
    chain_env.enrol(trainer, Role.TRAINER, STAKE, task_id)
    a_addr = enrol(chain_env, VAL_A, Role.VALIDATOR, task_id)
    b_cfg = vnode.ValidatorConfig(node_cfg(chain_env, ipfs.api, tmp_path, task_id, VAL_B, "val-b", "validator"),
                                  rounds=rounds)
    vnode.ensure_enrolled(vnode.connect_validator(b_cfg))
    b_addr = chain_env.signer(VAL_B).address
    node = connect_node(node_cfg(chain_env, ipfs.api, tmp_path, task_id, PEER, "trainer"))
    ctx = load_task_context(node, task_id)

    def submit(round_: int) -> None:        # an honest trainer's round (asyncLevel 0: on model round_)
        policy = model_for_round(ctx, node.store, round_)
        bundle = make_bundle(policy, ctx.env, ctx.task, task_id, round_, trainer.address, round_)
        digest, _ = put_submission(node.store, bundle)
        client.concord.submit(trainer, task_id, round_, round_, bytes.fromhex(digest), bytes(bundle.proof_root),
                              bundle.work_units)

    argv = node_argv("validator.node", chain_env, ipfs.api, tmp_path, task_id, VAL_A, "val-a", rounds)
    a1 = NodeProcess(argv)
    node_processes.append(a1)
    wait_for("validator A to start", lambda: a1.saw("start"), alive=any_failed(a1))
    submit(0)
    wait_for("validator A to commit round 0", lambda: client.concord.commit_status(task_id, 0, a_addr).committed,
             alive=any_failed(a1))
    a1.kill()                                                   # between its commit and its reveal
    plan = json.loads(vnode.plan_path(vnode.task_dir(tmp_path / "val-a", task_id), 0).read_text())

    b = NodeThread("validator-b", lambda stop: vnode.run_validator(b_cfg, stop))
    node_threads.append(b)
    wait_for("validator B to reveal round 0", lambda: client.concord.commit_status(task_id, 0, b_addr).revealed,
             alive=any_failed(b))
    assert client.concord.phase_of(task_id, 0) == chain.Phase.REVEAL    # still waiting for A
    assert_conserved(client)
    chain_env.warp(601)                                         # A stays down past the reveal deadline
    wait_for("round 0 to settle", lambda: client.concord.task_state(task_id).finalized_rounds >= 1,
             alive=any_failed(b))

    (fin0,) = [e for e in events(client, task_id, "RoundFinalized") if e.round == 0]
    assert fin0.is_void                                         # 1 reveal < minValidators 2
    assert client.concord.model_digest(task_id, 1).digest == client.concord.model_digest(task_id, 0).digest
    assert [(e.round, e.validator, e.amount) for e in events(client, task_id, "ValidatorSlashed")] == [(0, a_addr, SLASH)]
    for name in ("SubmissionRewarded", "SubmissionRejected", "ValidatorPaid", "BountyPaid"):
        assert events(client, task_id, name) == [], name       # void: no trainer paid or slashed, no fee
    assert client.concord.node_info(trainer.address).stake == STAKE
    assert client.concord.node_info(b_addr).stake == STAKE
    assert client.concord.balance_of(b_addr) == 0
    assert_conserved(client)

    a2 = NodeProcess(argv)                                      # restart after the void round
    node_processes.append(a2)
    wait_for("round 1 to open", lambda: client.concord.phase_of(task_id, 1) == chain.Phase.SUBMIT,
             alive=any_failed(a2, b))
    submit(1)
    wait_for("round 1 to finalize", lambda: client.concord.task_state(task_id).finalized_rounds >= 2,
             timeout=120, alive=any_failed(a2, b))
    a2.proc.wait(timeout=60)
    assert a2.proc.returncode == 0, "".join(a2.raw[-10:])
    b.join()

    a_revealed = [e for e in events(client, task_id, "Revealed") if e.validator == a_addr]
    assert [e.round for e in a_revealed] == [1]                 # round 0's plan was never revealed late
    assert [e.round for e in events(client, task_id, "Committed") if e.validator == a_addr] == [0, 1]
    assert json.loads(vnode.plan_path(vnode.task_dir(tmp_path / "val-a", task_id), 0).read_text()) == plan
    (fin1,) = [e for e in events(client, task_id, "RoundFinalized") if e.round == 1]
    assert not fin1.is_void
    assert [(e.round, e.trainer) for e in events(client, task_id, "SubmissionRewarded")] == [(1, trainer.address)]
    fees = sorted((e.round, e.validator) for e in events(client, task_id, "ValidatorPaid"))
    assert fees == sorted([(1, a_addr), (1, b_addr)])           # each paid once, for the round that settled
    assert client.concord.balance_of(trainer.address) == 300 * TOKEN
    assert client.concord.balance_of(b_addr) == 30 * TOKEN
    assert len(events(client, task_id, "ValidatorSlashed")) == 1
    assert_conserved(client)


# ----------------------------------------------------------------------------- (c) IPFS daemon down

@pytest.fixture
def own_ipfs(tmp_path: Path) -> Iterator[dict]:
    """A js-ipfs daemon of this test's own, which the test stops and restarts on the same repo."""
    ports = devnet.Ports(anvil=0, ipfs_api=procs.free_port(), ipfs_gateway=procs.free_port(),
                         ipfs_grpc=procs.free_port())
    repo = tmp_path / "ipfs-repo"
    node = {"daemon": devnet.start_ipfs(repo, ports, tmp_path / "ipfs.log"), "repo": repo,
            "api": f"/ip4/127.0.0.1/tcp/{ports.ipfs_api}/http", "url": f"http://127.0.0.1:{ports.ipfs_api}"}
    try:
        yield node
    finally:
        procs.stop(node["daemon"])


def restart_ipfs(node: dict, tmp: Path) -> None:
    argv = node["daemon"].argv
    daemon, proc = procs.start("ipfs", argv, tmp / "ipfs-restart.log", env={"IPFS_PATH": str(node["repo"])})
    node["daemon"] = daemon
    procs.wait_ready(daemon, proc, lambda: devnet.ipfs_ready(node["url"]), 60)


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def saw(self, logger: str, text: str) -> bool:
        return any(r.name == logger and text in r.getMessage() for r in list(self.records))


@pytest.fixture
def warnings_seen() -> Iterator[Records]:
    handler = Records()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)


@pytest.mark.slow
def test_ipfs_down_nodes_retry_and_the_honest_submission_is_accepted(chain_env, own_ipfs, tmp_path: Path,
                                                                     node_threads, warnings_seen):
    client, api = chain_env.client, own_ipfs["api"]
    task_id = publish(chain_env, api, tmp_path, 1, min_validators=1)
    trainer_addr = enrol(chain_env, PEER, Role.TRAINER, task_id)
    t_cfg = TrainerConfig(node_cfg(chain_env, api, tmp_path, task_id, PEER, "trainer"), rounds=1)
    v_cfg = vnode.ValidatorConfig(node_cfg(chain_env, api, tmp_path, task_id, VAL_A, "validator", "validator"),
                                  rounds=1)
    vnode.ensure_enrolled(vnode.connect_validator(v_cfg))
    for cfg in (t_cfg.node, v_cfg.node):     # both nodes ran before: spec and model 0 sit in their caches
        n = connect_node(cfg)
        model_for_round(load_task_context(n, task_id), n.store, 0)

    # the trainer: its daemon dies before it can upload round 0
    procs.stop(own_ipfs["daemon"])
    t = NodeThread("trainer", lambda stop: run_trainer(t_cfg, stop))
    node_threads.append(t)
    wait_for("the trainer to report IPFS down", lambda: warnings_seen.saw("concord.trainer", api), alive=any_failed(t))
    assert events(client, task_id, "Submitted") == []
    restart_ipfs(own_ipfs, tmp_path)
    wait_for("the trainer's submission", lambda: len(events(client, task_id, "Submitted")) == 1, alive=any_failed(t))
    t.join()
    assert [s.round for s in t.result.submitted] == [0]

    # the validator: its daemon dies before it fetches the submission
    procs.stop(own_ipfs["daemon"])
    v = NodeThread("validator", lambda stop: vnode.run_validator(v_cfg, stop))
    node_threads.append(v)
    wait_for("the validator to report IPFS down", lambda: warnings_seen.saw("concord.validator", api),
             alive=any_failed(v))
    assert client.concord.commit_status(task_id, 0, chain_env.signer(VAL_A).address).committed is False
    restart_ipfs(own_ipfs, tmp_path)
    wait_for("round 0 to finalize", lambda: client.concord.task_state(task_id).finalized_rounds >= 1,
             timeout=120, alive=any_failed(v))
    v.join()

    (verdict,) = vnode.load_verdicts(vnode.task_dir(tmp_path / "validator", task_id))
    assert verdict.accepted                  # the validator's own outage is no verdict on the trainer
    assert [(e.round, e.trainer) for e in events(client, task_id, "SubmissionRewarded")] == [(0, trainer_addr)]
    assert events(client, task_id, "SubmissionRejected") == [] and events(client, task_id, "ValidatorSlashed") == []
    assert client.concord.balance_of(trainer_addr) == 300 * TOKEN
    assert_conserved(client)

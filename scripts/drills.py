"""Fault drills: kill or freeze a real part of a running round, bring it back, check what settled.

Each drill runs one round of a small task (tests/data/small_task.toml) on a deployed protocol
with real node processes (the CLI, SIGKILLable) or node threads, breaks one thing, restores it,
waits for the round to settle and returns a DrillResult. Every drill checks afterwards:

  * conservation (scripts.harness): the protocol's token balance equals escrow + stakes +
    credited, and every task holds exactly its budget + the pools of its open rounds (DESIGN 3);
  * no honest node slashed: no SubmissionRejected / ValidatorSlashed naming an honest node;
  * nothing paid twice: one SubmissionRewarded per (round, trainer).

tests/test_faults.py asserts on the results; a bench can run the same functions as rows.
Inputs are explicit (a ChainClient on the deployment, the IPFS API, a scratch dir). Each drill
publishes its own task and enrols Anvil default accounts 6-9 (registering them if needed), so
run it on a devnet whose accounts 6-9 hold DevToken and are not slashed (or inside
evm_snapshot / evm_revert, as the tests do). Every process a drill starts is stopped by PID
before it returns, and a frozen Anvil is always continued.

The trainer drills run one trainer process of their own, the library's trainer with a hook
(PauseBeforeManifest, the trainer's upload step): `python -m scripts.drills run
--pause-before-manifest SECONDS <concord trainer run flags>` sleeps after uploading a
submission's files and before its manifest (logging `drill_pause`), so a drill can act at a
known point of the upload.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from concord.client import trainer
from concord.client.chain import ChainClient, Phase, Role, keys
from concord.client.content.manifest import digest_of
from concord.client.content.store import ContentNotFound, Store
from concord.client.content.submission import put_submission
from concord.client.digest import Digest
from concord.client.engine.bundle import Bundle
from concord.client.initiator import load_task_file, publish_task, rule_min_commit_seconds
from concord.client.runtime import procs
from concord.client.runtime.config import NodeConfig
from concord.client.runtime.connect import Node, connect_node
from concord.client.runtime.display import fields
from concord.client.runtime.task import TaskContext, load_task_context, model_for_round
from scripts import REPO_ROOT, devnet
from scripts.harness import TOKEN, conservation, enrol, expect, node_command, wait_for
from scripts.lab_node import run_lab_node

STAKE = 100 * TOKEN
INITIATOR, SPARE, VICTIM, PEER, VAL_A, VAL_B = 0, 5, 6, 7, 8, 9
TASK_TEMPLATE = REPO_ROOT / "tests" / "data" / "small_task.toml"


@dataclass(frozen=True)
class DrillResult:
    name: str
    ok: bool
    detail: str
    conservation_ok: bool
    honest_slashed: tuple[str, ...]  # honest addresses named by SubmissionRejected / ValidatorSlashed
    paid_twice: tuple[tuple[int, str], ...]  # (round, trainer) rewarded more than once
    seconds: float
    facts: dict = field(default_factory=dict, compare=False)  # what the drill measured, for tests and logs


# ----------------------------------------------------------------------------- waiting (scripts.harness.wait_for)


def any_failed(*nodes) -> Callable[[], str | None]:
    return lambda: next((f"{n}: {p}" for n in nodes if (p := n.failed())), None)


# ----------------------------------------------------------------------------- nodes


class NodeProcess:
    """A node CLI as a child process whose JSON log lines are read by a thread (and kept)."""

    def __init__(self, argv: list[str], env: dict[str, str] | None = None, name: str = "node") -> None:
        full = {k: v for k, v in os.environ.items() if not k.startswith("CONCORD_")}
        full.update(env or {})
        self.name = name
        self.proc = subprocess.Popen(
            argv, cwd=REPO_ROOT, env=full, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.lines: list[dict] = []
        self.raw: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def __repr__(self) -> str:
        return f"{self.name}(pid {self.proc.pid})"

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.raw.append(line)
            if line.startswith("{"):
                self.lines.append(json.loads(line))

    def saw(self, event: str, **match) -> bool:
        return any(x.get("event") == event and all(x.get(k) == v for k, v in match.items()) for x in list(self.lines))

    def first(self, event: str) -> dict:
        return next(x for x in list(self.lines) if x.get("event") == event)

    def failed(self) -> str | None:
        code = self.proc.poll()
        return None if code in (None, 0) else f"process exited with {code}: {''.join(self.raw[-5:])}"

    def kill(self) -> None:
        """SIGKILL: no handler runs, nothing is flushed or cleaned up."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self._reader.join(timeout=10)

    def finish(self, timeout: float = 60.0) -> int:
        self.proc.wait(timeout=timeout)
        self._reader.join(timeout=10)
        return self.proc.returncode


class NodeThread:
    """run_trainer / run_validator in a thread with its own stop event; errors are kept, not lost."""

    def __init__(self, name: str, fn: Callable[[threading.Event], object]) -> None:
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.result: object = None

        def target() -> None:
            try:
                self.result = fn(self.stop)
            except Exception as e:  # reported through failed() and the drill's checks
                self.errors.append(e)

        self.thread = threading.Thread(target=target, name=name, daemon=True)
        self.thread.start()

    def __repr__(self) -> str:
        return self.thread.name

    def failed(self) -> str | None:
        return repr(self.errors[0]) if self.errors else None

    def join(self, timeout: float = 60.0) -> None:
        self.thread.join(timeout)
        expect(not self.thread.is_alive(), f"{self.thread.name} did not finish")
        expect(not self.errors, f"{self.thread.name} failed: {self.errors!r}")


class Nodes:
    """Everything a drill started; ``close`` stops all of it (threads asked to stop, processes SIGKILLed)."""

    def __init__(self) -> None:
        self.processes: list[NodeProcess] = []
        self.threads: list[NodeThread] = []

    def process(self, argv: list[str], env: dict[str, str] | None = None, name: str = "node") -> NodeProcess:
        p = NodeProcess(argv, env, name)
        self.processes.append(p)
        return p

    def thread(self, name: str, fn: Callable[[threading.Event], object]) -> NodeThread:
        t = NodeThread(name, fn)
        self.threads.append(t)
        return t

    def close(self) -> None:
        for p in self.processes:
            p.kill()
        for t in self.threads:
            t.stop.set()
        for t in self.threads:
            t.thread.join(timeout=60)


# ----------------------------------------------------------------------------- chain set-up and checks


def node_cfg(
    client: ChainClient, ipfs_api: str, tmp: Path, task_id: int, account: int, name: str, role: str = "trainer"
) -> NodeConfig:
    return NodeConfig(
        role=role,
        rpc_url=client.rpc.url,
        deployment=client.deployment,
        ipfs_api=ipfs_api,
        task_id=task_id,
        state_dir=tmp / name,
        devnet_account=account,
        poll_interval=0.05,
        heartbeat=0.5,
        ipfs_timeout=5.0,
    )


def node_argv(
    module: str, client: ChainClient, ipfs_api: str, tmp: Path, task_id: int, account: int, name: str, rounds: int
) -> list[str]:
    dep = tmp / "deployment.json"
    if not dep.exists():
        client.deployment.save(dep)
    network = ("--rpc-url", client.rpc.url, "--deployment", str(dep), "--ipfs-api", ipfs_api)
    return node_command(module, network, task_id, account, tmp / name, rounds, 0.05)


def pausing(argv: list[str], seconds: float) -> list[str]:
    """A `concord trainer run` command line (node_argv of client.trainer) as the drills' trainer that
    pauses ``seconds`` between its files and its manifest (`python -m scripts.drills run ...`)."""
    i = argv.index("concord.client.trainer")
    return argv[:i] + ["scripts.drills"] + argv[i + 1 :] + ["--pause-before-manifest", str(seconds)]


def publish(
    client: ChainClient,
    ipfs_api: str,
    tmp: Path,
    rounds: int,
    min_validators: int,
    model_seed: int = 0,
    phase_seconds: int | None = None,
    inner_steps: int = 2,
) -> int:
    """The small task (phases close early once every joined node acted) with ``rounds`` rounds.
    Another ``model_seed`` gives another model 0, so every bundle of the task is new content.
    ``phase_seconds``: each phase's deadline (default the template's 600 s; the commit phase at least what
    the late-fetch rule needs: initiator.rule_min_commit_seconds), for drills in which a
    phase must end by its deadline (a node that never acts) on a chain that runs on a clock;
    ``inner_steps``: the inner steps (and inner states) of a submission."""
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / "task.toml"
    text = TASK_TEMPLATE.read_text().format(inner_steps=inner_steps, max_rounds=rounds, min_validators=min_validators)
    text = re.sub(r"(?m)^seed = 0$", f"seed = {model_seed}", text)
    path.write_text(text)
    task_file = load_task_file(path)
    if phase_seconds is not None:  # the commit phase no shorter than the late-fetch rule needs
        commit = max(phase_seconds, rule_min_commit_seconds(task_file.spec))
        params = dataclasses.replace(
            task_file.params, submit_seconds=phase_seconds, commit_seconds=commit, reveal_seconds=phase_seconds
        )
        task_file = dataclasses.replace(task_file, params=params)
    node = connect_node(node_cfg(client, ipfs_api, tmp, 0, INITIATOR, "initiator"))
    return publish_task(node.client, node.signer, node.store, task_file).task_id


def events(client: ChainClient, task_id: int, name: str) -> list:
    return [
        e
        for e in client.concord.events(client.deployment.block_number, "latest", [name])
        if getattr(e, "task_id", task_id) == task_id
    ]


def honest_slashed(client: ChainClient, task_id: int, honest: Iterable[str]) -> tuple[str, ...]:
    honest = {a.lower() for a in honest}
    hit = [e.trainer for e in events(client, task_id, "SubmissionRejected") if e.trainer.lower() in honest]
    hit += [e.validator for e in events(client, task_id, "ValidatorSlashed") if e.validator.lower() in honest]
    return tuple(hit)


def paid_twice(client: ChainClient, task_id: int) -> tuple[tuple[int, str], ...]:
    paid = Counter((e.round, e.trainer) for e in events(client, task_id, "SubmissionRewarded"))
    return tuple(k for k, n in sorted(paid.items()) if n > 1)


def submit_honest(
    client: ChainClient, ipfs_api: str, tmp: Path, task_id: int, account: int, round_: int
) -> tuple[str, Callable[[], None]]:
    """An honest round-``round_`` bundle uploaded now; returns (digest, a function that submits it)."""
    return submit_with(client, ipfs_api, tmp, task_id, account, round_, lambda store, b: put_submission(store, b)[0])


def submit_with(
    client: ChainClient,
    ipfs_api: str,
    tmp: Path,
    task_id: int,
    account: int,
    round_: int,
    upload: Callable[[Store, object], str],
) -> tuple[str, Callable[[], None]]:
    """A round-``round_`` bundle trained honestly and uploaded by ``upload(store, bundle) -> digest``;
    returns (digest, a function that submits it with the bundle's proof root and work units)."""
    from concord.client.engine.bundle import make_bundle

    node = connect_node(node_cfg(client, ipfs_api, tmp, task_id, account, f"sdk-trainer-{account}"))
    ctx = load_task_context(node, task_id)
    bundle = make_bundle(
        model_for_round(ctx, node.store, round_), ctx.env, ctx.task, task_id, round_, node.address, round_
    )
    digest = upload(node.store, bundle)

    def submit() -> None:
        client.concord.submit(
            node.signer,
            task_id,
            round_,
            round_,
            Digest.parse(digest).bytes,
            bytes(bundle.proof_root),
            bundle.work_units,
        )

    return digest, submit


def warm_caches(
    client: ChainClient, ipfs_api: str, tmp: Path, task_id: int, account: int, name: str, role: str
) -> None:
    """A node that ran before: the task spec and model 0 sit in its state dir's cache."""
    n = connect_node(node_cfg(client, ipfs_api, tmp, task_id, account, name, role))
    model_for_round(load_task_context(n, task_id), n.store, 0)


def validator_thread(
    nodes: Nodes, client: ChainClient, ipfs_api: str, tmp: Path, task_id: int, account: int, name: str, label: str = ""
) -> NodeThread:
    """A one-round validator node (run_validator, state in tmp/``name``) started in a thread of ``nodes``
    called ``label`` (default: ``name``)."""
    from concord.validator import context as vctx
    from concord.validator import node as vnode

    cfg = vctx.ValidatorConfig(node_cfg(client, ipfs_api, tmp, task_id, account, name, "validator"), rounds=1)
    return nodes.thread(label or name, lambda stop: vnode.run_validator(cfg, stop))


def settled(client: ChainClient, task_id: int) -> bool:
    """Round 0 of ``task_id`` is finalized."""
    return client.concord.task_state(task_id).finalized_rounds >= 1


def wait_settled(client: ChainClient, task_id: int, timeout: float, alive: Callable[[], str | None]) -> None:
    """Wait (scripts.harness.wait_for) for round 0 of ``task_id`` to be finalized."""
    wait_for("round 0 to settle", lambda: settled(client, task_id), timeout=timeout, alive=alive)


class Records(logging.Handler):
    """Log records at WARNING and above, kept for the drill to look at."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def saw(self, logger: str, text: str) -> bool:
        return any(r.name == logger and text in r.getMessage() for r in list(self.records))

    def count(self, logger: str, text: str) -> int:
        return sum(r.name == logger and text in r.getMessage() for r in list(self.records))


@contextmanager
def warnings_recorded() -> Iterator[Records]:
    handler = Records()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)


def _run(name: str, client: ChainClient, body: Callable[[dict], tuple[int, list[str]]]) -> DrillResult:
    """Run ``body(facts) -> (task_id, honest addresses)`` and judge it with the three checks."""
    facts: dict = {}
    started = time.monotonic()
    problem = ""
    task_id, honest = None, []
    try:
        task_id, honest = body(facts)
    except Exception as e:  # a drill reports, it does not raise: the bench prints a row either way
        problem = f"{type(e).__name__}: {e}"
        task_id = facts.get("task_id")
        honest = facts.get("honest", [])
    seconds = round(time.monotonic() - started, 1)
    cons = conservation(client)
    ok_conserved = cons.holds
    slashed = honest_slashed(client, task_id, honest) if task_id is not None else ()
    twice = paid_twice(client, task_id) if task_id is not None else ()
    notes = [problem] if problem else []
    if not ok_conserved:
        notes.append(f"token conservation broken: {'; '.join(cons.problems())}")
    if slashed:
        notes.append(f"honest nodes slashed: {list(slashed)}")
    if twice:
        notes.append(f"paid twice: {list(twice)}")
    ok = not notes
    detail = "; ".join(notes) if notes else facts.get("summary", "ok")
    return DrillResult(name, ok, detail, ok_conserved, slashed, twice, seconds, facts)


def _tx_nonces(client: ChainClient, first_block: int) -> dict[str, list[tuple[int, str]]]:
    """Every transaction mined since ``first_block``: sender -> [(nonce, 4-byte selector)]."""
    out: dict[str, list[tuple[int, str]]] = {}
    for n in range(first_block, client.rpc.block_number() + 1):
        block = client.rpc.call("eth_getBlockByNumber", hex(n), True)
        for tx in block["transactions"]:
            out.setdefault(tx["from"].lower(), []).append((int(tx["nonce"], 16), tx["input"][2:10]))
    return out


# ----------------------------------------------------------------------------- 1. trainer killed during its upload


def drill_trainer_killed_during_upload(client: ChainClient, ipfs_api: str, tmp: Path) -> DrillResult:
    """A trainer process SIGKILLed after uploading its files and before its manifest, restarted:
    nothing was submitted for the killed upload, the restart submits the round once and is paid once."""

    def body(facts: dict) -> tuple[int, list[str]]:
        nodes = Nodes()
        try:
            # a model 0 of its own: the bundle is content this IPFS daemon has never seen
            seed = int.from_bytes(os.urandom(3), "big") + 1
            task_id = facts["task_id"] = publish(client, ipfs_api, tmp, 1, min_validators=1, model_seed=seed)
            victim = enrol(client, VICTIM, Role.TRAINER, STAKE, task_id)
            validator = enrol(client, VAL_A, Role.VALIDATOR, STAKE, task_id)
            facts["honest"] = [victim, validator]
            argv = node_argv("concord.client.trainer", client, ipfs_api, tmp, task_id, VICTIM, "victim", 1)
            first = nodes.process(pausing(argv, 60), name="trainer")
            wait_for(
                "the trainer to pause between its files and its manifest",
                lambda: first.saw("drill_pause"),
                alive=any_failed(first),
            )
            first.kill()
            half = facts["killed_manifest"] = first.first("drill_pause")["digest"]
            expect(
                not first.saw("submitted") and events(client, task_id, "Submitted") == [],
                "a submission was sent before the manifest was uploaded",
            )
            try:  # the half-done upload has files but no manifest
                Store(ipfs_api, None, timeout=1.0, retries=1).get_manifest(half)
                facts["manifest_after_kill"] = True
            except ContentNotFound:
                facts["manifest_after_kill"] = False
            expect(not facts["manifest_after_kill"], "the killed trainer's manifest is in IPFS")

            v = validator_thread(nodes, client, ipfs_api, tmp, task_id, VAL_A, "validator")
            second = nodes.process(argv, name="trainer (restarted)")
            wait_settled(client, task_id, timeout=150, alive=any_failed(second, v))
            expect(second.finish() == 0, f"restarted trainer exited with {second.proc.returncode}")
            v.join()
            facts["restart_last_submitted"] = second.first("started")["last_submitted"]
            subs = events(client, task_id, "Submitted")
            facts["submitted"] = [(e.round, e.trainer) for e in subs]
            facts["rewarded"] = [(e.round, e.trainer) for e in events(client, task_id, "SubmissionRewarded")]
            expect(facts["submitted"] == [(0, victim)], f"submissions {facts['submitted']}, want one")
            expect(facts["rewarded"] == [(0, victim)], f"rewards {facts['rewarded']}, want one")
            facts["same_bundle"] = Digest.parse(subs[0].bundle_digest) == Digest.parse(half)
            facts["summary"] = (
                f"killed before manifest {half[:12]}; restart submitted round 0 once "
                f"(same bundle: {facts['same_bundle']}), paid once"
            )
            return task_id, facts["honest"]
        finally:
            nodes.close()

    return _run("trainer killed during upload", client, body)


# ------------------------------------------------------------------- 2. validator killed between commit and reveal


def drill_validator_killed_between_commit_and_reveal(client: ChainClient, ipfs_api: str, tmp: Path) -> DrillResult:
    """Validator A (a process) SIGKILLed right after its commit, restarted once the reveal phase is
    open: it reveals exactly the plan it wrote before committing, is not slashed, the round settles."""
    from concord.validator import context as vctx
    from concord.validator import store as vstore

    def body(facts: dict) -> tuple[int, list[str]]:
        nodes = Nodes()
        try:
            task_id = facts["task_id"] = publish(client, ipfs_api, tmp, 1, min_validators=2)
            trainer = enrol(client, PEER, Role.TRAINER, STAKE, task_id)
            a, b = (enrol(client, v, Role.VALIDATOR, STAKE, task_id) for v in (VAL_A, VAL_B))
            facts["honest"] = [trainer, a, b]
            _, submit = submit_honest(client, ipfs_api, tmp, task_id, PEER, 0)
            argv = node_argv("concord.validator.node", client, ipfs_api, tmp, task_id, VAL_A, "val-a", 1)
            a1 = nodes.process(argv, name="validator A")
            wait_for("validator A to start", lambda: a1.saw("start"), alive=any_failed(a1))
            submit()  # the only trainer: the commit phase opens at once
            wait_for(
                "validator A to commit",
                lambda: client.concord.commit_status(task_id, 0, a).committed,
                alive=any_failed(a1),
            )
            a1.kill()
            plan = json.loads(vstore.plan_path(vctx.task_dir(tmp / "val-a", task_id), 0).read_text())
            expect(client.concord.phase_of(task_id, 0) == Phase.COMMIT, "B's commit should still be missing")
            vb = validator_thread(nodes, client, ipfs_api, tmp, task_id, VAL_B, "val-b", "validator B")
            wait_for(
                "validator B to reveal",
                lambda: client.concord.commit_status(task_id, 0, b).revealed,
                alive=any_failed(vb),
            )
            expect(client.concord.phase_of(task_id, 0) == Phase.REVEAL, "the reveal phase should wait for A")
            a2 = nodes.process(argv, name="validator A (restarted)")
            wait_settled(client, task_id, timeout=120, alive=any_failed(a2, vb))
            expect(a2.finish() == 0, f"restarted validator exited with {a2.proc.returncode}")
            vb.join()
            committed = [e for e in events(client, task_id, "Committed") if e.validator == a]
            revealed = [e for e in events(client, task_id, "Revealed") if e.validator == a]
            expect(
                len(committed) == 1 and len(revealed) == 1, f"A committed {len(committed)}x, revealed {len(revealed)}x"
            )
            expect(
                Digest.parse(committed[0].commitment) == Digest.parse(plan["commitment"]),
                "A's commitment is not its plan's",
            )
            expect(
                Digest.parse(revealed[0].next_model_digest) == Digest.parse(plan["next_model_digest"])
                and list(revealed[0].reject_words) == [int(w) for w in plan["reject_words"]],
                "A revealed something other than its plan",
            )
            (fin,) = [e for e in events(client, task_id, "RoundFinalized") if e.round == 0]
            expect(not fin.is_void, "round 0 went void")
            facts["rewarded"] = [(e.round, e.trainer) for e in events(client, task_id, "SubmissionRewarded")]
            facts["validators_paid"] = sorted(e.validator for e in events(client, task_id, "ValidatorPaid"))
            expect(facts["rewarded"] == [(0, trainer)], f"rewards {facts['rewarded']}")
            expect(facts["validators_paid"] == sorted([a, b]), f"validator fees {facts['validators_paid']}")
            facts["summary"] = "A revealed its on-disk plan after the restart; round settled, A and B paid once"
            return task_id, facts["honest"]
        finally:
            nodes.close()

    return _run("validator killed between commit and reveal", client, body)


# ----------------------------------------------------------------------------- 3. IPFS daemon SIGKILLed


class IpfsDaemon:
    """A js-ipfs daemon of the drill's own (state: the running Daemon changes on restart)."""

    def __init__(self, repo: Path, daemon: procs.Daemon, api: str, url: str) -> None:
        self.repo, self.daemon, self.api, self.url = repo, daemon, api, url

    @staticmethod
    def start(tmp: Path) -> IpfsDaemon:
        ports = devnet.Ports(
            anvil=0, ipfs_api=procs.free_port(), ipfs_gateway=procs.free_port(), ipfs_grpc=procs.free_port()
        )
        repo = tmp / "ipfs-repo"
        daemon = devnet.start_ipfs(repo, ports, tmp / "ipfs.log")
        return IpfsDaemon(
            repo, daemon, f"/ip4/127.0.0.1/tcp/{ports.ipfs_api}/http", f"http://127.0.0.1:{ports.ipfs_api}"
        )

    def sigkill(self) -> None:
        """kill -9 the daemon's process group (no shutdown: its repo lock stays behind)."""
        procs.kill(self.daemon)

    def restart(self, log_path: Path) -> None:
        """Start again on the same repo (ports, config, content)."""
        self.daemon = devnet.restart_ipfs(self.repo, self.daemon, self.url, log_path)

    def stop(self) -> None:
        procs.stop(self.daemon)


def drill_ipfs_sigkilled(client: ChainClient, ipfs: IpfsDaemon, tmp: Path, outage: float = 10.0) -> DrillResult:
    """The nodes' IPFS daemon SIGKILLed mid-round (one submission on chain, another trainer about to
    upload) and restarted on the same repo ``outage`` seconds later: both nodes log the outage with
    the API address, retry, and the round settles with both honest submissions accepted."""
    from concord.client.trainer import TrainerConfig, run_trainer
    from concord.validator import context as vctx
    from concord.validator import store as vstore

    def body(facts: dict) -> tuple[int, list[str]]:
        nodes = Nodes()
        try:
            with warnings_recorded() as seen:
                api = ipfs.api
                task_id = facts["task_id"] = publish(client, api, tmp, 1, min_validators=1)
                sdk_trainer = enrol(client, PEER, Role.TRAINER, STAKE, task_id)
                node_trainer = enrol(client, VICTIM, Role.TRAINER, STAKE, task_id)
                validator = enrol(client, VAL_A, Role.VALIDATOR, STAKE, task_id)
                facts["honest"] = [sdk_trainer, node_trainer, validator]
                warm_caches(client, api, tmp, task_id, VICTIM, "trainer", "trainer")
                warm_caches(client, api, tmp, task_id, VAL_A, "validator", "validator")
                _, submit = submit_honest(client, api, tmp, task_id, PEER, 0)  # its files are in IPFS
                tcfg = TrainerConfig(node_cfg(client, api, tmp, task_id, VICTIM, "trainer"), rounds=1)
                v = validator_thread(nodes, client, api, tmp, task_id, VAL_A, "validator")

                ipfs.sigkill()
                killed_at = time.monotonic()
                t = nodes.thread("trainer", lambda stop: run_trainer(tcfg, stop))
                submit()  # the validator must now fetch it while IPFS is down
                alive = any_failed(t, v)
                wait_for(
                    "the trainer to report IPFS down",
                    lambda: seen.saw("concord.trainer", api),
                    timeout=outage + 30,
                    alive=alive,
                )
                wait_for(
                    "the validator to report IPFS down",
                    lambda: seen.saw("concord.validator", api),
                    timeout=outage + 30,
                    alive=alive,
                )
                facts["logged_within_s"] = round(time.monotonic() - killed_at, 1)
                expect(time.monotonic() - killed_at < outage, "the nodes noticed the outage only after it ended")
                expect(len(events(client, task_id, "Submitted")) == 1, "a submission landed while IPFS was down")
                time.sleep(max(0.0, outage - (time.monotonic() - killed_at)))
                facts["lock_left"] = (ipfs.repo / devnet.REPO_LOCK).exists()
                ipfs.restart(tmp / "ipfs-restart.log")
                facts["down_s"] = round(time.monotonic() - killed_at, 1)
                wait_settled(client, task_id, timeout=150, alive=alive)
                t.join()
                v.join()
                facts["trainer_retries"] = seen.count("concord.trainer", api)
                facts["validator_retries"] = seen.count("concord.validator", api)
            subs = sorted((e.round, e.trainer) for e in events(client, task_id, "Submitted"))
            paid = sorted((e.round, e.trainer) for e in events(client, task_id, "SubmissionRewarded"))
            want = sorted([(0, sdk_trainer), (0, node_trainer)])
            expect(subs == want, f"submissions {subs}, want {want}")
            expect(paid == want, f"rewards {paid}, want {want}")
            verdicts = vstore.load_verdicts(vctx.task_dir(tmp / "validator", task_id))
            expect(len(verdicts) == 2 and all(x.accepted for x in verdicts), f"verdicts {verdicts}")
            facts["summary"] = (
                f"IPFS down {facts['down_s']}s (lock left: {facts['lock_left']}); trainer logged it "
                f"{facts['trainer_retries']}x, validator {facts['validator_retries']}x; "
                "both submissions accepted and paid once"
            )
            return task_id, facts["honest"]
        finally:
            nodes.close()

    return _run("IPFS daemon SIGKILLed mid-round", client, body)


# ----------------------------------------------------------------------------- 4. Anvil frozen

SELECTORS = ("submit", "commit", "reveal")


def drill_anvil_frozen(
    client: ChainClient, anvil: procs.Daemon, ipfs_api: str, tmp: Path, freeze: float = 5.0
) -> DrillResult:
    """Anvil stopped with SIGSTOP for ``freeze`` seconds, from the moment a trainer process has its
    files in IPFS (so its submit runs into the freeze) while a validator thread follows the round:
    nobody crashes, every transaction is sent once (one submit, one commit, one reveal; each
    sender's nonces used once, in order)."""

    def body(facts: dict) -> tuple[int, list[str]]:
        nodes = Nodes()
        frozen = False
        try:
            task_id = facts["task_id"] = publish(client, ipfs_api, tmp, 1, min_validators=1)
            trainer = enrol(client, VICTIM, Role.TRAINER, STAKE, task_id)
            validator = enrol(client, VAL_A, Role.VALIDATOR, STAKE, task_id)
            facts["honest"] = [trainer, validator]
            first_block = client.rpc.block_number() + 1
            v = validator_thread(nodes, client, ipfs_api, tmp, task_id, VAL_A, "validator")
            argv = node_argv("concord.client.trainer", client, ipfs_api, tmp, task_id, VICTIM, "trainer", 1)
            t = nodes.process(pausing(argv, 1), name="trainer")
            wait_for("the trainer to be uploading", lambda: t.saw("drill_pause"), alive=any_failed(t, v))
            os.kill(anvil.pid, signal.SIGSTOP)
            frozen = True
            time.sleep(freeze)
            os.kill(anvil.pid, signal.SIGCONT)
            frozen = False
            resumed = time.time()
            expect(t.proc.poll() is None or t.proc.returncode == 0, f"trainer died during the freeze: {t.failed()}")
            expect(not v.errors, f"validator failed during the freeze: {v.failed()}")
            wait_settled(client, task_id, timeout=120, alive=any_failed(t, v))
            expect(t.finish() == 0, f"trainer exited with {t.proc.returncode}")
            v.join()
            submitted_at = datetime.fromisoformat(t.first("submitted")["ts"]).timestamp()
            facts["submit_after_thaw_s"] = round(submitted_at - resumed, 2)  # > 0: its submit waited out the freeze
            sel = {client.concord.contract.function(n).selector.hex(): n for n in SELECTORS}
            sent = _tx_nonces(client, first_block)
            calls: dict[str, Counter] = {}
            for who, addr in (("trainer", trainer), ("validator", validator)):
                txs = sent.get(addr.lower(), [])
                nonces = [n for n, _ in txs]
                expect(
                    nonces == list(range(nonces[0], nonces[0] + len(nonces))) if nonces else False,
                    f"{who} nonces {nonces}: reused or skipped",
                )
                calls[who] = Counter(sel[s] for _, s in txs if s in sel)
            facts["calls"] = {k: dict(c) for k, c in calls.items()}
            expect(calls["trainer"] == Counter(submit=1), f"trainer sent {dict(calls['trainer'])}")
            expect(calls["validator"] == Counter(commit=1, reveal=1), f"validator sent {dict(calls['validator'])}")
            facts["rewarded"] = [(e.round, e.trainer) for e in events(client, task_id, "SubmissionRewarded")]
            expect(facts["rewarded"] == [(0, trainer)], f"rewards {facts['rewarded']}")
            facts["summary"] = (
                f"anvil frozen {freeze:g}s mid-upload; one submit, one commit, one reveal, nonces in order, paid once"
            )
            return task_id, facts["honest"]
        finally:
            if frozen:
                os.kill(anvil.pid, signal.SIGCONT)
            nodes.close()

    return _run("anvil frozen (SIGSTOP)", client, body)


# ----------------------------------------------------------------------------- 5. a revert reported by name


def drill_revert_named_by_cli(client: ChainClient, ipfs_api: str, tmp: Path) -> DrillResult:
    """A key that holds no DevToken: `concord trainer run` refuses before any transaction, naming --stake,
    both amounts and the command that funds it; `concord task close` by that key (not the initiator)
    reverts, and the CLI prints the contract's custom error by name (NotInitiator) with its fix. Both exit
    1, changing nothing (issue 25: a stake the wallet cannot pay never reaches the chain)."""

    def body(facts: dict) -> tuple[int, list[str]]:
        task_id = facts["task_id"] = publish(client, ipfs_api, tmp, 1, min_validators=1)
        spare = client.signer(keys.devnet_account(SPARE))
        keep = client.signer(keys.devnet_account(INITIATOR))
        held = client.token.balance_of(spare.address)
        expect(client.concord.node_info(spare.address).role == Role.NONE, f"account {SPARE} is registered already")
        if held:
            client.token.transfer(spare, keep.address, held)
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONCORD_")} | {"COLUMNS": "240"}
        try:
            before = (client.concord.totals(), client.concord.node_info(spare.address))
            nonce = client.rpc.call("eth_getTransactionCount", spare.address, "latest")
            argv = node_argv("concord.client.trainer", client, ipfs_api, tmp, task_id, SPARE, "spare", 1)
            argv = [argv[0], "-m", "concord.client.cli", "trainer", *argv[3:]]  # `concord trainer run ...`
            argv.remove("--json-logs")  # what a person sees
            done = subprocess.run(argv, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, env=env)
            out = done.stdout + done.stderr
            facts["exit_code"] = done.returncode
            facts["refused"] = m.group(0) if (m := re.search(r"--stake: staking [^\n]*", out)) else None
            expect(done.returncode == 1, f"trainer run: exit code {done.returncode}: {out[-400:]}")
            expect(isinstance(facts["refused"], str), f"trainer run: no --stake refusal: {out[-400:]}")
            expect("concord devnet fund" in out, f"trainer run: no fix: {out[-400:]}")
            sent = client.rpc.call("eth_getTransactionCount", spare.address, "latest") != nonce
            expect(not sent, "trainer run: a transaction was sent")
            argv = [argv[0], "-m", "concord.client.cli", "task", "close", "--task", str(task_id)]
            argv += ["--rpc-url", client.rpc.url, "--deployment", str(client.deployment.save(tmp / "revert-dep.json"))]
            argv += ["--ipfs-api", ipfs_api, "--devnet-account", str(SPARE)]
            done = subprocess.run(argv, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, env=env)
            out = done.stdout + done.stderr
            facts["close_exit_code"] = done.returncode
            facts["printed"] = (
                m.group(0) if (m := re.search(r"NotInitiator\([^)]*\)[^\n]*", out)) else out.strip().splitlines()[-1:]
            )
            expect(done.returncode == 1, f"task close: exit code {done.returncode}: {out[-400:]}")
            expect(isinstance(facts["printed"], str), f"task close: no error name in the output: {out[-400:]}")
            expect((client.concord.totals(), client.concord.node_info(spare.address)) == before, "state changed")
        finally:
            if held:
                client.token.transfer(keep, spare.address, held)
        facts["summary"] = f"CLI exited 1 printing {facts['printed'][:60]}"
        return task_id, []

    return _run("revert reported by name", client, body)


# ----------------------------------------------------------------------------- 6-7. availability (issue 10)

HONEST_2 = 4  # a second honest trainer for the availability drills (accounts 6-9 are taken)


def verdict_times(
    folders: Iterable[Path], task_id: int, since: float, until: Callable[[], bool], timeout: float
) -> dict[tuple[str, int], float]:
    """(validator folder name, submission index) -> seconds after ``since`` (monotonic) at which the
    verdict file appeared, polled until ``until()`` or ``timeout``."""
    from concord.validator import context as vctx

    seen: dict[tuple[str, int], float] = {}
    end = time.monotonic() + timeout
    while time.monotonic() < end and not until():
        for folder in folders:
            for path in (vctx.task_dir(folder, task_id) / "verdicts").glob("r*-i*.json"):
                key = (folder.name, int(path.stem.split("-i")[1]))
                seen.setdefault(key, round(time.monotonic() - since, 2))
        time.sleep(0.05)
    return seen


def settled_outcome(client: ChainClient, task_id: int, cheater: str, honest_trainers: list[str], facts: dict) -> None:
    """Round 0 settled, not void; ``cheater`` rejected and slashed, every honest trainer paid once."""
    (fin,) = [e for e in events(client, task_id, "RoundFinalized") if e.round == 0]
    expect(not fin.is_void, "round 0 went void")
    rejected = list(events(client, task_id, "SubmissionRejected"))
    facts["slashed"] = {e.trainer: e.slashed for e in rejected}
    expect([e.trainer for e in rejected] == [cheater], f"rejected {[e.trainer for e in rejected]}, want the cheater")
    expect(rejected[0].slashed > 0, "the cheater was not slashed")
    paid = sorted(e.trainer for e in events(client, task_id, "SubmissionRewarded"))
    expect(paid == sorted(honest_trainers), f"paid {paid}, want the honest trainers {sorted(honest_trainers)}")


def drill_withheld_leaf(client: ChainClient, ipfs_api: str, tmp: Path) -> DrillResult:
    """A cheater uploads its delta shard as a file of two leaves and withholds the second
    (scripts.adversaries.trainer_cheats `withheld_leaf`); the validator fetches it block by block:
    the missing leaf is a clean timeout naming that leaf, the IPFS daemon stays up, the cheater is
    rejected and slashed, the honest trainer paid, the round settles (not void). One validator: two
    in one process raced each other's finalize once (a TxReverted without a reason, outside this
    drill's subject); `concord bench attacks` plays the same cheat against three validator processes."""
    from concord.validator import context as vctx
    from concord.validator import store as vstore
    from scripts.adversaries import trainer_cheats as cheats

    def body(facts: dict) -> tuple[int, list[str]]:
        nodes = Nodes()
        try:
            task_id = facts["task_id"] = publish(client, ipfs_api, tmp, 1, min_validators=1)
            honest = enrol(client, PEER, Role.TRAINER, STAKE, task_id)
            cheater = enrol(client, VICTIM, Role.TRAINER, STAKE, task_id)
            vals = [enrol(client, VAL_A, Role.VALIDATOR, STAKE, task_id)]
            facts["honest"] = [honest, *vals]
            _, submit_honest_ = submit_honest(client, ipfs_api, tmp, task_id, PEER, 0)
            _, submit_cheat = submit_with(
                client, ipfs_api, tmp, task_id, VICTIM, 0, lambda store, b: cheats.withheld_leaf(store, b).digest
            )
            threads = [
                validator_thread(nodes, client, ipfs_api, tmp, task_id, account, name)
                for account, name in ((VAL_A, "val-a"),)
            ]
            submit_cheat()
            submit_honest_()
            wait_settled(client, task_id, timeout=180, alive=any_failed(*threads))
            for t in threads:
                t.join()
            settled_outcome(client, task_id, cheater, [honest], facts)
            for name in ("val-a",):
                verdicts = {x.index: x for x in vstore.load_verdicts(vctx.task_dir(tmp / name, task_id))}
                sub = next(e for e in events(client, task_id, "Submitted") if e.trainer == cheater)
                bad = verdicts[sub.index]
                expect(not bad.accepted and bad.failed_check == "fetch", f"{name}: cheater's verdict {bad}")
                doc = json.loads(
                    vstore.evidence_path(vctx.task_dir(tmp / name, task_id), bad.evidence_digest).read_text()
                )
                facts[f"{name}_evidence"] = doc["detail"][:200]
                expect("not found within" in doc["detail"], f"{name}: evidence {doc['detail'][:200]}")
            Store(ipfs_api, None, timeout=5.0, retries=1).probe()  # the daemon still answers
            facts["summary"] = (
                "leaf withheld: the validator rejected it (fetch: block not found within the "
                "timeout), daemon up, cheater slashed, honest trainer paid, round not void"
            )
            return task_id, facts["honest"]
        finally:
            nodes.close()

    return _run("withheld leaf", client, body)


class DripProxy:
    """A stand-in IPFS API on 127.0.0.1 (lab only) in front of a real daemon: every request passes through
    byte for byte, except a block/get of a CID in ``slow``: that block is fetched whole from the daemon
    and sent on ``drip_bytes`` at a time, one piece every ``every_s`` seconds, so each read answers well
    within any read timeout and the block never arrives within a deadline (a slow provider); and a
    block/get of a CID in ``held``: answered whole after that many seconds (content late, yet in time)."""

    def __init__(self, upstream_url: str, drip_bytes: int = 16, every_s: float = 0.2) -> None:
        import socketserver
        import urllib.parse

        up = urllib.parse.urlsplit(upstream_url)
        self.upstream = (up.hostname, up.port)
        self.drip_bytes, self.every_s = drip_bytes, every_s
        self.slow: set[str] = set()
        self.dripped: Counter = Counter()  # CID -> block/get requests dripped
        self.held: dict[str, float] = {}  # CID -> seconds its block/get is held, then answered whole (late, not lost)
        proxy = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                proxy._serve(self.request)

        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="drip-proxy", daemon=True)
        self._thread.start()

    @property
    def api(self) -> str:
        return f"/ip4/127.0.0.1/tcp/{self.port}/http"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _serve(self, sock) -> None:
        """Answer block/gets one by one on a kept-alive connection (the store's block reads); the first
        other request is piped through to the daemon with whatever follows it on the connection."""
        import urllib.parse

        from concord.client.content.manifest import ManifestError, canonical_cid

        buf = b""
        while True:
            while b"\r\n\r\n" not in buf:
                chunk = sock.recv(65536)
                if not chunk:
                    return
                buf += chunk
            head, buf = buf.split(b"\r\n\r\n", 1)
            lines = head.decode("latin-1").split("\r\n")
            method, target = lines[0].split(" ")[:2]
            url = urllib.parse.urlsplit(target)
            length = next((int(x.split(":", 1)[1]) for x in lines[1:] if x.lower().startswith("content-length:")), 0)
            chunked = any(x.lower().startswith("transfer-encoding:") for x in lines[1:])
            if not url.path.endswith("/block/get") or length or chunked:
                self._pipe(sock, head + b"\r\n\r\n" + buf)
                return
            arg = (urllib.parse.parse_qs(url.query).get("arg") or [""])[0]
            try:
                cid = canonical_cid(arg)
            except ManifestError:
                cid = ""
            if not self._answer(sock, method, target, cid in self.slow, cid):
                return

    def _pipe(self, sock, head: bytes) -> None:
        import socket

        up = socket.create_connection(self.upstream)

        def copy(src, dst) -> None:
            try:
                while data := src.recv(65536):
                    dst.sendall(data)
            except OSError:
                pass
            finally:
                try:
                    dst.shutdown(socket.SHUT_WR)
                except OSError:
                    pass

        up.sendall(head)
        back = threading.Thread(target=copy, args=(up, sock), daemon=True)
        back.start()
        copy(sock, up)
        back.join(timeout=600)
        up.close()

    def _answer(self, sock, method: str, target: str, slow: bool, cid: str) -> bool:
        """One block/get answered from the daemon's answer, dripped when ``slow``; False once the client left."""
        import requests

        if slow:
            self.dripped[cid] += 1
        resp = requests.request(method, f"http://{self.upstream[0]}:{self.upstream[1]}{target}", timeout=60)
        time.sleep(self.held.get(cid, 0.0))
        body = resp.content
        status = "200 OK" if resp.status_code == 200 else f"{resp.status_code} Error"
        kind = resp.headers.get("Content-Type", "application/octet-stream")
        try:
            sock.sendall(f"HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {len(body)}\r\n\r\n".encode())
            if not slow:
                sock.sendall(body)
                return True
            for i in range(0, len(body), self.drip_bytes):
                time.sleep(self.every_s)
                sock.sendall(body[i : i + self.drip_bytes])
        except OSError:
            return False  # the validator gave up at its deadline
        return True


def proxied_validator(
    nodes: Nodes, client: ChainClient, proxy: DripProxy, tmp: Path, task_id: int
) -> tuple[float, NodeThread]:
    """Validator A behind ``proxy`` (caches warm, as a node that ran before), started in a thread of ``nodes``;
    (its fetch deadline per submission, the thread)."""
    from concord.client.content.submission import submission_deadline_s

    cfg = node_cfg(client, proxy.api, tmp, task_id, VAL_A, "validator", "validator")
    warm_caches(client, proxy.api, tmp, task_id, VAL_A, "validator", "validator")
    deadline = submission_deadline_s(load_task_context(connect_node(cfg), task_id).spec.limits, cfg.ipfs_timeout)
    return deadline, validator_thread(nodes, client, proxy.api, tmp, task_id, VAL_A, "validator")


def drill_slow_provider(client: ChainClient, ipfs_api: str, tmp: Path) -> DrillResult:
    """Three trainers submit; the first one's proofs and delta blocks reach the validator through a
    DripProxy (its IPFS API) a few bytes at a time, as from a provider that answers each read just in
    time and never finishes. The validator fetches the round's submissions concurrently: the slow one
    is rejected (fetch: deadline passed) within its deadline, the two honest ones are verified and
    accepted before it, the slow trainer is slashed, the honest ones paid, the round not void."""
    from concord.client.content.submission import put_submission
    from concord.validator import context as vctx
    from concord.validator import store as vstore

    def body(facts: dict) -> tuple[int, list[str]]:
        nodes = Nodes()
        proxy = DripProxy(f"http://127.0.0.1:{_api_port(ipfs_api)}")
        try:
            task_id = facts["task_id"] = publish(client, ipfs_api, tmp, 1, min_validators=1)
            slow = enrol(client, VICTIM, Role.TRAINER, STAKE, task_id)
            honest = [enrol(client, a, Role.TRAINER, STAKE, task_id) for a in (PEER, HONEST_2)]
            validator = enrol(client, VAL_A, Role.VALIDATOR, STAKE, task_id)
            facts["honest"] = honest + [validator]
            slow_cids: set[str] = set()

            def slow_upload(store: Store, bundle) -> str:
                digest, manifest = put_submission(store, bundle)
                slow_cids.update([manifest.proofs.cid] + [ref.cid for ref in manifest.delta])
                return digest

            _, submit_slow = submit_with(client, ipfs_api, tmp, task_id, VICTIM, 0, slow_upload)
            submits = [submit_honest(client, ipfs_api, tmp, task_id, a, 0)[1] for a in (PEER, HONEST_2)]
            proxy.slow |= slow_cids
            deadline, v = proxied_validator(nodes, client, proxy, tmp, task_id)
            facts["deadline_s"] = round(deadline, 2)
            started = time.monotonic()
            submit_slow()  # first: the honest ones must not wait behind it
            for submit in submits:
                submit()
            times = verdict_times(
                [tmp / "validator"],
                task_id,
                started,
                lambda: settled(client, task_id),
                timeout=180,
            )
            expect(settled(client, task_id), "round 0 did not settle")
            v.join()
            subs = {e.trainer: e.index for e in events(client, task_id, "Submitted")}
            facts["slow_verdict_s"] = times.get(("validator", subs[slow]))
            facts["honest_verdict_s"] = [times.get(("validator", subs[h])) for h in honest]
            facts["dripped"] = sum(proxy.dripped.values())
            verdicts = {x.index: x for x in vstore.load_verdicts(vctx.task_dir(tmp / "validator", task_id))}
            bad = verdicts[subs[slow]]
            expect(not bad.accepted and bad.failed_check == "fetch", f"slow provider's verdict {bad}")
            doc = json.loads(
                vstore.evidence_path(vctx.task_dir(tmp / "validator", task_id), bad.evidence_digest).read_text()
            )
            facts["evidence"] = doc["detail"][:200]
            expect("deadline" in doc["detail"], f"evidence {doc['detail'][:200]}")
            expect(facts["dripped"] > 0, "the proxy never dripped a block")
            expect(all(verdicts[subs[h]].accepted for h in honest), "an honest submission was not accepted")
            expect(
                facts["slow_verdict_s"] is not None and facts["slow_verdict_s"] <= deadline + 5,
                f"slow submission judged after {facts['slow_verdict_s']}s, deadline {deadline:.1f}s",
            )
            settled_outcome(client, task_id, slow, honest, facts)
            facts["summary"] = (
                f"slow provider rejected {facts['slow_verdict_s']}s after submitting (deadline "
                f"{facts['deadline_s']}s), honest verdicts at {facts['honest_verdict_s']}s; "
                "slashed, honest paid, round not void"
            )
            return task_id, facts["honest"]
        finally:
            nodes.close()
            proxy.close()

    return _run("slow provider", client, body)


def drill_slow_state_providers(client: ChainClient, ipfs_api: str, tmp: Path) -> DrillResult:
    """Issue 21: three trainers submit; two of them serve their inner states through a DripProxy a few bytes
    at a time (providers that answer each read just in time and never finish). The validator (sampled mode)
    fetches every submission's states concurrently once the check seed is fixed, so the two slow ones cost
    one fetch deadline together, not one each: it commits with a verdict on every submission well before the
    commit deadline (the two slow ones rejected at `fetch`, the honest one accepted), the round settles not
    void, the slow trainers are slashed and the honest one paid."""
    from concord.client.content.submission import put_submission
    from concord.validator import context as vctx
    from concord.validator import store as vstore

    def body(facts: dict) -> tuple[int, list[str]]:
        nodes = Nodes()
        proxy = DripProxy(f"http://127.0.0.1:{_api_port(ipfs_api)}")
        try:
            task_id = facts["task_id"] = publish(client, ipfs_api, tmp, 1, min_validators=1)
            slow = [enrol(client, a, Role.TRAINER, STAKE, task_id) for a in (VICTIM, PEER)]
            honest = enrol(client, HONEST_2, Role.TRAINER, STAKE, task_id)
            validator = enrol(client, VAL_A, Role.VALIDATOR, STAKE, task_id)
            facts["honest"] = [honest, validator]
            slow_cids: set[str] = set()

            def slow_upload(store: Store, bundle) -> str:
                digest, manifest = put_submission(store, bundle)
                slow_cids.update(ref.cid for ref in manifest.states)
                return digest

            submits = [submit_with(client, ipfs_api, tmp, task_id, a, 0, slow_upload)[1] for a in (VICTIM, PEER)]
            submits.append(submit_honest(client, ipfs_api, tmp, task_id, HONEST_2, 0)[1])
            proxy.slow |= slow_cids
            deadline, v = proxied_validator(nodes, client, proxy, tmp, task_id)
            facts["deadline_s"] = round(deadline, 2)
            wait_for(
                "the validator's seed share",
                lambda: client.concord.seed_info(task_id, 0).shares_committed != 0,
                timeout=60,
                alive=any_failed(v),
            )
            for submit in submits:
                submit()
            started = time.monotonic()
            wait_for(
                "the validator's commit",
                lambda: client.concord.round_info(task_id, 0).commits >= 1,
                timeout=4 * deadline + 60,
                alive=any_failed(v),
            )
            facts["commit_s"] = round(time.monotonic() - started, 2)
            wait_settled(client, task_id, 120, any_failed(v))
            v.join()
            subs = {e.trainer: e.index for e in events(client, task_id, "Submitted")}
            facts["dripped"] = sum(proxy.dripped.values())
            verdicts = {x.index: x for x in vstore.load_verdicts(vctx.task_dir(tmp / "validator", task_id))}
            expect(len(verdicts) == 3, f"verdicts on {sorted(verdicts)}, want all three")
            for trainer in slow:
                bad = verdicts[subs[trainer]]
                expect(not bad.accepted and bad.failed_check == "fetch", f"slow state provider's verdict {bad}")
            expect(verdicts[subs[honest]].accepted, "the honest submission was not accepted")
            expect(facts["dripped"] > 0, "the proxy never dripped a block")
            expect(
                facts["commit_s"] <= 2 * deadline + 15,
                f"committed {facts['commit_s']}s after the submissions; two slow providers (deadline "
                f"{deadline:.1f}s each) must cost about one deadline together",
            )
            (fin,) = [e for e in events(client, task_id, "RoundFinalized") if e.round == 0]
            expect(not fin.is_void, "round 0 went void")
            rejected = sorted(e.trainer for e in events(client, task_id, "SubmissionRejected"))
            expect(rejected == sorted(slow), f"rejected {rejected}, want the two slow state providers")
            paid = [e.trainer for e in events(client, task_id, "SubmissionRewarded")]
            expect(paid == [honest], f"paid {paid}, want the honest trainer")
            facts["summary"] = (
                f"two slow state providers rejected, committed {facts['commit_s']}s after the submissions "
                f"(fetch deadline {facts['deadline_s']}s each); honest paid, round not void"
            )
            return task_id, [honest, validator]
        finally:
            nodes.close()
            proxy.close()

    return _run("slow state providers", client, body)


def _api_port(ipfs_api: str) -> int:
    """The TCP port of a /ip4/127.0.0.1/tcp/P/http multiaddr."""
    parts = ipfs_api.split("/")
    return int(parts[parts.index("tcp") + 1])


# ----------------------------------------------------------------------------- the drills' trainer

log = logging.getLogger("concord.drills")


@dataclass(frozen=True)
class _PausedManifest:
    """A store view that puts files at once and sleeps ``seconds`` before putting a manifest."""

    store: Store
    seconds: float

    def put_file(self, src, name=None, pin: bool = True):
        return self.store.put_file(src, name, pin=pin)

    def put_manifest(self, data: bytes, pin: bool = True) -> str:
        digest = digest_of(data)
        log.warning(
            "fault drill: pausing %.1fs before uploading manifest %s",
            self.seconds,
            digest,
            extra=fields(event="drill_pause", digest=digest, seconds=self.seconds),
        )
        time.sleep(self.seconds)
        return self.store.put_manifest(data, pin=pin)


class PauseBeforeManifest(trainer.TrainerHooks):
    """The honest trainer, except that its upload sleeps ``seconds`` after a submission's files and
    before its manifest (logging `drill_pause` with the manifest's digest): a known point of the upload."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def upload(self, node: Node, ctx: TaskContext, bundle: Bundle) -> str:
        digest, _ = put_submission(_PausedManifest(node.store, self.seconds), bundle)
        return digest


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m scripts.drills run --pause-before-manifest SECONDS <concord trainer run flags>`."""
    return run_lab_node(
        argv,
        "python -m scripts.drills",
        "the fault drills' trainer node",
        "a trainer node (the flags of `concord trainer run`) that pauses mid-upload",
        trainer.add_run_args,
        "--pause-before-manifest",
        lambda args: trainer.run_command(args, PauseBeforeManifest(args.pause_before_manifest)),
        type=float,
        metavar="SECONDS",
        help="sleep this long between a submission's files and its manifest",
    )


if __name__ == "__main__":
    sys.exit(main())

"""SIGTERM and SIGHUP stop every long-running command as Ctrl-C does: nothing it started is left.

Each command runs as a user runs it (`concord ...` in a subprocess) with a marker in its
environment that every process it starts inherits (anvil, js-ipfs, node processes and their
children alike, whoever their parent is by then); once the command's children are up it gets
the signal, by PID, as `timeout` or `kill` would send it, and must exit with no marked process
left. Whatever the outcome, the test kills every marked process on its way out.

- The mechanism (client.runtime.procs.no_orphans), in-process: a signal unwinds and what was started is
  stopped; a signal during a start waits until the child is on record; disowned daemons stay.
- `concord devnet up` stopped while starting: no half devnet, no state file; once complete it
  still leaves the devnet running for `concord devnet down` (the one command that does, on purpose).
- `concord bench round` (the finding: SIGTERM left its Anvil orphaned); `concord bench attacks` with
  one scenario. (`concord demo` with its 6 nodes running, SIGHUP, SIGINT and SIGTERM: tests/test_demo.py.)
- `concord trainer run` (SIGTERM) and `concord validator run` (SIGHUP): they finish their step and exit.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from own_devnet import port_flags

from concord.client import chain
from concord.client.chain import keys
from concord.client.content.store import Store
from concord.client.initiator import publish_task
from concord.client.runtime import procs
from scripts import REPO_ROOT, devnet
from scripts.demo import NODES_FILE, demo_task_file

TASK_FILE = Path(__file__).parent / "data" / "network_task.toml"
MARK_VAR = "SIGNAL_TEST_MARK"  # not CONCORD_*: fault drills strip those from their nodes' environment
STARTUP_S = 150.0  # CPU-starved CI: the nodes import torch


def marked(mark: str) -> dict[int, str]:
    """Live processes started with our marker in their environment: pid -> command name."""
    needle = f"{MARK_VAR}={mark}".encode()
    found = {}
    for pid in procs.live_processes():
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
            name = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            continue  # gone meanwhile, or not ours to read
        if needle in environ.split(b"\0"):
            found[pid] = name
    return found


@dataclass
class Command:
    proc: subprocess.Popen
    mark: str
    out: Path

    def output(self) -> str:
        return self.out.read_text(errors="replace")

    def wait_for(self, what: str, pred: Callable[[], bool], timeout: float = STARTUP_S) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pred():
                return
            assert self.proc.poll() is None, (
                f"exited with {self.proc.returncode} before {what}: {self.output()[-2000:]}"
            )
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}: {self.output()[-2000:]}")

    def signal_and_wait(self, sig: signal.Signals, timeout: float = 90.0) -> int:
        """Send ``sig`` to the command alone (its children are in their own sessions anyway)."""
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout)

    def left_behind(self, grace: float = 5.0) -> dict[int, str]:
        """What is still running of the command's processes after ``grace`` (a SIGKILLed group member
        may take a moment to die)."""
        deadline = time.monotonic() + grace
        while (left := marked(self.mark)) and time.monotonic() < deadline:
            time.sleep(0.1)
        return left


@contextmanager
def launched(name: str, argv: list[str], tmp_path: Path, module: str = "concord.client.cli") -> Iterator[Command]:
    """Run ``concord argv`` (or ``python -m module argv``) with a fresh marker; on the way out kill whatever
    carries the marker."""
    mark = uuid.uuid4().hex
    out = tmp_path / f"{name}.out"
    env = {**os.environ, MARK_VAR: mark, "PYTHONUNBUFFERED": "1"}
    with open(out, "wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", module, *argv],
            cwd=REPO_ROOT,
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield Command(proc, mark, out)
    finally:
        for pid in [proc.pid, *marked(mark)]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait(timeout=30)


def nodes_listed(path: Path, count: int) -> Callable[[], bool]:
    """True once ``path`` (a demo/bench nodes.json) lists ``count`` started nodes, all of them alive."""

    def check() -> bool:
        try:
            listed = [procs.Daemon.from_json(d) for d in json.loads(path.read_text())]
        except (FileNotFoundError, ValueError):
            return False
        return len(listed) >= count and all(procs.is_ours(d) for d in listed)

    return check


def logged(path: Path, event: str) -> Callable[[], bool]:
    """True once the node log at ``path`` has a JSON line with this event (the node is working)."""

    def check() -> bool:
        try:
            return f'"event":"{event}"' in path.read_text(errors="replace")
        except FileNotFoundError:
            return False

    return check


def assert_running(cmd: Command, names: set[str], at_least: int) -> None:
    """The command's children are up: at least ``at_least`` marked processes (the command
    included), among them these command names."""
    running = marked(cmd.mark)
    assert names <= set(running.values()) and len(running) >= at_least, running


def assert_stopped(cmd: Command, rc: int, expected_rc: tuple[int, ...] = (130,)) -> None:
    """Nothing the command started is left (the point), and it exited as after Ctrl-C."""
    assert cmd.left_behind() == {}, f"exit status {rc}; {cmd.output()[-3000:]}"
    assert rc in expected_rc, cmd.output()[-3000:]


# ----------------------------------------------------------------------------- the mechanism


def sleeper(tmp_path: Path, mark: str) -> procs.Daemon:
    return procs.start("sleeper", ["sleep", "60"], tmp_path / "sleeper.log", env={MARK_VAR: mark})[0]


def test_sigterm_unwinds_and_stops_what_was_started(tmp_path: Path) -> None:
    mark = uuid.uuid4().hex
    try:
        with pytest.raises(procs.Terminated, match="SIGTERM"):
            with procs.no_orphans(timeout=2.0):
                sleeper(tmp_path, mark)
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(10)  # the handler raises here
        assert marked(mark) == {}
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # handlers restored
    finally:
        for pid in marked(mark):
            os.kill(pid, signal.SIGKILL)


def test_a_signal_during_a_start_waits_until_the_child_is_on_record(tmp_path: Path, monkeypatch) -> None:
    real_popen = subprocess.Popen

    def popen_then_sighup(*args, **kwargs) -> subprocess.Popen:
        child = real_popen(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGHUP)  # arrives before start() has recorded the child
        time.sleep(0.2)
        return child

    mark = uuid.uuid4().hex
    try:
        with pytest.raises(procs.Terminated, match="SIGHUP"):
            with procs.no_orphans(timeout=2.0):
                monkeypatch.setattr(subprocess, "Popen", popen_then_sighup)
                sleeper(tmp_path, mark)
        monkeypatch.undo()
        assert marked(mark) == {}
    finally:
        for pid in marked(mark):
            os.kill(pid, signal.SIGKILL)


def test_a_disowned_daemon_outlives_no_orphans(tmp_path: Path) -> None:
    mark = uuid.uuid4().hex
    try:
        with procs.no_orphans(timeout=2.0):
            kept = sleeper(tmp_path, mark)
            dropped = sleeper(tmp_path, mark)
            procs.disown(kept)
        assert procs.is_ours(kept) and not procs.is_ours(dropped)
        assert procs.stop(kept, timeout=2.0)
    finally:
        for pid in marked(mark):
            os.kill(pid, signal.SIGKILL)


# ----------------------------------------------------------------------------- devnet


@pytest.mark.e2e
def test_devnet_up_stopped_while_starting_leaves_no_half_devnet(tmp_path: Path) -> None:
    state = tmp_path / "devnet"
    with launched("devnet-up", ["devnet", "up", "--state-dir", str(state), *port_flags()], tmp_path) as cmd:
        # Anvil is up and js-ipfs is starting: half a devnet, the case that must not stay.
        cmd.wait_for("anvil up, js-ipfs starting", lambda: (state / "ipfs.log").exists(), timeout=60)
        assert_running(cmd, {"anvil"}, 2)
        assert_stopped(cmd, cmd.signal_and_wait(signal.SIGTERM))
        assert not devnet.state_file(state).exists()
        assert "interrupted (SIGTERM)" in cmd.output()


@pytest.mark.e2e
def test_devnet_up_still_leaves_a_complete_devnet_running_for_devnet_down(tmp_path: Path) -> None:
    state = tmp_path / "devnet"
    with launched("devnet-up", ["devnet", "up", "--state-dir", str(state), *port_flags()], tmp_path) as cmd:
        assert cmd.proc.wait(timeout=120) == 0, cmd.output()
        daemons = devnet.load(state).daemon_list()
        assert {d.name for d in daemons} == {"anvil", "ipfs"} and all(procs.is_ours(d) for d in daemons)
        down = subprocess.run(
            [sys.executable, "-m", "concord.client.cli", "devnet", "down", "--state-dir", str(state)],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert down.returncode == 0, down.stderr
        assert cmd.left_behind() == {}


# ----------------------------------------------------------------------------- demo and benches


@pytest.mark.slow
@pytest.mark.e2e
def test_bench_round_stops_its_devnet_and_nodes_on_sigterm(tmp_path: Path) -> None:
    keep = tmp_path / "keep"
    argv = [
        "bench",
        "round",
        "--rounds",
        "2",
        "--trainers",
        "1",
        "--validators",
        "1",
        "--ipfs-size-mb",
        "0.1",
        "--ipfs-runs",
        "1",
        "--keep",
        str(keep),
    ]
    with launched("bench-round", argv, tmp_path) as cmd:
        cmd.wait_for("the trainer following the rounds", logged(keep / "trainer-0.log", "started"))
        assert_running(cmd, {"anvil"}, 1 + 2 + 2)
        assert_stopped(cmd, cmd.signal_and_wait(signal.SIGTERM))
        assert not devnet.state_file(keep / "devnet").exists()
        assert "interrupted (SIGTERM)" in cmd.output()


@pytest.mark.slow
@pytest.mark.e2e
def test_bench_attacks_stops_its_network_on_sigterm(tmp_path: Path) -> None:
    state = tmp_path / "attacks"
    argv = [
        "bench",
        "attacks",
        "--trainer-cheats",
        "inflated_rewards",
        "--validator-cheats",
        "",
        "--faults",
        "",
        "--state-dir",
        str(state),
    ]
    with launched("bench-attacks", argv, tmp_path) as cmd:
        cmd.wait_for("the trainer network's 6 nodes running", nodes_listed(state / "trainers" / NODES_FILE, 6))
        cmd.wait_for("trainer-1 following the rounds", logged(state / "trainers" / "logs" / "trainer-1.log", "started"))
        assert_running(cmd, {"anvil"}, 1 + 2 + 6)
        assert_stopped(cmd, cmd.signal_and_wait(signal.SIGTERM))
        assert not devnet.state_file(state / "trainers").exists()
        assert "interrupted (SIGTERM)" in cmd.output()


# ----------------------------------------------------------------------------- nodes


@pytest.fixture
def published(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """A devnet of this test (stopped on teardown) with the network task published: (devnet.json, task id)."""
    ports = devnet.Ports(*(procs.free_port() for _ in range(4)))
    net = devnet.up(tmp_path / "devnet", ports)
    try:
        client = chain.connect(net.rpc_url, chain.Deployment.from_json(net.deployment))
        store = Store(net.ipfs_api, None, timeout=30.0)
        task_id = publish_task(
            client, client.signer(keys.devnet_account(0)), store, demo_task_file(TASK_FILE, 3)
        ).task_id
        yield devnet.state_file(Path(net.state_dir)), task_id
    finally:
        devnet.down(tmp_path / "devnet")


@pytest.mark.slow
@pytest.mark.e2e
def test_nodes_finish_their_step_and_exit_on_sigterm_and_sighup(tmp_path: Path, published: tuple[Path, int]) -> None:
    devnet_json, task_id = published

    def node(role: str, account: int) -> list[str]:
        return [
            role,
            "run",
            "--task",
            str(task_id),
            "--devnet",
            str(devnet_json),
            "--devnet-account",
            str(account),
            "--state-dir",
            str(tmp_path / role),
            "--json-logs",
            "--poll-interval",
            "0.1",
        ]

    with (
        launched("trainer", node("trainer", 1), tmp_path) as trainer,
        launched("validator", node("validator", 5), tmp_path) as validator,
    ):
        trainer.wait_for("the trainer to start", logged(trainer.out, "started"))
        validator.wait_for("the validator to start", logged(validator.out, "start"))
        trainer.proc.send_signal(signal.SIGTERM)
        validator.proc.send_signal(signal.SIGHUP)
        # A node finishes its current step (it starts no processes of its own) and exits normally.
        signalled = time.monotonic()
        for cmd, sig in ((trainer, "SIGTERM"), (validator, "SIGHUP")):
            assert_stopped(cmd, cmd.proc.wait(timeout=90), expected_rc=(0,))
            assert f"{sig}: finishing the current step" in cmd.output()
        assert time.monotonic() - signalled <= 10.0  # finished or abandoned its step (STOP_GRACE_S = 3 s)


@pytest.mark.slow
@pytest.mark.e2e
def test_a_node_in_a_long_step_abandons_it_and_exits_0_within_10s_of_sigterm(
    tmp_path: Path, published: tuple[Path, int]
) -> None:
    """Issue 21: the drills' trainer sleeps 120 s between its files and its manifest (a step that outlives any
    grace); SIGTERM there abandons the round in progress after STOP_GRACE_S and the node exits 0 within 10 s."""
    devnet_json, task_id = published
    argv = ["run", "--pause-before-manifest", "120", "--task", str(task_id), "--devnet", str(devnet_json)]
    argv += ["--devnet-account", "2", "--state-dir", str(tmp_path / "t"), "--json-logs", "--poll-interval", "0.1"]
    with launched("trainer", argv, tmp_path, module="scripts.drills") as trainer:
        trainer.wait_for("the trainer's pause mid-upload", logged(trainer.out, "drill_pause"))
        signalled = time.monotonic()
        trainer.proc.send_signal(signal.SIGTERM)
        rc = trainer.proc.wait(timeout=30)
        took = time.monotonic() - signalled
        assert_stopped(trainer, rc, expected_rc=(0,))
        assert took <= 10.0, took
        assert "the round in progress was abandoned" in trainer.output()


def test_a_step_still_running_after_the_grace_is_abandoned_in_the_main_thread() -> None:
    """shutdown_event: the first SIGTERM sets the event and arms a timer; a step still running ``grace_s``
    later gets StepAbandoned (a BaseException: no ``except Exception`` in a step swallows it)."""
    from concord.client.runtime.display import StepAbandoned, disarm_stop_timer, shutdown_event

    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGALRM)}
    try:
        stop = shutdown_event(grace_s=0.3)
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.is_set()
        started = time.monotonic()
        with pytest.raises(StepAbandoned):
            try:
                time.sleep(10)
            except Exception:  # a step's own error handling must not hide it
                pytest.fail("StepAbandoned was caught as an Exception")
        assert 0.2 <= time.monotonic() - started < 5
    finally:
        disarm_stop_timer()
        for s, h in saved.items():
            signal.signal(s, h)

"""Start and stop local daemons (anvil, js-ipfs) by PID, check ports, wait for readiness.

Shared by the devnet and the test fixtures, so both leave nothing running: every daemon
starts as the leader of its own process group, and stopping it signals that group (its
PID), then waits until it is gone. A PID read back from a state file is only signalled
if /proc still shows the start time recorded at launch, so a recycled PID is never hit
(command lines are no help: js-ipfs rewrites its own to "ipfs").

Signals: a command that starts processes runs inside ``no_orphans()``. There SIGTERM and
SIGHUP raise ``Terminated`` (a KeyboardInterrupt) in the main thread, so the same
``finally`` blocks that run on Ctrl-C run on ``timeout``, ``kill`` or a closed terminal; and
on the way out every daemon this process started with ``start`` and neither stopped nor
``disown``-ed is stopped by PID (its children sit in their own sessions, so no signal
sent to the command reaches them: only the command can stop them).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)


class ProcError(Exception):
    """Base for daemon start/stop failures; the message is one line that names the fix."""


class PortBusy(ProcError):
    def __init__(self, port: int, what: str, flag: str) -> None:
        super().__init__(f"port {port} for {what} is busy: stop whatever listens there or pass {flag} with a free port")
        self.port = port
        self.what = what


class MissingBinary(ProcError):
    def __init__(self, name: str, looked: Sequence[Path]) -> None:
        where = ", ".join(str(p) for p in looked)
        super().__init__(f"{name} not found (looked in {where}): run `make deps` (npm ci) first")
        self.name = name


class DaemonDidNotStart(ProcError):
    def __init__(self, what: str, reason: str, log_path: Path) -> None:
        super().__init__(f"{what} did not come up ({reason}); see {log_path}")
        self.what = what
        self.reason = reason
        self.log_path = log_path


@dataclass(frozen=True)
class Daemon:
    """A started daemon: enough to stop it from any process (PID + its kernel start time)."""

    name: str
    pid: int
    start_ticks: int  # /proc/<pid>/stat field 22: tells this process from a recycled PID
    argv: tuple[str, ...]
    log_path: Path

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "pid": self.pid,
            "start_ticks": self.start_ticks,
            "argv": list(self.argv),
            "log": str(self.log_path),
        }

    @staticmethod
    def from_json(obj: Mapping[str, Any]) -> Daemon:
        return Daemon(obj["name"], int(obj["pid"]), int(obj["start_ticks"]), tuple(obj["argv"]), Path(obj["log"]))


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised in the main thread: unwinds like Ctrl-C so every `finally` runs.
    A KeyboardInterrupt, so whatever stops its children on Ctrl-C does so here too."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


# ----------------------------------------------------------------------------- what this process started

UNWIND_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# What signal.signal takes and returns: a function, SIG_DFL/SIG_IGN, or None (set outside Python).
SignalHandler = Callable[[int, FrameType | None], object] | int | signal.Handlers | None

# Daemons this process started and did not stop, kill or disown yet (pid -> Daemon): what
# no_orphans() stops on the way out. Threads start daemons too, hence the lock.
_owned: dict[int, Daemon] = {}
_owned_lock = threading.Lock()
# While _hold > 0 (inside start: Popen, then recording the child) a signal waits in _pending
# and is raised after, so no interruption leaves a child that nobody has on record.
_hold = 0
_pending: int | None = None


def owned() -> list[Daemon]:
    """Daemons this process started and did not stop or disown, oldest first."""
    with _owned_lock:
        return list(_owned.values())


def _forget(daemon: Daemon) -> None:
    with _owned_lock:
        if _owned.get(daemon.pid) == daemon:
            del _owned[daemon.pid]


def disown(*daemons: Daemon) -> None:
    """Hand daemons over to whoever stops them later (``concord devnet up`` -> state file ->
    ``concord devnet down``): no_orphans() leaves them running."""
    for d in daemons:
        _forget(d)


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _on_signal(signum: int, _frame: object) -> None:
    global _pending
    if _hold > 0:
        _pending = signum
        return
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise Terminated(signum)


@contextmanager
def _held() -> Iterator[None]:
    """Our handler holds a signal during the block and raises it at the end."""
    global _hold, _pending
    if not _in_main_thread():
        yield
        return
    _hold += 1
    try:
        yield
    finally:
        _hold -= 1
        if _hold == 0 and _pending is not None:
            signum, _pending = _pending, None
            _on_signal(signum, None)


def _set_handlers(handler: SignalHandler) -> dict[signal.Signals, SignalHandler]:
    return {s: signal.signal(s, handler) for s in UNWIND_SIGNALS}


def _restore(old: dict[signal.Signals, SignalHandler]) -> None:
    for s, h in old.items():
        if h is not None:  # None: a handler set outside Python, which cannot be put back; ours stays
            signal.signal(s, h)


@contextmanager
def signals_unwind() -> Iterator[None]:
    """SIGTERM and SIGHUP raise Terminated, SIGINT KeyboardInterrupt (main thread only; elsewhere a no-op)."""
    if not _in_main_thread():
        yield
        return
    old = _set_handlers(_on_signal)
    try:
        yield
    finally:
        _restore(old)


@contextmanager
def signals_ignored() -> Iterator[None]:
    """Cleanup must finish: a second Ctrl-C or SIGTERM must not leave a node or a daemon running."""
    if not _in_main_thread():
        yield
        return
    old = _set_handlers(signal.SIG_IGN)
    try:
        yield
    finally:
        _restore(old)


def stop_all(daemons: Sequence[Daemon], timeout: float = 10.0) -> list[int]:
    """SIGTERM every daemon's group at once, SIGKILL what is left after ``timeout`` (one grace for
    all, not one each, newest first); returns the PIDs that were still running."""
    running = [d for d in daemons if is_ours(d)]
    for d in running:
        _signal_group(d.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for d in reversed(running):
        stop(d, timeout=max(0.1, deadline - time.monotonic()))
    for d in daemons:
        _forget(d)
    return [d.pid for d in running]


@contextmanager
def no_orphans(timeout: float = 10.0) -> Iterator[None]:
    """Run a command that starts processes: inside, SIGTERM and SIGHUP unwind like Ctrl-C; on the
    way out (return, error or signal) whatever ``start`` started inside the block and nobody
    stopped or disowned is stopped by PID, with further signals ignored until that is done."""
    with _owned_lock:
        before = set(_owned)
    if not _in_main_thread():
        try:
            yield
        finally:
            stop_all([d for d in owned() if d.pid not in before], timeout)
        return
    old = _set_handlers(_on_signal)
    try:
        yield
    finally:
        _set_handlers(signal.SIG_IGN)  # before the old handlers return: no gap for a default SIGTERM
        try:
            left = [d for d in owned() if d.pid not in before]
            if left:
                log.warning("stopping what is still running: %s", ", ".join(f"{d.name} pid {d.pid}" for d in left))
                stop_all(left, timeout)
        finally:
            _restore(old)


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS says is free right now (racy by nature; callers still check on start)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def port_busy(port: int, host: str = "127.0.0.1") -> bool:
    """True when something listens on host:port or the port cannot be bound."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        if s.connect_ex((host, port)) == 0:
            return True
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def wait_ports_free(ports: Sequence[int], timeout: float = 10.0, host: str = "127.0.0.1") -> list[int]:
    """Poll until none of ``ports`` is busy (``port_busy``) or ``timeout`` passes; the ports still busy."""
    deadline = time.monotonic() + timeout
    while True:
        busy = [p for p in ports if port_busy(p, host)]
        if not busy or time.monotonic() >= deadline:
            return busy
        time.sleep(0.05)


def require_free(port: int, what: str, flag: str, host: str = "127.0.0.1") -> None:
    if port_busy(port, host):
        raise PortBusy(port, what, flag)


def find_binary(name: str, candidates: Sequence[Path] = ()) -> Path:
    """First existing executable among the candidates (the lab passes its node_modules), then PATH."""
    looked = list(candidates)
    for path in looked:
        if path.is_file() and os.access(path, os.X_OK):
            return path
    on_path = shutil.which(name)
    if on_path:
        return Path(on_path)
    raise MissingBinary(name, looked)


def start(
    name: str, argv: Sequence[str], log_path: Path, env: Mapping[str, str] | None = None, cwd: Path | None = None
) -> tuple[Daemon, subprocess.Popen[bytes]]:
    """Start ``argv`` detached in its own process group, stdout+stderr to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    full_env = dict(os.environ)
    full_env.update(env or {})
    with open(log_path, "ab") as out, _held():  # a signal waits until the child is on record
        proc = subprocess.Popen(
            list(argv),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=full_env,
            cwd=cwd,
            start_new_session=True,
        )
        daemon = Daemon(name, proc.pid, _start_ticks(proc.pid), tuple(str(a) for a in argv), log_path)
        with _owned_lock:
            _owned[proc.pid] = daemon
    log.info("started %s pid=%d", name, proc.pid)
    return daemon, proc


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/<pid>/stat fields from field 3 (state) on, or None when no such process exists."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return stat.rsplit(")", 1)[1].split()


def live_processes() -> dict[int, list[str]]:
    """Every live (non-zombie) process: pid -> its /proc stat fields from the state on
    (fields[1] is the parent pid, fields[2] the process group). For tests that look for leaks."""
    out = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields is not None and fields[0] != "Z":
                out[int(entry.name)] = fields
    return out


def _state(pid: int) -> str | None:
    fields = _stat_fields(pid)
    return None if fields is None else fields[0]


def _start_ticks(pid: int) -> int:
    fields = _stat_fields(pid)
    return -1 if fields is None else int(fields[19])  # field 22 overall


def alive(pid: int) -> bool:
    """True while pid exists and is not a zombie (a zombie has already stopped)."""
    state = _state(pid)
    return state is not None and state != "Z"


def is_ours(daemon: Daemon) -> bool:
    """True when daemon.pid is alive and is the process we started (not a recycled PID)."""
    return alive(daemon.pid) and _start_ticks(daemon.pid) == daemon.start_ticks


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass  # not our child: its parent (or init) reaps it


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:
        os.kill(pid, sig)


def _exited(pid: int) -> bool:
    """True once ``pid`` has fully exited: reaped, or a zombie whose every thread is gone. A zombie
    thread-group leader may still have threads tearing down that hold its open files (a listening
    socket among them), so a "Z" state alone does not mean its ports are free."""
    state = _state(pid)
    if state is None:
        return True
    if state != "Z":
        return False
    try:
        return len(os.listdir(f"/proc/{pid}/task")) <= 1
    except FileNotFoundError:
        return True


def _group_members(pgid: int) -> list[int]:
    """Processes of process group ``pgid`` that have not fully exited (the leader included)."""
    return [pid for pid, f in _all_processes().items() if int(f[2]) == pgid and not _exited(pid)]


def _all_processes() -> dict[int, list[str]]:
    out = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields is not None:
                out[int(entry.name)] = fields
    return out


def _wait_gone(pid: int, timeout: float, poll: float = 0.05) -> bool:
    """Reap and poll until ``pid`` has fully exited (``_exited``) or ``timeout`` passes; True if it did."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _reap(pid)
        if _exited(pid):
            return True
        time.sleep(poll)
    return False


def _wait_group_gone(pgid: int, timeout: float, poll: float = 0.02) -> bool:
    """Poll until no process of group ``pgid`` is left running (each reaped when it is our child)."""
    deadline = time.monotonic() + timeout
    while True:
        left = _group_members(pgid)
        for pid in left:
            _reap(pid)
        if not left:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(poll)


def _already_gone(daemon: Daemon) -> bool:
    """True, with its PID reaped and its record forgotten, when the daemon is no longer the process we started."""
    if is_ours(daemon):
        return False
    _reap(daemon.pid)
    _forget(daemon)
    return True


def stop(daemon: Daemon, timeout: float = 10.0) -> bool:
    """Stop the daemon's process group: SIGTERM, wait, then SIGKILL. False if it was already gone."""
    if _already_gone(daemon):
        return False
    _signal_group(daemon.pid, signal.SIGTERM)
    if not _wait_gone(daemon.pid, timeout):
        log.warning("%s pid=%d ignored SIGTERM for %.0fs; sending SIGKILL", daemon.name, daemon.pid, timeout)
        _signal_group(daemon.pid, signal.SIGKILL)
        while not _exited(daemon.pid):
            _reap(daemon.pid)
            time.sleep(0.05)
    # Children that outlived the leader (same group) get the same treatment, and are waited for: what
    # `stop` returns from has exited and closed its files (its ports are free).
    _signal_group(daemon.pid, signal.SIGKILL)
    if not _wait_group_gone(daemon.pid, timeout):
        log.warning("%s pid=%d: processes of its group still running after SIGKILL", daemon.name, daemon.pid)
    _forget(daemon)
    log.info("stopped %s pid=%d", daemon.name, daemon.pid)
    return True


def kill(daemon: Daemon, timeout: float = 10.0) -> bool:
    """kill -9 the daemon's process group, no shutdown (as a crash would); False if it was already gone."""
    if _already_gone(daemon):
        return False
    _signal_group(daemon.pid, signal.SIGKILL)
    _wait_group_gone(daemon.pid, timeout)
    _forget(daemon)
    log.info("killed %s pid=%d", daemon.name, daemon.pid)
    return True


def log_tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return ""
    return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:])


def wait_ready(daemon: Daemon, proc: subprocess.Popen[bytes] | None, ready: Callable[[], bool], timeout: float) -> None:
    """Poll ``ready()`` until it holds; fail early if the daemon exits, or at the timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        exited = proc.poll() is not None if proc is not None else not alive(daemon.pid)
        if exited:
            raise DaemonDidNotStart(
                daemon.name, f"exited early: {log_tail(daemon.log_path) or 'no output'}", daemon.log_path
            )
        if ready():
            return
        time.sleep(0.05)
    raise DaemonDidNotStart(daemon.name, f"not ready after {timeout:.0f}s", daemon.log_path)

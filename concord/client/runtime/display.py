"""What a node shows: logs (rich, or one JSON object per line), a live status line with progress bars, shutdown.

setup_logging(json_logs), fields(**kv), Display   logs and the status line
add_update_listener(fn)                           every Display update also goes to fn (a node's metrics)
shutdown_event() -> threading.Event   set on SIGINT/SIGTERM; nodes finish the step they are in and return
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console, RenderableType
    from rich.live import Live
    from rich.progress import Progress, TaskID

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- logging and display

_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


def fields(**kv: Any) -> dict[str, dict[str, Any]]:
    """``extra=`` for a log call: structured fields (become JSON keys with --json-logs)."""
    return {"fields": kv}


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return str(value)


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts, level, logger, msg, plus the record's ``fields``."""

    def format(self, record: logging.LogRecord) -> str:
        obj = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        obj.update({k: _jsonable(v) for k, v in getattr(record, "fields", {}).items()})
        if record.exc_info:
            obj["exc"] = self.formatException(record.exc_info)
        return json.dumps(obj, separators=(",", ":"))


@functools.cache
def _console() -> Console:
    """One rich console on stderr for log lines and the live panel (two would overwrite each other)."""
    from rich.console import Console

    return Console(stderr=True)


LOG_LEVEL_ENV = "CONCORD_LOG_LEVEL"  # `concord --log-level L` sets it; it overrides each command's own level
LOG_LEVELS = ("debug", "info", "warning", "error")


def setup_logging(json_logs: bool, level: int = logging.INFO) -> None:
    """Human logs on stderr (through rich on a terminal, plain lines otherwise), or JSON lines on stdout;
    quiets HTTP client chatter.
    $CONCORD_LOG_LEVEL (one of LOG_LEVELS), when set, replaces ``level``."""
    chosen = os.environ.get(LOG_LEVEL_ENV, "").lower()
    if chosen in LOG_LEVELS:
        level = logging.getLevelNamesMapping()[chosen.upper()]
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    if json_logs:
        handler: logging.Handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(JsonFormatter())
    elif not sys.stderr.isatty():  # a file, a pipe, a journal: one line per record (rich wraps at 80 columns)
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-8s %(message)s", "%H:%M:%S"))
    else:
        from rich.logging import RichHandler

        handler = RichHandler(console=_console(), show_path=False, rich_tracebacks=False, log_time_format="%H:%M:%S")
        handler.setFormatter(logging.Formatter("%(message)s"))
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("urllib3", "httpx", "httpcore", "ipfshttpclient"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


UpdateListener = Callable[[str, Mapping[str, Any]], None]  # (display title, the fields that changed)
_update_listeners: list[UpdateListener] = []


def add_update_listener(listener: UpdateListener) -> None:
    """Every Display's updates (the fields that changed) also go to ``listener``: how a node's metrics
    follow its round and phase without the node loops knowing about metrics."""
    _update_listeners.append(listener)


# A `step` (the trainer's) naming long work gets a progress bar while it runs (elapsed time; the work has
# no known length); the validator's `submissions` with `accepted` + `rejected` make a bar of verdicts.
WORK_STEPS = ("fetching", "generating", "uploading", "verifying")
HEARTBEAT_S = 60.0  # without a terminal and without JSON logs: one status line at most this often


class Display:
    """What a node is doing. On a terminal (human logs): one live status line (the heartbeat) and a
    rich progress bar per long step (model fetch, generation + training, upload, verification). With
    JSON logs: a `status` line per update. Otherwise (human logs to a file or pipe): no bars, a
    one-line `status` log at most every HEARTBEAT_S, so the log stays clean."""

    def __init__(self, title: str, json_logs: bool) -> None:
        self.title = title
        self.json_logs = json_logs
        self.state: dict[str, Any] = {}
        self._live: Live | None = None
        self._progress: Progress | None = None
        self._bars: dict[str, TaskID] = {}  # open bars by name
        self._heartbeat_at = float("-inf")  # the first update is logged
        self._log = logging.getLogger(f"concord.status.{title}")

    def __enter__(self) -> Display:
        if not self.json_logs and sys.stderr.isatty():
            from rich.live import Live
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                SpinnerColumn,
                TextColumn,
                TimeElapsedColumn,
            )

            self._progress = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(),  # pulses while the length is unknown (total None)
                MofNCompleteColumn(),  # "-" for the unknown
                TimeElapsedColumn(),
                console=_console(),
            )
            self._live = Live(self._render(), console=_console(), refresh_per_second=4, transient=False)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(None, None, None)
            self._live = None

    def heartbeat(self) -> str:
        """The one-line status: the title and every field, ``k=v`` (what a node is at, in one glance)."""
        return f"{self.title} · " + " ".join(f"{k}={_jsonable(v)}" for k, v in self.state.items())

    def _render(self) -> RenderableType:
        from rich.console import Group
        from rich.text import Text

        line = Text(self.heartbeat(), style="bold cyan", overflow="ellipsis", no_wrap=True)
        return Group(line, self._progress) if self._progress is not None and self._bars else line

    def _bar(self, name: str, total: float | None, completed: float) -> None:
        """Open (or move) the bar ``name``; every other bar of the same kind is finished and removed."""
        progress = self._progress
        if progress is None:
            return
        if name not in self._bars:
            self._bars[name] = progress.add_task(name, total=total)
        progress.update(self._bars[name], total=total, completed=completed)

    def _close_bars(self, keep: str | None = None) -> None:
        if self._progress is None:
            return
        for name in [n for n in self._bars if n != keep]:
            self._progress.remove_task(self._bars.pop(name))

    def _follow_work(self, changed: Mapping[str, Any]) -> None:
        """Bars from the fields: a trainer's long `step`, a validator's verdicts on a round's submissions."""
        step = str(changed.get("step", ""))
        if "step" in changed:
            if step.startswith(WORK_STEPS):
                self._close_bars(keep=step)
                self._bar(step, None, 0)
            else:
                self._close_bars()
        if {"submissions", "accepted", "rejected"} & set(changed) and "submissions" in self.state:
            total = int(self.state.get("submissions") or 0)
            done = int(self.state.get("accepted") or 0) + int(self.state.get("rejected") or 0)
            name = f"verifying round {self.state.get('round', '?')}"
            if total > 0 and done < total:
                self._close_bars(keep=name)
                self._bar(name, total, done)
            elif self._bars.keys() == {name}:
                self._close_bars()

    def update(self, **kv: Any) -> None:
        changed = {k: v for k, v in kv.items() if self.state.get(k) != v}
        if not changed:
            return
        self.state.update(changed)
        for listener in _update_listeners:
            listener(self.title, changed)
        if self._live is not None:
            self._follow_work(changed)
            self._live.update(self._render())
        elif self.json_logs:
            self._log.info("status", extra=fields(status=True, **changed))
        elif time.monotonic() - self._heartbeat_at >= HEARTBEAT_S:
            self._heartbeat_at = time.monotonic()
            self._log.info("%s", self.heartbeat())


# ----------------------------------------------------------------------------- shutdown


STOP_GRACE_S = 3.0  # a stopping node's current step may run this long; then it is abandoned (exit 0 within 10 s)


class StepAbandoned(BaseException):
    """Raised in a stopping node's main thread when its current step outlived STOP_GRACE_S after the signal.
    Every step is restart-safe (chain state and the state dir say where a node is), so abandoning one loses
    only its unsent work; the node then exits 0 like one that finished its step. A BaseException, so no
    ``except Exception`` inside a step swallows it."""


def _abandon(_signum: int, _frame: object) -> None:
    raise StepAbandoned(f"the current step did not finish within {STOP_GRACE_S:.0f} s of the stop signal")


def disarm_stop_timer() -> None:
    """Cancel the grace timer of a stop signal (the node is exiting anyway)."""
    if threading.current_thread() is threading.main_thread():
        signal.setitimer(signal.ITIMER_REAL, 0)


def shutdown_event(stop: threading.Event | None = None, grace_s: float = STOP_GRACE_S) -> threading.Event:
    """An event set by SIGINT, SIGTERM or SIGHUP (main thread only); a second signal interrupts at once.
    The node finishes its current step and returns; a step still running ``grace_s`` after the signal is
    abandoned (StepAbandoned in the main thread, which the node reports and exits 0 on). A node starts no
    processes of its own, so returning leaves nothing behind."""
    stop = threading.Event() if stop is None else stop

    def handle(signum: int, _frame: object) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        log.info("%s: finishing the current step (at most %.0f s), then stopping", signal.Signals(signum).name, grace_s)
        stop.set()
        signal.signal(signal.SIGALRM, _abandon)
        signal.setitimer(signal.ITIMER_REAL, grace_s)

    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, handle)
    return stop

"""What a node shows: logs (rich, or one JSON object per line), a live status panel, shutdown.

setup_logging(json_logs), fields(**kv), Display   logs and the status panel
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
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console
    from rich.live import Live
    from rich.table import Table

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
    """Human logs through rich on stderr, or JSON lines on stdout; quiets HTTP client chatter.
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
    else:
        from rich.logging import RichHandler

        handler = RichHandler(console=_console(), show_path=False, rich_tracebacks=False, log_time_format="%H:%M:%S")
        handler.setFormatter(logging.Formatter("%(message)s"))
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("urllib3", "httpx", "httpcore", "ipfshttpclient"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


class Display:
    """A live status panel (rich) of the node's current fields; with JSON logs a `status` line per update."""

    def __init__(self, title: str, json_logs: bool) -> None:
        self.title = title
        self.json_logs = json_logs
        self.state: dict[str, Any] = {}
        self._live: Live | None = None
        self._log = logging.getLogger(f"concord.status.{title}")

    def __enter__(self) -> Display:
        if not self.json_logs and sys.stderr.isatty():
            from rich.live import Live

            self._live = Live(self._render(), console=_console(), refresh_per_second=4, transient=False)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(None, None, None)
            self._live = None

    def _render(self) -> Table:
        from rich.table import Table

        table = Table(title=self.title, show_header=False, expand=False)
        table.add_column("field", style="bold cyan")
        table.add_column("value")
        for k, v in self.state.items():
            table.add_row(k, str(_jsonable(v)))
        return table

    def update(self, **kv: Any) -> None:
        changed = {k: v for k, v in kv.items() if self.state.get(k) != v}
        if not changed:
            return
        self.state.update(changed)
        if self._live is not None:
            self._live.update(self._render())
        elif self.json_logs:
            self._log.info("status", extra=fields(status=True, **changed))


# ----------------------------------------------------------------------------- shutdown


def shutdown_event(stop: threading.Event | None = None) -> threading.Event:
    """An event set by SIGINT, SIGTERM or SIGHUP (main thread only); a second signal interrupts at once.
    A node starts no processes of its own, so finishing its step and returning leaves nothing behind."""
    stop = threading.Event() if stop is None else stop

    def handle(signum: int, _frame: object) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        log.info("%s: finishing the current step, then stopping", signal.Signals(signum).name)
        stop.set()

    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, handle)
    return stop

"""Wall-time spans per category, so `concord bench round` can say where a round's time goes.

Off (a no-op) unless ``$CONCORD_TIMINGS`` names a file when the first span opens (or a listener is
added: `add_listener`, how a node feeds its metrics); then every
span segment is appended to it as one JSON line ``{"cat", "t0", "t1", "tid"}`` with
``time.monotonic()`` stamps, which are one clock for every process on the machine, so the
bench can merge the files of several node processes. Spans nest exclusively per thread:
opening a span pauses the one around it, so a chain call made while aggregating counts as
chain and no second is counted twice.
"""

from __future__ import annotations

import atexit
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO

ENV = "CONCORD_TIMINGS"
CATEGORIES = ("chain", "ipfs", "generation", "proofs", "training", "verification", "replay", "aggregation")
FLUSH_EVERY_S = 1.0


class UnknownCategory(ValueError):
    def __init__(self, category: str) -> None:
        super().__init__(f"timing category {category!r} is not one of {CATEGORIES}")
        self.category = category


@dataclass(slots=True)
class _OpenSpan:
    """A span on a thread's stack: its category and when its current segment started."""

    category: str
    start: float


class _Recorder:
    """The open timings file (None: listeners only) and each thread's stack of open spans (state shared
    by threads)."""

    def __init__(self, path: str | None) -> None:
        self._fh: IO[str] | None = None if path is None else open(path, "a", buffering=1 << 16)
        self._lock = threading.Lock()
        self._local = threading.local()
        self._flushed = time.monotonic()
        atexit.register(self.flush)

    def stack(self) -> list[_OpenSpan]:
        stack: list[_OpenSpan] | None = getattr(self._local, "stack", None)
        if stack is None:
            stack = self._local.stack = []
        return stack

    def emit(self, category: str, t0: float, t1: float) -> None:
        for listener in _listeners:
            listener(category, t1 - t0)
        if self._fh is None:
            return
        line = json.dumps({"cat": category, "t0": round(t0, 6), "t1": round(t1, 6), "tid": threading.get_ident()})
        with self._lock:
            self._fh.write(line + "\n")
            if t1 - self._flushed > FLUSH_EVERY_S:
                self._fh.flush()
                self._flushed = t1

    def flush(self) -> None:
        with self._lock:
            if self._fh is not None and not self._fh.closed:
                self._fh.flush()


_recorder: _Recorder | None = None
_checked = False
_init_lock = threading.Lock()
_listeners: list[Callable[[str, float], None]] = []  # each segment's (category, seconds), e.g. node metrics


def add_listener(listener: Callable[[str, float], None]) -> None:
    """Hand every span segment, as (category, seconds), to ``listener`` too (a node's Prometheus metrics):
    from now on spans are timed, with or without $CONCORD_TIMINGS."""
    global _recorder
    rec = _get()
    with _init_lock:
        _listeners.append(listener)
        if rec is None:
            _recorder = _Recorder(None)


def _get() -> _Recorder | None:
    global _recorder, _checked
    if not _checked:
        with _init_lock:
            if not _checked:
                path = os.environ.get(ENV)
                _recorder = _Recorder(path) if path else None
                _checked = True
    return _recorder


@contextmanager
def span(category: str) -> Iterator[None]:
    """Count the wall time inside the block as ``category`` (pausing any enclosing span of this thread)."""
    rec = _get()
    if rec is None:
        yield
        return
    if category not in CATEGORIES:
        raise UnknownCategory(category)
    stack = rec.stack()
    now = time.monotonic()
    if stack:
        outer = stack[-1]
        rec.emit(outer.category, outer.start, now)
    entry = _OpenSpan(category, now)
    stack.append(entry)
    try:
        yield
    finally:
        end = time.monotonic()
        stack.pop()
        rec.emit(category, entry.start, end)
        if stack:
            stack[-1].start = end


def flush() -> None:
    """Write the spans recorded so far (a bench reading its own timings file before exit)."""
    rec = _get()
    if rec is not None:
        rec.flush()

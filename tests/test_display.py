"""What a node shows (client/runtime/display.py): progress bars for long steps on a terminal, a one-line
heartbeat otherwise, and every update handed to the listeners (the metrics)."""

from __future__ import annotations

import io
import logging

import pytest
from rich.console import Console
from rich.progress import Progress

from concord.client.runtime import display
from concord.client.runtime.display import Display

pytestmark = pytest.mark.unit


def with_bars() -> Display:
    """A Display as on a terminal, drawing into a string (the bars are what is asserted)."""
    d = Display("trainer 0xabc task 1", json_logs=False)
    d._progress = Progress(console=Console(file=io.StringIO(), force_terminal=True))
    return d


def test_trainer_steps_get_a_bar_each_and_waiting_gets_none() -> None:
    d = with_bars()
    seen = []
    for step in ("fetching model", "generating + training", "uploading", "ready", "waiting for model 1"):
        d.state["step"] = step
        d._follow_work({"step": step})
        seen.append(sorted(d._bars))
    assert seen == [["fetching model"], ["generating + training"], ["uploading"], [], []]


def test_verification_bar_counts_verdicts_of_the_round() -> None:
    d = with_bars()
    d.state.update(round=4, submissions=3, accepted=0, rejected=0)
    d._follow_work({"submissions": 3})
    (task,) = d._progress.tasks  # type: ignore[union-attr]
    assert task.description == "verifying round 4" and (task.completed, task.total) == (0, 3)
    d.state.update(accepted=1, rejected=1)
    d._follow_work({"accepted": 1, "rejected": 1})
    assert (d._progress.tasks[0].completed, d._progress.tasks[0].total) == (2, 3)  # type: ignore[union-attr]
    d.state.update(accepted=2)
    d._follow_work({"accepted": 2})
    assert d._bars == {}  # all judged: the bar is gone


def test_without_a_terminal_one_heartbeat_line_at_most_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    d = Display("validator 0xdef task 2", json_logs=False)
    with caplog.at_level(logging.INFO), d:  # pytest's stderr is no terminal: no live panel
        d.update(round=0, phase="SUBMIT")
        d.update(phase="COMMIT")
        d.update(phase="REVEAL")
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("concord.status")]
    assert lines == ["validator 0xdef task 2 · round=0 phase=SUBMIT"]


def test_listeners_get_only_what_changed(monkeypatch: pytest.MonkeyPatch) -> None:
    got: list[tuple[str, dict]] = []
    monkeypatch.setattr(display, "_update_listeners", [lambda title, changed: got.append((title, dict(changed)))])
    d = Display("t", json_logs=True)
    d.update(round=1, phase="SUBMIT")
    d.update(round=1, phase="COMMIT")
    d.update(round=1)
    assert got == [("t", {"round": 1, "phase": "SUBMIT"}), ("t", {"phase": "COMMIT"})]

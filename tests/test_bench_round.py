"""The bench's accounting (client.timing spans, scripts.bench.round.split_wall) on known intervals;
the bench itself runs a devnet for minutes and is exercised by `concord bench round --rounds 4`."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from concord.client import timing
from scripts.bench.round import split_wall


def test_spans_nest_exclusively_and_reach_the_file(tmp_path: Path):
    out = tmp_path / "t.jsonl"
    code = textwrap.dedent("""
        import time
        from concord.client import timing
        with timing.span("aggregation"):
            time.sleep(0.05)
            with timing.span("ipfs"):
                time.sleep(0.1)
            time.sleep(0.05)
        with timing.span("chain"):
            pass
    """)
    subprocess.run(
        [sys.executable, "-c", code],
        check=True,
        env={timing.ENV: str(out), "PATH": ""},
        cwd=Path(__file__).resolve().parent.parent,
    )
    spans = [json.loads(line) for line in out.read_text().splitlines()]
    assert [s["cat"] for s in spans] == ["aggregation", "ipfs", "aggregation", "chain"]
    secs = {c: sum(s["t1"] - s["t0"] for s in spans if s["cat"] == c) for c in ("aggregation", "ipfs")}
    assert 0.1 <= secs["ipfs"] < 0.19
    assert 0.1 <= secs["aggregation"] < 0.19  # 0.05 + 0.05: the nested 0.1 s is not counted twice
    assert spans[1]["t0"] == spans[0]["t1"] and spans[2]["t0"] == spans[1]["t1"]


def test_spans_are_free_when_off_and_refuse_unknown_categories(monkeypatch):
    with timing.span("nonsense"):  # off: no file, no check, no cost beyond the call
        pass
    monkeypatch.setattr(timing, "_checked", True)
    monkeypatch.setattr(timing, "_recorder", object())
    with pytest.raises(timing.UnknownCategory, match="nonsense"):
        with timing.span("nonsense"):
            pass


def test_split_gives_each_instant_to_the_first_ranked_active_category():
    spans = [
        ("generation", 0.0, 4.0),  # trainer
        ("generation", 1.0, 3.0),  # a second trainer: busy counts both, wall counts once
        ("ipfs", 3.5, 5.0),  # overlaps compute for 0.5 s: compute wins that
        ("chain", 4.5, 6.0),  # overlaps ipfs for 0.5 s: ipfs wins that
        ("proofs", 9.0, 12.0),
    ]  # clipped at the window's end
    s = split_wall(spans, 0.0, 10.0)
    assert s.window_s == 10.0
    assert s.busy["generation"] == 6.0 and s.busy["proofs"] == 1.0 and s.busy["chain"] == 1.5
    assert s.wall["generation"] == 4.0 and s.wall["ipfs"] == 1.0 and s.wall["chain"] == 1.0
    assert s.wall["proofs"] == 1.0 and s.wall["idle"] == pytest.approx(3.0)
    assert sum(s.wall.values()) == pytest.approx(10.0)

"""The dashboard document's own rules (client/dashboard/state.py), in process: the phase timeline from
events and deadlines, and content reads that never stall a refresh when IPFS is down."""

from __future__ import annotations

import time

import pytest

from client import chain
from client.chain import EventMeta, Phase
from client.dashboard.state import ContentCache, round_timeline

pytestmark = pytest.mark.unit

PARAMS = {"submit_seconds": 60, "commit_seconds": 30, "reveal_seconds": 20}


def meta(block: int) -> EventMeta:
    return EventMeta(block, "0x" + "00" * 32, 0)


def test_timeline_follows_deadlines_and_early_closes() -> None:
    task = {
        "params_full": PARAMS,
        "head_time": 950,  # round 1 opened at 900: its submit phase (to 960) is still open
        "rounds": [
            {"round": 0, "phase": "finalized"},
            {"round": 1, "phase": "submit"},
            {"round": 2, "phase": "pending"},
        ],
    }
    events = [
        chain.RoundOpened(meta(1), 1, 0, 100, 0),
        chain.PhaseClosedEarly(meta(2), 1, 0, Phase.SUBMIT),  # closed early at block 2 (t=120)
        chain.RoundFinalized(meta(3), 1, 0, b"\x00" * 32, False, 1, 0),  # t=500
        chain.RoundOpened(meta(4), 1, 1, 900, 0),
    ]
    times = {2: 120, 3: 500}
    r0, r1, r2 = round_timeline(task, events, times, {})
    assert (r0["opened"], r0["submit_closed"], r0["commit_closed"], r0["reveal_closed"], r0["finalized"]) == (
        100,
        120,  # early
        150,  # 120 + commit_seconds
        170,  # + reveal_seconds
        500,
    )
    assert (r1["opened"], r1["submit_closed"], r1["commit_closed"]) == (900, None, None)
    assert r1["deadlines"]["submit"] == 960
    assert r2["opened"] is None and r2["deadlines"] == {"submit": None, "commit": None, "reveal": None}


def test_a_down_ipfs_costs_one_timeout_per_retry_interval(dead_store) -> None:
    cache = ContentCache(dead_store(None))
    digests = ["0x" + f"{i:064x}" for i in range(1, 6)]
    doc, why = cache.get(digests[0])
    assert doc is None and why is not None and "IPFS API unreachable" in why
    started = time.monotonic()
    answers = [cache.get(d) for d in digests[1:]]
    assert time.monotonic() - started < 0.5  # no further attempt while the daemon is known down
    assert all(doc is None and why and "unreachable" in why for doc, why in answers)


def test_no_store_reads_nothing() -> None:
    assert ContentCache(None).get("0x" + "11" * 32) == (None, "no IPFS API given")

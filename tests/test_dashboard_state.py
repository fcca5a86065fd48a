"""The dashboard document's own rules (client/dashboard/state.py), in process: the phase timeline from
events and deadlines, and content reads that never stall a refresh when IPFS is down."""

from __future__ import annotations

import http.client
import json
import threading
import time

import pytest

from concord.client import chain
from concord.client.chain import EventMeta, Phase
from concord.client.dashboard.server import DashboardHTTPServer, host_allowed
from concord.client.dashboard.state import ContentCache, amounts_as_strings, evidence_mismatch, round_timeline

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


# ----------------------------------------------------------------------------- issue 25: hosts, amounts, binding


@pytest.mark.parametrize(
    ("header", "bound", "ok"),
    [
        ("127.0.0.1:8750", "127.0.0.1", True),
        ("localhost:8750", "127.0.0.1", True),
        ("[::1]:8750", "::1", True),
        ("127.0.0.1:8751", "127.0.0.1", False),  # another port
        ("rebind.example:8750", "127.0.0.1", False),  # a DNS name resolving here: DNS rebinding
        ("127.0.0.1.nip.io:8750", "127.0.0.1", False),
        ("10.1.2.3:8750", "0.0.0.0", True),  # bound everywhere: any IP literal
        ("rebind.example:8750", "0.0.0.0", False),
        ("10.1.2.3:8750", "127.0.0.1", False),
        ("", "127.0.0.1", False),
        (None, "127.0.0.1", False),
        ("127.0.0.1:87x0", "127.0.0.1", False),
    ],
)
def test_only_the_bind_address_is_a_host(header: str | None, bound: str, ok: bool) -> None:
    assert host_allowed(header, bound, 8750) is ok


def test_the_server_refuses_a_foreign_host_header() -> None:
    class Doc:
        def document_json(self) -> bytes:
            return b'{"head_block": 1}'

    server = DashboardHTTPServer(("127.0.0.1", 0), Doc())  # type: ignore[arg-type]
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    port = server.server_address[1]
    try:
        for host, status, body in [(f"127.0.0.1:{port}", 200, b'{"head_block": 1}'), ("rebind.example", 403, b"")]:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/api/state", headers={"Host": host})
            resp = conn.getresponse()
            got = resp.read()
            conn.close()
            assert resp.status == status, (host, resp.status)
            assert got == body or (status == 403 and b"refused: Host 'rebind.example'" in got)
    finally:
        server.shutdown()
        server.server_close()


def test_amounts_travel_as_exact_strings() -> None:
    big = 4800 * 10**18 + 1  # above 2^53: a JSON number would round it
    doc = {
        "totals": {"escrow": big, "holds": True},
        "tasks": [{"budget": 7, "rounds": [{"round": 3, "slashes": [{"amount": big}]}], "claimed_reward": 0.5}],
    }
    out = amounts_as_strings(doc)
    assert out["totals"] == {"escrow": str(big), "holds": True}
    assert out["tasks"][0]["budget"] == "7" and out["tasks"][0]["rounds"][0]["round"] == 3
    assert out["tasks"][0]["rounds"][0]["slashes"][0]["amount"] == str(big)
    assert json.loads(json.dumps(out))["totals"]["escrow"] == str(big)


def test_evidence_must_name_the_submission_it_is_shown_beside() -> None:
    sub = {"index": 1, "trainer": "0x" + "Ab" * 20, "bundle_digest": "0x" + "11" * 32}
    doc = {"task_id": 4, "round": 2, "index": 1, "trainer": "0x" + "ab" * 20, "bundle_digest": "0x" + "11" * 32}
    assert evidence_mismatch(doc, 4, 2, sub) is None
    for key, other in [("task_id", 5), ("round", 3), ("index", 0), ("trainer", "0x" + "cd" * 20)]:
        assert key in (evidence_mismatch({**doc, key: other}, 4, 2, sub) or "")
    assert "bundle_digest" in (evidence_mismatch({**doc, "bundle_digest": "0x" + "22" * 32}, 4, 2, sub) or "")

"""Validator availability against a real js-ipfs daemon and a real Anvil (issue 10).

* What kills js-ipfs 0.66.1: a ``cat`` of a chunked file whose second leaf is missing, ended
  by the daemon's own ``timeout`` option or by the client hanging up, makes the daemon exit
  with an unhandled "Want for <leaf> aborted" (bitswap's abort, thrown after the response
  started streaming). Pinned here, so a js-ipfs that stops doing it shows up. A ``block/get``
  of the same missing leaf, ended either way, is a clean error and the daemon lives.
* The store never cats: it fetches a file block by block, so the withheld leaf is one
  ContentNotFound naming that leaf, within the store timeout, and the daemon answers after it
  (three times in a row).
* A provider that drips bytes (a stand-in API on 127.0.0.1 in front of the daemon,
  scripts.drills.DripProxy) is cut at the fetch's deadline, not after it.
* On a devnet (scripts.drills, also rows of `concord bench attacks`): the withheld-leaf
  cheater is rejected and slashed, the honest trainer paid; the slow
  provider is rejected within its deadline while the two honest submissions are verified,
  and the round settles (not void).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from concord.client.content.store import REQUEST_GRACE, ContentNotFound, DeadlineExceeded, Store
from concord.client.runtime import procs
from scripts import devnet
from scripts import drills as drills
from scripts.adversaries import trainer_cheats as cheats

CHUNK = 200_000


@pytest.fixture
def own_ipfs(tmp_path: Path) -> Iterator[dict]:
    """A js-ipfs daemon of the test's own (a test here may kill it); stopped by PID."""
    ports = devnet.Ports(
        anvil=0, ipfs_api=procs.free_port(), ipfs_gateway=procs.free_port(), ipfs_grpc=procs.free_port()
    )
    daemon = devnet.start_ipfs(tmp_path / "repo", ports, tmp_path / "ipfs.log")
    try:
        yield {
            "daemon": daemon,
            "api": f"/ip4/127.0.0.1/tcp/{ports.ipfs_api}/http",
            "url": f"http://127.0.0.1:{ports.ipfs_api}/api/v0",
            "log": tmp_path / "ipfs.log",
        }
    finally:
        procs.stop(daemon)


def withheld_file(store: Store) -> tuple:
    """A 2-leaf file (CHUNK-byte raw leaves) whose second leaf was removed with block/rm: (ref, leaves)."""
    ref, leaves = cheats.add_chunked(store, os.urandom(CHUNK + CHUNK // 2), "withheld.bin", CHUNK)
    assert len(leaves) == 2
    store._http.request("/block/rm", (leaves[1],), decoder="json")
    return ref, leaves


def answers(url: str) -> bool:
    try:
        return requests.post(f"{url}/id", timeout=2).status_code == 200
    except requests.ConnectionError:
        return False


def wait_dead(daemon: procs.Daemon, seconds: float) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if not procs.is_ours(daemon):
            return True
        time.sleep(0.2)
    return False


def test_cat_of_a_withheld_leaf_kills_js_ipfs_but_block_get_does_not(own_ipfs, tmp_path: Path) -> None:
    store = Store(own_ipfs["api"], None, timeout=2.0)
    ref, leaves = withheld_file(store)
    # block/get of the missing leaf, ended by the daemon's timeout and by the client: a clean error each time
    resp = requests.post(f"{own_ipfs['url']}/block/get", params={"arg": leaves[1], "timeout": "1000ms"}, timeout=5)
    assert resp.status_code == 500 and "timed out" in resp.text
    with pytest.raises(requests.ReadTimeout):
        requests.post(f"{own_ipfs['url']}/block/get", params={"arg": leaves[1], "timeout": "5000ms"}, timeout=1)
    time.sleep(5)  # past the abandoned request's own timeout
    assert procs.is_ours(own_ipfs["daemon"]) and answers(own_ipfs["url"])
    # cat of the file: the first leaf streams, the second is wanted; the daemon's timeout ends the want
    try:
        resp = requests.post(
            f"{own_ipfs['url']}/cat", params={"arg": ref.cid, "timeout": "1000ms"}, stream=True, timeout=5
        )
        for _ in resp.iter_content(None):
            pass
    except requests.RequestException:
        pass  # the stream may end either way: the daemon's fate is the point
    assert wait_dead(own_ipfs["daemon"], 10), "js-ipfs survived an aborted want: the store's workaround may go"
    assert "aborted" in own_ipfs["log"].read_text()
    assert not answers(own_ipfs["url"])


def test_store_fetch_of_a_withheld_leaf_is_a_clean_timeout_and_the_daemon_lives(own_ipfs, tmp_path: Path) -> None:
    store = Store(own_ipfs["api"], tmp_path / "cache", timeout=2.0)
    ref, leaves = withheld_file(store)
    for attempt in range(3):
        start = time.monotonic()
        with pytest.raises(ContentNotFound) as info:
            store.get_bytes(ref, max_bytes=ref.size)
        took = time.monotonic() - start
        assert took < store.timeout + REQUEST_GRACE + 1, took
        assert info.value.cid == leaves[1]  # the missing block, by its CID
        assert ref.sha256 in str(info.value)  # and which file it belongs to
        time.sleep(1)
        assert procs.is_ours(own_ipfs["daemon"]) and answers(own_ipfs["url"]), f"daemon died after try {attempt}"
    store.probe()
    whole = store.put_file(os.urandom(3 * (1 << 20)), "whole.bin")  # 3 leaves of 1 MiB: still fetched whole
    assert Store(own_ipfs["api"], None, timeout=2.0).get_bytes(whole, max_bytes=whole.size) is not None


def test_a_dripping_provider_is_cut_at_the_deadline(own_ipfs, tmp_path: Path) -> None:
    direct = Store(own_ipfs["api"], None, timeout=5.0)
    slow = direct.put_file(os.urandom(4000), "slow.bin")
    fast = direct.put_file(os.urandom(4000), "fast.bin")
    proxy = drills.DripProxy(own_ipfs["url"].removesuffix("/api/v0"), drip_bytes=16, every_s=0.1)
    try:
        proxy.slow.add(slow.cid)
        via = Store(proxy.api, None, timeout=5.0)
        assert via.get_bytes(fast, max_bytes=fast.size) is not None  # everything else passes through
        start = time.monotonic()
        with pytest.raises(DeadlineExceeded) as info:
            via.get_bytes(slow, max_bytes=slow.size, deadline=time.monotonic() + 3.0)
        took = time.monotonic() - start
        assert 2.9 < took < 3.0 + 2.0, took  # each read came in time; the deadline cut it
        assert info.value.cid == slow.cid and "deadline" in str(info.value)
        assert proxy.dripped[slow.cid] == 1
    finally:
        proxy.close()
    assert answers(own_ipfs["url"])


def assert_drill(result: drills.DrillResult) -> None:
    assert result.conservation_ok, result
    assert result.honest_slashed == (), result
    assert result.paid_twice == (), result
    assert result.ok, result.detail


@pytest.mark.slow
def test_withheld_leaf_is_rejected_and_slashed_the_honest_trainer_paid(chain_env, ipfs, tmp_path: Path) -> None:
    result = drills.drill_withheld_leaf(chain_env.client, ipfs.api, tmp_path)
    assert_drill(result)
    assert result.facts["slashed"] and all(v > 0 for v in result.facts["slashed"].values())
    assert procs.is_ours(ipfs.daemon)


@pytest.mark.slow
def test_slow_provider_is_rejected_within_its_deadline_and_the_round_settles(chain_env, ipfs, tmp_path: Path) -> None:
    result = drills.drill_slow_provider(chain_env.client, ipfs.api, tmp_path)
    assert_drill(result)
    facts = result.facts
    assert facts["slow_verdict_s"] <= facts["deadline_s"] + 5, facts
    assert all(t is not None and t < facts["slow_verdict_s"] for t in facts["honest_verdict_s"]), facts


@pytest.mark.slow
def test_two_slow_state_providers_cost_one_deadline_together_and_do_not_void_the_round(
    chain_env, ipfs, tmp_path: Path
) -> None:
    """Issue 21: inner states are fetched concurrently from the seed on, every commit-phase wait is bounded."""
    result = drills.drill_slow_state_providers(chain_env.client, ipfs.api, tmp_path)
    assert_drill(result)
    facts = result.facts
    assert facts["dripped"] > 0 and facts["commit_s"] <= 2 * facts["deadline_s"] + 15, facts


def test_content_that_fails_our_own_daemon_twice_while_it_answers_is_missing(own_ipfs, tmp_path: Path) -> None:
    """concord.validator.judge.settle_fetches with a real daemon behind the probe (the Validator's chain side is a
    stand-in: only the store, address, state dir and task id are read). An own-store failure on a
    submission is retried once; the second one, with the daemon answering a probe, is a `fetch` reject
    whose evidence is on disk before it is published; with the daemon down nothing is judged."""
    from types import SimpleNamespace

    from concord.client.content.store import DaemonError
    from concord.validator import context as vctx
    from concord.validator import judge as vjudge
    from concord.validator import node as vnode
    from concord.validator import store as vstore

    store = Store(own_ipfs["api"], tmp_path / "cache", timeout=2.0, retries=1)
    fake_node = SimpleNamespace(store=store, address="0x" + "11" * 20, state_dir=tmp_path / "state")
    v = vctx.Validator(cfg=None, node=fake_node, task=SimpleNamespace(task_id=7), hooks=vnode.HONEST)
    sub = SimpleNamespace(
        task_id=7,
        round=0,
        index=3,
        trainer="0x" + "22" * 20,
        base_round=0,
        bundle_digest=bytes(range(32)),
        proof_root=bytes(32),
        work_units=1,
    )
    failed = vctx.Fetched(sub, None, None, DaemonError(store.api, "block/get", "the daemon went away"), 1.0)
    with pytest.raises(DaemonError):
        vjudge.settle_fetches(v, [failed])  # first strike: our problem until shown otherwise
    assert v.verdicts == {} and v.strikes == {(0, 3): 1}
    (verdict,) = vjudge.settle_fetches(v, [failed])  # second strike, daemon answers: missing content
    assert (verdict.accepted, verdict.failed_check) == (False, "fetch")
    doc = vstore.evidence_path(vctx.task_dir(tmp_path / "state", 7), verdict.evidence_digest)
    assert doc.exists() and verdict.evidence_digest in v.unpublished  # durable first, published later
    assert vstore.verdict_path(vctx.task_dir(tmp_path / "state", 7), 0, 3).exists()
    vstore.publish_pending(v)
    assert v.unpublished == set() and store.get_manifest(verdict.evidence_digest) == doc.read_bytes()

    procs.stop(own_ipfs["daemon"])  # our daemon down: no strike, no verdict
    other = vctx.Fetched(
        SimpleNamespace(**{**sub.__dict__, "index": 4}), None, None, DaemonError(store.api, "block/get", "down"), 1.0
    )
    for _ in range(3):
        with pytest.raises(DaemonError):
            vjudge.settle_fetches(v, [other])
    assert (0, 4) not in v.verdicts and (0, 4) not in v.strikes
    vstore.store_evidence(v, {"kind": "rejection_evidence", "note": "waits"})
    vstore.publish_pending(v)  # best effort: logged, kept for the next tick
    assert len(v.unpublished) == 1

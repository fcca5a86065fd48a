"""The block exchange (/concord/blocks/1.0.0, scripts/ipfs_node/exchange.mjs) against peers that lie (issue 23).

Real daemons: an honest holder A and a fetcher B (scripts/ipfs_node/server.mjs), and a liar
(scripts/adversaries/lying_peer.mjs: a libp2p peer that speaks the exchange's wire format, says it holds
every block, poses as fetching so that B asks it before its seeds, and answers GET with a wrong block,
nothing, or an oversized answer). B is connected to the liar first and to A only once the liar has
been asked, so the liar is the first holder B asks, every time (no race between the two answers).

What must hold: B never stores or returns a block that does not hash to its CID; it counts the liar as
bad (`bitswap/stat` ConcordBadPeers) and does not ask it again while another holder is connected; it
completes from A, byte-exact; a stalled GET costs the fetch at most GET_TIMEOUT_S, also when the
fetch that asked it ended first (a client timeout shorter than GET_TIMEOUT_S).
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from concord.client.content.manifest import canonical_bytes
from concord.client.content.store import CHUNKER, ContentNotFound, Store
from concord.client.runtime import procs
from concord.client.runtime.procs import Daemon
from scripts import devnet

pytestmark = pytest.mark.integration

LIAR = devnet.REPO_ROOT / "scripts" / "adversaries" / "lying_peer.mjs"
GET_TIMEOUT_S = 15.0  # exchange.mjs GET_TIMEOUT_MS: a holder that has not delivered by then is skipped
LEAF = int(CHUNKER.removeprefix("size-"))


@dataclass(frozen=True)
class Helia:
    api: str
    api_url: str
    swarm: str
    daemon: Daemon

    @property
    def peer_id(self) -> str:
        return self.swarm.rsplit("/", 1)[1]


@dataclass(frozen=True)
class Liar:
    peer_id: str
    daemon: Daemon

    def gets(self) -> list[str]:
        """The CIDs it was sent GET for (one log line per GET it lied to)."""
        return re.findall(r"lying-peer: GET (\S+) from ", self.daemon.log_path.read_text())


@dataclass
class Net:
    helia: Callable[[str], Helia]
    liar: Callable[[str, Helia], Liar]


@pytest.fixture
def net(tmp_path: Path) -> Iterator[Net]:
    """Start Helia peers and liars on free loopback ports; every one is stopped after the test."""
    started: list[Daemon] = []

    def helia(name: str) -> Helia:
        api_port, swarm_port = procs.free_port(), procs.free_port()
        daemon = devnet.start_helia(tmp_path / name, api_port, swarm_port)
        started.append(daemon)
        url = f"http://127.0.0.1:{api_port}"
        return Helia(f"/ip4/127.0.0.1/tcp/{api_port}/http", url, devnet.helia_swarm_addr(url), daemon)

    def liar(mode: str, victim: Helia) -> Liar:
        log = tmp_path / f"liar-{mode}.log"
        argv = [str(devnet.node_binary()), str(LIAR), "--repo", str(tmp_path / f"liar-{mode}"), "--mode", mode]
        argv += ["--swarm", f"/ip4/127.0.0.1/tcp/{procs.free_port()}", "--peer", victim.swarm]
        daemon, proc = procs.start("lying-peer", argv, log)
        started.append(daemon)
        found: list[str] = []

        def ready() -> bool:
            found[:] = re.findall(r"listening \S+/p2p/(\S+)", log.read_text())
            return bool(found) and found[0] in devnet.swarm_peers(victim.api_url)

        procs.wait_ready(daemon, proc, ready, 60)
        return Liar(found[0], daemon)

    try:
        yield Net(helia, liar)
    finally:
        procs.stop_all(started)


def _stat(peer: Helia) -> dict:
    resp = requests.post(f"{peer.api_url}/api/v0/bitswap/stat", timeout=5)
    resp.raise_for_status()
    return dict(resp.json())


def _held_offline(peer: Helia, cid: str) -> bool:
    """Whether ``peer``'s own store holds ``cid`` (block/stat offline: no peer is asked)."""
    resp = requests.post(f"{peer.api_url}/api/v0/block/stat", params={"arg": cid, "offline": "true"}, timeout=5)
    return resp.status_code == 200


def _wait(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


@dataclass
class Fetch:
    """A Store read through B in a thread: its result (or error) and when it ended."""

    thread: threading.Thread
    started: float
    result: list[bytes]
    error: list[BaseException]
    ended: list[float]

    def join(self, timeout: float) -> bytes:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"the fetch did not end within {timeout}s"
        if self.error:
            raise self.error[0]
        return self.result[0]

    @property
    def elapsed(self) -> float:
        return self.ended[0] - self.started


def _fetch_in_thread(read: Callable[[], bytes]) -> Fetch:
    f = Fetch(threading.Thread(target=lambda: None), time.monotonic(), [], [], [])

    def run() -> None:
        try:
            f.result.append(read())
        except BaseException as e:  # handed to the test's thread by join()
            f.error.append(e)
        finally:
            f.ended.append(time.monotonic())

    f.thread = threading.Thread(target=run, daemon=True)
    f.thread.start()
    return f


def _first_asked_of_the_liar(net: Net, mode: str) -> tuple[Helia, Helia, Liar]:
    """A (honest, holds what the test puts), B (the fetcher), and a liar connected to B; A not yet."""
    a, b = net.helia("a"), net.helia("b")
    return a, b, net.liar(mode, b)


@pytest.mark.parametrize("mode", ["wrong", "oversize"])
def test_a_holder_that_answers_get_with_bad_bytes_is_dropped_and_the_file_comes_whole_from_another(
    net: Net, mode: str
) -> None:
    """wrong: bytes that do not hash to the CID; oversize: an answer over MAX_BLOCK_BYTES + 1. B stores
    neither, counts the liar bad, asks it no more (one GET in all), and gets every block from A."""
    a, b, liar = _first_asked_of_the_liar(net, mode)
    data = os.urandom(5 * LEAF + 777)  # a dag-pb root over 6 leaves: the liar is also a holder of each leaf
    ref = Store(a.api, None, timeout=10.0).put_file(data, name="f.bin")
    fetch = _fetch_in_thread(lambda: Store(b.api, None, timeout=30.0).get_bytes(ref, max_bytes=len(data)))
    _wait(lambda: ref.cid in liar.gets(), 10, "B never asked the liar for the root")
    time.sleep(0.5)  # B has the liar's answer by now (it is sent at once)
    assert not _held_offline(b, ref.cid)  # rejected, not stored

    devnet.swarm_connect(b.api_url, a.swarm)
    got = fetch.join(40)
    assert got == data and hashlib.sha256(got).hexdigest() == ref.sha256
    assert liar.gets() == [ref.cid]  # penalized after its first answer: the 6 leaves all came from A
    bad = _stat(b)["ConcordBadPeers"]
    assert set(bad) == {liar.peer_id}, bad  # A is not counted
    counts = bad[liar.peer_id]
    assert counts == (
        {"BadBlocks": 1, "BadAnswers": 0, "Timeouts": 0}
        if mode == "wrong"
        else {"BadBlocks": 0, "BadAnswers": 1, "Timeouts": 0}
    ), counts
    assert fetch.elapsed < GET_TIMEOUT_S, fetch.elapsed  # no timeout was waited for
    assert f"{liar.peer_id}" in b.daemon.log_path.read_text()  # B logs the bad peer by its ID


def test_a_holder_that_stalls_costs_the_fetch_one_get_timeout_then_the_next_holder_serves(net: Net) -> None:
    a, b, liar = _first_asked_of_the_liar(net, "stall")
    data = os.urandom(3 * LEAF + 99)
    ref = Store(a.api, None, timeout=10.0).put_file(data, name="s.bin")
    fetch = _fetch_in_thread(lambda: Store(b.api, None, timeout=30.0).get_bytes(ref, max_bytes=len(data)))
    _wait(lambda: ref.cid in liar.gets(), 10, "B never asked the liar for the root")
    asked = time.monotonic()
    devnet.swarm_connect(b.api_url, a.swarm)  # A holds it too, from now on: B waits for the liar first
    got = fetch.join(GET_TIMEOUT_S + 30)
    assert got == data and hashlib.sha256(got).hexdigest() == ref.sha256
    waited = fetch.ended[0] - asked
    # bounded: the per-holder timeout, then A's transfer (loopback; slack for a loaded machine)
    assert GET_TIMEOUT_S - 1 < waited < GET_TIMEOUT_S + 10, waited
    assert _stat(b)["ConcordBadPeers"][liar.peer_id] == {"BadBlocks": 0, "BadAnswers": 0, "Timeouts": 1}
    assert liar.gets() == [ref.cid]  # after its timeout, the leaves all came from A


def test_a_stalled_get_outlives_a_short_client_timeout_and_the_retry_goes_to_another_holder(net: Net) -> None:
    """A client whose timeout is shorter than GET_TIMEOUT_S (a dashboard's 3 s, a validator near its deadline)
    ends the fetch while the liar holds the GET. That GET still runs to its own timeout: the retry does not
    ask the liar again for that block (A serves it at once), and the liar is penalized when it times out."""
    a, b, liar = _first_asked_of_the_liar(net, "stall")
    manifest = canonical_bytes({"stalled": os.urandom(8).hex()})
    digest = Store(a.api, None, timeout=10.0).put_manifest(manifest)
    short = Store(b.api, None, timeout=3.0)
    t0 = time.monotonic()
    with pytest.raises(ContentNotFound):
        short.get_manifest(digest)  # only the liar is connected: it holds the one GET
    assert len(liar.gets()) == 1
    devnet.swarm_connect(b.api_url, a.swarm)
    t1 = time.monotonic()
    assert short.get_manifest(digest) == manifest
    assert time.monotonic() - t1 < 3.0
    assert len(liar.gets()) == 1  # not asked again for the block its GET still holds
    # the GET the first client left behind times out on its own clock: the liar is counted and penalized
    _wait(
        lambda: _stat(b)["ConcordBadPeers"].get(liar.peer_id, {}).get("Timeouts") == 1,
        t0 + GET_TIMEOUT_S + 5 - time.monotonic(),
        "the abandoned GET to the liar never timed out",
    )


def _rss_mib(pid: int) -> float:
    """Resident memory of process ``pid`` (VmRSS) in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


# What B may grow by under the flood. Its own bounds hold ~16 MiB of requests at once and 4,096 wants per
# peer; the rest is V8's garbage from decoding 4,096 CIDs a message, collected in swings (measured here,
# +150 and +316 MiB over this test's ~25 s of flood in two runs, +190 to +340 MiB over 80 s, level
# after ~20 s).
# Loose on purpose (GC swings): it catches a gross leak, not a small one; the claims that hold exactly
# are that blocks still move through B during the flood and that B stays up.
FLOOD_RSS_MIB = 768


def test_a_peer_that_floods_requests_costs_bounded_memory_and_blocks_still_move(net: Net) -> None:
    """The flooder sends B, up to 40 times a second, requests over MAX_REQUEST_BYTES and WANT_HAVEs and HAVEs of
    4,096 random CIDs. B refuses the oversized ones, remembers at most 4,096 wants per peer, ignores HAVEs of
    blocks it does not want: its memory stays bounded, and a file from A still comes through B at once."""
    a, b = net.helia("a"), net.helia("b")
    devnet.swarm_connect(b.api_url, a.swarm)
    before = _rss_mib(b.daemon.pid)
    flooder = net.liar("flood", b)

    def flooded() -> int:
        counts = re.findall(r"lying-peer: flooded (\d+)", flooder.daemon.log_path.read_text())
        return int(counts[-1]) if counts else 0

    _wait(lambda: flooded() >= 100, 30, "the flooder never got going")
    data = os.urandom(5 * LEAF + 4321)
    ref = Store(a.api, None, timeout=10.0).put_file(data, name="flood.bin")
    t0 = time.monotonic()
    got = Store(b.api, None, timeout=30.0).get_bytes(ref, max_bytes=len(data))
    elapsed = time.monotonic() - t0
    assert got == data and hashlib.sha256(got).hexdigest() == ref.sha256
    assert elapsed < 10.0, elapsed
    n = flooded()
    _wait(lambda: flooded() >= n + 100, 30, "the flood stopped")
    grown = _rss_mib(b.daemon.pid) - before
    print(f"flood: {flooded()} messages, B grew {grown:.0f} MiB, the fetch took {elapsed:.2f}s")
    assert grown < FLOOD_RSS_MIB, grown
    assert procs.alive(b.daemon.pid)
    assert _stat(b)["ConcordBadPeers"] == {}  # it answered no GET: nothing to count, and A was not blamed

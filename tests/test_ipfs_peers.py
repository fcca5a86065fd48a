"""Two IPFS peers (scripts/ipfs_node/server.mjs, Helia 7) that really talk: what the store puts to A is
fetched through B's API, block by block over bitswap, byte-exact and sha256-checked (issue 23).

Real daemons on free loopback ports, stopped by PID (procs) after the module; the add CIDs are pinned
against the session's js-ipfs 0.66.1 (the `ipfs` fixture), whose CIDs the store and old manifests hold.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from concord.client.content.manifest import canonical_bytes
from concord.client.content.store import CHUNKER, REQUEST_GRACE, ContentNotFound, Store
from concord.client.digest import Digest
from concord.client.runtime import procs
from concord.client.runtime.procs import Daemon
from scripts import devnet


@dataclass(frozen=True)
class Peer:
    api: str  # multiaddr, what Store takes
    api_url: str
    swarm: str  # /ip4/127.0.0.1/tcp/P/p2p/<id>
    daemon: Daemon


def _start(repo: Path, peers: tuple[str, ...] = ()) -> Peer:
    api_port, swarm_port = procs.free_port(), procs.free_port()
    daemon = devnet.start_helia(repo, api_port, swarm_port, peers)
    url = f"http://127.0.0.1:{api_port}"
    return Peer(f"/ip4/127.0.0.1/tcp/{api_port}/http", url, devnet.helia_swarm_addr(url), daemon)


@pytest.fixture(scope="module")
def helia_pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Peer, Peer]]:
    """A and B, B started with A as its --peer (B dials A; both then serve each other)."""
    tmp = tmp_path_factory.mktemp("helia")
    started: list[Daemon] = []
    try:
        a = _start(tmp / "a")
        started.append(a.daemon)
        b = _start(tmp / "b", (a.swarm,))
        started.append(b.daemon)
        deadline = time.monotonic() + 20
        a_id = a.swarm.rsplit("/", 1)[1]
        while a_id not in devnet.swarm_peers(b.api_url):
            assert time.monotonic() < deadline, "B never connected to A"
            time.sleep(0.1)
        yield a, b
    finally:
        procs.stop_all(started)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_a_file_and_a_manifest_put_to_a_are_fetched_through_b(helia_pair, tmp_path: Path) -> None:
    a, b = helia_pair
    put, get = Store(a.api, None, timeout=10.0), Store(b.api, tmp_path / "cache-b", timeout=10.0)
    big = os.urandom(6 * (1 << 20) + 12_345)  # 7 leaves under a dag-pb root: more than one 4 MiB bitswap message
    small = os.urandom(40_000)  # one raw block
    big_ref, small_ref = put.put_file(big, name="big.bin"), put.put_file(small, name="small.bin")
    manifest = canonical_bytes({"kind": "test", "files": [big_ref.cid, small_ref.cid]})
    digest = put.put_manifest(manifest)
    assert big_ref.cid.startswith("bafybei") and small_ref.cid.startswith("bafkrei")

    assert get.get_manifest(digest) == manifest  # B had none of these blocks: all came from A
    got_small = get.get_bytes(small_ref, max_bytes=1 << 20)
    dest = get.get_file(big_ref, tmp_path / "out" / "big.bin", max_bytes=1 << 23)
    assert got_small == small and _sha(got_small) == small_ref.sha256
    assert dest.read_bytes() == big and _sha(dest.read_bytes()) == big_ref.sha256
    # and B now holds them itself: A is not asked again (block/get with A stopped is the churn tests' job)
    local = requests.post(
        f"{b.api_url}/api/v0/block/stat", params={"arg": big_ref.cid, "timeout": "1s"}, timeout=5
    ).json()
    assert local["Key"] == big_ref.cid


def _stat(peer: Peer) -> dict:
    resp = requests.post(f"{peer.api_url}/api/v0/bitswap/stat", timeout=5)
    resp.raise_for_status()
    return dict(resp.json())


def test_a_block_two_peers_hold_crosses_the_swarm_once(helia_pair, tmp_path: Path) -> None:
    """A and C both hold a file; B fetches it: every block is sent once, by one holder, not by both (bitswap
    alone has every holder answer every want-block: each block arrived once per holder)."""
    a, b = helia_pair
    c = _start(tmp_path / "c", (a.swarm, b.swarm))
    try:
        c_id = c.swarm.rsplit("/", 1)[1]
        deadline = time.monotonic() + 20
        while c_id not in devnet.swarm_peers(b.api_url):
            assert time.monotonic() < deadline, "C never connected to B"
            time.sleep(0.1)
        data = os.urandom(5 * (1 << 20) + 777)  # 6 raw leaves (the store's 1 MiB chunker) under one dag-pb root
        ref = Store(a.api, None, timeout=10.0).put_file(data, name="twice.bin")
        assert Store(c.api, None, timeout=10.0).put_file(data, name="twice.bin").cid == ref.cid
        blocks = -(-len(data) // int(CHUNKER.removeprefix("size-"))) + 1
        before = {p.api_url: _stat(p) for p in (a, b, c)}
        got = Store(b.api, None, timeout=10.0).get_bytes(ref, max_bytes=len(data))
        assert got == data
        after = {p.api_url: _stat(p) for p in (a, b, c)}
        delta = {
            u: {k: after[u][k] - before[u][k] for k in ("BlocksSent", "BlocksReceived", "DupBlksReceived")}
            for u in after
        }
        assert delta[b.api_url]["BlocksReceived"] == blocks
        assert delta[b.api_url]["DupBlksReceived"] == 0
        assert delta[a.api_url]["BlocksSent"] + delta[c.api_url]["BlocksSent"] == blocks
        assert after[b.api_url]["ConcordFallbacks"] == before[b.api_url]["ConcordFallbacks"]  # all by the exchange
    finally:
        procs.stop_all([c.daemon])


def test_a_cid_neither_peer_has_times_out_within_the_store_deadline(helia_pair) -> None:
    _, b = helia_pair
    store = Store(b.api, None, timeout=2.0)
    missing = Digest.parse(hashlib.sha256(b"no peer has this " + os.urandom(8)).hexdigest())
    t0 = time.monotonic()
    with pytest.raises(ContentNotFound) as err:
        store.get_manifest(missing, deadline=time.monotonic() + 3.0)
    elapsed = time.monotonic() - t0
    assert err.value.cid in str(err.value)
    assert 1.5 < elapsed < 3.0 + REQUEST_GRACE, elapsed  # the daemon's own timeout ended it, not the client's


def test_add_gives_the_cids_js_ipfs_gave(helia_pair, ipfs) -> None:
    """Same bytes, same options, same CID: through the store (1 MiB chunks), and a tree over 174 leaves
    (1 KiB chunks, so that the balanced layout's second level shows)."""
    a, _ = helia_pair
    helia, jsipfs = Store(a.api, None), Store(ipfs.api, None)
    for size in (0, 5, 1 << 20, (1 << 20) + 1, 2_500_000):
        data = os.urandom(size)
        assert helia.put_file(data, name="f").cid == jsipfs.put_file(data, name="f").cid, size
    data = os.urandom(250_000)  # 245 leaves of 1 KiB
    opts = {
        "cid-version": "1",
        "raw-leaves": "true",
        "chunker": "size-1024",
        "hash": "sha2-256",
        "pin": "false",
        "cid-base": "base32",
    }
    cids = [
        requests.post(
            f"{url}/api/v0/add", params=opts, files={"file": ("f", data, "application/octet-stream")}, timeout=30
        ).json()
        for url in (a.api_url, ipfs.api_url)
    ]
    assert all("Hash" in c for c in cids), cids
    assert cids[0]["Hash"] == cids[1]["Hash"] and cids[0]["Hash"].startswith("bafybei"), cids


def test_the_kubo_error_shapes_the_store_reads(helia_pair) -> None:
    a, _ = helia_pair
    store = Store(a.api, None, timeout=5.0)
    store.probe()
    ref = store.put_file(b"pinned", name="p", pin=True)
    assert store.is_pinned(ref.cid)
    unpinned = store.put_file(b"not pinned " + os.urandom(8), name="u", pin=False)
    assert not store.is_pinned(unpinned.cid)  # Kubo's "... is not pinned" error, read as False
    store.pin(unpinned.cid)
    assert store.is_pinned(unpinned.cid)
    bad = requests.post(f"{a.api_url}/api/v0/block/get", params={"arg": "not-a-cid"}, timeout=5)
    assert bad.status_code == 400 and "invalid CID" in bad.json()["Message"]
    assert requests.post(f"{a.api_url}/api/v0/nope", timeout=5).status_code == 404


def test_block_rm_withholds_a_leaf_as_kubo_does(helia_pair) -> None:
    """The lab's withholding trainer removes a leaf from its own peer (scripts/adversaries, withheld_leaf):
    the block is gone from A and from the peer asking B; a pinned root and a missing block are refused."""
    a, b = helia_pair
    store = Store(a.api, None, timeout=5.0)
    leaf = store.put_file(os.urandom(3_000), name="leaf", pin=False).cid
    pinned = store.put_file(os.urandom(3_000), name="root", pin=True).cid
    rm = requests.post(f"{a.api_url}/api/v0/block/rm", params=[("arg", leaf), ("arg", pinned)], timeout=5)
    lines = [json.loads(line) for line in rm.text.splitlines()]
    assert rm.status_code == 200 and lines == [
        {"Hash": leaf, "Error": ""},
        {"Hash": pinned, "Error": "pinned: recursive"},
    ], lines
    again = requests.post(f"{a.api_url}/api/v0/block/rm", params={"arg": leaf}, timeout=5).json()
    assert again == {"Hash": leaf, "Error": "block not found"}
    gone = requests.post(f"{b.api_url}/api/v0/block/stat", params={"arg": leaf, "timeout": "1s"}, timeout=5)
    assert gone.status_code == 500  # nobody serves it any more
    kept = requests.post(f"{b.api_url}/api/v0/block/stat", params={"arg": pinned, "timeout": "5s"}, timeout=10)
    assert kept.status_code == 200 and kept.json()["Key"] == pinned


def test_a_peer_speaks_only_bitswap_its_block_exchange_and_identify_on_loopback(helia_pair) -> None:
    """No DHT, no MDNS, no relay, no public bootstrap: what it listens on and speaks is this, nothing more
    (bitswap, identify, and the block exchange server.mjs fetches with: one holder per block)."""
    for peer in helia_pair:
        me = requests.post(f"{peer.api_url}/api/v0/id", timeout=5).json()
        assert set(me["Protocols"]) == {"/ipfs/bitswap/1.2.0", "/ipfs/id/1.0.0", "/concord/blocks/1.0.0"}
        assert me["Addresses"] == [peer.swarm] and peer.swarm.startswith("/ip4/127.0.0.1/tcp/")
        connected = requests.post(f"{peer.api_url}/api/v0/swarm/peers", timeout=5).json()["Peers"]
        assert [c["Addr"].split("/tcp/")[0] for c in connected] == ["/ip4/127.0.0.1"]  # only the other one


@pytest.fixture
def helia_spawn(tmp_path: Path) -> Iterator[Callable[..., tuple[Daemon, subprocess.Popen[bytes]]]]:
    """Start a Helia peer and keep its Popen (for its exit status); whatever is left is stopped after."""
    started: list[Daemon] = []

    def spawn(
        repo: Path, api_port: int, swarm_port: int, peers: tuple[str, ...] = ()
    ) -> tuple[Daemon, subprocess.Popen[bytes]]:
        log = tmp_path / f"{repo.name}-{len(started)}.log"
        daemon, proc = procs.start("helia", devnet.helia_argv(repo, api_port, swarm_port, peers), log)
        started.append(daemon)
        procs.wait_ready(daemon, proc, lambda: devnet.ipfs_ready(f"http://127.0.0.1:{api_port}"), 60)
        return daemon, proc

    try:
        yield spawn
    finally:
        procs.stop_all(started)


def test_sigterm_stops_the_daemon_cleanly_and_a_restart_keeps_its_peer_id_and_blocks(helia_spawn, tmp_path) -> None:
    repo = tmp_path / "c"
    api_port, swarm_port = procs.free_port(), procs.free_port()
    url = f"http://127.0.0.1:{api_port}"
    daemon, proc = helia_spawn(repo, api_port, swarm_port)
    before = devnet.helia_swarm_addr(url)
    digest = Store(url, None).put_manifest(canonical_bytes({"kept": "across a restart"}))
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=15) == 0
    assert "stopped" in daemon.log_path.read_text()
    assert not procs.port_busy(api_port) and not procs.port_busy(swarm_port)
    assert not procs.alive(daemon.pid)

    again, proc = helia_spawn(repo, api_port, swarm_port)
    assert devnet.helia_swarm_addr(url) == before  # the key lives in the repo: peers' --peer lists stay valid
    got = Store(url, None, timeout=2.0).get_manifest(digest)
    assert json.loads(got) == {"kept": "across a restart"}
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=15) == 0


def test_a_restarted_peer_is_redialed_and_serves_again(helia_spawn, tmp_path: Path) -> None:
    """B keeps its --peer A: when A comes back (same repo, same ports, same peer ID), B redials it
    by itself and fetches what A stored while B was cut off."""
    a_ports, b_ports = (procs.free_port(), procs.free_port()), (procs.free_port(), procs.free_port())
    a_url, b_url = (f"http://127.0.0.1:{p[0]}" for p in (a_ports, b_ports))
    _, a_proc = helia_spawn(tmp_path / "a", *a_ports)
    a_addr = devnet.helia_swarm_addr(a_url)
    helia_spawn(tmp_path / "b", *b_ports, (a_addr,))
    a_proc.send_signal(signal.SIGTERM)
    assert a_proc.wait(timeout=15) == 0
    helia_spawn(tmp_path / "a", *a_ports)
    digest = Store(a_url, None).put_manifest(canonical_bytes({"after": "the restart"}))
    got = Store(b_url, None, timeout=10.0).get_manifest(digest)  # redial within REDIAL_MS, then bitswap
    assert json.loads(got) == {"after": "the restart"}
    assert a_addr.rsplit("/", 1)[1] in devnet.swarm_peers(b_url)


def test_a_peer_address_without_a_peer_id_is_refused_before_anything_starts(tmp_path: Path) -> None:
    with pytest.raises(devnet.PeerAddressError, match="/p2p/<peer id>"):
        devnet.helia_argv(tmp_path, 1, 2, ["/ip4/127.0.0.1/tcp/4001"])

"""Content store against a real js-ipfs daemon: round trips, addresses, and every refusal (issue 4)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from concord.client.content.manifest import (
    ManifestError,
    ModelManifest,
    ShardRef,
    cid_for_digest,
)
from concord.client.content.store import (
    ContentNotFound,
    DigestMismatch,
    SizeLimitExceeded,
    SizeMismatch,
    Store,
    StoreUnavailable,
    api_multiaddr,
)
from concord.client.digest import Digest
from concord.client.runtime import procs
from scripts import devnet

MB = 1_000_000


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


# ----------------------------------------------------------------------------- round trips


def test_manifest_round_trip_and_cid_is_the_daemons(ipfs, store: Store, other: Store) -> None:
    shard = store.put_file(os.urandom(1000), name="w.safetensors")
    manifest = ModelManifest({"d_model": 8}, "float32", [shard], None, None)
    data = manifest.to_bytes()
    digest = store.put_manifest(data)
    assert digest == manifest.digest() == Digest(hashlib.sha256(data).digest())
    # The daemon, asked directly, files the same bytes under the CID derived from the digest.
    answer = requests.post(
        f"{ipfs.api_url}/api/v0/block/put",
        params={"format": "raw", "cid-base": "base32"},
        files={"file": ("manifest", data, "application/octet-stream")},
        timeout=10,
    ).json()
    assert answer["Key"] == cid_for_digest(digest)
    assert other.get_manifest(digest) == data
    assert other.is_pinned(cid_for_digest(digest))
    for text in (str(digest), digest.hex(), digest.bytes):  # the edges take any form of it
        assert ModelManifest.from_bytes(other.get_manifest(text)) == manifest


def test_file_round_trip_small_and_multi_chunk(store: Store, other: Store, tmp_path: Path) -> None:
    small = os.urandom(1000)
    big = os.urandom(3 * MB)  # three 1 MiB chunks: a dag-pb root over raw leaves
    src = tmp_path / "big.bin"
    src.write_bytes(big)
    for payload, ref in [(small, store.put_file(small, name="small.bin")), (big, store.put_file(src))]:
        assert ref.sha256 == hashlib.sha256(payload).hexdigest() and ref.size == len(payload)
        assert ref.cid.startswith("bafkrei" if payload is small else "bafybei")
        dest = other.get_file(ref, tmp_path / "out" / ref.name, max_bytes=10 * MB)
        assert dest.read_bytes() == payload
        assert other.get_bytes(ref, max_bytes=10 * MB) == payload
        assert other.is_pinned(ref.cid)
    assert leftovers(tmp_path / "out") == ["big.bin", "small.bin"]
    assert store.put_file(small, name="small.bin").cid.startswith("bafkrei")  # CIDv1 raw for one chunk


def test_put_manifest_refuses_non_canonical_bytes(store: Store) -> None:
    with pytest.raises(ManifestError) as info:
        store.put_manifest(b'{"b": 1, "a": 2}')
    assert info.value.field == "<document>"


def test_pin_keeps_unpinned_content(store: Store) -> None:
    ref = store.put_file(os.urandom(500), name="loose.bin", pin=False)
    assert not store.is_pinned(ref.cid)
    store.pin(ref.cid)
    assert store.is_pinned(ref.cid)


def test_api_accepts_multiaddr_or_url() -> None:
    assert api_multiaddr("http://127.0.0.1:5001") == "/ip4/127.0.0.1/tcp/5001/http"
    assert api_multiaddr("/dns/ipfs.example/tcp/443/https") == "/dns/ipfs.example/tcp/443/https"
    assert api_multiaddr("https://ipfs.example:8443") == "/dns/ipfs.example/tcp/8443/https"
    with pytest.raises(ValueError):
        api_multiaddr("127.0.0.1:5001")


# ----------------------------------------------------------------------------- refusals


def test_unknown_cid_is_a_clear_error_within_the_timeout(other: Store, tmp_path: Path) -> None:
    digest = hashlib.sha256(b"never stored " + os.urandom(8)).hexdigest()
    start = time.monotonic()
    with pytest.raises(ContentNotFound) as info:
        other.get_manifest(digest)
    assert time.monotonic() - start < other.timeout + 3
    assert cid_for_digest(digest) in str(info.value) and digest in str(info.value)

    ref = ShardRef("ghost.bin", cid_for_digest(digest), digest, 10)
    start = time.monotonic()
    with pytest.raises(ContentNotFound) as info:
        other.get_file(ref, tmp_path / "ghost.bin", max_bytes=MB)
    assert time.monotonic() - start < other.timeout + 3
    assert ref.cid in str(info.value) and "10 bytes" in str(info.value)
    assert [n for n in leftovers(tmp_path) if not n.startswith("cache")] == []


def test_wrong_bytes_for_a_digest_raise_and_write_nothing(store: Store, other: Store, tmp_path: Path) -> None:
    real = os.urandom(2 * MB)
    ref = store.put_file(real, name="real.bin")
    claimed = hashlib.sha256(b"what the manifest promised").hexdigest()
    lie = ShardRef("lie.bin", ref.cid, claimed, ref.size)
    out = tmp_path / "out"
    with pytest.raises(DigestMismatch) as info:
        other.get_file(lie, out / "lie.bin", max_bytes=10 * MB)
    assert info.value.cid == ref.cid and info.value.expected == claimed and info.value.got == ref.sha256
    with pytest.raises(DigestMismatch):
        other.get_bytes(lie, max_bytes=10 * MB)
    assert leftovers(out) == []  # no final file, no .part file
    assert not (other.cache_dir / claimed).exists()  # nothing cached under the false digest


def test_oversize_is_refused_before_download(store: Store, other: Store, tmp_path: Path, dead_store) -> None:
    ref = store.put_file(os.urandom(2 * MB), name="big.bin")
    # The reference itself is over the limit: refused without touching the network at all.
    with pytest.raises(SizeLimitExceeded) as info:
        dead_store(None).get_file(ref, tmp_path / "a.bin", max_bytes=MB)
    assert info.value.size == ref.size and info.value.limit == MB
    # A reference that understates the size: the daemon's stat is over the limit, so no cat happens.
    understated = ShardRef("small.bin", ref.cid, ref.sha256, 1000)
    with pytest.raises(SizeLimitExceeded) as info:
        other.get_file(understated, tmp_path / "b.bin", max_bytes=MB)
    assert info.value.size == 2 * MB
    with pytest.raises(SizeMismatch) as info:
        other.get_file(understated, tmp_path / "c.bin", max_bytes=10 * MB)
    assert (info.value.expected, info.value.got) == (1000, 2 * MB)
    assert [n for n in leftovers(tmp_path) if not n.startswith("cache")] == []
    # Manifests: block/stat says how big before block/get fetches it.
    digest = store.put_manifest(json.dumps({"pad": "x" * 500}, separators=(",", ":")).encode())
    with pytest.raises(SizeLimitExceeded):
        other.get_manifest(digest, max_bytes=100)


def test_cache_hit_needs_no_network_and_corruption_is_refetched(
    store: Store, other: Store, tmp_path: Path, dead_store
) -> None:
    payload = os.urandom(100_000)
    ref = store.put_file(payload, name="cached.bin")
    digest = store.put_manifest(b'{"kind":"note"}')
    other.get_file(ref, tmp_path / "first.bin", max_bytes=MB)
    other.get_manifest(digest)
    offline = dead_store(other.cache_dir)
    assert offline.get_file(ref, tmp_path / "second.bin", max_bytes=MB).read_bytes() == payload
    assert offline.get_manifest(digest) == b'{"kind":"note"}'
    # A corrupted cache entry is never served: it is dropped and fetched again.
    (other.cache_dir / ref.sha256).unlink()
    (other.cache_dir / ref.sha256).write_bytes(b"\0" * len(payload))
    assert other.get_file(ref, tmp_path / "third.bin", max_bytes=MB).read_bytes() == payload
    assert (other.cache_dir / ref.sha256).read_bytes() == payload


# ----------------------------------------------------------------------------- daemon down and back


@pytest.fixture
def own_ipfs(tmp_path: Path) -> Iterator[dict]:
    """A js-ipfs of this test's own, so it can be stopped and restarted on the same repo."""
    ports = devnet.Ports(
        anvil=0, ipfs_api=procs.free_port(), ipfs_gateway=procs.free_port(), ipfs_grpc=procs.free_port()
    )
    repo = tmp_path / "repo"
    node = {"ports": ports, "repo": repo, "daemon": devnet.start_ipfs(repo, ports, tmp_path / "ipfs.log")}
    try:
        yield node
    finally:
        procs.stop(node["daemon"])


def test_daemon_down_is_unavailable_then_a_retry_picks_up_the_restart(
    own_ipfs: dict, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    api = f"/ip4/127.0.0.1/tcp/{own_ipfs['ports'].ipfs_api}/http"
    digest = Store(api, None).put_manifest(b'{"kind":"survives"}')
    procs.stop(own_ipfs["daemon"])

    impatient = Store(api, None, timeout=2.0, retries=2, backoff=0.05)
    with pytest.raises(StoreUnavailable) as info:
        impatient.get_manifest(digest)
    assert api in str(info.value) and "\n" not in str(info.value)

    # Restart on the same repo (no re-init) while a patient store is inside its retry loop.
    argv = own_ipfs["daemon"].argv
    daemon, _ = procs.start("ipfs", argv, tmp_path / "ipfs2.log", env={"IPFS_PATH": str(own_ipfs["repo"])})
    own_ipfs["daemon"] = daemon
    # a deadline that a loaded machine's daemon restart fits in (js-ipfs took over 5 s at load 20)
    patient = Store(api, None, timeout=60.0, retries=8, backoff=0.25)
    with caplog.at_level(logging.WARNING, logger="concord.client.content.store"):
        assert patient.get_manifest(digest) == b'{"kind":"survives"}'
    assert any("retry 1/7" in r.getMessage() for r in caplog.records)

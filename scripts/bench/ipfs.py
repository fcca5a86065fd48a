"""IPFS throughput through the content store: put then get of a model-sized file (issue 4 target >= 50 MB/s).

Measures what a node sees: ``Store.put_file`` (multipart upload, CIDv1 raw leaves, 1 MiB
chunks, pinned, sha256 while sending) and ``Store.get_file`` on an empty cache (block/stat of
the root, block/get of each 1 MiB leaf, every block and the file sha256-checked, temp file +
rename). MB = 10**6 bytes. Each run uses fresh random bytes so the daemon cannot deduplicate
against an earlier run; the median run is reported.

    python -m scripts.bench.ipfs [--api MULTIADDR] [--size-mb 50] [--runs 3]

Without ``--api`` it starts a throwaway offline js-ipfs daemon and stops it (by PID) at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from concord.client.content.store import Store
from concord.client.runtime import procs
from scripts import devnet

MB = 1_000_000


def measure(api: str, size: int, work: Path) -> tuple[float, float]:
    """One put+get of ``size`` fresh random bytes; returns (put_s, get_s)."""
    src = work / "model.bin"
    src.write_bytes(os.urandom(size))
    uploader = Store(api, None, timeout=60.0)
    downloader = Store(api, work / "cache", timeout=60.0)  # empty cache: the get crosses the API
    start = time.perf_counter()
    ref = uploader.put_file(src)
    put_s = time.perf_counter() - start
    start = time.perf_counter()
    dest = downloader.get_file(ref, work / "fetched.bin", max_bytes=size)
    get_s = time.perf_counter() - start
    if dest.stat().st_size != size:
        raise RuntimeError(f"fetched {dest.stat().st_size} bytes of {size}")  # get_file verified sha256 already
    for path in (src, dest, work / "cache" / ref.sha256):
        path.unlink(missing_ok=True)
    return put_s, get_s


def run(api: str, size: int, runs: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="concord-bench-ipfs-") as tmp:
        results = [measure(api, size, Path(tmp)) for _ in range(runs)]
    rows = [(i + 1, size / MB / p, size / MB / g, 2 * size / MB / (p + g), p, g) for i, (p, g) in enumerate(results)]
    print(f"{'run':>3}  {'put MB/s':>9}  {'get MB/s':>9}  {'both MB/s':>9}  {'put s':>6}  {'get s':>6}")
    for row in rows:
        print(f"{row[0]:>3}  {row[1]:>9.1f}  {row[2]:>9.1f}  {row[3]:>9.1f}  {row[4]:>6.2f}  {row[5]:>6.2f}")
    put_s = statistics.median(p for p, _ in results)
    get_s = statistics.median(g for _, g in results)
    return {
        "ipfs_put_mb_per_s": round(size / MB / put_s, 1),
        "ipfs_get_mb_per_s": round(size / MB / get_s, 1),
        "ipfs_mb_per_s": round(2 * size / MB / (put_s + get_s), 1),
        "size_mb": size / MB,
        "runs": runs,
        "api": api,
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="concord bench ipfs", description=__doc__.splitlines()[0])
    p.add_argument("--api", help="Kubo-RPC multiaddr or URL (default: start a throwaway js-ipfs)")
    p.add_argument("--size-mb", type=float, default=50.0)
    p.add_argument("--runs", type=int, default=3)
    args = p.parse_args(argv)
    size = int(args.size_mb * MB)
    if args.api:
        result = run(args.api, size, args.runs)
    else:
        with tempfile.TemporaryDirectory(prefix="concord-bench-ipfs-node-") as tmp:
            ports = devnet.Ports(
                anvil=0, ipfs_api=procs.free_port(), ipfs_gateway=procs.free_port(), ipfs_grpc=procs.free_port()
            )
            daemon = devnet.start_ipfs(Path(tmp) / "repo", ports, Path(tmp) / "ipfs.log")
            try:
                result = run(f"/ip4/127.0.0.1/tcp/{ports.ipfs_api}/http", size, args.runs)
            finally:
                procs.stop(daemon)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

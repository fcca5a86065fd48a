"""Peer-to-peer IPFS throughput: a file put to Helia peer A is fetched through peer B (issue 23).

Two throwaway Helia peers (scripts/ipfs_node/server.mjs) on loopback, B started with A as its peer.
``Store.put_file`` to A (multipart upload, CIDv1 raw leaves, 1 MiB chunks, pinned), then
``Store.get_file`` through B on an empty cache: B holds none of the blocks, so each ``block/get``
is a bitswap want from B to A over libp2p TCP (noise + yamux), every block and the file
sha256-checked. A third number, the same get through A (local blocks), separates the swarm hop
from the API's own cost. MB = 10**6 bytes; fresh random bytes each run; the median run is reported.

    python -m scripts.bench.ipfs_peers [--size-mb 50] [--runs 3]

Both daemons are stopped by PID at the end, also on Ctrl-C or SIGTERM (procs.no_orphans).
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


def _peer(repo: Path, peers: tuple[str, ...] = ()) -> tuple[procs.Daemon, str]:
    api_port, swarm_port = procs.free_port(), procs.free_port()
    daemon = devnet.start_helia(repo, api_port, swarm_port, peers)
    return daemon, f"http://127.0.0.1:{api_port}"


def measure(a: str, b: str, size: int, work: Path) -> tuple[float, float, float]:
    """One put to A, get through B, get through A of ``size`` fresh bytes; returns the three times."""
    src = work / "model.bin"
    src.write_bytes(os.urandom(size))
    start = time.perf_counter()
    ref = Store(a, None, timeout=60.0).put_file(src)
    put_s = time.perf_counter() - start
    times = []
    for api in (b, a):
        start = time.perf_counter()
        dest = Store(api, None, timeout=60.0).get_file(ref, work / "fetched.bin", max_bytes=size)
        times.append(time.perf_counter() - start)
        if dest.stat().st_size != size:
            raise RuntimeError(f"fetched {dest.stat().st_size} bytes of {size}")  # sha256 checked already
        dest.unlink()
    src.unlink()
    return put_s, times[0], times[1]


def run(size: int, runs: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="concord-bench-peers-") as tmp, procs.no_orphans():
        work = Path(tmp)
        started: list[procs.Daemon] = []
        try:
            da, a = _peer(work / "a")
            started.append(da)
            db, b = _peer(work / "b", (devnet.helia_swarm_addr(a),))
            started.append(db)
            deadline = time.monotonic() + 20
            while not devnet.swarm_peers(b):
                if time.monotonic() > deadline:
                    raise RuntimeError("peer B never connected to A")
                time.sleep(0.1)
            results = [measure(a, b, size, work) for _ in range(runs)]
        finally:
            procs.stop_all(started)
    print(f"{'run':>3}  {'put A MB/s':>10}  {'A->B MB/s':>10}  {'local A MB/s':>12}  {'A->B s':>7}")
    for i, (p, g, loc) in enumerate(results):
        print(f"{i + 1:>3}  {size / MB / p:>10.1f}  {size / MB / g:>10.1f}  {size / MB / loc:>12.1f}  {g:>7.2f}")
    put_s, peer_s, local_s = (statistics.median(r[k] for r in results) for k in range(3))
    return {
        "ipfs_put_mb_per_s": round(size / MB / put_s, 1),
        "ipfs_peer_get_mb_per_s": round(size / MB / peer_s, 1),
        "ipfs_local_get_mb_per_s": round(size / MB / local_s, 1),
        "peer_get_s": round(peer_s, 2),
        "size_mb": size / MB,
        "runs": runs,
        "daemon": "helia 7 (scripts/ipfs_node/server.mjs), bitswap over libp2p TCP on 127.0.0.1",
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m scripts.bench.ipfs_peers", description=__doc__.splitlines()[0])
    p.add_argument("--size-mb", type=float, default=50.0)
    p.add_argument("--runs", type=int, default=3)
    args = p.parse_args(argv)
    print(json.dumps(run(int(args.size_mb * MB), args.runs)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

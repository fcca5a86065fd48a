"""Model distribution over a rate-limited network of Helia peers, one per namespace (issue 23).

3 validators + N trainers, each with its own Helia daemon (scripts/ipfs_node/server.mjs) in its own
network namespace (scripts/netns.py) on one bridge, full mesh (every daemon dials every other at
start). Links: tbf limits per veth, validators 1000 Mbit/s, trainers alternating 100 and 20 Mbit/s
(``--trainer-mbit``), on upload and, with ``--links both`` (the default), on download too: a WAN
host's line caps both ways, and the one-link baseline below is only a floor when the slowest
trainer cannot receive faster than its line.

The measurement: a model file (``--model PATH``, else ``--size-mb`` fresh random bytes) is put to
every validator's daemon (``Store.put_file``: same bytes, same CID). Then every trainer fetches it
at once: a worker inside each trainer's namespace runs ``Store.get_file`` against its own daemon
(block by block, sha256-checked; its API traffic stays on the namespace's loopback), and its
daemon wants each block from all its peers (bitswap). Reported:

* ``distribution_s``: from the moment the workers are told to start (the file already published)
  until the last trainer holds every byte;
* ``distribution_s_one_link``: model_bytes * 8 / the slowest trainer's rate, and
  ``distribution_s_one_link_measured``: the same bytes over one TCP connection through a link with
  that limit, between two fresh namespaces of the same network;
* ``origin_upload_fraction``: bytes the validators' veths sent / bytes the trainers' veths received
  during the distribution (whole frames: headers, wants and duplicate blocks included);
* ``nodes``, ``ipfs_daemons``, ``topology``, ``links_mbit``, ``model_bytes``.

    python -m scripts.bench.network [--trainers 8] [--size-mb 50] [--links both|up]
    python -m scripts.bench.network --rounds [--trainers 4] [--rounds-seconds 150]   (the rounds half)

Needs root (network namespaces); everything (daemons, workers, namespaces, veths, bridge, qdiscs)
is removed on the way out, also on Ctrl-C or SIGTERM. The async/churn half of the issue's bench
(rounds per hour per async level, churn) builds on ``build_network``: it returns each node's API.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import requests
from rich.console import Console
from rich.table import Table

from concord.client.content.manifest import ShardRef
from concord.client.content.store import Store
from concord.client.runtime import procs
from scripts import REPO_ROOT, netns
from scripts.devnet import TRAINER_MBIT, VALIDATOR_MBIT, NetnsPeer, build_network, roles_of
from scripts.netns import Network

MB = 1_000_000
# ----------------------------------------------------------------------------- the fetch worker

WORKER_POLL_S = 0.005


def worker(api: str, ref_json: str, dest: str, go_file: str, out_file: str) -> int:
    """Inside a trainer's namespace: wait for ``go_file``, fetch the model from the own daemon, write
    {"start", "done"} (wall clock, shared by all namespaces of one machine) to ``out_file``."""
    ref = ShardRef(**json.loads(ref_json))
    store = Store(api, None, timeout=120.0)
    go = Path(go_file)
    while not go.exists():
        time.sleep(WORKER_POLL_S)
    start = time.time()
    store.get_file(ref, Path(dest), max_bytes=ref.size)
    done = time.time()
    Path(dest).unlink()
    Path(out_file).write_text(json.dumps({"start": start, "done": done}))
    return 0


def distribute(net: Network, peers: dict[str, NetnsPeer], ref: ShardRef, work: Path, timeout: float) -> dict:
    """Every trainer fetches ``ref`` at once; seconds until the last holds it, and the bytes moved."""
    trainers = [p for p in peers.values() if p.role == "trainer"]
    validators = [p for p in peers.values() if p.role == "validator"]
    go = work / "go"
    workers = []
    for t in trainers:
        argv = [
            sys.executable,
            "-m",
            "scripts.bench.network",
            "--worker",
            t.api,
            json.dumps({"name": ref.name, "cid": ref.cid, "sha256": ref.sha256, "size": ref.size}),
            str(work / f"{t.node.name}.model"),
            str(go),
            str(work / f"{t.node.name}.json"),
        ]
        env = {"PYTHONPATH": str(REPO_ROOT)}
        daemon, proc = net.start(t.node, f"fetch-{t.node.name}", argv, work / f"{t.node.name}.worker.log", env)
        workers.append((t, daemon, proc))
    time.sleep(3.0)  # the workers import and wait on `go` (their start is not what is measured)
    before = {p.node.name: net.counters(p.node) for p in peers.values()}
    t0 = time.time()
    go.touch()
    deadline = time.monotonic() + timeout
    for t, daemon, proc in workers:
        left = max(0.1, deadline - time.monotonic())
        try:
            rc = proc.wait(timeout=left)
        except Exception as e:
            raise RuntimeError(f"{t.node.name}'s fetch did not finish in {timeout:.0f}s") from e
        if rc != 0:
            raise RuntimeError(f"{t.node.name}'s fetch failed (exit {rc}): {procs.log_tail(daemon.log_path)}")
    after = {p.node.name: net.counters(p.node) for p in peers.values()}
    exchange = {p.node.name: exchange_stat(p.api_url) for p in peers.values()}
    done = {t.node.name: json.loads((work / f"{t.node.name}.json").read_text()) for t in trainers}
    late = [t.node.name for t in trainers if done[t.node.name]["start"] - t0 > 1.0]
    if late:
        raise RuntimeError(f"workers {late} started over 1 s after the go: the machine is too loaded to measure")
    up = {n: after[n].uploaded - before[n].uploaded for n in after}
    down = {n: after[n].downloaded - before[n].downloaded for n in after}
    return {
        "distribution_s": max(d["done"] for d in done.values()) - t0,
        "per_trainer_s": {n: d["done"] - t0 for n, d in done.items()},
        "validators_up": sum(up[p.node.name] for p in validators),
        "trainers_down": sum(down[p.node.name] for p in trainers),
        "trainers_up": sum(up[p.node.name] for p in trainers),
        "up": up,
        "down": down,
        "exchange": exchange,
    }


def exchange_stat(api_url: str) -> dict:
    """What a daemon's block exchange moved since it started (server.mjs ``bitswap/stat``): blocks sent
    and received, duplicates, bitswap fallbacks, failed GETs (a holder that did not deliver)."""
    resp = requests.post(f"{api_url}/api/v0/bitswap/stat", timeout=10)
    resp.raise_for_status()
    s = resp.json()
    return {
        "sent": s["BlocksSent"],
        "received": s["BlocksReceived"],
        "dup": s["DupBlksReceived"],
        "fallbacks": s["ConcordFallbacks"],
        "get_failures": s["ConcordGetFailures"],
    }


# ----------------------------------------------------------------------------- the bench


def model_file(work: Path, path: Path | None, size: int) -> Path:
    if path is not None:
        return path
    src = work / "model.bin"
    with open(src, "wb") as f:
        left = size
        while left > 0:
            f.write(os.urandom(min(left, 1 << 24)))
            left -= min(left, 1 << 24)
    return src


def run(args: argparse.Namespace) -> dict:
    roles = roles_of(args.trainers, args.validators, args.validator_mbit, args.trainer_mbit)
    both = args.links == "both"
    with tempfile.TemporaryDirectory(prefix="concord-bench-net-") as tmp, Network() as net:
        work = Path(args.keep or tmp)
        src = model_file(work, args.model, int(args.size_mb * MB))
        size = src.stat().st_size
        print(f"network {net.tag} on {net.gateway}: {len(roles)} namespaces, Helia daemons starting", file=sys.stderr)
        started = time.monotonic()
        peers = build_network(net, work, roles, both_ways=both)
        up_s = time.monotonic() - started
        validators = [p for p in peers.values() if p.role == "validator"]
        ref = None
        for v in validators:
            r = Store(v.api, None, timeout=120.0).put_file(src, name="model.bin")
            if ref is not None and r.cid != ref.cid:
                raise RuntimeError(f"{v.node.name} gave {r.cid}, {validators[0].node.name} {ref.cid}")
            ref = r
        assert ref is not None
        print(f"published {size} bytes as {ref.cid} on {len(validators)} validators", file=sys.stderr)
        dist = distribute(net, peers, ref, work, args.timeout)
        slowest = min(args.trainer_mbit[i % len(args.trainer_mbit)] for i in range(args.trainers))
        a = net.add("link-a", upload_mbit=slowest, download_mbit=slowest if both else None)
        b = net.add("link-b")
        one_link_measured = netns.measure_tcp(net, a, b, size, timeout=args.timeout)
        if args.model is None:
            src.unlink()
    one_link = size * 8 / (slowest * 1e6)
    return {
        "nodes": len(roles),
        "ipfs_daemons": len(roles),
        "validators": args.validators,
        "trainers": args.trainers,
        "topology": "full mesh (every daemon dials every other); a block is asked of every peer (WANT_HAVE) "
        "and fetched from one holder, peers that are fetching too before the origin",
        "links_mbit": {name: mbit for name, _, mbit in roles},
        "links_limit": "upload and download (tbf per veth)" if both else "upload only (tbf per veth)",
        "model_bytes": size,
        "model_sha256": ref.sha256,
        "distribution_s": round(dist["distribution_s"], 2),
        "distribution_s_one_link": round(one_link, 2),
        "distribution_s_one_link_measured": round(one_link_measured, 2),
        "distribution_over_one_link": round(dist["distribution_s"] / one_link, 2),
        "origin_upload_fraction": round(dist["validators_up"] / dist["trainers_down"], 3),
        "validators_uploaded_bytes": dist["validators_up"],
        "trainers_downloaded_bytes": dist["trainers_down"],
        "trainers_uploaded_bytes": dist["trainers_up"],
        "copies_per_trainer": round(dist["trainers_down"] / (args.trainers * size), 3),
        "per_trainer_s": {n: round(s, 2) for n, s in dist["per_trainer_s"].items()},
        "exchange": dist["exchange"],
        "network_up_s": round(up_s, 1),
        "daemon": "helia 7 (scripts/ipfs_node/server.mjs), its block exchange (bitswap as fallback) over "
        "libp2p TCP, one per namespace",
    }


def table(r: dict) -> Table:
    t = Table(title=f"model distribution: {r['validators']} validators + {r['trainers']} trainers, {r['links_limit']}")
    t.add_column("node")
    t.add_column("Mbit/s", justify="right")
    t.add_column("done s", justify="right")
    for name, mbit in r["links_mbit"].items():
        t.add_row(name, f"{mbit:g}", f"{r['per_trainer_s'].get(name, 0):.2f}" if name in r["per_trainer_s"] else "-")
    t.add_section()
    t.add_row("distribution_s", "", f"{r['distribution_s']:.2f}")
    t.add_row(
        "one link (rate / measured)",
        "",
        f"{r['distribution_s_one_link']:.2f} / {r['distribution_s_one_link_measured']:.2f}",
    )
    t.add_row("origin_upload_fraction", "", f"{r['origin_upload_fraction']:.3f}")
    return t


def rates(text: str) -> tuple[float, ...]:
    """--trainer-mbit: comma-separated Mbit/s, each in netns's 0.01-100000."""
    try:
        out = tuple(float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated Mbit/s, e.g. 100,20; got {text!r}") from None
    if not out or not all(0.01 <= r <= 100_000 for r in out):
        raise argparse.ArgumentTypeError(f"each rate must be 0.01-100000 Mbit/s; got {text!r}")
    return out


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="concord bench network",
        description=__doc__.splitlines()[0],
        epilog="concord bench network --rounds [--help]: the rounds half (async levels 0-2 and churn)",
    )
    p.add_argument("--trainers", type=int, default=8)
    p.add_argument("--validators", type=int, default=3)
    p.add_argument("--validator-mbit", type=float, default=VALIDATOR_MBIT)
    p.add_argument(
        "--trainer-mbit",
        type=rates,
        default=TRAINER_MBIT,
        help="comma-separated rates, assigned to trainers in turn (default 100,20)",
    )
    p.add_argument("--links", choices=("both", "up"), default="both", help="limit upload and download, or upload only")
    p.add_argument("--size-mb", type=float, default=50.0, help="random model bytes when no --model is given")
    p.add_argument("--model", type=Path, default=None, help="a model file to distribute instead of random bytes")
    p.add_argument("--keep", type=Path, default=None, help="work in this directory and keep it (daemon logs)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds the distribution may take")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args_in = list(sys.argv[1:] if argv is None else argv)
    if args_in[:1] == ["--worker"]:
        return worker(*args_in[1:6])
    if "--rounds" in args_in:  # the rounds half: async levels and churn (scripts/bench/network_rounds.py)
        from scripts.bench import network_rounds

        return network_rounds.main(args_in)
    args = parser().parse_args(args_in)
    for field in ("trainers", "validators"):
        if getattr(args, field) < 1:
            raise SystemExit(f"--{field} must be at least 1, got {getattr(args, field)}")
    if args.model is not None and not args.model.is_file():
        raise SystemExit(f"--model {args.model}: no such file")
    reason = netns.available()
    if reason is not None:
        raise SystemExit(f"concord bench network needs network namespaces: {reason}")
    result = run(args)
    Console().print(table(result))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

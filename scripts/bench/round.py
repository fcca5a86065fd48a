"""`concord bench round`: where a network round's wall time goes, and whether the network learns like the simulation.

One throwaway devnet (Anvil + js-ipfs on free ports), the default task (configs/default_task.toml)
for ``--rounds`` rounds, 4 trainer and 2 validator nodes as separate processes (the CLI's own
``python -m concord.client.trainer run`` / ``python -m concord.validator.node run``: what an operator runs,
each with its own interpreter, so nodes compete for the cores and not for one GIL), and:

* the wall-time split: every node process appends its spans (client.timing: chain RPC, IPFS,
  generation, proofs, local training, verification, replay, aggregation) to a file; the
  bench merges them over rounds 1..N-1 (round 0 includes process start-up). "busy" is node
  seconds per category; "wall %" gives each instant of the rounds' wall time to the highest
  ranked category any node was in (model compute first, then proofs, IPFS, chain), "idle"
  when no node was in any span. ``overhead_fraction`` = share of wall time in which no node
  did model compute (generation, training, verification, replay, aggregation).
* ``ipfs_mb_per_s``: a 50 MB file put then fetched through the store (scripts.bench.ipfs),
  against the same daemon before the nodes start.
* ``reward_ratio_vs_sim``: mean reward of the accepted submissions' rollouts over the last
  ``min(5, N)`` rounds, over the same for scripts.simulate.simulate_decentralized run in this
  process with the same task id, trainer addresses (so the same seeds), rounds and budget.
  By default the simulation sums each round's deltas in the validators' order (by bundle
  digest), so an exact network reproduces it bit for bit; ``--sim-order address`` sums them
  by trainer address instead, which differs only in float rounding and shows how far that
  alone moves a run.

    python -m scripts.bench.round [--rounds 30] [--ipfs-size-mb 50] [--sim-order digest|address] [--keep DIR]

Every process it starts is stopped by PID when it ends, also on failure or Ctrl-C.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from concord.client import chain, timing
from concord.client.chain import Role, keys
from concord.client.initiator import TaskFile, load_task_file, publish_task
from concord.client.runtime import procs
from scripts import REPO_ROOT, devnet, harness
from scripts.bench import ipfs as bench_ipfs

TASK_TOML = REPO_ROOT / "configs" / "default_task.toml"
COMPUTE = ("generation", "training", "verification", "replay", "aggregation")
RANK = COMPUTE + ("proofs", "ipfs", "chain")  # wall attribution order: first active wins
INITIATOR = 0
PHASE_SECONDS = 600  # deadlines only bound a stall: every phase here closes early (all joined nodes acted)
REWARD_WINDOW = 5


class BenchFailed(RuntimeError):
    """A node died or the rounds stalled; the message names the log to read."""


@dataclass(frozen=True)
class Actor:
    name: str
    role: str  # "trainer" | "validator"
    account: int
    state_dir: Path
    log_path: Path
    timings: Path


@dataclass(frozen=True)
class Split:
    window_s: float
    busy: dict[str, float]  # node-seconds per category
    wall: dict[str, float]  # seconds of wall time given to each category (+ "idle")


# ----------------------------------------------------------------------------- the run


def actors(work: Path, trainers: int, validators: int) -> list[Actor]:
    out = []
    for i in range(validators):
        name = f"validator-{i}"
        out.append(
            Actor(
                name, "validator", 1 + trainers + i, work / name, work / f"{name}.log", work / f"{name}.timings.jsonl"
            )
        )
    for i in range(trainers):
        name = f"trainer-{i}"
        out.append(Actor(name, "trainer", 1 + i, work / name, work / f"{name}.log", work / f"{name}.timings.jsonl"))
    return out


def publish(net: devnet.Devnet, rounds: int, trainers: int) -> tuple[int, TaskFile]:
    """The default task for ``rounds`` rounds (budget for exactly those) with long deadlines."""
    from concord.client.content.store import Store

    client = chain.connect(net.rpc_url, chain.Deployment.from_json(net.deployment))
    task_file = load_task_file(TASK_TOML)
    if task_file.spec.task.trainers_per_round != trainers:
        task_file = dataclasses.replace(
            task_file,
            spec=dataclasses.replace(
                task_file.spec, task=dataclasses.replace(task_file.spec.task, trainers_per_round=trainers)
            ),
        )
    params = dataclasses.replace(
        task_file.params,
        max_rounds=rounds,
        submit_seconds=PHASE_SECONDS,
        commit_seconds=PHASE_SECONDS,
        reveal_seconds=PHASE_SECONDS,
    )
    task_file = dataclasses.replace(task_file, params=params, budget=params.per_round * rounds)
    store = Store(net.ipfs_api, None, timeout=30.0)
    signer = client.signer(keys.devnet_account(INITIATOR))
    return publish_task(client, signer, store, task_file, str(TASK_TOML)).task_id, task_file


def enrol_all(net: devnet.Devnet, task_id: int, task_file: TaskFile, cast: Sequence[Actor]) -> chain.ChainClient:
    """Stake and join every node before any starts, so round 0 expects all of them."""
    client = chain.connect(net.rpc_url, chain.Deployment.from_json(net.deployment))
    for a in cast:
        role = Role.TRAINER if a.role == "trainer" else Role.VALIDATOR
        stake = task_file.params.min_trainer_stake if a.role == "trainer" else task_file.params.min_validator_stake
        harness.enrol(client, a.account, role, stake, task_id)
    return client


def start_actor(
    a: Actor, devnet_json: Path, task_id: int, rounds: int, poll: float
) -> tuple[procs.Daemon, subprocess.Popen]:
    module = "concord.client.trainer" if a.role == "trainer" else "concord.validator.node"
    argv = harness.node_command(module, ("--devnet", str(devnet_json)), task_id, a.account, a.state_dir, rounds, poll)
    return procs.start(a.name, argv, a.log_path, env={timing.ENV: str(a.timings)}, cwd=REPO_ROOT)


def follow_rounds(
    client: chain.ChainClient,
    task_id: int,
    rounds: int,
    nodes: Sequence[tuple[procs.Daemon, subprocess.Popen]],
    timeout: float,
) -> list[float]:
    """time.monotonic() at which each round was seen finalized (polled every 20 ms); a node that
    fails (exit status != 0; trainers exit 0 after their last submission) stops the bench."""
    seen: list[float] = []
    deadline = time.monotonic() + timeout
    while len(seen) < rounds:
        done = client.concord.task_state(task_id).finalized_rounds
        now = time.monotonic()
        while len(seen) < done:
            seen.append(now)
            info = client.concord.round_info(task_id, len(seen) - 1)
            took = now - seen[-2] if len(seen) > 1 else float("nan")
            print(f"round {len(seen) - 1:>3} {info.phase.name.lower():>9}  {took:6.2f}s", file=sys.stderr, flush=True)
        if len(seen) >= rounds:
            break
        for d, proc in nodes:
            if proc.poll() not in (None, 0):
                raise BenchFailed(
                    f"{d.name} exited with {proc.returncode} after {len(seen)} rounds; "
                    f"see {d.log_path}: {procs.log_tail(d.log_path, 3)}"
                )
        if now > deadline:
            raise BenchFailed(f"only {len(seen)} of {rounds} rounds finalized within {timeout:.0f}s")
        time.sleep(0.02)
    return seen


# ----------------------------------------------------------------------------- analysis


def load_spans(path: Path) -> list[tuple[str, float, float]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            x = json.loads(line)
        except json.JSONDecodeError:  # a process killed mid-write leaves a partial last line
            continue
        out.append((x["cat"], float(x["t0"]), float(x["t1"])))
    return out


def split_wall(spans: Sequence[tuple[str, float, float]], t0: float, t1: float) -> Split:
    """Node-seconds per category and the wall attribution (first of RANK active; else idle) in [t0, t1]."""
    busy = dict.fromkeys(timing.CATEGORIES, 0.0)
    edges: list[tuple[float, int, str]] = []
    for cat, a, b in spans:
        a, b = max(a, t0), min(b, t1)
        if b <= a:
            continue
        busy[cat] += b - a
        edges += [(a, 1, cat), (b, -1, cat)]
    edges.sort()
    wall = dict.fromkeys((*RANK, "idle"), 0.0)
    active = dict.fromkeys(timing.CATEGORIES, 0)
    last = t0
    for t, delta, cat in edges + [(t1, 0, "")]:
        if t > last:
            top = next((c for c in RANK if active[c] > 0), "idle")
            wall[top] += t - last
            last = t
        if cat:
            active[cat] += delta
    return Split(t1 - t0, busy, wall)


def trainer_rewards(cast: Sequence[Actor], client: chain.ChainClient, task_id: int) -> dict[int, list[float]]:
    """round -> claimed mean rewards of the submissions the chain rewarded (validators recomputed them exactly)."""
    rewarded = {
        (e.round, e.trainer.lower())
        for e in client.concord.events(client.deployment.block_number, "latest", ["SubmissionRewarded"])
        if e.task_id == task_id
    }
    out: dict[int, list[float]] = {}
    for a in cast:
        if a.role != "trainer":
            continue
        me = keys.devnet_account(a.account).address.lower()
        for line in a.log_path.read_text().splitlines():
            if not line.startswith("{"):
                continue
            x = json.loads(line)
            if x.get("event") == "prepared" and (x["round"], me) in rewarded:
                out.setdefault(x["round"], []).append(float(x["mean_reward"]))
    return out


def window_mean(per_round: Sequence[float], window: int) -> float:
    tail = list(per_round)[-window:]
    return sum(tail) / len(tail)


def print_table(split: Split, rounds_measured: int, round_walls: Sequence[float]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"wall-time split over rounds 1..{rounds_measured} ({split.window_s:.1f} s of wall time)")
    table.add_column("category")
    table.add_column("kind")
    table.add_column("busy node-s", justify="right")
    table.add_column("busy s/round", justify="right")
    table.add_column("wall s/round", justify="right")
    table.add_column("wall %", justify="right")
    for cat in (*RANK, "idle"):
        kind = "compute" if cat in COMPUTE else "idle" if cat == "idle" else "overhead"
        busy = split.busy.get(cat)
        table.add_row(
            cat,
            kind,
            "-" if busy is None else f"{busy:.1f}",
            "-" if busy is None else f"{busy / rounds_measured:.2f}",
            f"{split.wall[cat] / rounds_measured:.2f}",
            f"{100 * split.wall[cat] / split.window_s:.1f}",
        )
    Console(stderr=False).print(table)
    walls = ", ".join(f"{w:.1f}" for w in round_walls)
    print(f"round wall times (s): {walls}")


# ----------------------------------------------------------------------------- main


def run_bench(args: argparse.Namespace, work: Path) -> dict:
    from concord.client.engine.grpo import pin_determinism
    from scripts.simulate import simulate_decentralized

    ports = devnet.Ports(
        anvil=procs.free_port(), ipfs_api=procs.free_port(), ipfs_gateway=procs.free_port(), ipfs_grpc=procs.free_port()
    )
    net = devnet.up(work / "devnet", ports, accounts=1 + args.trainers + args.validators)
    nodes: list[tuple[procs.Daemon, subprocess.Popen]] = []
    try:
        print(f"IPFS: {args.ipfs_size_mb:g} MB put then get, {args.ipfs_runs} runs", flush=True)
        ipfs = bench_ipfs.run(net.ipfs_api, int(args.ipfs_size_mb * bench_ipfs.MB), args.ipfs_runs)
        task_id, task_file = publish(net, args.rounds, args.trainers)
        cast = actors(work, args.trainers, args.validators)
        client = enrol_all(net, task_id, task_file, cast)
        devnet_json = devnet.state_file(Path(net.state_dir))
        started = time.monotonic()
        nodes = [start_actor(a, devnet_json, task_id, args.rounds, args.poll_interval) for a in cast]
        finals = follow_rounds(client, task_id, args.rounds, nodes, args.timeout)
        network_s = finals[-1] - started
        for _, proc in nodes:  # they exit by themselves after --rounds (flushing their timings)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        on_chain = trainer_rewards(cast, client, task_id)
        bundles = {
            (e.round, e.trainer): e.bundle_digest.hex()
            for e in client.concord.events(client.deployment.block_number, "latest", ["Submitted"])
            if e.task_id == task_id
        }
    finally:
        with procs.signals_ignored():  # a second signal must not cut the cleanup short
            procs.stop_all([d for d, _ in nodes])
            devnet.down(work / "devnet")

    walls = [b - a for a, b in zip(finals, finals[1:], strict=False)]
    spans = [s for a in cast for s in load_spans(a.timings)]
    split = split_wall(spans, finals[0], finals[-1])
    compute_wall = sum(split.wall[c] for c in COMPUTE)
    print_table(split, len(walls), walls)

    chain_curve = [statistics.fmean(on_chain[r]) if r in on_chain else 0.0 for r in range(args.rounds)]
    accepted = [len(on_chain.get(r, [])) for r in range(args.rounds)]
    print(f"simulating {args.rounds} rounds in-process with the same seeds ...", flush=True)
    pin_determinism(1)
    addresses = [keys.devnet_account(a.account).address for a in cast if a.role == "trainer"]
    key = (lambda r, addr: bundles.get((r, addr), addr)) if args.sim_order == "digest" else None
    sim = simulate_decentralized(task_file.spec.task, args.rounds, task_id, trainers=addresses, delta_key=key)
    window = min(REWARD_WINDOW, args.rounds)
    chain_mean, sim_mean = window_mean(chain_curve, window), window_mean(sim.rewards, window)
    print(f"{'round':>5}  {'on-chain':>8}  {'sim':>8}  accepted")
    for r in range(args.rounds):
        print(f"{r:>5}  {chain_curve[r]:>8.4f}  {sim.rewards[r]:>8.4f}  {accepted[r]}/{args.trainers}")
    return {
        "round_s": round(statistics.median(walls), 3),
        "round_mean_s": round(statistics.fmean(walls), 3),
        "overhead_fraction": round(1 - compute_wall / split.window_s, 4),
        "wall_fraction": {c: round(v / split.window_s, 4) for c, v in split.wall.items()},
        "busy_s_per_round": {c: round(v / len(walls), 3) for c, v in split.busy.items()},
        "ipfs_mb_per_s": ipfs["ipfs_mb_per_s"],
        "ipfs_put_mb_per_s": ipfs["ipfs_put_mb_per_s"],
        "ipfs_get_mb_per_s": ipfs["ipfs_get_mb_per_s"],
        "reward_ratio_vs_sim": round(chain_mean / sim_mean, 4) if sim_mean > 0 else None,
        "reward_on_chain": round(chain_mean, 4),
        "reward_sim": round(sim_mean, 4),
        "reward_window": window,
        "sim_order": args.sim_order,
        "reward_max_round_diff": round(max(abs(a - b) for a, b in zip(chain_curve, sim.rewards, strict=False)), 6),
        "accepted_submissions": sum(accepted),
        "rounds": args.rounds,
        "trainers": args.trainers,
        "validators": args.validators,
        "network_s": round(network_s, 1),
        "sim_round_s": round(sim.seconds / args.rounds, 3),
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="concord bench round", description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=30, help="rounds to run (>= 2: round 0 includes start-up)")
    p.add_argument("--trainers", type=int, default=4)
    p.add_argument("--validators", type=int, default=2)
    p.add_argument("--poll-interval", type=float, default=0.1, help="the nodes' new-block poll interval (s)")
    p.add_argument("--ipfs-size-mb", type=float, default=50.0)
    p.add_argument("--ipfs-runs", type=int, default=3)
    p.add_argument(
        "--sim-order",
        choices=("digest", "address"),
        default="digest",
        help="the simulation's delta summation order (validators: by bundle digest)",
    )
    p.add_argument("--timeout", type=float, default=None, help="give up after this many seconds (default 120/round)")
    p.add_argument("--keep", type=Path, default=None, help="keep logs, timings and node state in this directory")
    args = p.parse_args(argv)
    if args.rounds < 2:
        p.error("--rounds must be >= 2 (round 0 includes process start-up and is not measured)")
    if args.timeout is None:
        args.timeout = 120.0 * args.rounds + 120
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        with procs.no_orphans():  # SIGTERM/SIGHUP stop the devnet and the nodes as Ctrl-C does
            if args.keep is not None:
                args.keep.mkdir(parents=True, exist_ok=True)
                result = run_bench(args, args.keep.resolve())
            else:
                with tempfile.TemporaryDirectory(prefix="concord-bench-round-") as tmp:
                    result = run_bench(args, Path(tmp))
    except KeyboardInterrupt as e:
        print(f"interrupted ({e or 'SIGINT'}): every node and daemon stopped", file=sys.stderr)
        return 130
    except (BenchFailed, procs.ProcError, chain.ChainError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`concord bench learn`: does the network learn? Centralized GRPO vs K trainers + DiLoCo, same rollouts.

Prints per-round mean reward and exact-solve rate of both runs, saves both curves as a PNG,
and ends with one JSON line {rounds, final_reward_centralized, final_reward_decentralized,
final_exact_decentralized, seconds, ...}; `seconds` is the decentralized run's wall time.

`--seeds N` repeats both runs for model-init seeds 0..N-1 (same prompts and sampling seeds):
a single run's round-30 reward moves by +-0.1 with the initial weights, so one seed cannot say
whether a gap between the curves is systematic. The headline keys stay seed 0's (the default
run); `per_seed` and the `mean_*` keys hold the rest.

`--async-level N`: the decentralized run trains round r on model max(0, r - N) (the chain's
asyncLevel, scripts.simulate); `--async-levels 0,1,2` runs the decentralized network once per level
(seed 0), prints their curves side by side and adds `async` to the JSON line: per level its final
reward and exact rate, wall time, and `ratio_to_first` (final reward / the first level's). The
headline keys are the first level's. `--staleness-discount X` overrides the outer step's
staleness rule (0: stale deltas count as fresh, the rule before issue 23).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.table import Table

from concord.client.engine.config import DEFAULT_TASK, ConfigError, EnvConfig, TaskConfig
from concord.client.engine.envs import REGISTRY, make_env
from concord.client.engine.grpo import pin_determinism
from scripts.bench.figure import round_figure
from scripts.simulate import Curve, simulate_centralized, simulate_decentralized

MAX_ASYNC_LEVEL = 4  # the contract's _MAX_ASYNC_LEVEL (ConcordStorage.sol)


def task_for_env(env_id: str) -> TaskConfig:
    """DEFAULT_TASK with another environment (its default parameters) and a fitting token budget."""
    if env_id == DEFAULT_TASK.env.env_id:
        return DEFAULT_TASK
    env_cfg = EnvConfig(env_id, {})
    env = make_env(env_cfg)
    sampler = dataclasses.replace(DEFAULT_TASK.sampler, max_new_tokens=env.answer_len + 2)
    return dataclasses.replace(DEFAULT_TASK, env=env_cfg, sampler=sampler)


def plot(dec: Curve, cen: Curve | None, path: Path, title: str) -> None:
    with round_figure(path, title) as ax:
        rounds = range(1, len(dec.rewards) + 1)
        if cen is not None:
            ax.plot(rounds, cen.rewards, label="centralized GRPO: mean reward", color="tab:blue")
            ax.plot(rounds, cen.exact, "--", label="centralized: exact", color="tab:blue", alpha=0.6)
        ax.plot(rounds, dec.rewards, label="K trainers + DiLoCo: mean reward", color="tab:orange")
        ax.plot(rounds, dec.exact, "--", label="decentralized: exact", color="tab:orange", alpha=0.6)
        ax.set_ylabel("reward / exact-solve rate")
        lowest = min([0.0, *dec.rewards, *(cen.rewards if cen is not None else [])])
        ax.set_ylim(lowest - 0.02, 1.02)  # chance-corrected rewards: 0 is chance level, below it worse


def seed_summary(runs: list[tuple[Curve, Curve | None]]) -> dict[str, object]:
    """per_seed final rewards and their means, for the JSON line."""

    def finals(curve: Curve | None) -> float | None:
        return None if curve is None else round(curve.rewards[-1], 4)

    per_seed = [
        {
            "seed": seed,
            "final_reward_centralized": finals(cen),
            "final_reward_decentralized": finals(dec),
            "final_exact_decentralized": round(dec.exact[-1], 4),
            "seconds": round(dec.seconds, 1),
        }
        for seed, (dec, cen) in enumerate(runs)
    ]

    def mean(key: str) -> float | None:
        values = [r[key] for r in per_seed]
        return None if any(v is None for v in values) else round(sum(values) / len(values), 4)

    return {
        "per_seed": per_seed,
        "mean_final_reward_centralized": mean("final_reward_centralized"),
        "mean_final_reward_decentralized": mean("final_reward_decentralized"),
    }


def progress_line(console: Console, name: str) -> Callable[[int, float, float], None]:
    return lambda r, m, e: console.print(f"  {name} round {r + 1:3d}: reward {m:.3f}  exact {e:.3f}")


def print_seed_table(runs: list[tuple[Curve, Curve | None]], env_id: str) -> None:
    table = Table(title=f"learning on {env_id}: final-round reward per model-init seed")
    for col in ("seed", "centralized", "K trainers + DiLoCo", "decentralized / centralized"):
        table.add_column(col, justify="right")
    for seed, (dec, cen) in enumerate(runs):
        ratio = "" if cen is None else f"{dec.rewards[-1] / cen.rewards[-1]:.3f}"
        c = "skipped" if cen is None else f"{cen.rewards[-1]:.3f}"
        table.add_row(str(seed), c, f"{dec.rewards[-1]:.3f}", ratio)
    Console().print(table)


def parse_levels(text: str) -> list[int]:
    """'0,1,2' -> [0, 1, 2]; ValueError naming the bad item (each level in 0..MAX_ASYNC_LEVEL, no repeats)."""
    levels = []
    for item in text.split(","):
        if not item.strip().isdigit() or int(item) > MAX_ASYNC_LEVEL:
            raise ValueError(f"--async-levels: {item!r} is not a level in 0..{MAX_ASYNC_LEVEL}")
        levels.append(int(item))
    if len(set(levels)) != len(levels):
        raise ValueError(f"--async-levels: {text!r} repeats a level")
    return levels


def async_summary(levels: list[int], curves: list[Curve]) -> dict[str, dict[str, float]]:
    """Per level: its final reward and exact rate, wall time, and final reward / the first level's."""
    first = curves[0].rewards[-1]
    return {
        f"async{level}": {
            "final_reward": round(c.rewards[-1], 4),
            "final_exact": round(c.exact[-1], 4),
            "seconds": round(c.seconds, 1),
            "ratio_to_first": round(c.rewards[-1] / first, 4) if first else float("nan"),
        }
        for level, c in zip(levels, curves, strict=True)
    }


def print_async_table(levels: list[int], curves: list[Curve], env_id: str) -> None:
    table = Table(title=f"learning on {env_id}: mean reward per round, by async level")
    table.add_column("round", justify="right")
    for level in levels:
        table.add_column(f"async {level}", justify="right")
    for r in range(len(curves[0].rewards)):
        table.add_row(str(r + 1), *(f"{c.rewards[r]:.3f} ({c.exact[r]:.3f})" for c in curves))
    Console().print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="concord bench learn", description=__doc__.splitlines()[0])
    parser.add_argument("--env", default=DEFAULT_TASK.env.env_id, choices=sorted(REGISTRY))
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (results are per thread count)")
    parser.add_argument("--plot", default="", help="PNG path (default docs/learn_curve[_ENV].png)")
    parser.add_argument("--skip-centralized", action="store_true")
    parser.add_argument("--trainers", type=int, default=0, help="K (default: the task's)")
    parser.add_argument("--inner-steps", type=int, default=0, help="H (default: the task's)")
    parser.add_argument("--seeds", type=int, default=1, help="model-init seeds 0..N-1 (default 1: seed 0 only)")
    parser.add_argument("--async-level", type=int, default=0, help="trainers build round r on model r - N")
    parser.add_argument("--async-levels", default="", help="comma-separated levels to compare, e.g. 0,1,2")
    parser.add_argument("--staleness-discount", type=float, default=None, help="override [outer] staleness_discount")
    parser.add_argument("--staleness-rebase", type=float, default=None, help="override [outer] staleness_rebase")
    args = parser.parse_args(argv)
    if not 1 <= args.seeds <= 100:
        parser.error(f"--seeds must be in 1..100, got {args.seeds}")
    if not 0 <= args.async_level <= MAX_ASYNC_LEVEL:
        parser.error(f"--async-level must be in 0..{MAX_ASYNC_LEVEL}, got {args.async_level}")
    try:
        levels = parse_levels(args.async_levels) if args.async_levels else [args.async_level]
    except ValueError as e:
        parser.error(str(e))

    pin_determinism(args.threads)
    task = task_for_env(args.env)
    if args.trainers:
        task = dataclasses.replace(task, trainers_per_round=args.trainers)
    if args.inner_steps:
        task = dataclasses.replace(task, grpo=dataclasses.replace(task.grpo, inner_steps=args.inner_steps))
    for name in ("staleness_discount", "staleness_rebase"):  # [outer] fields, one flag each
        if (value := getattr(args, name)) is not None:
            try:
                task = dataclasses.replace(task, outer=dataclasses.replace(task.outer, **{name: value}))
            except ConfigError as e:
                parser.error(f"--{name.replace('_', '-')}: {e}")
    console = Console(stderr=True)
    console.print(
        f"env={task.env.env_id} {task.env.params or '(defaults)'}  model d={task.model.d_model} "
        f"L={task.model.n_layers}  K={task.trainers_per_round}  H={task.grpo.inner_steps}  "
        f"rollouts/round={task.trainers_per_round * task.grpo.inner_steps * task.grpo.rollouts_per_step}  "
        f"async levels={levels}  staleness_discount={task.outer.staleness_discount}  "
        f"staleness_rebase={task.outer.staleness_rebase}  "
        f"load avg={os.getloadavg()[0]:.1f}"
    )
    runs: list[tuple[Curve, Curve | None]] = []  # per model seed: (decentralized, centralized)
    for seed in range(args.seeds):
        seeded = dataclasses.replace(task, model=dataclasses.replace(task.model, seed=seed))

        def progress(name: str, seed: int = seed) -> Callable[[int, float, float], None]:
            return lambda r, m, e: console.print(
                f"  seed {seed} {name} round {r + 1:3d}: reward {m:.3f}  exact {e:.3f}"
            )

        name = "decentralized" if levels == [0] else f"decentralized async {levels[0]}"
        dec_s = simulate_decentralized(seeded, args.rounds, on_round=progress(name), async_level=levels[0])
        cen_s = (
            None
            if args.skip_centralized
            else simulate_centralized(seeded, args.rounds, on_round=progress("centralized"))
        )
        runs.append((dec_s, cen_s))
    dec, cen = runs[0]
    by_level = [dec] + [
        simulate_decentralized(task, args.rounds, on_round=progress_line(console, f"async {level}"), async_level=level)
        for level in levels[1:]
    ]

    table = Table(title=f"learning on {task.env.env_id}: mean reward (exact-solve rate) per round")
    for col in ("round", "centralized", "K trainers + DiLoCo"):
        table.add_column(col, justify="right")
    for r in range(args.rounds):
        c = "skipped" if cen is None else f"{cen.rewards[r]:.3f} ({cen.exact[r]:.3f})"
        table.add_row(str(r + 1), c, f"{dec.rewards[r]:.3f} ({dec.exact[r]:.3f})")
    Console().print(table)
    if args.seeds > 1:
        print_seed_table(runs, task.env.env_id)
    if len(levels) > 1:
        print_async_table(levels, by_level, task.env.env_id)

    suffix = "" if args.env == DEFAULT_TASK.env.env_id else f"_{args.env}"
    path = Path(args.plot or f"docs/learn_curve{suffix}.png")
    who = f"{task.trainers_per_round} trainers + DiLoCo"
    plot(dec, cen, path, f"{task.env.env_id}: {who}" if cen is None else f"{task.env.env_id}: centralized vs {who}")
    result = {
        "rounds": args.rounds,
        "final_reward_centralized": None if cen is None else round(cen.rewards[-1], 4),
        "final_reward_decentralized": round(dec.rewards[-1], 4),
        "final_exact_decentralized": round(dec.exact[-1], 4),
        "seconds": round(dec.seconds, 1),
        "env": task.env.env_id,
        "first_reward_decentralized": round(dec.rewards[0], 4),
        "final_exact_centralized": None if cen is None else round(cen.exact[-1], 4),
        "seconds_centralized": None if cen is None else round(cen.seconds, 1),
        "load_avg_1min_end": round(os.getloadavg()[0], 2),
        "plot": str(path),
        "async_level": levels[0],
        "staleness_discount": task.outer.staleness_discount,
        "staleness_rebase": task.outer.staleness_rebase,
    }
    if len(levels) > 1:
        result["async"] = async_summary(levels, by_level)
    if args.seeds > 1:
        result |= seed_summary(runs)
    print(json.dumps(result), flush=True)
    return 0

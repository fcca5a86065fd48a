"""`concord bench lm`: GRPO with LoRA on a real pretrained LM, K trainers + a validator + DiLoCo, in process.

The shipped SmolLM2-135M-Instruct (client/engine/lm.py) on the default text task
(client/engine/text_envs.py: chain_sum, 2-4 one-digit terms). Every round, K trainers each run
H inner GRPO steps on their adapters from the round's model (client.engine.lm_grpo.make_submission:
seeded generation on a shared-prompt KV cache, TOPLOC proofs of the 576-wide hidden states); one
validator checks every submission (validator.lm_checks.verify_submission: prompts, a prefill under
the submitted adapters_k, TOPLOC, sampling replay over the 49,152-token vocabulary, rewards, work
units, proof root, then the training replay of every inner step), and the accepted deltas make the
next adapters by the DiLoCo outer step (validator.aggregate.outer_step, on adapter tensors only).

A fixed held-out set (prompt seeds of a round no trainer reaches: lm_rollout.heldout_seeds, less
every seed whose problem a trainer of this bench can draw or an earlier held-out seed drew:
text_envs.heldout_problems, so it is disjoint by content; ``heldout_overlap`` = held-out questions
equal to a training question, recounted and required to be 0, ``heldout_skipped`` and
``heldout_duplicates`` = how many were dropped) is scored before, every
--eval-every rounds, and after: one seeded sample per prompt at the task's temperature (the same
noise for every evaluation, so two points differ only by the adapters) and greedy, each point logged.
Prints a table, saves the held-out curves as a PNG, ends with one JSON line.

The centralized baseline (``--centralized``, on by default; scripts/simulate.simulate_centralized's
definition for the tiny model): one trainer, one set of adapters and one AdamW for the whole run (no
per-round reset, no outer step, no validator), whose inner step k of round r is one GRPO step on all K
trainers' step-k groups together: for every trainer address t of the round, the prompts and sampling
keys that t draws for step k (LMRollouts.step_groups with t's address), generated under the
centralized adapters, so K x A groups of G rows, the token mean over all of them. Same prompts, same
noise, same rollouts per round (K x H x A x G), same H optimizer steps per round, at the task's inner
lr: compared at equal rollouts, round by round, on the same held-out problems and noise. Its rounds
run through the engine's own inner loop (grpo.run_inner_steps, lm_grpo.inner_update); their time is
``centralized_s`` and is kept out of the decentralized time keys (generation_s, gen_tokens_per_s, ...).

Before training, scripts/bench/lm_gen.measure_generation times generation on one inner step's batch
against Hugging Face generate() and the matmul roofline (``hf_generate_tokens_per_s``,
``roofline_gflops``, ``gen_roofline_fraction``; ``--generation-only`` stops there). Other times come
from the nodes' own timing spans (client/timing.py): generation, proofs, training (trainers),
verification (prefill + TOPLOC + sampling replay) and replay (validator).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from concord.client import timing
from concord.client.content.weights import shard_bytes
from concord.client.engine import lm
from concord.client.engine.bundle import Bundle, claimed_mean_reward
from concord.client.engine.config import GRPOConfig, ValidationConfig, to_dict
from concord.client.engine.grpo import StepStats, inner_optimizer, run_inner_steps
from concord.client.engine.lm_grpo import inner_update, make_submission
from concord.client.engine.lm_rollout import (
    LMRollouts,
    adapter_parameters,
    adapter_state,
    attach_adapters,
    heldout_seeds,
    load_adapter_state,
)
from concord.client.engine.lm_task import DEFAULT_LM_TASK, load_lm_task
from concord.client.engine.precision import choose
from concord.client.engine.rollout import RolloutBatch
from concord.client.engine.sampler import prompt_seed
from concord.client.engine.text_envs import TextEnv, heldout_problems
from concord.client.runtime import paths
from concord.validator.aggregate import outer_step
from concord.validator.lm_checks import verify_submission
from scripts.adversaries.lm_cheats import EXPECTED, LM_CHEATS, LMCheatContext, NotApplicable
from scripts.bench.figure import round_figure
from scripts.bench.lm_gen import measure_generation

TASK_ID = 12
TRAINERS = ["0x" + f"{k + 1:02x}" * 20 for k in range(16)]


@dataclass(frozen=True)
class Point:
    """One held-out evaluation: after ``round`` rounds (0: the base model), one seeded sample per
    problem at the task's temperature, and greedy."""

    round: int
    sampled: float
    greedy: float


def evaluate_point(rollouts: LMRollouts, state: dict[str, torch.Tensor], seeds: list[int], r: int) -> Point:
    """The held-out set under adapters ``state`` (left loaded in the model)."""
    load_adapter_state(rollouts.model, state)
    return Point(r, rollouts.evaluate(seeds, rollouts.sampler.temperature), rollouts.evaluate(seeds, 0.0))


def curve_summary(curve: list[Point], prefix: str) -> dict[str, object]:
    """A run's held-out keys: the curve, its best point and how far the final one is below it (the
    "no late decline" rule: final >= best - 0.03), for the sampled and the greedy metric."""
    first, last = curve[0], curve[-1]
    best = max(curve, key=lambda p: p.sampled)
    best_greedy = max(curve, key=lambda p: p.greedy)
    return {
        f"{prefix}after": round(last.sampled, 4),
        f"{prefix}gain": round(last.sampled - first.sampled, 4),
        f"{prefix}best": round(best.sampled, 4),
        f"{prefix}best_round": best.round,
        f"{prefix}decline": round(best.sampled - last.sampled, 4),  # best - final (>= 0)
        f"{prefix}greedy_after": round(last.greedy, 4),
        f"{prefix}greedy_gain": round(last.greedy - first.greedy, 4),
        f"{prefix}greedy_best": round(best_greedy.greedy, 4),
        f"{prefix}greedy_decline": round(best_greedy.greedy - last.greedy, 4),
        f"{prefix}curve": [[p.round, round(p.sampled, 4), round(p.greedy, 4)] for p in curve],
    }


def gain_ratio(decentralized: float, centralized: float) -> float | None:
    """heldout_gain_decentralized / heldout_gain_centralized; None when the centralized run gained
    nothing (a ratio over a gain <= 0 says nothing about the network)."""
    return round(decentralized / centralized, 4) if centralized > 0 else None


@dataclass
class Centralized:
    """The centralized baseline (module doc): its adapters and its one optimizer, kept across rounds.
    The optimizer holds the peft model's adapter parameters, which every load_adapter_state overwrites
    in place, so its moments survive the trainers' rounds in between (their optimizers are their own)."""

    state: dict[str, torch.Tensor]
    optimizer: torch.optim.Optimizer
    rewards: list[float] = field(default_factory=list)  # per round, mean reward of its rollouts

    @classmethod
    def start(cls, rollouts: LMRollouts, initial: dict[str, torch.Tensor], grpo: GRPOConfig) -> Centralized:
        load_adapter_state(rollouts.model, initial)
        return cls(initial, inner_optimizer(adapter_parameters(rollouts.model), grpo))

    def round(
        self, rollouts: LMRollouts, grpo: GRPOConfig, round_: int, trainers: list[str]
    ) -> list[list[RolloutBatch]]:
        """Round ``round_``: H inner steps, step k on every trainer's step-k groups (their prompts and
        sampling keys) generated under the centralized adapters, one GRPO step over all of them; the
        groups per step (in trainer order)."""
        model = rollouts.model
        load_adapter_state(model, self.state)

        def generate_step(idx: range) -> list[RolloutBatch]:
            prefix = rollouts.prefix()  # under the current adapters, as lm_grpo.train_round
            return [g for t in trainers for g in rollouts.step_groups(TASK_ID, round_, t, idx, grpo.group_size, prefix)]

        def update(groups: list[RolloutBatch]) -> StepStats:
            return inner_update(model, self.optimizer, groups, grpo, rollouts.prefix_ids)

        steps, _, _ = run_inner_steps(grpo, generate_step, update, lambda: None)
        self.state = adapter_state(model)
        self.rewards.append(claimed_mean_reward([g for groups in steps for g in groups]))
        return steps


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="concord bench lm", description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=10, help="outer rounds (the issue allows up to 30)")
    p.add_argument("--task-file", type=Path, help="an LM task TOML (default: configs/lm_task.toml's DEFAULT_LM_TASK)")
    p.add_argument("--trainers", type=int, help="K trainers per round (default: the task's trainers_per_round)")
    p.add_argument("--heldout", type=int, default=200, help="held-out problems")
    p.add_argument("--eval-every", type=int, default=2, help="rounds between held-out evaluations")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument(
        "--prefill-precision",
        choices=("auto", "bf16", "fp32"),
        help="override the task's validation.prefill_precision",
    )
    p.add_argument(
        "--cheats",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="after training, every LM trainer cheat (scripts/adversaries/lm_cheats.py) against the final model",
    )
    p.add_argument(
        "--generation-only",
        action="store_true",
        help="only the generation measurement (scripts/bench/lm_gen.py: tokens/s, HF generate, roofline)",
    )
    p.add_argument(
        "--centralized",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run the centralized baseline on the same prompts and sampling keys (module doc)",
    )
    p.add_argument("--plot", type=Path, default=Path("docs/lm_curve.png"))
    p.add_argument("--json", action="store_true", help="print only the JSON line")
    return p.parse_args(argv)


def plot(curves: dict[str, list[Point]], path: Path, title: str, metric: str = "accuracy") -> None:
    """Every run's held-out curve, sampled at T = 1 (solid) and greedy (dashed)."""
    colors = {"K trainers + DiLoCo": "tab:orange", "centralized GRPO": "tab:blue"}
    with round_figure(path, title) as ax:
        for name, curve in curves.items():
            xs = [p.round for p in curve]
            color = colors.get(name, "tab:green")
            ax.plot(xs, [p.sampled for p in curve], "o-", color=color, label=f"{name}: held-out {metric} (T=1)")
            ax.plot(xs, [p.greedy for p in curve], "s--", color=color, alpha=0.6, label=f"{name}: greedy")
        first = next(iter(curves.values()))[0]
        ax.axhline(first.sampled, color="grey", lw=0.8, ls="--", label="base model (T=1)")
        ax.set_ylabel(metric)
        ax.set_ylim(0, 1)


def training_seeds(rounds: int, trainers: int, grpo: GRPOConfig) -> list[int]:
    """Every prompt seed a trainer of this bench can draw: rounds x trainers x the round's H x A prompts."""
    per_round = grpo.inner_steps * grpo.prompts_per_step
    return [
        prompt_seed(TASK_ID, r, TRAINERS[k], i)
        for r in range(rounds)
        for k in range(trainers)
        for i in range(per_round)
    ]


CENTRALIZED = (
    "one trainer, one AdamW for the whole run, inner step k of round r on all K trainers' step-k prompts "
    "and sampling keys as one batch (K x A groups), same rollouts and optimizer steps per round"
)
HELDOUT_DRAWS = 100  # held-out seeds drawn per held-out problem wanted, at most


def disjoint_heldout(
    env: TextEnv, n: int, rounds: int, trainers: int, grpo: GRPOConfig
) -> tuple[list[int], int, int, int]:
    """(held-out seeds, heldout_overlap, skipped as training problems, skipped as duplicates): ``n``
    problems of the held-out seed stream (lm_rollout.heldout_seeds, disjoint from every trainer's
    seeds) deduplicated by content against every training prompt this bench can draw and against
    each other (text_envs.heldout_problems). heldout_overlap is recounted here on the result, apart
    from the rule that built it: the held-out questions that equal a training question (0 unless the
    rule is broken)."""
    training = training_seeds(rounds, trainers, grpo)
    held = heldout_problems(env, heldout_seeds(TASK_ID, HELDOUT_DRAWS * max(n, 1)), n, training)
    train_questions = {env.item(s)["question"] for s in training}
    overlap = sum(env.item(s)["question"] in train_questions for s in held.seeds)
    return list(held.seeds), overlap, held.skipped_training, held.skipped_duplicate


def span_totals(path: Path, skip: Sequence[tuple[float, float]] = ()) -> dict[str, float]:
    """Seconds per timing category, leaving out the spans that start inside a ``skip`` window (the
    centralized baseline's rounds: their generation and training are not the network's)."""
    totals: dict[str, float] = defaultdict(float)
    if path.exists():
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            if not any(t0 <= rec["t0"] <= t1 for t0, t1 in skip):
                totals[rec["cat"]] += rec["t1"] - rec["t0"]
    return dict(totals)


def run_cheats(
    rollouts: LMRollouts,
    current: dict[str, torch.Tensor],
    initial: dict[str, torch.Tensor],
    grpo: GRPOConfig,
    vcfg: ValidationConfig,
    bf16: bool,
    round_: int,
    console: Console,
) -> dict[str, dict[str, object]]:
    """Every LM cheat once against the trained model (the stale one works from round 0's adapters):
    {cheat: {detected, failed_check, expected}}. Its time is not part of ``seconds``."""
    ctx = LMCheatContext(rollouts, current, initial, grpo, TASK_ID, round_, TRAINERS[0], TRAINERS[1])
    out: dict[str, dict[str, object]] = {}
    for name, cheat in LM_CHEATS.items():
        try:
            sub = cheat(ctx)
        except NotApplicable as e:  # the cheat would change nothing on this round
            out[name] = {"detected": False, "failed_check": "", "as_expected": False, "applicable": False}
            console.print(f"cheat {name}: {e}")
            continue
        verdict = verify_submission(rollouts, current, sub, grpo, vcfg, bf16=bf16, replay=True)
        ok = not verdict.accepted and verdict.failed_check in EXPECTED[name]
        out[name] = {"detected": not verdict.accepted, "failed_check": verdict.failed_check, "as_expected": ok}
        console.print(f"cheat {name}: {'rejected at ' + verdict.failed_check if not verdict.accepted else 'ACCEPTED'}")
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console(quiet=args.json)
    spans = Path(tempfile.mkdtemp(prefix="concord-bench-lm-")) / "timings.jsonl"
    os.environ[timing.ENV] = str(spans)  # before the first span opens (timing reads it once)
    torch.set_num_threads(args.threads)
    t_start = time.monotonic()

    task = load_lm_task(args.task_file) if args.task_file else DEFAULT_LM_TASK
    if args.prefill_precision:
        task = dataclasses.replace(
            task, validation=dataclasses.replace(task.validation, prefill_precision=args.prefill_precision)
        )
    trainers = args.trainers or task.trainers_per_round
    loaded = lm.load(task.model_source, paths.models_dir())
    base_model = loaded.model.to(args.device)
    model = attach_adapters(base_model, task.adapter)
    env = task.env.make(context=loaded.context)
    sampler, grpo, outer, vcfg = task.sampler, task.grpo, task.outer, task.validation
    cfg = loaded.model.config
    precision = choose(
        vcfg.prefill_precision,
        torch.device(args.device),
        cfg.hidden_size,
        cfg.intermediate_size,
        grpo.group_size * sampler.max_new_tokens,  # a group's completion positions, as client.runtime.lm_work
        paths.home(),
    )
    bf16 = precision.precision == "bf16"
    console.print(f"validator prefill: {precision.precision} ({precision.reason})")
    rollouts = LMRollouts.for_env(model, loaded.tokenizer, env, sampler)
    # generation on one inner step's batch against HF generate() and the matmul roofline (not in ``seconds``)
    t_gen = time.monotonic()
    gen = measure_generation(rollouts, grpo.prompts_per_step, grpo.group_size, per_group=args.generation_only)
    console.print(
        f"generation: {gen['gen_tokens_per_s']} tokens/s (HF generate {gen['hf_generate_tokens_per_s']}), "
        f"{gen['gen_gflops']} GFLOP/s = {gen['gen_roofline_fraction']} of {gen['roofline_gflops']}"
    )
    if args.generation_only:
        print(json.dumps({"generation": gen, "device": args.device, "threads": args.threads}))
        return 0
    t_start += time.monotonic() - t_gen
    current = adapter_state(model)
    initial = current
    seeds, overlap, skipped, duplicates = disjoint_heldout(env, args.heldout, args.rounds, trainers, grpo)
    if overlap:  # the held-out rule is broken: every number after this would measure memorisation
        raise RuntimeError(f"heldout_overlap: {overlap} held-out problems are training problems")
    console.print(
        f"held-out: {len(seeds)} distinct problems, none a training problem "
        f"({skipped} skipped as training problems, {duplicates} as duplicates)"
    )

    t_eval = time.monotonic()
    curve = [evaluate_point(rollouts, current, seeds, 0)]
    eval_s = time.monotonic() - t_eval
    before, greedy_before = curve[0].sampled, curve[0].greedy
    console.print(f"held-out {env.metric} before: {before:.3f} (T=1), {greedy_before:.3f} (greedy); {eval_s:.0f} s")
    addresses = TRAINERS[:trainers]
    central = Centralized.start(rollouts, initial, grpo) if args.centralized else None
    central_curve = curve[:1]  # the same base model, the same noise
    central_windows: list[tuple[float, float]] = []  # kept out of the network's timing spans

    momentum: dict[str, torch.Tensor] = {}
    train_rewards: list[float] = []
    rejected, checked, steps_done, units, rollouts_checked = 0, 0, 0, 0, 0
    last: Bundle | None = None
    t_rounds = time.monotonic()
    with Progress(console=console, transient=True) as progress:
        bar = progress.add_task("rounds", total=args.rounds)
        for r in range(args.rounds):
            subs = []
            for address in addresses:
                sub, _ = make_submission(rollouts, current, grpo, TASK_ID, r, address)
                subs.append(sub)
                units += sub.work_units  # generated tokens that count (up to and including EOS)
                steps_done += grpo.inner_steps
            accepted = {}
            for sub in subs:
                verdict = verify_submission(rollouts, current, sub, grpo, vcfg, bf16=bf16, replay=True)
                checked += 1
                rollouts_checked += sum(g.n for step in sub.steps for g in step)
                if verdict.accepted:
                    accepted[sub.trainer] = sub.delta
                else:  # every trainer here is honest: a reject is a false reject
                    rejected += 1
                    console.print(f"[red]round {r}: {sub.trainer} rejected at {verdict.failed_check}[/red]")
            with timing.span("aggregation"):
                current, momentum = outer_step(current, accepted, momentum, outer)
            train_rewards.append(sum(s.mean_reward for s in subs) / len(subs))
            last = subs[-1]
            if central is not None:
                t0 = time.monotonic()
                central.round(rollouts, grpo, r, addresses)
                central_windows.append((t0, time.monotonic()))
            if (r + 1) % args.eval_every == 0 or r + 1 == args.rounds:
                curve.append(evaluate_point(rollouts, current, seeds, r + 1))
                line = (
                    f"round {r + 1}: train reward {train_rewards[-1]:.3f}, held-out {curve[-1].sampled:.3f} "
                    f"(greedy {curve[-1].greedy:.3f})"
                )
                if central is not None:
                    t0 = time.monotonic()
                    central_curve.append(evaluate_point(rollouts, central.state, seeds, r + 1))
                    central_windows.append((t0, time.monotonic()))
                    line += (
                        f"; centralized: train reward {central.rewards[-1]:.3f}, held-out "
                        f"{central_curve[-1].sampled:.3f} (greedy {central_curve[-1].greedy:.3f})"
                    )
                console.print(f"{line}; {time.monotonic() - t_rounds:.0f} s, load {os.getloadavg()[0]:.1f}")
                sys.stdout.flush()
            progress.advance(bar)
    rounds_s = time.monotonic() - t_rounds
    central_s = sum(t1 - t0 for t0, t1 in central_windows)
    load_adapter_state(model, current)
    seconds = time.monotonic() - t_start
    timing.flush()
    detection = run_cheats(rollouts, current, initial, grpo, vcfg, bf16, args.rounds, console) if args.cheats else {}
    totals = span_totals(spans, central_windows)
    assert last is not None
    delta_bytes = sum(len(b) for _, b in shard_bytes(last.delta))
    gen_s, proof_s = totals.get("generation", 0.0), totals.get("proofs", 0.0)
    verify_s, replay_s, train_s = (
        totals.get("verification", 0.0),
        totals.get("replay", 0.0),
        totals.get("training", 0.0),
    )
    dec_keys = curve_summary(curve, "heldout_")
    cen_keys = curve_summary(central_curve, "heldout_centralized_") if central else {}
    dec_gain, dec_greedy_gain = curve[-1].sampled - before, curve[-1].greedy - greedy_before
    cen_gain = central_curve[-1].sampled - before
    cen_greedy_gain = central_curve[-1].greedy - greedy_before
    trainer_s = gen_s + proof_s + train_s
    result = {
        "model": "SmolLM2-135M-Instruct (Q4_1 GGUF, dequantized fp32) + LoRA",
        "params": loaded.params,
        "adapter_params": sum(t.numel() for t in current.values()),
        "env": env.env_id,
        "heldout": args.heldout,
        "heldout_overlap": overlap,  # held-out problems that are also training problems (by question text)
        "heldout_skipped": skipped,  # held-out seeds dropped because a trainer can draw their problem
        "heldout_duplicates": duplicates,  # held-out seeds dropped because an earlier held-out seed drew it
        "heldout_metric": env.metric,  # "accuracy" (exact reward rule) or "mean score" (partial credit)
        "heldout_before": round(before, 4),
        "heldout_greedy_before": round(greedy_before, 4),
        **dec_keys,  # heldout_after, heldout_gain, heldout_best, ..., heldout_curve: [round, T=1, greedy]
        "heldout_gain_decentralized": dec_keys["heldout_gain"],
        **cen_keys,  # the same keys of the centralized baseline, heldout_centralized_*
        "heldout_gain_centralized": cen_keys.get("heldout_centralized_gain"),
        "heldout_greedy_gain_centralized": cen_keys.get("heldout_centralized_greedy_gain"),
        # heldout_gain_decentralized / heldout_gain_centralized (issue 24 item 3: >= 0.9), T = 1 and greedy
        "heldout_gain_ratio": gain_ratio(dec_gain, cen_gain) if central else None,
        "heldout_greedy_gain_ratio": gain_ratio(dec_greedy_gain, cen_greedy_gain) if central else None,
        "centralized": CENTRALIZED if central else None,
        "centralized_s": round(central_s, 1),
        "train_reward_centralized_first": round(central.rewards[0], 4) if central else None,
        "train_reward_centralized_last": round(central.rewards[-1], 4) if central else None,
        "rounds": args.rounds,
        "eval_every": args.eval_every,
        "trainers": trainers,
        "seconds": round(seconds, 1),
        "rounds_s": round(rounds_s, 1),
        "generation_s": round(gen_s, 2),
        "gen_tokens_per_s": round(units / gen_s, 2) if gen_s else 0.0,  # all trainers, all rounds
        "gen_batch_tokens_per_s": gen["gen_tokens_per_s"],  # one step's batch (scripts/bench/lm_gen.py)
        "hf_generate_tokens_per_s": gen["hf_generate_tokens_per_s"],  # HF generate() on that batch
        "roofline_gflops": gen["roofline_gflops"],
        "gen_gflops": gen["gen_gflops"],
        "gen_roofline_fraction": gen["gen_roofline_fraction"],
        "proof_build_s": round(proof_s, 3),
        "proof_build_over_generation": round(proof_s / gen_s, 4) if gen_s else 0.0,
        "verify_s": round(verify_s, 2),
        "verify_over_generation": round(verify_s / gen_s, 4) if gen_s else 0.0,
        "replay_s": round(replay_s, 2),
        # one validator's time (verification + training replay) over the trainers' (generation, proofs,
        # training): here one validator checks every submission in full (issue 24 item 5 wants <= 0.15)
        "validator_fraction": round((verify_s + replay_s) / trainer_s, 4) if trainer_s else 0.0,
        "train_step_s": round(train_s / max(1, steps_done), 3),
        "delta_bytes": delta_bytes,
        "honest_checked": checked,
        "honest_rollouts": rollouts_checked,
        "honest_false_rejects": rejected,
        "cheats_detected": sum(1 for d in detection.values() if d["detected"]),
        "cheats": len(detection),
        "detection": detection,
        "train_reward_first": round(train_rewards[0], 4),
        "train_reward_last": round(train_rewards[-1], 4),
        "task": to_dict(task),
        "threads": args.threads,
        "device": args.device,
        "prefill_precision": precision.precision,
        "prefill_precision_reason": precision.reason,
    }
    curves = {"K trainers + DiLoCo": curve} | ({"centralized GRPO": central_curve} if central else {})
    plot(
        curves,
        args.plot,
        f"bench lm: {env.env_id}, K={trainers}, SmolLM2-135M + LoRA r={task.adapter.rank}",
        env.metric,
    )
    table = Table(title=f"concord bench lm (held-out {env.metric})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in (
        "heldout_before",
        "heldout_after",
        "heldout_best",
        "heldout_greedy_before",
        "heldout_greedy_after",
        "heldout_centralized_after",
        "heldout_centralized_greedy_after",
        "heldout_gain_ratio",
        "heldout_greedy_gain_ratio",
        "seconds",
        "centralized_s",
        "generation_s",
        "gen_tokens_per_s",
        "hf_generate_tokens_per_s",
        "gen_roofline_fraction",
        "proof_build_s",
        "verify_s",
        "replay_s",
        "train_step_s",
        "delta_bytes",
        "honest_false_rejects",
        "cheats_detected",
    ):
        table.add_row(key, str(result.get(key)))
    console.print(table)
    console.print(f"held-out curve: {args.plot}")
    print(json.dumps(result))
    return 0

"""`concord bench lm_sampled`: sampled checks on the real LM, per cheat, predicted vs measured, and what they
cost (issue 24 item 5).

One small LM round in process: the default LM task (configs/lm_task.toml: SmolLM2-135M-Instruct + LoRA,
chain_sum, H x A x G = 2 x 4 x 8 = 64 rows), round 1 of a model that a larger round-0 step moved away from
round 0's (so a stale model is another model, as in tests/test_lm_detection.py).

1. Cost. One honest trainer's round (make_submission: generation, proofs, training) timed against one
   validator's check of it, in full mode and in sampled mode at each row fraction (``--fractions``), in
   CPU seconds of this process (time.process_time, all its threads: a loaded machine stretches wall
   time, not these): ``validator_fraction`` = sampled verify / the trainer's round at the task's row
   fraction (the same ratio per round: one validator checks each of the K trainers' submissions).
2. What each cheat touches. Every LM cheat (scripts/adversaries/lm_cheats.LM_CHEATS) and the ones the
   issue names beside them (lm_cheats.EXTRA_CHEATS: temperature 0.8, greedy, a dropped system prompt
   with the right prompt tokens and rebuilt proofs; and a trainer that skips the training) is built
   once, then checked three ways:
   with no row and no step (the cheap checks alone: schema, prompts, lengths, rewards, work units,
   proof root); every row of every group prefilled, keeping the rows whose TOPLOC or sampling replay
   fails (k of n); and the training replay alone.
3. Predicted vs measured. Per validator, a sample of m = ceil(f x n) rows and, when its own draw picks
   the submission for a replay (probability q = replay_fraction), s = min(replay_steps, H) steps
   (validator.sampling.draw_sample) catches the cheat with
       p_one = 1                                                      a cheap check fails
             = 1 - (1 - p_rows) x (1 - q [the replay fails, s >= 1])  otherwise (sampling.p_one_caught)
   where p_rows = 1 - C(n - k, m) / C(n, m) (the LM replays the whole round when its sample holds a
   step: validator.lm_checks). Measured at the task's fraction (or
   ``--walk-fractions``): the real check walk (validator.lm_checks.verify_submission) on ``--seeds``
   independent samples, each a fresh round seed for one validator; the replay's outcome is the same for
   every sample of one submission (it replays verified fields only), so it is run once per submission
   and joined to each row walk that passed; ``walk_disagreements`` counts samples where the walk and the
   touched rows disagree (0 expected). At the other fractions, the rate of drawn samples that hold a
   touched row, over ``--draws`` samples (the sampling rule's draws, not a uniform one).
4. Expected value. Per cheat and fraction, with the task's [chain] terms (or ``--slash``): gain = the
   round's trainer reward share (reward per round / trainers per round: what a cheater could take, as if
   it would have earned nothing honestly), P_slash with V = 1, 2, 3 honest validators under row flags
   (one validator's failed row or replay is flagged and re-checked by all: validator.sampling.p_any,
   1 - (1 - p_one)^V; without flags a slash would need a strict majority, p_majority, kept beside it);
   EV = (1 - P) x gain - P x slash, the break-even slash, and ``slash_needed``: the largest break-even
   over every cheat and V (the smallest slash under which every cheat loses money).
5. Cost under a replay fraction: the rows walk alone and with the replay forced are timed on the same
   samples; the expected check = rows + q x (replay - rows) (``validator_fraction`` at the task's or
   ``--replay-fraction``'s q).

Prints a table, then exactly one JSON line.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import statistics
import time
import tomllib
from collections.abc import Callable
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from concord.client.digest import Digest
from concord.client.engine import lm
from concord.client.engine import sampler as smp
from concord.client.engine.bundle import (
    Bundle,
)
from concord.client.engine.config import GRPOConfig, ValidationConfig
from concord.client.engine.lm_grpo import make_submission
from concord.client.engine.lm_rollout import (
    LMRollouts,
    adapter_state,
    attach_adapters,
)
from concord.client.engine.lm_task import DEFAULT_LM_TASK, LMTaskConfig, load_lm_task
from concord.client.engine.precision import choose
from concord.client.engine.rollout import completion_mask
from concord.client.runtime import paths
from concord.validator.lm_checks import LMChecks, verify_submission
from concord.validator.pipeline import part_of
from concord.validator.pipeline import rows_results as row_checks
from concord.validator.rules import length_rule
from concord.validator.sampling import (
    CheckSample,
    breakeven_slash,
    draw_sample,
    p_any,
    p_majority,
    p_one_caught,
    p_rows_hit,
    rows_to_check,
)
from scripts.adversaries.lm_cheats import EXTRA_CHEATS, LM_CHEATS, LMCheatContext, NotApplicable

TASK_ID, ROUND = 12, 1
TRAINER, OTHER = "0x" + "a1" * 20, "0x" + "b2" * 20
VALIDATOR = "0x" + "5a" * 20
TASK_FILE = Path(__file__).resolve().parents[2] / "configs" / "lm_task.toml"

CHEATS: dict[str, Callable[[LMCheatContext], Bundle]] = {**LM_CHEATS, **EXTRA_CHEATS}

# ----------------------------------------------------------------------------- what a cheat touches


@dataclasses.dataclass(frozen=True)
class Touched:
    cheap: str  # the cheap check that rejects it whatever the sample ("" when none does)
    rows: tuple[tuple[int, ...], ...]  # per inner step, the rows whose prefill checks fail
    replay: bool  # the training replay (of verified fields) rejects it
    total_rows: int

    @property
    def row_count(self) -> int:
        return sum(len(r) for r in self.rows)


def no_sample(h: int) -> CheckSample:
    return CheckSample(tuple(() for _ in range(h)), (), False)


def touched(
    rollouts: LMRollouts,
    base: dict[str, torch.Tensor],
    sub: Bundle,
    grpo: GRPOConfig,
    vcfg: ValidationConfig,
    bf16: bool,
) -> Touched:
    """The cheap checks alone, then every row's prefill checks one group at a time (all rows, no early
    stop), then the replay alone: what a sample must hit to catch ``sub``."""
    h, n = grpo.inner_steps, grpo.prompts_per_step * grpo.group_size
    cheap = verify_submission(rollouts, base, sub, grpo, vcfg, bf16=bf16, sample=no_sample(h))
    if not cheap.accepted:
        return Touched(cheap.failed_check, tuple(() for _ in range(h)), False, h * n)
    kind = LMChecks(rollouts, base, sub, grpo, vcfg, bf16, replay=False)
    bad: list[tuple[int, ...]] = []
    for k in range(h):
        rows: set[int] = set()
        for unit in kind.units(k):
            b = unit.batch
            mask = completion_mask(b.completions, rollouts.sampler.stop_at_eos, kind.eos)
            lengths = length_rule(b.completions, mask, kind.pad, kind.eos, rollouts.sampler.max_new_tokens, True)
            keys = smp.sample_keys(
                sub.task_id, sub.round, sub.trainer, list(zip(unit.want_i, unit.want_j, strict=True))
            )
            part = part_of(unit, range(n), mask, keys, lengths)
            for r in row_checks(kind, part, kind.prefill_part(part), True):
                rows |= set(r.rows)
        bad.append(tuple(sorted(rows)))
    replayed = verify_submission(
        rollouts, base, sub, grpo, vcfg, bf16=bf16, sample=CheckSample(no_sample(h).rows, (0,), False)
    )
    return Touched("", tuple(bad), not replayed.accepted, h * n)


def predicted_one(t: Touched, vcfg: ValidationConfig, inner_steps: int) -> float:
    """p_one: one validator's own sample catches the cheat (module doc, 3)."""
    if t.cheap:
        return 1.0
    if vcfg.mode == "full":
        return 1.0 if (t.row_count or t.replay) else 0.0
    m = rows_to_check(t.total_rows, vcfg.row_fraction)
    p_rows = p_rows_hit(t.total_rows, m, t.row_count)
    return p_one_caught(p_rows, t.replay, vcfg.replay_fraction, min(vcfg.replay_steps, inner_steps) >= 1)


def seed_of(*parts: object) -> bytes:
    return hashlib.sha256(repr(parts).encode()).digest()


def measured_one(
    rollouts: LMRollouts,
    base: dict[str, torch.Tensor],
    sub: Bundle,
    grpo: GRPOConfig,
    vcfg: ValidationConfig,
    bf16: bool,
    t: Touched,
    name: str,
    seeds: int,
    walk: bool,
) -> tuple[float, float, int]:
    """(fraction of ``seeds`` own samples (validator.sampling.draw_sample, a fresh round seed each) that
    reject ``sub``, mean seconds of one walk, disagreements). With ``walk``, the real check walk on each
    sample's rows, the replay's outcome (``t.replay``, the same for every sample: it replays verified
    fields only) joined to the walks that passed when the sample holds a step; disagreements = samples
    whose walk differs from what ``t`` says (a cheap check, a touched row in the sample, or the replay):
    0 when ``t`` is what the walk sees. Without ``walk``, the rate is what ``t`` says of each drawn sample."""
    h, n = grpo.inner_steps, grpo.prompts_per_step * grpo.group_size
    digest = Digest(hashlib.sha256(name.encode()).digest())
    caught, seconds, disagree = 0, 0.0, 0
    for s in range(seeds):
        sample = draw_sample(seed_of("lm_sampled", s), VALIDATOR, digest, h, n, vcfg)
        replayed = bool(sample.steps) and t.replay
        holds = any(set(sample.rows[k]) & set(t.rows[k]) for k in range(h))
        says = bool(t.cheap) or holds or replayed
        if not walk:
            caught += says
            continue
        t0 = time.perf_counter()
        verdict = verify_submission(
            rollouts, base, sub, grpo, vcfg, bf16=bf16, sample=dataclasses.replace(sample, steps=())
        )
        seconds += time.perf_counter() - t0
        got = (not verdict.accepted) or replayed
        caught += got
        disagree += got != says
    return caught / seeds, seconds / seeds if walk else 0.0, disagree


# ----------------------------------------------------------------------------- setup and main


@dataclasses.dataclass
class Round:
    ctx: LMCheatContext
    vcfg: ValidationConfig
    bf16: bool
    precision: str
    task: LMTaskConfig


def setup(task: LMTaskConfig, threads: int, round0_lr: float) -> Round:
    """Round 1's context: round 0's adapters (``older``) moved by a larger round-0 step (as the detection
    test builds it) so that the stale model differs from the current one."""
    torch.set_num_threads(threads)
    loaded = lm.load(task.model_source, paths.models_dir())
    model = attach_adapters(loaded.model, task.adapter)
    env = task.env.make(context=loaded.context)
    rollouts = LMRollouts.for_env(model, loaded.tokenizer, env, task.sampler)
    cfg = loaded.model.config
    grpo = task.grpo
    precision = choose(
        task.validation.prefill_precision,
        torch.device("cpu"),
        cfg.hidden_size,
        cfg.intermediate_size,
        grpo.group_size * task.sampler.max_new_tokens,
        paths.home(),
    )
    older = adapter_state(model)
    earlier = dataclasses.replace(grpo, lr=round0_lr)
    round0, _ = make_submission(rollouts, older, earlier, TASK_ID, 0, TRAINER)
    base = {k: older[k] + round0.delta[k] for k in older}
    ctx = LMCheatContext(rollouts, base, older, grpo, TASK_ID, ROUND, TRAINER, OTHER)
    return Round(ctx, task.validation, precision.precision == "bf16", precision.precision, task)


def chain_terms(path: Path) -> dict[str, float]:
    """The task file's [chain] economics (whole tokens): the EV's gain and slash."""
    with open(path, "rb") as fh:
        chain = tomllib.load(fh).get("chain", {})
    return {
        key: float(chain.get(key, default))
        for key, default in (
            ("trainer_reward_per_round", 300),
            ("slash_amount", 80),
            ("min_trainer_stake", 100),
            ("min_validators", 1),
        )
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="concord bench lm_sampled", description=__doc__.split("\n\n")[0])
    p.add_argument("--task-file", type=Path, default=TASK_FILE, help="an LM task TOML (its [validation] and [chain])")
    p.add_argument("--seeds", type=int, default=30, help="samples judged by the real check walk, per cheat")
    p.add_argument("--draws", type=int, default=1000, help="samples drawn at the fractions not walked")
    p.add_argument(
        "--fractions",
        default="",
        help="comma-separated row fractions to predict and measure (default: 0.02, 0.05 and the task's)",
    )
    p.add_argument(
        "--walk-fractions",
        default="",
        help="fractions measured by the real check walk on every sample (default: the task's); the others "
        "by what the touched rows say of each drawn sample",
    )
    p.add_argument("--validators", type=int, default=0, help="V for P_caught (default: the task's min_validators)")
    p.add_argument(
        "--replay-fraction",
        type=float,
        default=0.0,
        help="q, the fraction of submissions each validator replays (default: the task's validation.replay_fraction)",
    )
    p.add_argument("--slash", type=float, default=0.0, help="the slash for the EV (default: the task file's)")
    p.add_argument("--cheats", default=",".join(CHEATS), help=f"comma-separated, of {', '.join(CHEATS)}")
    p.add_argument(
        "--round0-lr",
        type=float,
        default=2e-2,
        help="round 0's inner lr (10x the task's by default, as tests/test_lm_detection.py: round 1's model "
        "then differs from round 0's beyond TOPLOC's tolerance; it can leave round 1 without a reward signal)",
    )
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", action="store_true", help="print only the JSON line")
    a = p.parse_args(argv)
    for name in ("seeds", "draws"):
        if getattr(a, name) < 1:
            p.error(f"--{name} must be >= 1, got {getattr(a, name)}")
    if a.replay_fraction and not 0 < a.replay_fraction <= 1:
        p.error(f"--replay-fraction must be in (0, 1], got {a.replay_fraction}")
    unknown = [c for c in a.cheats.split(",") if c and c not in CHEATS]
    if unknown:
        p.error(f"--cheats: unknown cheat(s) {unknown}; known: {sorted(CHEATS)}")
    return a


def fractions_of(arg: str, task: LMTaskConfig) -> list[float]:
    if arg:
        return [float(x) for x in arg.split(",") if x]
    own = task.validation.row_fraction if task.validation.mode == "sampled" else 1.0
    return sorted({0.02, 0.05, own})


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console(quiet=args.json)
    task = load_lm_task(args.task_file) if args.task_file != TASK_FILE else DEFAULT_LM_TASK
    terms = chain_terms(args.task_file)
    validators = args.validators or int(terms["min_validators"])
    started = time.monotonic()
    rnd = setup(task, args.threads, args.round0_lr)
    ctx, grpo = rnd.ctx, task.grpo
    r, base = ctx.rollouts, ctx.base
    h, n = grpo.inner_steps, grpo.prompts_per_step * grpo.group_size
    fractions = fractions_of(args.fractions, task)
    own = dataclasses.replace(
        task.validation, mode="sampled", replay_fraction=args.replay_fraction or task.validation.replay_fraction
    )
    q = own.replay_fraction
    configs = {f: dataclasses.replace(own, mode="sampled", row_fraction=f) for f in fractions}
    walked = {float(x) for x in args.walk_fractions.split(",") if x} if args.walk_fractions else {own.row_fraction}
    console.print(f"prefill {rnd.precision}; {h} x {n} rows; fractions {fractions}; replay fraction {q}")

    # 1. cost: one honest round, its full check and its sampled checks (the walk with the replay when sampled)
    t0 = time.process_time()
    honest, _ = make_submission(r, base, grpo, TASK_ID, ROUND, TRAINER)
    trainer_s = time.process_time() - t0
    t0 = time.process_time()
    full = verify_submission(r, base, honest, grpo, dataclasses.replace(own, mode="full"), bf16=rnd.bf16)
    full_s = time.process_time() - t0
    cost: dict[str, dict[str, float]] = {}
    honest_rejects = 0
    console.print(
        f"trainer round {trainer_s:.1f} CPU s, full check {full_s:.1f} CPU s "
        f"({'accepted' if full.accepted else 'REJECTED'})"
    )
    for f, vcfg in configs.items():
        times: dict[str, list[float]] = {"rows": [], "replay": []}  # the walk without, then with a step
        every = dataclasses.replace(vcfg, replay_fraction=1.0)  # q enters as rows + q x (replay - rows)
        for s in range(min(args.seeds, 5)):
            sample = draw_sample(seed_of("cost", s), VALIDATOR, Digest(bytes(32)), h, n, every)
            for what, drawn in (("rows", dataclasses.replace(sample, steps=())), ("replay", sample)):
                if what == "replay" and not sample.steps:  # replay_steps 0: the rows are the check
                    times[what].append(times["rows"][-1])
                    continue
                t0 = time.process_time()
                verdict = verify_submission(r, base, honest, grpo, vcfg, bf16=rnd.bf16, sample=drawn)
                times[what].append(time.process_time() - t0)
                honest_rejects += not verdict.accepted
        rows_s, replay_s = statistics.mean(times["rows"]), statistics.mean(times["replay"])
        with_replay_s = rows_s + q * (replay_s - rows_s)  # expected: replayed with probability q
        cost[str(f)] = {
            "verify_cpu_s": round(with_replay_s, 3),  # expected over the replay draw
            "fraction": round(with_replay_s / trainer_s, 4),
            "verify_replayed_cpu_s": round(replay_s, 3),  # a submission this validator replays
            "fraction_replayed": round(replay_s / trainer_s, 4),
            "verify_rows_cpu_s": round(rows_s, 3),  # the same samples without their steps (replay_steps = 0)
            "fraction_rows_only": round(rows_s / trainer_s, 4),
        }
        console.print(
            f"f = {f}: verify {with_replay_s:.2f} CPU s expected at q = {q} "
            f"({replay_s:.2f} replayed, {rows_s:.2f} without the replay)"
        )

    # 2-3. every cheat: touched, predicted, measured
    gain = terms["trainer_reward_per_round"] / task.trainers_per_round
    slash = args.slash or min(terms["slash_amount"], terms["min_trainer_stake"])
    slash_needed = 0.0
    rows_out: dict[str, dict[str, object]] = {}
    for name in [c for c in args.cheats.split(",") if c]:
        try:
            sub = CHEATS[name](ctx)
        except NotApplicable as e:
            console.print(f"cheat {name}: {e}")
            rows_out[name] = {"applicable": False}
            continue
        t = touched(r, base, sub, grpo, own, rnd.bf16)
        entry: dict[str, object] = {
            "cheap_check": t.cheap,
            "rows_changed": t.row_count,
            "changed": [list(r) for r in t.rows],  # per inner step, the rows whose prefill checks fail
            "rows": n * h,
            "replay_fails": t.replay,
            "by_fraction": {},
        }
        for f, vcfg in configs.items():
            p_pred = predicted_one(t, vcfg, h)
            walk = f in walked
            draws = args.seeds if walk else args.draws
            p_meas, walk_s, disagree = measured_one(r, base, sub, grpo, vcfg, rnd.bf16, t, name, draws, walk)
            p_round = p_any(validators, p_meas)
            p_round_pred = p_any(validators, p_pred)
            by_v = {}
            for v in (1, 2, 3):  # honest validators under row flags; the majority rule without them beside it
                p_v = p_any(v, p_pred)
                need = breakeven_slash(gain, p_v)
                slash_needed = max(slash_needed, need)
                by_v[str(v)] = {
                    "p_slash": round(p_v, 4),
                    "ev": round((1 - p_v) * gain - p_v * slash, 2),
                    "breakeven_slash": round(need, 1) if p_v > 0 else None,
                    "p_slash_no_flags": round(p_majority(v, p_pred), 4),
                }
            entry["by_fraction"][str(f)] = {  # type: ignore[index]
                "m": rows_to_check(n * h, f),
                "predicted": round(p_pred, 4),
                "measured": round(p_meas, 4),
                "samples": draws,
                "stderr": round(math.sqrt(max(p_meas * (1 - p_meas), 1 / draws) / draws), 4),
                "p_caught_round": round(p_round_pred, 4),
                "p_caught_round_measured": round(p_round, 4),
                "ev": round((1 - p_round_pred) * gain - p_round_pred * slash, 2),  # at --validators
                "breakeven_slash": round(breakeven_slash(gain, p_round_pred), 1) if p_round_pred > 0 else None,
                "measured_by": "check walk" if walk else "drawn samples",
                "walk_disagreements": disagree,
                "walk_s": round(walk_s, 3),
                "by_validators": by_v,
            }
        rows_out[name] = entry
        console.print(f"cheat {name}: cheap={t.cheap or '-'} rows {t.row_count}/{n * h} replay={t.replay}")
        console.print(json.dumps({name: entry}), markup=False, highlight=False)

    title = f"concord bench lm_sampled (q = {q}, gain {gain:g}, slash {slash:g}; EV with flags at V = 1 / 2 / 3)"
    table = Table(title=title)
    for col in ("cheat", "cheap", "k of n", "replay", *[f"f={f}: pred / meas / EV V=1,2,3" for f in fractions]):
        table.add_column(col)
    for name, e in rows_out.items():
        if not e.get("applicable", True):
            table.add_row(name, "n/a", "", "", *["" for _ in fractions])
            continue
        cells = []
        for f in fractions:
            d = e["by_fraction"][str(f)]  # type: ignore[index]
            evs = " ".join(f"{d['by_validators'][str(v)]['ev']:+.0f}" for v in (1, 2, 3))
            cells.append(f"{d['predicted']:.3f} / {d['measured']:.3f} / {evs}")
        table.add_row(
            name, str(e["cheap_check"] or "-"), f"{e['rows_changed']}/{e['rows']}", str(e["replay_fails"]), *cells
        )
    console.print(table)
    default_f = str(task.validation.row_fraction) if task.validation.mode == "sampled" else str(fractions[-1])
    result = {
        "bench": "lm_sampled",
        "task_mode": task.validation.mode,
        "row_fraction": task.validation.row_fraction,
        "replay_steps": task.validation.replay_steps,
        "replay_fraction": q,
        "slash_needed": round(slash_needed, 1) if math.isfinite(slash_needed) else None,
        "rows": n * h,
        "fractions": fractions,
        "seeds": args.seeds,
        "validators": validators,
        "gain": gain,
        "slash": slash,
        "trainer_round_cpu_s": round(trainer_s, 2),
        "verify_full_cpu_s": round(full_s, 2),
        "validator_fraction_full": round(full_s / trainer_s, 4),
        "validator_fraction": cost.get(default_f, {}).get("fraction"),
        "cost": cost,
        "honest_false_rejects": honest_rejects + (not full.accepted),
        "honest_delta_zero": all(float(d.abs().max()) == 0 for d in honest.delta.values()),  # no training
        "cheats": rows_out,
        "prefill_precision": rnd.precision,
        "threads": args.threads,
        "seconds": round(time.monotonic() - started, 1),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

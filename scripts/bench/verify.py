"""`concord bench verify`: what sampled verification costs and what it catches (issue 13).

The default task (configs/default_task.toml), in process, one thread:

1. Cost. ``--trainers`` trainers each build one round's submission (make_bundle + the files they
   upload); one validator checks all of them in full mode and in sampled mode (its own sample
   from a seed and its address; the files decoded as a validator decodes them). CPU seconds per
   round (time.process_time): one validator, all trainers; ``validator_fraction`` = validator /
   all trainers (sampled), ``validator_fraction_full`` the same in full mode.
2. Honest false rejects: ``--honest-rounds`` rounds of the trainers' honest submissions, each
   verified in sampled mode by one validator with a fresh seed.
3. Detection under flags (validator.flags). Every trainer cheat of the adversarial suite that
   changes a bundle's content (scripts/adversaries/trainer_cheats.py; the fetch- and claim-level
   cheats are refused before any sampling and need no sample) is built once, then judged
   ``--trials`` times with fresh seeds by 5 validators, each on its own sample; a validator whose
   sample fails a sampled row or step flags it, and the others re-check exactly the flagged items
   (validator.flags.flagged_sample). Measured = fraction of trials in which a strict majority of the
   first V (3 and 5) validators' final votes rejected (a slash on chain), and the fraction of own
   verdicts that rejected. Predicted from what the cheat touches, found by checking every row and
   every step alone: 1 - (1 - p_one)^V (validator.sampling.p_any). Then the break-even slash
   (validator.sampling.breakeven_slash) for a cheater that gains its whole reward share.
4. ``forged_step_detection``: a consistent one-step forger (inner state 5 poisoned, steps 5..H-1
   generated, proved and trained on it; only the replay of step 4 sees it) judged
   ``--forger-trials`` times by 3 and 5 validators as above: predicted 1 - 0.9^V.
5. ``poison_effect``: an unsampled poisoner among K trainers (its own honest delta reversed, x20)
   against one honest trainer in the same slot, on the next model's held-out reward, over
   ``--poison-seeds`` model seeds, under the task's outer step (norm clip and agreement weights),
   and for comparison without either and with the clip alone (validator.aggregate).

Prints a table, then exactly one JSON line.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from concord.client.content.submission import (
    decode_delta,
    decode_proof_file,
    decode_rollouts,
    decode_state,
    default_limits,
    delta_shards,
    encode_proof_file,
    encode_rollouts,
    state_files,
)
from concord.client.digest import Digest
from concord.client.engine import sampler as smp
from concord.client.engine.bundle import (
    Bundle,
    batch_proofs,
    claimed_mean_reward,
    claimed_work_units,
    make_bundle,
    proofs_root,
    strip_private,
)
from concord.client.engine.config import OuterConfig, TaskConfig, ValidationConfig
from concord.client.engine.envs import Env, make_env
from concord.client.engine.grpo import (
    inner_state,
    inner_update,
    make_inner_optimizer,
    pin_determinism,
    state_delta,
    train_round,
)
from concord.client.engine.model import Policy, build_policy, clone_policy, load_policy_state, policy_state
from concord.client.engine.rollout import completion_mask, generate
from concord.client.initiator import load_task_file
from concord.validator.aggregate import outer_step
from concord.validator.flags import FlagItem, flagged_sample, flags_from_verdict, round_flags
from concord.validator.pipeline import assigned_indices
from concord.validator.sampling import CheckSample, breakeven_slash, draw_sample, p_any, p_rows_hit
from concord.validator.tiny_checks import verify_bundle
from concord.validator.tiny_prefill import recompute_states, rollout_sampling_rejects
from concord.validator.verdict import Verdict
from scripts import REPO_ROOT
from scripts.adversaries.trainer_cheats import CHEATS, CheatContext

TASK_FILE = REPO_ROOT / "configs" / "default_task.toml"
CHEAT_NAMES = (
    "zero_proofs",
    "random_proofs",
    "proofs_one_short",
    "foreign_model_proofs",
    "altered_token_first",
    "altered_token_middle",
    "altered_token_last",
    "cherry_picked",
    "wrong_prompts",
    "inflated_rewards",
    "work_units_off_by_one",
    "random_delta",
    "delta_scaled_1_01",
    "other_hparams",
)
# What a cheat can gain over honest work in one round (pay is pro rata to recomputed workUnits):
# the whole reward share for a cheat that can skip the work it fakes (all proofs, the model,
# training), nothing for one that does all the work and changes no pay (its motive is to poison
# the model; proofs_one_short saves one proof of thousands).
SKIPS_WORK = {"zero_proofs", "random_proofs", "foreign_model_proofs", "random_delta"}


def address(i: int, what: str) -> str:
    return "0x" + hashlib.sha256(f"{what} {i}".encode()).hexdigest()[:40]


def seed_of(*parts: object) -> bytes:
    return hashlib.sha256(repr(parts).encode()).digest()


def digest_of(bundle: Bundle, i: int) -> Digest:
    """A stand-in for the manifest digest (the sample depends on it, nothing else here does)."""
    return Digest(hashlib.sha256(f"{bundle.trainer} {bundle.round} {i}".encode()).digest())


# ----------------------------------------------------------------------------- the two sides' work


def trainer_round(
    base: Policy, env: Env, cfg: TaskConfig, task_id: int, round_: int, trainer: str
) -> tuple[Bundle, dict]:
    """One trainer's round: the bundle and the bytes it uploads."""
    bundle = make_bundle(base, env, cfg, task_id, round_, trainer)
    files = {
        "rollouts": encode_rollouts(bundle.batches),
        "proofs": encode_proof_file(bundle.proofs),
        "delta": delta_shards(bundle.delta),
        "states": state_files(bundle),
    }
    return bundle, files


def decode_for_validator(files: dict, bundle: Bundle, limits, shapes, wanted: tuple[int, ...] | None) -> dict:
    """What a validator parses of one submission: rollouts, proofs, delta, the inner states it needs."""
    from concord.client.content.manifest import ShardRef, cid_for_digest

    def fetched(name: str, data: bytes) -> ShardRef:  # the manifest's entry, the file hashed once as a fetch does
        digest = hashlib.sha256(data).digest()
        return ShardRef(name, cid_for_digest(digest), digest.hex(), len(data))

    decode_rollouts(files["rollouts"], "-", bundle.task_id, bundle.round, bundle.trainer)
    decode_proof_file(files["proofs"], "-", limits)
    decode_delta([(fetched(name, data), data) for name, data in files["delta"]], shapes)
    states = {}
    for k, (name, data) in enumerate(files["states"], start=1):
        if wanted is None or k in wanted:
            states[k] = decode_state(data, fetched(name, data), k - 1, shapes)
    return states


def validate(
    base: Policy,
    env: Env,
    cfg: TaskConfig,
    vcfg: ValidationConfig,
    bundle: Bundle,
    digest: Digest,
    seed: bytes,
    me: str,
) -> tuple[bool, str]:
    """One validator's verdict on one bundle (states from memory): (accepted, failed check)."""
    grpo = cfg.grpo
    sample = draw_sample(seed, me, digest, grpo.inner_steps, grpo.rollouts_per_step, vcfg)
    states = {k: s for k, s in enumerate(bundle.states, start=1) if k in sample.states_needed()}
    v = verify_bundle(base, bundle, env, cfg, vcfg, None if sample.full else sample, states)
    return v.accepted, v.failed_check


# ----------------------------------------------------------------------------- a consistent one-step forger


def forged_step_bundle(
    base: Policy, env: Env, cfg: TaskConfig, task_id: int, round_: int, trainer: str, k: int, scale: float = 20.0
) -> Bundle:
    """A trainer that poisons inner step k and rebuilds everything after it consistently: after step
    k's honest update theta is pushed ``scale`` times the step's update the other way (a harmful
    direction), that is committed as inner state k + 1, and steps k + 1 .. H - 1 are generated,
    proved and trained from it as an honest trainer would. Every row check passes (each row is the
    committed theta_j's own) and every step replay but step k's; the delta is theta_H - theta_base."""
    grpo = cfg.grpo
    policy = clone_policy(base)
    optimizer = make_inner_optimizer(policy, grpo)
    batches, states = [], []
    for j in range(grpo.inner_steps):
        idx = list(range(j * grpo.prompts_per_step, (j + 1) * grpo.prompts_per_step))
        batch = generate(policy, env, idx, grpo.group_size, cfg.sampler, task_id, round_, trainer)
        before = {n: p.detach().clone() for n, p in policy.named_parameters()}
        inner_update(policy, optimizer, batch, grpo, base)
        if j == k:
            with torch.no_grad():
                for n, p in policy.named_parameters():
                    p.add_(-(scale + 1) * (p - before[n]))  # theta_k - scale x the update
        batches.append(batch)
        states.append(inner_state(policy, optimizer))
    proofs = tuple(batch_proofs(b) for b in batches)
    return Bundle(
        task_id=task_id,
        round=round_,
        base_round=round_,
        trainer=trainer,
        batches=tuple(strip_private(b) for b in batches),
        proofs=proofs,
        delta=state_delta(policy_state(policy), policy_state(base)),
        mean_reward=claimed_mean_reward(batches),
        work_units=claimed_work_units(batches),
        proof_root=proofs_root(proofs),
        states=tuple(states),
    )


# ----------------------------------------------------------------------------- bounded influence


def _se(values: list[float]) -> float | None:
    """Standard error of a mean (None for one value)."""
    return round(float(np.std(values, ddof=1) / math.sqrt(len(values))), 4) if len(values) > 1 else None


def heldout_reward(policy: Policy, env: Env, cfg: TaskConfig, prompts: int = 1024) -> float:
    """Mean reward of ``policy`` on held-out prompts (task id and trainer no round uses), the same
    prompts and sampler keys for every model compared (common random numbers)."""
    group = 4
    batch = generate(policy, env, list(range(prompts // group)), group, cfg.sampler, 424242, 0, address(0, "heldout"))
    return float(batch.rewards.mean())


def next_model(base: Policy, deltas: dict[str, dict[str, torch.Tensor]], outer: OuterConfig, slots: int) -> Policy:
    """The aggregated next model from ``deltas`` with ``slots`` trainers' weight each: an empty slot
    (a trainer whose contribution is removed, K kept) is the outer step of the others at lr x n / K."""
    cfg = dataclasses.replace(outer, lr=outer.lr * len(deltas) / slots)
    state, _ = outer_step(policy_state(base), deltas, {}, cfg)
    policy = clone_policy(base)
    load_policy_state(policy, state)
    return policy


def poison_effect(cfg: TaskConfig, seeds: int, scale: float = 20.0) -> dict:
    """An unsampled poisoner among K trainers against one honest trainer in the same slot, on the next
    model's held-out reward, per model seed (round 0 of the task from model seed s):

    - trainer X trains honestly: delta h_X; as a poisoner it submits -scale x h_X instead (its own
      learning direction reversed, ``scale`` times an honest delta's norm: it knows no other delta);
    - the other K - 1 trainers are honest; "X's slot empty" is their outer step at lr x (K - 1) / K;
    - honest effect = R(others + h_X) - R(X's slot empty); damage = R(X's slot empty) - R(others +
      poison); poison_effect = mean damage / mean honest effect over the seeds.

    Under the task's outer step ("task"), and for comparison with no bound ("none": clip 0, no
    agreement weights, the aggregation before issue 21) and the norm clip alone ("clip_only")."""
    k = max(2, cfg.trainers_per_round)
    env = make_env(cfg.env)
    variants = {
        "task": cfg.outer,
        "none": dataclasses.replace(cfg.outer, clip=0.0, agreement=False),
        "clip_only": dataclasses.replace(cfg.outer, agreement=False),
    }
    per: dict[str, dict[str, list[float]]] = {name: {"damage": [], "honest": []} for name in variants}
    base_rewards = []
    for seed in range(seeds):
        base = build_policy(dataclasses.replace(cfg.model, seed=seed))
        deltas = {}
        for i in range(k):
            who = address(i, f"trainer {seed}")
            _, deltas[who] = train_round(base, env, cfg.grpo, cfg.sampler, 1, 0, who)
        x = sorted(deltas)[seed % k]  # trainer X: a different position in the key order per seed
        others = {n: d for n, d in deltas.items() if n != x}
        poison = {p: t * -scale for p, t in deltas[x].items()}
        base_rewards.append(heldout_reward(base, env, cfg))
        for name, outer in variants.items():
            r_honest = heldout_reward(next_model(base, deltas, outer, k), env, cfg)
            r_empty = heldout_reward(next_model(base, others, outer, k), env, cfg)
            r_poison = heldout_reward(next_model(base, {**others, x: poison}, outer, k), env, cfg)
            per[name]["damage"].append(r_empty - r_poison)
            per[name]["honest"].append(r_honest - r_empty)
    out = {}
    for name, got in per.items():
        damage, gain = float(np.mean(got["damage"])), float(np.mean(got["honest"]))
        out[name] = {
            "poison_effect": round(damage / gain, 3) if gain > 0 else None,
            "damage": round(damage, 4),
            "honest_effect": round(gain, 4),
            "damage_se": _se(got["damage"]),
            "honest_effect_se": _se(got["honest"]),
        }
    return {
        "poison_scale": scale,
        "trainers": k,
        "seeds": seeds,
        "base_reward": round(float(np.mean(base_rewards)), 4),
        "outer": {"clip": cfg.outer.clip, "agreement": cfg.outer.agreement},
        **out,
    }


# ----------------------------------------------------------------------------- what a cheat touches


@dataclasses.dataclass(frozen=True)
class Touched:
    cheap: bool  # a cheap check (on everything) rejects
    rows: int  # rows whose prefill checks fail under the committed theta_k
    steps: int  # inner steps whose replay alone fails
    total_rows: int
    total_steps: int


def touched(base: Policy, env: Env, cfg: TaskConfig, vcfg: ValidationConfig, bundle: Bundle) -> Touched:
    """Check every row and every step alone: what a sample must hit to catch this bundle."""
    h, n = cfg.grpo.inner_steps, cfg.grpo.rollouts_per_step
    states = dict(enumerate(bundle.states, start=1))
    none = CheckSample(tuple(() for _ in range(h)), (), False)
    cheap = not verify_bundle(base, bundle, env, cfg, vcfg, none, states).accepted
    if cheap:
        return Touched(True, 0, 0, h * n, h)
    steps = sum(
        not verify_bundle(base, bundle, env, cfg, vcfg, CheckSample(none.rows, (k,), False), states).accepted
        for k in range(h)
    )
    rows = 0
    for k, batch in enumerate(bundle.batches):
        # the prefill checks of step k's rows under the committed theta_k, every row, per row
        from concord.client.engine.grpo import restore_inner_state

        policy, _ = (base, None) if k == 0 else restore_inner_state(base, states[k], k, cfg.grpo)
        want_i, want_j = assigned_indices(k, cfg.grpo)
        keys = smp.sample_keys(bundle.task_id, bundle.round, bundle.trainer, list(zip(want_i, want_j, strict=True)))
        mask = completion_mask(batch.completions, cfg.sampler.stop_at_eos)
        out = recompute_states(policy, batch, bundle.proofs[k], mask.sum(1), keys, cfg.sampler, vcfg)
        bad_toploc = [not r.ok for r in out.toploc]
        bad_sampling = rollout_sampling_rejects(out.logits, batch, keys, cfg.sampler, vcfg)
        rows += sum(a or b for a, b in zip(bad_toploc, bad_sampling, strict=True))
    return Touched(False, rows, steps, h * n, h)


def predicted(t: Touched, vcfg: ValidationConfig, validators: int) -> tuple[float, float]:
    """(per validator, per round) probability that a cheat touching ``t`` is rejected under flags: each
    validator's own sample catches it with p_one (a touched row among its m, or a touched step among
    its s); one flag makes every honest validator re-check and reject, so the round with
    1 - (1 - p_one)^V (validator.sampling.p_any)."""
    if t.cheap:
        return 1.0, 1.0
    m = min(t.total_rows, max(1, math.ceil(vcfg.row_fraction * t.total_rows - 1e-9)))
    s = min(vcfg.replay_steps, t.total_steps)
    p_one = 1 - (1 - p_rows_hit(t.total_rows, m, t.rows)) * (1 - p_rows_hit(t.total_steps, s, t.steps))
    return p_one, p_any(validators, p_one)


def own_verdicts(
    base: Policy, env: Env, cfg: TaskConfig, vcfg: ValidationConfig, bundle: Bundle, seed: bytes, count: int
) -> list[Verdict]:
    """The verdicts of ``count`` validators on one bundle in one round, each on its own sample."""
    grpo, digest = cfg.grpo, digest_of(bundle, 0)
    out = []
    for v in range(count):
        sample = draw_sample(seed, address(v, "validator"), digest, grpo.inner_steps, grpo.rollouts_per_step, vcfg)
        states = {k: st for k, st in enumerate(bundle.states, start=1) if k in sample.states_needed()}
        out.append(verify_bundle(base, bundle, env, cfg, vcfg, sample, states))
    return out


def round_votes(
    base: Policy,
    env: Env,
    cfg: TaskConfig,
    vcfg: ValidationConfig,
    bundle: Bundle,
    verdicts: list[Verdict],
    rechecked: dict[tuple[FlagItem, ...], bool],
) -> list[bool]:
    """Each validator's final vote (True = reject) under flags: its own verdict, then, for one that
    accepted, the re-check of every flag the others posted (validator.flags.flagged_sample: exactly
    the flagged rows and steps plus the cheap checks; the same verdict for every honest re-checker,
    cached in ``rechecked`` by the flags)."""
    flags = round_flags(f for v in verdicts for f in flags_from_verdict(0, v))
    votes = [not v.accepted for v in verdicts]
    if not flags or all(votes):
        return votes
    if flags not in rechecked:
        extra = flagged_sample(flags, cfg.grpo.inner_steps, cfg.grpo.rollouts_per_step)
        states = {k: st for k, st in enumerate(bundle.states, start=1) if k in extra.states_needed()}
        rechecked[flags] = not verify_bundle(base, bundle, env, cfg, vcfg, extra, states).accepted
    return [vote or rechecked[flags] for vote in votes]


def slash_rates(
    base: Policy,
    env: Env,
    cfg: TaskConfig,
    vcfg: ValidationConfig,
    bundle: Bundle,
    name: str,
    trials: int,
    sizes: tuple[int, ...],
) -> dict[int, tuple[float, float]]:
    """Per validator count V in ``sizes``: (fraction of trials in which a strict majority of the first V
    validators' final votes rejected = a slash on chain, fraction of their own verdicts that rejected)."""
    slashes = dict.fromkeys(sizes, 0)
    own = dict.fromkeys(sizes, 0)
    rechecked: dict[tuple[FlagItem, ...], bool] = {}
    for trial in range(trials):
        verdicts = own_verdicts(base, env, cfg, vcfg, bundle, seed_of(name, trial), max(sizes))
        for v in sizes:
            votes = round_votes(base, env, cfg, vcfg, bundle, verdicts[:v], rechecked)
            slashes[v] += sum(votes) * 2 > v
            own[v] += sum(not x.accepted for x in verdicts[:v])
    return {v: (slashes[v] / trials, own[v] / (trials * v)) for v in sizes}


def standard_error(p: float, n: int) -> float:
    return math.sqrt(max(p * (1 - p), 1 / n) / n)


# ----------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="concord bench verify", description=__doc__.split("\n\n")[0])
    p.add_argument("--trainers", type=int, default=8)
    p.add_argument(
        "--validators", type=int, default=3, help="validators per round in the headline detection (also 3, 5)"
    )
    p.add_argument("--honest-rounds", type=int, default=25, help="rounds of honest submissions (x trainers)")
    p.add_argument("--trials", type=int, default=40, help="rounds each cheat is judged in")
    p.add_argument("--cheats", default=",".join(CHEAT_NAMES), help="comma-separated cheat names")
    p.add_argument("--forger-trials", type=int, default=300, help="rounds the one-step forger is judged in")
    p.add_argument("--poison-seeds", type=int, default=8, help="model seeds of the poisoning measurement")
    p.add_argument("--task", type=Path, default=TASK_FILE)
    a = p.parse_args(argv)
    for name in ("trainers", "validators", "honest_rounds", "trials", "forger_trials", "poison_seeds"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(a, name)}")
    unknown = [c for c in a.cheats.split(",") if c and c not in CHEATS]
    if unknown:
        p.error(f"--cheats: unknown cheat(s) {unknown}; known: {sorted(CHEATS)}")
    return a


def cpu(fn: Callable[[], object]) -> tuple[float, object]:
    t0 = time.process_time()
    out = fn()
    return time.process_time() - t0, out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console()
    pin_determinism(1)
    task = load_task_file(args.task)
    cfg, vcfg0 = task.spec.task, task.spec.validation
    sampled = vcfg0 if vcfg0.mode == "sampled" else dataclasses.replace(vcfg0, mode="sampled")
    full = dataclasses.replace(vcfg0, mode="full")
    env, base = make_env(cfg.env), build_policy(cfg.model)
    shapes = {k: tuple(t.shape) for k, t in policy_state(base).items()}
    n_params = sum(t.numel() for t in policy_state(base).values())
    limits = default_limits(cfg, n_params, len(shapes), env.prompt_len)
    trainers = [address(i, "trainer") for i in range(args.trainers)]
    me = address(0, "validator")
    started = time.perf_counter()

    # 1. cost of one round
    trainer_s, subs = 0.0, []
    for t in trainers:
        s, (bundle, files) = cpu(lambda t=t: trainer_round(base, env, cfg, 1, 0, t))
        trainer_s += s
        subs.append((bundle, files))
    validator_s = {"full": 0.0, "sampled": 0.0}
    for i, (bundle, files) in enumerate(subs):
        d = digest_of(bundle, i)
        seed = seed_of("cost", i)
        for mode, vcfg in (("full", full), ("sampled", sampled)):
            sample = draw_sample(seed, me, d, cfg.grpo.inner_steps, cfg.grpo.rollouts_per_step, vcfg)
            wanted = None if sample.full else sample.states_needed()

            def check(b: Bundle = bundle, f: dict = files, v: ValidationConfig = vcfg, w=wanted, dd=d, sd=seed) -> bool:
                decode_for_validator(f, b, limits, shapes, w)
                return validate(base, env, cfg, v, b, dd, sd, me)[0]

            s, ok = cpu(check)
            assert ok, f"honest submission {i} rejected in {mode} mode"
            validator_s[mode] += s
    console.print(
        f"cost: {args.trainers} trainers {trainer_s:.2f} CPU-s, one validator full {validator_s['full']:.2f} "
        f"/ sampled {validator_s['sampled']:.2f} CPU-s"
    )

    # 2. honest false rejects
    honest, false_rejects = 0, 0
    for r in range(args.honest_rounds):
        for i, t in enumerate(trainers):
            bundle = subs[i][0] if r == 0 else make_bundle(base, env, cfg, 1, r, t)
            ok, _ = validate(base, env, cfg, sampled, bundle, digest_of(bundle, i), seed_of("honest", r, i), me)
            honest += 1
            false_rejects += not ok
    console.print(f"honest: {honest} submissions, {false_rejects} rejected")

    # 3. detection per cheat, with 3 and 5 validators each drawing its own sample and flagging
    sizes = tuple(sorted({3, 5, args.validators}))
    detection: dict[str, dict] = {}
    cheater = address(99, "cheater")
    honest_bundle = make_bundle(base, env, cfg, 1, 0, cheater)
    ctx = CheatContext(1, 0, 0, cheater, cfg, env, 0, limits, base, lambda r: base, None)
    for name in [c for c in args.cheats.split(",") if c]:
        cheat = CHEATS[name]
        if cheat.model is not None:  # the node generates, proves and trains with another model
            bundle = make_bundle(cheat.model(base, ctx), env, cfg, 1, 0, cheater)
        elif cheat.bundle is not None:
            bundle = cheat.bundle(honest_bundle, ctx)
        else:
            continue
        t = touched(base, env, cfg, sampled, bundle)
        rates = slash_rates(base, env, cfg, sampled, bundle, name, args.trials, sizes)
        d: dict = {"touched": "cheap" if t.cheap else f"{t.rows}/{t.total_rows} rows, {t.steps}/{t.total_steps} steps"}
        for v in sizes:
            p_one, p_slash = predicted(t, sampled, v)
            measured, per_validator = rates[v]
            tag = "" if v == args.validators else f"_{v}"
            d |= {
                f"measured{tag}": round(measured, 4),
                f"predicted{tag}": round(p_slash, 4),
                f"measured_per_validator{tag}": round(per_validator, 4),
                f"predicted_per_validator{tag}": round(p_one, 4),
                f"within_margin{tag}": abs(measured - p_slash) <= 3 * standard_error(p_slash, args.trials),
            }
        detection[name] = d
        console.print(f"{name}: {d}")

    # 4. a consistent one-step forger (inner step 4 poisoned, the rest rebuilt on it)
    forger = forged_step_bundle(base, env, cfg, 1, 0, cheater, k=min(4, cfg.grpo.inner_steps - 1))
    t = touched(base, env, cfg, sampled, forger)
    rates = slash_rates(base, env, cfg, sampled, forger, "forged_step", args.forger_trials, (3, 5))
    forged = {str(v): round(rates[v][0], 4) for v in (3, 5)}
    forged_detail = {
        "touched": f"{t.rows}/{t.total_rows} rows, {t.steps}/{t.total_steps} steps",
        "trials": args.forger_trials,
        **{
            str(v): {
                "measured": round(rates[v][0], 4),
                "se": round(standard_error(rates[v][0], args.forger_trials), 4),
                "predicted": round(predicted(t, sampled, v)[1], 4),
                "measured_per_validator": round(rates[v][1], 4),
                "predicted_per_validator": round(predicted(t, sampled, v)[0], 4),
            }
            for v in (3, 5)
        },
    }
    console.print(f"forged_step: {forged_detail}")

    # 5. bounded influence: an unsampled poisoner among K trainers against one honest trainer
    poison = poison_effect(cfg, args.poison_seeds)
    console.print(f"poison: {poison}")

    chain = task.params
    k = max(1, cfg.trainers_per_round)
    gain = chain.trainer_reward_per_round / k  # the whole reward share of one trainer
    slash = chain.slash_amount
    for name, d in detection.items():
        p = d["predicted"]
        g = gain if name in SKIPS_WORK else 0.0
        d["gain_tokens"] = g / 10**18
        d["breakeven_slash_tokens"] = round(breakeven_slash(gain, p) / 10**18, 2) if p > 0 else None
        d["ev_tokens"] = round(((1 - p) * g - p * slash) / 10**18, 3)
        d["ev_tokens_if_whole_share"] = round(((1 - p) * gain - p * slash) / 10**18, 3)

    table = Table(title=f"sampled verification, default task, {args.trainers} trainers")
    five = "" if args.validators == 5 else "_5"
    for col in (
        "cheat",
        "touches",
        "per validator (pred / meas)",
        "slash, V = 3 (pred / meas)",
        "V = 5",
        "EV (tokens)",
    ):
        table.add_column(col)
    for name, d in detection.items():
        table.add_row(
            name,
            str(d["touched"]),
            f"{d['predicted_per_validator']:.3f} / {d['measured_per_validator']:.3f}",
            f"{d['predicted']:.3f} / {d['measured']:.3f}",
            f"{d['predicted' + five]:.3f} / {d['measured' + five]:.3f}",
            f"{d['ev_tokens']:+.2f}",
        )
    f3, f5 = forged_detail["3"], forged_detail["5"]
    table.add_row(
        "forged_step (consistent)",
        str(forged_detail["touched"]),
        f"{f3['predicted_per_validator']:.3f} / {f3['measured_per_validator']:.3f}",
        f"{f3['predicted']:.3f} / {f3['measured']:.3f} +- {f3['se']:.3f}",
        f"{f5['predicted']:.3f} / {f5['measured']:.3f} +- {f5['se']:.3f}",
        "",
    )
    console.print(table)
    result = {
        "trainers": args.trainers,
        "validators": args.validators,
        "validator_cpu_s": round(validator_s["sampled"], 3),
        "validator_cpu_s_full": round(validator_s["full"], 3),
        "trainers_cpu_s": round(trainer_s, 3),
        "validator_fraction": round(validator_s["sampled"] / trainer_s, 4),
        "validator_fraction_full": round(validator_s["full"] / trainer_s, 4),
        "row_fraction": sampled.row_fraction,
        "replay_steps": sampled.replay_steps,
        "detection": {
            k: {key: v[key] for key in v if key.startswith(("measured", "predicted")) and "per_validator" not in key}
            for k, v in detection.items()
        },
        "detection_detail": detection,
        "min_detection_per_round": min((d["measured"] for d in detection.values()), default=None),
        "all_within_margin": all(v for d in detection.values() for key, v in d.items() if key.startswith("within")),
        "forged_step_detection": forged,
        "forged_step_detail": forged_detail,
        "poison_effect": poison["task"]["poison_effect"],
        "poison_detail": poison,
        "negative_ev_all": all(d["ev_tokens"] < 0 for d in detection.values()),
        "negative_ev_all_if_whole_share": all(d["ev_tokens_if_whole_share"] < 0 for d in detection.values()),
        "gain_per_round_tokens": gain / 10**18,
        "slash_tokens": slash / 10**18,
        "honest_submissions": honest,
        "honest_false_rejects": false_rejects,
        "seconds": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

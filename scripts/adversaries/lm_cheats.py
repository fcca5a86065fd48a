"""Trainer cheats on the real LM (issue 12): each builds the submission a cheating trainer would send.

A cheat starts from what an honest trainer has (the round's adapters, the environment, the seeded
assignment) and changes one thing, keeping everything else consistent (claims recomputed, proofs of
what it actually ran, proof root over its own proofs), so the check that fires is the one the cheat
is meant to meet, not a bookkeeping slip. ``EXPECTED`` names the check that must reject it.

Used by tests/test_lm_detection.py (a fast subset) and `concord bench lm --cheats` (all of them);
``EXTRA_CHEATS`` (below) by `concord bench lm_sampled` and tests/test_lm_sampled.py.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import torch

from concord.client.engine import sampler as smp
from concord.client.engine.bundle import (
    Bundle,
    batch_proofs,
    claimed_mean_reward,
    claimed_work_units,
    proofs_root,
    strip_private,
)
from concord.client.engine.config import GRPOConfig, SamplerConfig
from concord.client.engine.grpo import delta_similarity
from concord.client.engine.lm_grpo import GroupFn, make_submission
from concord.client.engine.lm_rollout import LMRollouts, group_states, load_adapter_state
from concord.client.engine.rollout import RolloutBatch


class NotApplicable(RuntimeError):
    """The cheat would change nothing on this round (e.g. every reward is already 1)."""

    def __init__(self, cheat: str, why: str) -> None:
        super().__init__(f"{cheat}: not applicable ({why})")
        self.cheat, self.why = cheat, why


@dataclass(frozen=True)
class LMCheatContext:
    """What a cheat works from: the honest trainer's inputs, an older model and another trainer's work."""

    rollouts: LMRollouts
    base: dict[str, torch.Tensor]  # the round's adapters (what the validator checks against)
    older: dict[str, torch.Tensor]  # an earlier round's adapters (for the stale-model cheat)
    grpo: GRPOConfig
    task_id: int
    round: int
    trainer: str
    other_trainer: str  # whose honest work the borrowing cheat copies


def _honest(
    ctx: LMCheatContext, base: dict[str, torch.Tensor] | None = None, group_fn: GroupFn | None = None
) -> Bundle:
    sub, _ = make_submission(
        ctx.rollouts, ctx.base if base is None else base, ctx.grpo, ctx.task_id, ctx.round, ctx.trainer, group_fn
    )
    return sub


def _recount(sub: Bundle, steps: tuple[tuple[RolloutBatch, ...], ...]) -> Bundle:
    """The submission with new groups and claims recomputed from them (a careful cheater's bookkeeping)."""
    flat = [g for groups in steps for g in groups]
    mean = float(torch.cat([g.rewards.to(torch.float64) for g in flat]).mean())
    units = int(sum(int(g.mask.sum()) for g in flat))
    return dataclasses.replace(sub, batches=tuple(flat), mean_reward=mean, work_units=units)


def other_model(ctx: LMCheatContext) -> Bundle:
    """Generates and trains with other adapters (a different model) and claims the round's."""
    gen = torch.Generator().manual_seed(7)
    other = {k: v + 0.1 * torch.randn(v.shape, generator=gen) for k, v in ctx.base.items()}
    return _honest(ctx, other)


def stale_model(ctx: LMCheatContext) -> Bundle:
    """Works from an earlier round's adapters (skipped the download) and claims the current round's."""
    return _honest(ctx, ctx.older)


def edited_tokens(ctx: LMCheatContext) -> Bundle:
    """Replaces the first answer token of one rollout by another (and re-scores it honestly)."""
    sub = _honest(ctx)
    g0 = sub.steps[0][0]
    completions = g0.completions.clone()
    completions[0, 0] = (int(completions[0, 0]) + 1) % len(ctx.rollouts.tokenizer)
    seed_rewards = ctx.rollouts.rewards(_seed(ctx, int(g0.prompt_idx[0])), completions)
    edited = dataclasses.replace(g0, completions=completions, rewards=seed_rewards)
    steps = ((edited, *sub.steps[0][1:]), *sub.steps[1:])
    return _recount(sub, steps)


def cherry_picked(ctx: LMCheatContext) -> Bundle:
    """Draws 2G samples per prompt and submits G of them as if they were samples 0..G-1: the best
    rewarded, later draws first among equal rewards (so it deviates even where all draws score alike)."""

    def best_of_two(task_id: int, round_: int, trainer: str, i: int, g: int) -> RolloutBatch:
        wide = ctx.rollouts.group(task_id, round_, trainer, i, 2 * g)
        rank = wide.rewards * (2 * g) + torch.arange(2 * g)  # reward first, then the later draw
        keep = torch.argsort(rank, descending=True)[:g]
        return dataclasses.replace(
            wide,
            prompt_idx=wide.prompt_idx[keep],
            sample_idx=torch.arange(g),
            keys=wide.keys[keep.numpy()],
            prompts=wide.prompts[keep],
            completions=wide.completions[keep],
            mask=wide.mask[keep],
            lengths=wide.lengths[keep],
            rewards=wide.rewards[keep],
            logprobs=wide.logprobs[keep],
            hidden=wide.hidden[keep],
            group_size=g,
        )

    return _honest(ctx, group_fn=best_of_two)


def inflate_group_rewards(sub: Bundle) -> Bundle:
    """Claims reward 1 for every rollout of the first group that scored less (and the mean that follows).
    The trainer node's cheat hook for `inflated_rewards` (scripts.adversaries.trainer_cheats) too."""
    steps = [list(groups) for groups in sub.steps]
    for groups in steps:
        for a, g in enumerate(groups):
            if bool((g.rewards < 1).any()):
                groups[a] = dataclasses.replace(g, rewards=torch.ones_like(g.rewards))
                return _recount(sub, tuple(tuple(gs) for gs in steps))
    raise NotApplicable("inflated_rewards", "every rollout of the round already scored 1")


def inflated_rewards(ctx: LMCheatContext) -> Bundle:
    return inflate_group_rewards(_honest(ctx))


def other_temperature(ctx: LMCheatContext) -> Bundle:
    """Samples at temperature 0.5 instead of the task's (sharper, higher rewards)."""
    r = ctx.rollouts
    cold = dataclasses.replace(r, sampler=SamplerConfig(0.5, r.sampler.max_new_tokens, r.sampler.stop_at_eos))
    return _honest(ctx, group_fn=cold.group)


def borrowed_delta(ctx: LMCheatContext) -> Bundle:
    """Generates its own rollouts honestly but submits another trainer's adapter states and delta (the
    first of a few other trainers whose delta differs from its own: two trainers whose groups all
    scored alike both have a zero delta, and copying a zero delta over a zero delta is no cheat)."""
    mine = _honest(ctx)
    for k in range(8):
        other = ctx.other_trainer if k == 0 else "0x" + f"{0xC0 + k:02x}" * 20
        theirs, _ = make_submission(ctx.rollouts, ctx.base, ctx.grpo, ctx.task_id, ctx.round, other)
        _, rel = delta_similarity(theirs.delta, mine.delta)
        if rel > 1e-3:
            return dataclasses.replace(mine, states=theirs.states, delta=theirs.delta)
    raise NotApplicable("borrowed_delta", "eight other trainers' deltas all equal this trainer's own")


def _seed(ctx: LMCheatContext, i: int) -> int:
    from concord.client.engine.sampler import prompt_seed

    return prompt_seed(ctx.task_id, ctx.round, ctx.trainer, i)


LM_CHEATS: dict[str, Callable[[LMCheatContext], Bundle]] = {
    "other_model": other_model,
    "stale_model": stale_model,
    "edited_tokens": edited_tokens,
    "cherry_picked": cherry_picked,
    "inflated_rewards": inflated_rewards,
    "other_temperature": other_temperature,
    "borrowed_delta": borrowed_delta,
}
# The check that must reject each cheat (the first one in protocol order that can see it).
EXPECTED: dict[str, tuple[str, ...]] = {
    "other_model": ("toploc", "sampling"),
    "stale_model": ("toploc", "sampling"),
    "edited_tokens": ("toploc", "sampling"),
    "cherry_picked": ("sampling",),
    "inflated_rewards": ("rewards",),
    "other_temperature": ("sampling",),
    # its rollouts checked under the borrowed adapters_k (k >= 1) already fail, unless those are close to its own
    "borrowed_delta": ("toploc", "sampling", "training_replay"),
}


# ----------------------------------------------------------------------------- the cheats issue 24 names beside them
# (`concord bench lm_sampled` measures each per sampled row; not in LM_CHEATS: each is caught by a check
# EXPECTED cannot name alone, a row check or only the training replay)


def _tempered(temperature: float) -> Callable[[LMCheatContext], Bundle]:
    def cheat(ctx: LMCheatContext) -> Bundle:
        r = ctx.rollouts
        other = dataclasses.replace(
            r, sampler=SamplerConfig(temperature, r.sampler.max_new_tokens, r.sampler.stop_at_eos)
        )
        return _honest(ctx, group_fn=other.group)

    cheat.__doc__ = f"Samples at temperature {temperature} instead of the task's (0 = greedy)."
    return cheat


def dropped_system_prompt(ctx: LMCheatContext) -> Bundle:
    """Generates without the task's system prompt (the chat template's own default instead), then submits
    the right prompt tokens with proofs rebuilt from a prefill under them: TOPLOC passes on every row, and
    only the rows whose tokens the right prompt would not have chosen fail (sampling replay)."""
    r = ctx.rollouts
    if not r.env.system_prompt:
        raise NotApplicable("dropped_system_prompt", "the task's environment has no system prompt")
    wrong = LMRollouts.for_env(r.model, r.tokenizer, dataclasses.replace(r.env, system_prompt=""), r.sampler)

    def group(task_id: int, round_: int, trainer: str, i: int, g: int) -> RolloutBatch:
        made = wrong.group(task_id, round_, trainer, i, g)  # the assigned keys, another prompt text
        right = torch.tensor([r.env.prompt_ids(r.tokenizer, smp.prompt_seed(task_id, round_, trainer, i))] * g)
        with torch.no_grad():
            hidden, _ = group_states(r.model, right, made.completions)
        return dataclasses.replace(made, prompts=right, hidden=hidden.float())

    return _honest(ctx, group_fn=group)


def untrained(ctx: LMCheatContext) -> Bundle:
    """Skips the training (its backward passes): every step's groups generated honestly under the round's
    adapters, zero states and a zero delta claimed. Its rows all pass (each was made under the adapters_k
    it claims); only the training replay sees it."""
    r, grpo = ctx.rollouts, ctx.grpo
    honest = _honest(ctx)
    if all(float(d.abs().max()) == 0 for d in honest.delta.values()):
        raise NotApplicable("untrained", "the honest round's delta is zero (no group had a reward signal)")
    load_adapter_state(r.model, ctx.base)
    prefix, a = r.prefix(), grpo.prompts_per_step
    flat = [
        g
        for k in range(grpo.inner_steps)
        for g in r.step_groups(ctx.task_id, ctx.round, ctx.trainer, range(k * a, (k + 1) * a), grpo.group_size, prefix)
    ]
    proofs = tuple(batch_proofs(g) for g in flat)
    zero = {name: torch.zeros_like(t) for name, t in ctx.base.items()}
    return dataclasses.replace(
        honest,
        batches=tuple(strip_private(g) for g in flat),
        proofs=proofs,
        states=tuple(zero for _ in honest.states),
        delta=zero,
        mean_reward=claimed_mean_reward(flat),
        work_units=claimed_work_units(flat),
        proof_root=proofs_root(proofs),
    )


EXTRA_CHEATS: dict[str, Callable[[LMCheatContext], Bundle]] = {
    "temperature_0.8": _tempered(0.8),
    "greedy": _tempered(0.0),
    "dropped_system_prompt": dropped_system_prompt,
    "untrained": untrained,
}

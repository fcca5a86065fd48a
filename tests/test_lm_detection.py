"""The real LM end to end in process: an honest LoRA round on SmolLM2-135M passes every check, and
each trainer cheat that applies to it is rejected by the check meant to see it (issue 12).

The full list of cheats runs in `concord bench lm --cheats`; here every cheat runs once on a small
round (2 prompts x 4 samples per inner step, 2 inner steps) of round 1, whose model differs from
round 0's so that a stale model is a different model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from task_terms import TWO_TERMS

from concord.client.engine import lm, text_envs
from concord.client.engine.bundle import Bundle
from concord.client.engine.config import GRPOConfig, SamplerConfig, ValidationConfig
from concord.client.engine.lm_grpo import make_submission
from concord.client.engine.lm_rollout import (
    AdapterConfig,
    AdapterConfigError,
    LMRollouts,
    PromptGroupMismatch,
    adapter_state,
    attach_adapters,
    group_states,
)
from concord.validator.lm_checks import verify_submission
from concord.validator.sampling import CheckSample
from scripts.adversaries.lm_cheats import EXPECTED, LM_CHEATS, LMCheatContext

pytestmark = pytest.mark.unit

TASK, ROUND = 12, 1
TRAINER, OTHER = "0x" + "a1" * 20, "0x" + "b2" * 20
GRPO = GRPOConfig(prompts_per_step=2, group_size=4, inner_steps=2, lr=2e-3, optimizer="adamw")

# The checks do not depend on the task: these tests keep issue 12's two one-digit terms (the default
# task has 2-4 since issue 24) for a reward signal in a round of 2 prompts x 4 samples (0.2 base accuracy):
# task_terms.TWO_TERMS.


@pytest.fixture(scope="module")
def ctx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LMCheatContext]:
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    loaded = lm.load(lm.SMOLLM2_135M, Path(tmp_path_factory.mktemp("lm-models")))
    model = attach_adapters(loaded.model, AdapterConfig())
    env = text_envs.make_text_env("chain_sum", TWO_TERMS, context=loaded.context)
    rollouts = LMRollouts.for_env(model, loaded.tokenizer, env, SamplerConfig(1.0, env.max_new_tokens))
    older = adapter_state(model)
    # Rounds before this one, compressed: a larger step so that the round-1 model is materially another
    # model than round 0's (one small round moves the activations less than TOPLOC's bf16 tolerance).
    earlier = dataclasses.replace(GRPO, prompts_per_step=4, group_size=8, lr=2e-2)
    round0, _ = make_submission(rollouts, older, earlier, TASK, 0, TRAINER)
    base = {k: older[k] + round0.delta[k] for k in older}
    assert sum(float(d.norm()) for d in round0.delta.values()) > 0  # some group had a reward signal
    yield LMCheatContext(rollouts, base, older, GRPO, TASK, ROUND, TRAINER, OTHER)
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def honest(ctx: LMCheatContext) -> Bundle:
    sub, _ = make_submission(ctx.rollouts, ctx.base, ctx.grpo, TASK, ROUND, TRAINER)
    return sub


def test_an_honest_lora_round_passes_every_check(ctx: LMCheatContext, honest: Bundle) -> None:
    verdict = verify_submission(ctx.rollouts, ctx.base, honest, GRPO, ValidationConfig(prefill_precision="fp32"))
    assert verdict.accepted, verdict
    names = [r.name for r in verdict.results]
    assert names[-1] == "training_replay" and names.count("toploc") == GRPO.inner_steps * GRPO.prompts_per_step
    assert verdict.result("training_replay").evidence["cosine"] >= 0.9999
    assert set(honest.delta) == set(ctx.base) and len(honest.delta) == 120  # q and v of 30 blocks, A and B
    assert sum(t.numel() for t in honest.delta.values()) == 460_800  # the adapters only, not 134.5 M
    assert sum(float(d.norm()) for d in honest.delta.values()) > 0  # a group with a reward signal: a real step


def test_the_bf16_prefill_accepts_the_honest_round(ctx: LMCheatContext, honest: Bundle) -> None:
    verdict = verify_submission(ctx.rollouts, ctx.base, honest, GRPO, ValidationConfig(), bf16=True, replay=False)
    assert verdict.accepted, verdict


@pytest.mark.parametrize("cheat", sorted(LM_CHEATS))
def test_every_lm_cheat_is_rejected_by_its_check(ctx: LMCheatContext, cheat: str) -> None:
    sub = LM_CHEATS[cheat](ctx)
    verdict = verify_submission(ctx.rollouts, ctx.base, sub, GRPO, ValidationConfig(prefill_precision="fp32"))
    assert not verdict.accepted
    assert verdict.failed_check in EXPECTED[cheat], verdict.results[-1]


def test_altered_prompt_and_missing_adapter_tensor_are_rejected_before_any_prefill(
    ctx: LMCheatContext, honest: Bundle
) -> None:
    g0 = honest.steps[0][0]
    prompts = g0.prompts.clone()
    prompts[:, -3] = 17
    first = (dataclasses.replace(g0, prompts=prompts), *honest.steps[0][1:])
    altered = dataclasses.replace(honest, batches=(*first, *honest.batches[len(first) :]))
    verdict = verify_submission(ctx.rollouts, ctx.base, altered, GRPO)
    assert verdict.failed_check == "prompts" and verdict.results[-1].evidence["rows_altered"] == 4
    short = dict(honest.delta)
    short.pop(sorted(short)[0])
    verdict = verify_submission(ctx.rollouts, ctx.base, dataclasses.replace(honest, delta=short), GRPO)
    assert verdict.failed_check == "schema" and len(verdict.results) == 1


def test_a_group_must_share_one_prompt(ctx: LMCheatContext, honest: Bundle) -> None:
    g0 = honest.steps[0][0]
    prompts = g0.prompts.clone()
    prompts[2, 5] = 99
    with pytest.raises(PromptGroupMismatch, match=r"rows \[2\]"):
        group_states(ctx.rollouts.model, prompts, g0.completions)


@pytest.mark.parametrize(
    ("kwargs", "key"), [({"rank": 0}, "rank"), ({"targets": "q_proj,lm_head"}, "targets"), ({"alpha": 0}, "alpha")]
)
def test_bad_adapter_config_names_the_field(kwargs: dict[str, object], key: str) -> None:
    with pytest.raises(AdapterConfigError, match=rf"\[adapter\] {key}:"):
        AdapterConfig(**kwargs)  # type: ignore[arg-type]


def test_sampled_checks_prefill_only_the_sampled_rows(ctx: LMCheatContext, honest: Bundle) -> None:
    """Sampled mode on the LM: an honest round passes with 2 of 16 rows prefilled; a token edit in one
    row is caught when that row is in the sample and missed when it is not (the sample is what decides,
    so a validator's detection is the sample's probability); claims the cheap checks see are caught
    whatever the sample."""
    vcfg = ValidationConfig(prefill_precision="fp32", mode="sampled", row_fraction=0.1, replay_steps=1)
    sample = CheckSample(rows=((1,), (6,)), steps=(0,), full=False)
    verdict = verify_submission(ctx.rollouts, ctx.base, honest, GRPO, vcfg, sample=sample)
    assert verdict.accepted, verdict
    toploc = [r.evidence["rollouts"] for r in verdict.results if r.name == "toploc"]
    assert sum(toploc) == 2 and len(toploc) == GRPO.inner_steps * GRPO.prompts_per_step
    assert verdict.results[-1].name == "training_replay"  # a sampled step: the round is replayed

    edited = LM_CHEATS["edited_tokens"](ctx)  # row 0 of step 0's first group
    hit = CheckSample(rows=((0,), ()), steps=(), full=False)
    miss = CheckSample(rows=((1,), (6,)), steps=(), full=False)
    assert verify_submission(ctx.rollouts, ctx.base, edited, GRPO, vcfg, sample=hit).failed_check in (
        "toploc",
        "sampling",
    )
    missed = verify_submission(ctx.rollouts, ctx.base, edited, GRPO, vcfg, sample=miss)
    assert missed.accepted and "training_replay" not in [r.name for r in missed.results]
    inflated = LM_CHEATS["inflated_rewards"](ctx)
    assert verify_submission(ctx.rollouts, ctx.base, inflated, GRPO, vcfg, sample=miss).failed_check == "rewards"


def test_a_drawn_sample_maps_rows_onto_groups(ctx: LMCheatContext, honest: Bundle) -> None:
    from concord.client.digest import Digest
    from concord.validator.sampling import draw_sample

    vcfg = ValidationConfig(prefill_precision="fp32", mode="sampled", row_fraction=0.25, replay_steps=0)
    rows = GRPO.prompts_per_step * GRPO.group_size
    sample = draw_sample(bytes(range(32)), "0x" + "11" * 20, Digest(bytes(32)), GRPO.inner_steps, rows, vcfg)
    verdict = verify_submission(ctx.rollouts, ctx.base, honest, GRPO, vcfg, sample=sample)
    assert verdict.accepted, verdict
    assert sum(r.evidence["rollouts"] for r in verdict.results if r.name == "toploc") == sample.row_count == 4


def test_a_flagged_row_of_an_lm_round_is_rejected_by_the_validators_that_recheck_it(
    ctx: LMCheatContext, honest: Bundle
) -> None:
    """One token edited in row 1 of step 1's second group (row n = 1 x G + 1 = 5 of step 1): the
    validator whose sample holds that row flags (ROW, step 1, row 5); one whose own sample missed it
    re-checks exactly the flagged row and rejects; the honest round re-checks clean."""
    from concord.validator.flags import ROW, flagged_sample, flags_from_verdict
    from scripts.adversaries.lm_cheats import _recount, _seed

    vcfg = ValidationConfig(prefill_precision="fp32", mode="sampled", row_fraction=0.1, replay_steps=1)
    g = honest.steps[1][1]
    completions = g.completions.clone()
    completions[1, 0] = (int(completions[1, 0]) + 1) % len(ctx.rollouts.tokenizer)
    scored = ctx.rollouts.rewards(_seed(ctx, int(g.prompt_idx[1])), completions)
    edited = dataclasses.replace(g, completions=completions, rewards=scored)
    cheat = _recount(honest, (honest.steps[0], (honest.steps[1][0], edited)))
    finder = verify_submission(ctx.rollouts, ctx.base, cheat, GRPO, vcfg, sample=CheckSample(((), (2, 5)), (), False))
    assert not finder.accepted and finder.failed_check in ("toploc", "sampling")
    flags = flags_from_verdict(3, finder)
    assert [(f.submission, f.kind, f.step, f.row) for f in flags] == [(3, ROW, 1, 5)]
    own = CheckSample(((0,), (4,)), (), False)
    assert verify_submission(ctx.rollouts, ctx.base, cheat, GRPO, vcfg, sample=own).accepted
    extra = flagged_sample(flags, GRPO.inner_steps, GRPO.prompts_per_step * GRPO.group_size)
    again = verify_submission(ctx.rollouts, ctx.base, cheat, GRPO, vcfg, sample=extra)
    assert not again.accepted and again.result(again.failed_check).rows == (5,)
    assert verify_submission(ctx.rollouts, ctx.base, honest, GRPO, vcfg, sample=extra).accepted


def test_a_failed_replay_of_an_lm_round_is_flagged_and_replayed_by_the_validators_that_recheck_it(
    ctx: LMCheatContext, honest: Bundle
) -> None:
    """A trainer that skips its training (zero states and delta, every row generated honestly) passes every
    row: only the replay sees it. With replay_fraction < 1 a validator whose own draw picked the submission
    replays it, rejects at training_replay and flags (STEP, its worst step); one whose draw did not accepts on
    its rows, then re-checks the flag by replaying and rejects too. The honest round replays clean."""
    from concord.validator.flags import STEP, flagged_sample, flags_from_verdict
    from scripts.adversaries.lm_cheats import EXTRA_CHEATS

    vcfg = ValidationConfig(prefill_precision="fp32", mode="sampled", row_fraction=0.25, replay_fraction=0.05)
    cheat = EXTRA_CHEATS["untrained"](ctx)
    rows = ((0, 3), (1, 6))
    finder = verify_submission(ctx.rollouts, ctx.base, cheat, GRPO, vcfg, sample=CheckSample(rows, (0,), False))
    assert not finder.accepted and finder.failed_check == "training_replay", finder.results[-1]
    flags = flags_from_verdict(2, finder)
    assert [(f.submission, f.kind, f.row) for f in flags] == [(2, STEP, 0)] and 0 <= flags[0].step < GRPO.inner_steps
    assert verify_submission(ctx.rollouts, ctx.base, cheat, GRPO, vcfg, sample=CheckSample(rows, (), False)).accepted
    extra = flagged_sample(flags, GRPO.inner_steps, GRPO.prompts_per_step * GRPO.group_size)
    assert extra.steps == (flags[0].step,) and extra.row_count == 0
    again = verify_submission(ctx.rollouts, ctx.base, cheat, GRPO, vcfg, sample=extra)
    assert not again.accepted and again.failed_check == "training_replay"
    assert verify_submission(ctx.rollouts, ctx.base, honest, GRPO, vcfg, sample=extra).accepted

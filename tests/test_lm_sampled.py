"""Sampled checks on the LM (issue 24 item 5): the detection prediction of `concord bench lm_sampled`
(scripts/bench/lm_sampled.py) against exact counting, the EV of the LM default's terms, and the LM
candidate's sampled mode on a real small round (SmolLM2-135M + LoRA, real TOPLOC): a row-level cheat is
rejected by a sample holding one of the rows it changed and passes one that holds none; the honest
round passes both."""

from __future__ import annotations

import dataclasses
import itertools
import math
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from task_terms import TWO_TERMS

from concord.client.digest import Digest
from concord.client.engine import lm, text_envs
from concord.client.engine.config import GRPOConfig, SamplerConfig, ValidationConfig
from concord.client.engine.lm_grpo import make_submission
from concord.client.engine.lm_rollout import AdapterConfig, LMRollouts, adapter_state, attach_adapters
from concord.client.engine.lm_task import DEFAULT_LM_TASK
from concord.client.runtime.lm_work import LMWork
from concord.validator.lm_checks import verify_submission
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
from scripts.adversaries.lm_cheats import EXTRA_CHEATS, LMCheatContext
from scripts.bench.lm_sampled import Touched, predicted_one, touched

pytestmark = pytest.mark.unit

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def exact_hit(total: int, checked: int, touched_rows: int) -> float:
    """P(a uniform ``checked``-subset of ``total`` holds one of the first ``touched_rows``), by enumeration."""
    subsets = list(itertools.combinations(range(total), checked))
    return sum(any(i < touched_rows for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize(("total", "checked", "k"), [(10, 3, 1), (10, 3, 2), (12, 4, 5), (9, 8, 1), (8, 2, 7)])
def test_the_row_prediction_is_the_hypergeometric_count(total: int, checked: int, k: int) -> None:
    assert p_rows_hit(total, checked, k) == pytest.approx(exact_hit(total, checked, k), abs=1e-12)
    closed = 1 - math.comb(total - k, checked) / math.comb(total, checked)
    assert p_rows_hit(total, checked, k) == pytest.approx(closed, abs=1e-12)


def test_the_prediction_joins_cheap_checks_rows_and_the_replay() -> None:
    rows = ((0, 5, 9), ())  # 3 of 2 x 32 rows changed
    sampled = ValidationConfig(mode="sampled", row_fraction=0.125, replay_steps=0)
    m = rows_to_check(64, 0.125)
    assert m == 8
    assert predicted_one(Touched("", rows, False, 64), sampled, 2) == pytest.approx(exact_rows(64, m, 3))
    # a cheap check or a replay that fails (with a step in the sample) catches it whatever the rows
    assert predicted_one(Touched("rewards", ((), ()), False, 64), sampled, 2) == 1.0
    assert predicted_one(Touched("", ((), ()), True, 64), sampled, 2) == 0.0  # replay_steps 0: never replayed
    replaying = dataclasses.replace(sampled, replay_steps=1)
    assert predicted_one(Touched("", ((), ()), True, 64), replaying, 2) == 1.0
    assert predicted_one(Touched("", ((), ()), False, 64), replaying, 2) == 0.0  # nothing changed: nothing to see
    assert predicted_one(Touched("", rows, False, 64), dataclasses.replace(sampled, mode="full"), 2) == 1.0


def exact_rows(total: int, m: int, k: int) -> float:
    return 1 - math.comb(total - k, m) / math.comb(total, m)


# The candidate `concord bench lm_sampled` measured (docs/LM.md, "Sampled checks on the LM"): 4 of 64 rows per
# validator, the round's training replayed for 1 submission in 20 (each validator's own draw), row and replay
# flags (LMWork.row_flags), a slash of 4000 against a reward share of 300 / 2 trainers.
CANDIDATE = ValidationConfig(mode="sampled", row_fraction=0.0625, replay_steps=1, replay_fraction=0.05)
GAIN, SLASH = 300 / 2, 4000


def ev(p_slash: float) -> float:
    return (1 - p_slash) * GAIN - p_slash * SLASH


def test_the_lm_stays_full_though_under_the_candidate_with_flags_no_measured_cheat_pays() -> None:
    """Under the candidate with flags (one validator's failed row or replay is re-checked by every honest one:
    P = 1 - (1 - p_one)^V) the hardest cheats measured, one edited token (1 row of 64), a dropped system prompt
    (4-5 rows) and a skipped training (no row, only the replay), lose money for V = 1, 2 and 3; without flags (a
    strict majority of own samples) one edited token would pay at V = 2. The default stays full all the same:
    the candidate's cost measured 0.138-0.175 of a trainer's round under load 10-12, against the target 0.15."""
    assert LMWork.row_flags
    total = DEFAULT_LM_TASK.rollouts_per_round
    m = rows_to_check(total, CANDIDATE.row_fraction)
    assert (total, m) == (64, 4)
    for rows_changed, replay_fails in ((1, False), (4, False), (0, True)):
        p_one = p_one_caught(p_rows_hit(total, m, rows_changed), replay_fails, CANDIDATE.replay_fraction, True)
        for validators in (1, 2, 3):
            assert ev(p_any(validators, p_one)) < 0, (rows_changed, replay_fails, validators)
            assert breakeven_slash(GAIN, p_any(validators, p_one)) < SLASH
    assert ev(p_majority(2, p_rows_hit(total, m, 1))) > 0  # why the flags: both own samples would have to hit
    assert DEFAULT_LM_TASK.validation.mode == "full"
    with open(CONFIGS / "lm_task.toml", "rb") as fh:
        assert tomllib.load(fh).get("validation", {}).get("mode", "full") == "full"


# ----------------------------------------------------------------------------- a real small round


GRPO = GRPOConfig(prompts_per_step=2, group_size=4, inner_steps=2, lr=2e-3, optimizer="adamw")
TASK, ROUND, TRAINER = 12, 1, "0x" + "a1" * 20


@pytest.fixture(scope="module")
def ctx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LMCheatContext]:
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    loaded = lm.load(lm.SMOLLM2_135M, Path(tmp_path_factory.mktemp("lm-models")))
    model = attach_adapters(loaded.model, AdapterConfig())
    env = text_envs.make_text_env("chain_sum", TWO_TERMS, context=loaded.context)
    rollouts = LMRollouts.for_env(model, loaded.tokenizer, env, SamplerConfig(1.0, env.max_new_tokens))
    base = adapter_state(model)
    yield LMCheatContext(rollouts, base, base, GRPO, TASK, ROUND, TRAINER, "0x" + "b2" * 20)
    torch.set_num_threads(threads)


def test_the_candidate_sampled_mode_rejects_a_sampled_changed_row(ctx: LMCheatContext) -> None:
    """The measured candidate's sampled mode (its row fraction and replay steps; float32 prefill, so the outcome is
    the machine's arithmetic, not its load): a greedy trainer changes some rows; a drawn sample that holds
    one of them rejects it at the sampling replay, a drawn sample that holds none passes it (the sample
    decides); the honest round passes every one of those samples."""
    vcfg = dataclasses.replace(CANDIDATE, prefill_precision="fp32")
    honest, _ = make_submission(ctx.rollouts, ctx.base, GRPO, TASK, ROUND, TRAINER)
    greedy = EXTRA_CHEATS["greedy"](ctx)
    t = touched(ctx.rollouts, ctx.base, greedy, GRPO, vcfg, False)
    assert t.cheap == "" and 1 <= t.row_count < t.total_rows, t  # a row-level cheat, invisible to the cheap checks
    h, n = GRPO.inner_steps, GRPO.prompts_per_step * GRPO.group_size
    hit: CheckSample | None = None
    miss: CheckSample | None = None
    for s in range(200):  # the first drawn sample of each kind (deterministic: fixed seeds)
        sample = draw_sample(bytes([s % 256]) * 32, "0x" + "5a" * 20, Digest(bytes(32)), h, n, vcfg)
        holds = any(set(sample.rows[k]) & set(t.rows[k]) for k in range(h))
        if holds and hit is None:
            hit = dataclasses.replace(sample, steps=())
        if not holds and miss is None:
            miss = dataclasses.replace(sample, steps=())
        if hit is not None and miss is not None:
            break
    assert hit is not None and miss is not None
    caught = verify_submission(ctx.rollouts, ctx.base, greedy, GRPO, vcfg, sample=hit)
    assert not caught.accepted and caught.failed_check == "sampling", caught.results[-1]
    assert verify_submission(ctx.rollouts, ctx.base, greedy, GRPO, vcfg, sample=miss).accepted
    for sample in (hit, miss):
        assert verify_submission(ctx.rollouts, ctx.base, honest, GRPO, vcfg, sample=sample).accepted

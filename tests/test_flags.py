"""Flags (validator.flags): the uint256 layout shared with the contract, what a rejecting verdict
flags, and the re-check of exactly the flagged rows and steps by a validator whose own sample missed
them (issue 21: a cheat one honest validator catches is rejected by every honest validator)."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest
import torch

from concord.client.digest import Digest
from concord.client.engine.bundle import claimed_mean_reward, make_bundle
from concord.client.engine.config import DEFAULT_TASK, GRPOConfig, ValidationConfig
from concord.client.engine.envs import make_env, rewards
from concord.client.engine.grpo import pin_determinism
from concord.client.engine.model import build_policy
from concord.validator.flags import (
    CHECK_CODES,
    MAX_FLAGS,
    ROW,
    STEP,
    FlagError,
    FlagItem,
    flagged_sample,
    flags_from_verdict,
    round_flags,
)
from concord.validator.sampling import CheckSample, draw_sample, merge
from concord.validator.tiny_checks import verify_bundle
from scripts.bench.verify import forged_step_bundle

TRAINER = "0x" + "ab" * 20
CFG = dataclasses.replace(DEFAULT_TASK, grpo=GRPOConfig(prompts_per_step=2, group_size=4, inner_steps=3))
SAMPLED = ValidationConfig(mode="sampled", row_fraction=0.25, replay_steps=1)


# ----------------------------------------------------------------------------- the word


def test_word_layout_is_the_contracts_bit_for_bit() -> None:
    item = FlagItem(submission=7, kind=ROW, step=3, row=200, check=CHECK_CODES["toploc"])
    assert item.to_word() == 7 | 1 << 32 | 3 << 40 | 200 << 72 | 3 << 104
    assert FlagItem.from_word(item.to_word()) == item
    top = FlagItem((1 << 32) - 1, STEP, (1 << 32) - 1, 0, CHECK_CODES["training_replay"])
    assert top.to_word() == (1 << 32) - 1 | 2 << 32 | ((1 << 32) - 1) << 40 | 7 << 104
    assert FlagItem.from_word(top.to_word()) == top and top.to_word() < 1 << 112
    assert top.check_name == "training_replay"


@pytest.mark.parametrize(
    ("word", "field"),
    [
        (1 << 112, "word"),  # a high bit
        (0 | 3 << 32 | 3 << 104, "kind"),  # kind 3
        (0 | 1 << 32 | 0 << 104, "check"),  # no check
        (0 | 1 << 32 | 99 << 104, "check"),
        (0 | 2 << 32 | 5 << 72 | 7 << 104, "row"),  # a STEP with a row
        (-1, "word"),
        (1 << 256, "word"),
    ],
)
def test_a_word_outside_the_layout_is_refused_naming_the_part(word: int, field: str) -> None:
    with pytest.raises(FlagError) as err:
        FlagItem.from_word(word)
    assert err.value.field == field


def test_one_flag_per_submission_and_at_most_max_flags_a_round() -> None:
    items = [FlagItem(s, ROW, 0, n, 3) for s in range(12) for n in (5, 2)]
    chosen = round_flags(reversed(items))
    assert len(chosen) == MAX_FLAGS == 8
    assert [f.submission for f in chosen] == list(range(8)) and all(f.row == 2 for f in chosen)


def test_flagged_sample_holds_exactly_the_flagged_rows_and_steps_in_the_shape() -> None:
    items = [
        FlagItem(0, ROW, 1, 3, 3),
        FlagItem(0, ROW, 1, 0, 4),
        FlagItem(0, STEP, 2, 0, 7),
        FlagItem(0, ROW, 9, 0, 3),  # no step 9: flags nothing
        FlagItem(0, ROW, 0, 99, 3),  # no row 99
        FlagItem(0, STEP, 3, 0, 7),  # no step 3 (H = 3)
    ]
    s = flagged_sample(items, 3, 8)
    assert s == CheckSample(rows=((), (0, 3), ()), steps=(2,), full=False)
    assert s.states_needed() == (1, 2, 3)  # theta_1 for the rows, states 2 and 3 for the replay of step 2
    assert flagged_sample([], 3, 8) == CheckSample(rows=((), (), ()), steps=(), full=False)


# ----------------------------------------------------------------------------- flag and re-check real bundles


@pytest.fixture(scope="module")
def made():
    pin_determinism(1)
    env, base = make_env(CFG.env), build_policy(CFG.model)
    return env, base, make_bundle(base, env, CFG, 7, 3, TRAINER, base_round=3)


def states_of(bundle) -> dict:
    return dict(enumerate(bundle.states, start=1))


def none() -> CheckSample:
    return CheckSample(rows=((), (), ()), steps=(), full=False)


def test_a_forged_step_found_by_one_validator_is_rejected_by_every_validator_that_rechecks(made) -> None:
    env, base, bundle = made
    forged = forged_step_bundle(base, env, CFG, 7, 3, TRAINER, 1)  # state 2 poisoned, later steps rebuilt on it
    states = states_of(forged)
    for k in range(3):  # the consistency: only the replay of step 1 fails; rows and other steps pass
        v = verify_bundle(base, forged, env, CFG, SAMPLED, CheckSample(none().rows, (k,), False), states)
        assert v.accepted == (k != 1), (k, v.failed_check)
    finder = verify_bundle(base, forged, env, CFG, SAMPLED, CheckSample(((0,), (), (1,)), (1,), False), states)
    assert (finder.accepted, finder.failed_check) == (False, "training_replay")
    flags = flags_from_verdict(4, finder)
    assert flags == (FlagItem(4, STEP, 1, 0, CHECK_CODES["training_replay"]),)
    # another validator's own sample missed it (it replays step 2); the flag's word re-checked makes it reject
    own = CheckSample(((1,), (2,), ()), (2,), False)
    assert verify_bundle(base, forged, env, CFG, SAMPLED, own, states).accepted
    extra = flagged_sample([FlagItem.from_word(f.to_word()) for f in flags], 3, 8)
    again = verify_bundle(base, forged, env, CFG, SAMPLED, extra, states)
    assert (again.accepted, again.failed_check) == (False, "training_replay")
    assert not verify_bundle(base, forged, env, CFG, SAMPLED, merge(own, extra), states).accepted
    # the honest bundle under the same flag (a false flag) re-checks clean
    assert verify_bundle(base, bundle, env, CFG, SAMPLED, extra, states_of(bundle)).accepted


def test_an_altered_token_flags_its_row_and_the_row_is_rejected_on_recheck(made) -> None:
    env, base, bundle = made
    b1 = bundle.batches[1]
    completions = b1.completions.clone()
    completions[6, 0] = (int(completions[6, 0]) + 1) % 3 + 3  # another ordinary symbol in row 6 of step 1
    new_rewards = torch.from_numpy(rewards(env, b1.prompts.numpy(), completions.numpy()))
    batches = (
        bundle.batches[0],
        dataclasses.replace(b1, completions=completions, rewards=new_rewards),
        bundle.batches[2],
    )
    cheat = dataclasses.replace(bundle, batches=batches, mean_reward=claimed_mean_reward(batches))
    finder = verify_bundle(
        base, cheat, env, CFG, SAMPLED, CheckSample(((), (1, 6, 7), ()), (), False), states_of(cheat)
    )
    assert not finder.accepted and finder.failed_check in ("toploc", "sampling")
    assert finder.result(finder.failed_check).rows == (6,)
    flags = flags_from_verdict(0, finder)
    assert [(f.kind, f.step, f.row, f.check_name) for f in flags] == [(ROW, 1, 6, finder.failed_check)]
    own = CheckSample(((2,), (0, 5), (1,)), (0,), False)
    assert verify_bundle(base, cheat, env, CFG, SAMPLED, own, states_of(cheat)).accepted
    again = verify_bundle(base, cheat, env, CFG, SAMPLED, flagged_sample(flags, 3, 8), states_of(cheat))
    assert not again.accepted and again.result(again.failed_check).rows == (6,)


def test_cheap_failures_and_accepted_verdicts_flag_nothing(made) -> None:
    env, base, bundle = made
    honest = verify_bundle(
        base, bundle, env, CFG, SAMPLED, CheckSample(((0,), (1,), (2,)), (1,), False), states_of(bundle)
    )
    assert honest.accepted and flags_from_verdict(0, honest) == ()
    b0 = bundle.batches[0]
    inflated = dataclasses.replace(b0, rewards=b0.rewards + 1.0)
    cheat = dataclasses.replace(bundle, batches=(inflated, *bundle.batches[1:]))
    v = verify_bundle(base, cheat, env, CFG, SAMPLED, none(), states_of(cheat))
    assert (v.accepted, v.failed_check) == (False, "rewards") and flags_from_verdict(0, v) == ()
    torch.manual_seed(0)
    random_delta = dataclasses.replace(bundle, delta={n: torch.randn_like(t) for n, t in bundle.delta.items()})
    v = verify_bundle(base, random_delta, env, CFG, SAMPLED, none(), states_of(random_delta))
    assert (v.accepted, v.failed_check) == (False, "training_replay") and v.result("training_replay").evidence[
        "step"
    ] == -1
    assert flags_from_verdict(0, v) == ()


def test_drawn_samples_of_honest_validators_accept_and_their_union_with_flags_stays_small(made) -> None:
    env, base, bundle = made
    digest = Digest(hashlib.sha256(b"bundle").digest())
    for i in range(3):
        me = "0x" + hashlib.sha256(f"validator {i}".encode()).hexdigest()[:40]
        own = draw_sample(hashlib.sha256(b"seed").digest(), me, digest, 3, 8, SAMPLED)
        extra = flagged_sample([FlagItem(0, STEP, 0, 0, 7), FlagItem(0, ROW, 2, 5, 3)], 3, 8)
        both = merge(own, extra)
        assert both.row_count <= own.row_count + 1 and len(both.steps) <= len(own.steps) + 1
        assert verify_bundle(base, bundle, env, CFG, SAMPLED, both, states_of(bundle)).accepted

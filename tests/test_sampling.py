"""Sampled checks (validator.sampling, validator.pipeline's deferred plan): the sample a validator draws
from the round's check seed and its address, the detection probability it predicts, and sampled
verification of real bundles replaying one inner step from a committed intermediate state."""

from __future__ import annotations

import dataclasses
import hashlib
import random

import pytest
import torch

from concord.client.digest import Digest
from concord.client.engine.bundle import claimed_mean_reward, make_bundle
from concord.client.engine.config import DEFAULT_TASK, ConfigError, GRPOConfig, ValidationConfig
from concord.client.engine.envs import make_env, rewards
from concord.client.engine.grpo import PARAM_PREFIX, pin_determinism
from concord.client.engine.model import build_policy
from concord.validator.sampling import (
    CheckSample,
    SampleInputError,
    breakeven_slash,
    draw_sample,
    full_sample,
    merge,
    p_any,
    p_flagged,
    p_majority,
    p_one_caught,
    p_rows_hit,
    replays,
    rows_to_check,
)
from concord.validator.tiny_checks import verify_bundle

TRAINER = "0x" + "ab" * 20
CFG = dataclasses.replace(DEFAULT_TASK, grpo=GRPOConfig(prompts_per_step=2, group_size=4, inner_steps=2))
SAMPLED = ValidationConfig(mode="sampled", row_fraction=0.25, replay_steps=1)
BUNDLE = Digest(hashlib.sha256(b"bundle").digest())


def seed(i: int) -> bytes:
    return hashlib.sha256(f"seed {i}".encode()).digest()


def validator(i: int) -> str:
    return "0x" + hashlib.sha256(f"validator {i}".encode()).hexdigest()[:40]


# ----------------------------------------------------------------------------- the sample


def test_sample_is_a_function_of_seed_validator_and_bundle() -> None:
    a = draw_sample(seed(1), validator(1), BUNDLE, 4, 32, SAMPLED)
    assert a == draw_sample(seed(1), validator(1), BUNDLE, 4, 32, SAMPLED)
    assert a == draw_sample(seed(1), validator(1).upper().replace("0X", "0x"), BUNDLE, 4, 32, SAMPLED)
    assert a.row_count == rows_to_check(128, 0.25) == 32 and len(a.steps) == 1 and not a.full
    assert a != draw_sample(seed(2), validator(1), BUNDLE, 4, 32, SAMPLED)
    assert a != draw_sample(seed(1), validator(2), BUNDLE, 4, 32, SAMPLED)
    assert a != draw_sample(seed(1), validator(1), Digest(hashlib.sha256(b"other").digest()), 4, 32, SAMPLED)
    full = draw_sample(seed(1), validator(1), BUNDLE, 4, 32, ValidationConfig(mode="full"))
    assert full.full and full.row_count == 128 and full.steps == (0, 1, 2, 3)


def test_more_validators_cover_more_rows_and_steps() -> None:
    covered, steps = [], []
    rows: set[tuple[int, int]] = set()
    seen_steps: set[int] = set()
    for i in range(8):
        s = draw_sample(seed(3), validator(i), BUNDLE, 4, 32, SAMPLED)
        rows |= {(k, n) for k, r in enumerate(s.rows) for n in r}
        seen_steps |= set(s.steps)
        covered.append(len(rows))
        steps.append(len(seen_steps))
    # every sample is the validator's own: 32 rows each, 8 draws of 32 of 128 cover ~128 * (1 - 0.75^8) = 115
    assert covered == sorted(covered) and covered[0] == 32 and covered[-1] > 100
    assert steps == sorted(steps) and steps[0] == 1 and steps[-1] >= 3  # 8 own steps of 4


def test_a_one_step_forger_is_caught_by_one_of_v_validators_with_1_minus_0_9_to_the_v() -> None:
    """H = 10, replay_steps = 1, a forged step 4: each validator replays its own step, so the round
    catches it when any of V validators drew step 4: 1 - 0.9^V (0.271 at 3, 0.41 at 5), 600 seeds."""
    vcfg = ValidationConfig(mode="sampled", row_fraction=0.02, replay_steps=1)
    for v_count, want in ((3, 0.271), (5, 0.40951)):
        caught = sum(
            any(4 in draw_sample(seed(i), validator(v), BUNDLE, 10, 8, vcfg).steps for v in range(v_count))
            for i in range(600)
        )
        assert p_any(v_count, p_rows_hit(10, 1, 1)) == pytest.approx(want)
        assert p_flagged(10, 1, 1, v_count) == pytest.approx((0.1, want))
        assert abs(caught / 600 - want) < 4 * (want * (1 - want) / 600) ** 0.5


def test_merge_is_the_union_of_rows_and_steps() -> None:
    a = CheckSample(rows=((0, 3), ()), steps=(1,), full=False)
    b = CheckSample(rows=((3,), (2,)), steps=(0, 1), full=False)
    assert merge(a, b) == CheckSample(rows=((0, 3), (2,)), steps=(0, 1), full=False)
    assert merge(a, full_sample(2, 4)).full
    with pytest.raises(SampleInputError):
        merge(a, CheckSample(rows=((),), steps=(), full=False))


def test_states_needed_by_a_sample() -> None:
    s = CheckSample(rows=((0,), (), (), (1,)), steps=(1,), full=False)
    assert s.states_needed() == (1, 2, 3, 4)  # step 1 replayed: states 1, 2; rows of step 3: 3; the delta: 4
    assert CheckSample(rows=((0,), ()), steps=(0,), full=False).states_needed() == (1, 2)


def test_measured_hit_rate_matches_the_hypergeometric_prediction() -> None:
    """A cheat touching 2 of 64 rows, sampled at 10% (7 rows): 400 seeds, within 4 sigma."""
    vcfg = ValidationConfig(mode="sampled", row_fraction=0.1, replay_steps=1)
    touched = {(0, 5), (1, 30)}
    hits = sum(
        bool(
            touched
            & {(k, n) for k, r in enumerate(draw_sample(seed(i), validator(0), BUNDLE, 2, 32, vcfg).rows) for n in r}
        )
        for i in range(400)
    )
    p = p_rows_hit(64, rows_to_check(64, 0.1), 2)
    assert abs(p - (1 - (57 * 56) / (64 * 63))) < 1e-12
    sigma = (p * (1 - p) / 400) ** 0.5
    assert abs(hits / 400 - p) < 4 * sigma


def test_probabilities_and_the_breakeven_slash() -> None:
    assert p_rows_hit(100, 10, 0) == 0.0 and p_rows_hit(100, 95, 10) == 1.0
    assert p_rows_hit(100, 10, 1) == pytest.approx(0.1)
    assert p_majority(1, 0.3) == pytest.approx(0.3)
    assert p_majority(3, 0.5) == pytest.approx(0.5)
    assert p_majority(3, 1.0) == 1.0 and p_majority(3, 0.0) == 0.0
    assert breakeven_slash(100, 0.5) == pytest.approx(100) and breakeven_slash(100, 0.0) == float("inf")
    rng = random.Random(0)
    for _ in range(50):  # EV at the break-even slash is zero
        g, p = rng.uniform(1, 100), rng.uniform(0.01, 0.99)
        assert (1 - p) * g - p * breakeven_slash(g, p) == pytest.approx(0.0, abs=1e-9)


def test_bad_sample_inputs_name_the_field() -> None:
    with pytest.raises(SampleInputError) as err:
        draw_sample(b"short", validator(0), BUNDLE, 2, 8, SAMPLED)
    assert err.value.field == "seed"
    with pytest.raises(SampleInputError) as err:
        draw_sample(seed(0), "0x1234", BUNDLE, 2, 8, SAMPLED)
    assert err.value.field == "validator"
    for field, value in (("mode", "partial"), ("row_fraction", 0.0), ("row_fraction", 1.5), ("replay_steps", -1)):
        with pytest.raises(ConfigError) as cerr:
            ValidationConfig(**{field: value})  # type: ignore[arg-type]
        assert field in str(cerr.value)


def test_a_replay_fraction_draws_each_validators_replays_apart_from_its_rows() -> None:
    """replay_fraction q: each validator replays a submission with probability q, independently of the other
    validators and of its own rows (which stay what they are at q = 1); q = 1 replays every submission."""
    q, n = 0.25, 2000
    partial = dataclasses.replace(SAMPLED, replay_fraction=q)
    own = [[draw_sample(seed(s), validator(v), BUNDLE, 4, 32, partial) for v in range(2)] for s in range(n)]
    every = [draw_sample(seed(s), validator(0), BUNDLE, 4, 32, SAMPLED) for s in range(n)]
    assert all(len(x.steps) == 1 for x in every)  # q = 1: today's rule, a step in every sample
    assert all(a.rows == x.rows for (a, _), x in zip(own, every, strict=True))  # rows do not depend on q
    assert all(len(a.steps) in (0, 1) and len(b.steps) in (0, 1) for a, b in own)
    sd = (q * (1 - q) / n) ** 0.5
    one = sum(bool(a.steps) for a, _ in own) / n
    assert abs(one - q) < 5 * sd, one
    either = sum(bool(a.steps or b.steps) for a, b in own) / n  # with flags: 1 - (1 - q)^2 = 0.4375
    assert abs(either - p_any(2, q)) < 5 * (p_any(2, q) * (1 - p_any(2, q)) / n) ** 0.5, either
    assert replays(b"\xff" * 32, 1.0) and not replays(b"\xff" * 32, 0.999) and replays(bytes(32), 1e-9)
    # one validator's catch: rows or (drawn to replay and the replay fails), independent draws
    assert p_one_caught(0.25, True, q, True) == pytest.approx(1 - 0.75 * 0.75)
    assert p_one_caught(0.25, False, q, True) == 0.25 and p_one_caught(0.0, True, q, False) == 0.0


def test_replay_fraction_is_checked_at_the_edge_and_written_only_when_not_1() -> None:
    """(0, 1], a strict float; a spec writes it only when it is not 1, so every spec from before keeps its
    bytes; a document that writes 1 out is not canonical."""
    import json
    from pathlib import Path

    from concord.client.content.manifest import ManifestError, canonical_bytes
    from concord.client.content.task_spec import TaskSpecManifest
    from concord.client.engine.config import from_dict
    from concord.client.initiator import load_task_file

    for value in (0.0, -0.5, 1.5, float("nan"), "0.5"):  # as a task file's [validation] table is read
        with pytest.raises(ConfigError) as cerr:
            from_dict(ValidationConfig, {"mode": "sampled", "replay_fraction": value}, "validation")
        assert "replay_fraction" in str(cerr.value), cerr.value
    spec = load_task_file(Path(__file__).resolve().parent.parent / "configs" / "default_task.toml").spec
    assert "replay_fraction" not in spec.to_json()["validation"]
    part = dataclasses.replace(spec, validation=dataclasses.replace(spec.validation, replay_fraction=0.25))
    assert part.to_json()["validation"]["replay_fraction"] == 0.25 and part.digest() != spec.digest()
    assert TaskSpecManifest.from_bytes(part.to_bytes()) == part
    written_out = json.loads(spec.to_bytes())
    written_out["validation"]["replay_fraction"] = 1.0
    with pytest.raises(ManifestError):
        TaskSpecManifest.from_bytes(canonical_bytes(written_out))


# ----------------------------------------------------------------------------- sampled verification


@pytest.fixture(scope="module")
def made():
    pin_determinism(1)
    env, base = make_env(CFG.env), build_policy(CFG.model)
    return env, base, make_bundle(base, env, CFG, 7, 3, TRAINER, base_round=3)


def sample(rows0: tuple[int, ...], rows1: tuple[int, ...], steps: tuple[int, ...]) -> CheckSample:
    return CheckSample(rows=(rows0, rows1), steps=steps, full=False)


def states_of(bundle) -> dict:
    return dict(enumerate(bundle.states, start=1))


def test_honest_bundle_passes_every_sample_and_one_step_replays_exactly(made) -> None:
    env, base, bundle = made
    for s in (sample((0, 3), (), (0,)), sample((), (1, 7), (1,)), sample((2,), (5,), ())):
        verdict = verify_bundle(base, bundle, env, CFG, SAMPLED, s, states_of(bundle))
        assert verdict.accepted, verdict
        replays = [r for r in verdict.results if r.name == "training_replay" and r.evidence["step"] >= 0]
        assert len(replays) == len(s.steps)
        assert all(r.evidence["rel_l2"] == 0.0 for r in replays)  # bit-exact on one CPU
    drawn = draw_sample(seed(0), validator(0), Digest(hashlib.sha256(b"x").digest()), 2, 8, SAMPLED)
    assert verify_bundle(base, bundle, env, CFG, SAMPLED, drawn, states_of(bundle)).accepted


def test_a_forged_intermediate_state_is_caught_by_the_step_that_reads_it(made) -> None:
    env, base, bundle = made
    forged = {k: (v * 1.01 if k.startswith(PARAM_PREFIX) else v) for k, v in bundle.states[0].items()}
    states = {1: forged, 2: bundle.states[1]}
    v0 = verify_bundle(base, bundle, env, CFG, SAMPLED, sample((), (), (0,)), states)  # theta_0 -> state 1
    assert (v0.accepted, v0.failed_check) == (False, "training_replay")
    assert v0.result("training_replay").evidence["step"] == 0
    v1 = verify_bundle(base, bundle, env, CFG, SAMPLED, sample((), (), (1,)), states)  # state 1 -> state 2
    assert (v1.accepted, v1.failed_check) == (False, "training_replay")
    # rows of step 1 are checked under the committed theta_1: a 1% scale passes TOPLOC (a known
    # limit, docs/SECURITY.md) and only replay sees it; weights of another model do not pass
    assert verify_bundle(base, bundle, env, CFG, SAMPLED, sample((), (0, 1, 2, 3), ()), states).accepted
    torch.manual_seed(1)
    other = {
        k: (torch.randn_like(v) * v.std() if k.startswith(PARAM_PREFIX) else v) for k, v in bundle.states[0].items()
    }
    vr = verify_bundle(base, bundle, env, CFG, SAMPLED, sample((), (0, 1, 2, 3), ()), {1: other, 2: bundle.states[1]})
    assert not vr.accepted and vr.failed_check in ("toploc", "sampling")


def test_a_random_delta_is_caught_by_the_cheap_link_and_a_forged_end_state_by_the_last_replay(made) -> None:
    env, base, bundle = made
    torch.manual_seed(0)
    delta = {k: torch.randn_like(t) * t.std() for k, t in bundle.delta.items()}
    bad = dataclasses.replace(bundle, delta=delta)  # honest states: delta != theta_H - theta_base
    v = verify_bundle(base, bad, env, CFG, SAMPLED, sample((), (), ()), states_of(bad))
    assert (v.accepted, v.failed_check) == (False, "training_replay")
    assert v.result("training_replay").evidence["delta_minus_state_max_abs"] > 0
    # a consistent cheater forges theta_H = theta_base + delta: only the replay of the last step sees it
    base_params = dict(base.named_parameters())
    end = dict(bundle.states[1])
    for k, t in delta.items():
        end["param." + k] = base_params[k].detach().float() + t
    linked = {k: end["param." + k] - base_params[k].detach().float() for k in delta}  # exactly theta_H - base
    forged = dataclasses.replace(bad, delta=linked, states=(bundle.states[0], end))
    assert verify_bundle(base, forged, env, CFG, SAMPLED, sample((0,), (0,), (0,)), states_of(forged)).accepted
    v = verify_bundle(base, forged, env, CFG, SAMPLED, sample((0,), (0,), (1,)), states_of(forged))
    assert (v.accepted, v.failed_check) == (False, "training_replay") and v.result("training_replay").evidence[
        "step"
    ] == 1


def test_an_altered_token_is_caught_iff_its_row_is_sampled(made) -> None:
    """One generated token changed (rewards and claims recomputed, proofs and states kept): the
    prefill checks catch it on that row; a sample without that row or its step's replay misses it."""
    env, base, bundle = made
    b1 = bundle.batches[1]
    completions = b1.completions.clone()
    completions[2, 0] = (int(completions[2, 0]) + 1) % 3 + 3  # another ordinary symbol
    new_rewards = torch.from_numpy(rewards(env, b1.prompts.numpy(), completions.numpy()))
    altered = dataclasses.replace(b1, completions=completions, rewards=new_rewards)
    batches = (bundle.batches[0], altered)
    cheat = dataclasses.replace(bundle, batches=batches, mean_reward=claimed_mean_reward(batches))
    hit = verify_bundle(base, cheat, env, CFG, SAMPLED, sample((), (2,), ()), states_of(cheat))
    assert not hit.accepted and hit.failed_check in ("toploc", "sampling")
    assert verify_bundle(base, cheat, env, CFG, SAMPLED, sample((0, 1), (0, 1, 3), (0,)), states_of(cheat)).accepted
    assert not verify_bundle(base, cheat, env, CFG, ValidationConfig(), None).accepted  # full mode: always


def test_missing_states_are_a_programming_error_not_a_verdict(made) -> None:
    env, base, bundle = made
    with pytest.raises(ValueError, match="inner states"):
        verify_bundle(base, bundle, env, CFG, SAMPLED, sample((), (0,), ()), {})


def test_the_length_rule_is_judged_on_the_whole_batch_not_on_sampled_rows(made) -> None:
    """A batch that stopped early (every row emitted EOS) is as wide as its longest row; a sample of
    rows without that row must not fail the length rule (bench round found an honest reject)."""
    from concord.client.engine import sampler as smp
    from concord.client.engine.envs import EOS
    from concord.client.engine.rollout import completion_mask
    from concord.validator.pipeline import assigned_indices, sub_batch
    from concord.validator.tiny_prefill import check_sampling, recompute_states

    env, base, bundle = made
    b = bundle.batches[0]
    mask = completion_mask(b.completions)
    ended = [n for n in range(b.n) if bool((b.completions[n] == EOS).any())]
    width = int(mask.sum(1).max())
    short = [n for n in ended if int(mask[n].sum()) < width]
    assert short, "the fixture needs a row that ended before the widest one"
    # as if generation had stopped early at this width: the task allows one more token
    sampler = dataclasses.replace(CFG.sampler, max_new_tokens=b.completions.shape[1] + 1)
    want_i, want_j = assigned_indices(0, CFG.grpo)
    keys = smp.sample_keys(bundle.task_id, bundle.round, bundle.trainer, [(want_i[n], want_j[n]) for n in short])
    part = sub_batch(b, short)
    out = recompute_states(
        base, part, tuple(bundle.proofs[0][n] for n in short), mask[short].sum(1), keys, sampler, SAMPLED
    )
    assert not check_sampling(out.logits, part, keys, sampler, SAMPLED).evidence["length_ok"]  # the old trap
    assert check_sampling(out.logits, part, keys, sampler, SAMPLED, 0, lengths=False).ok


def test_sampled_rows_of_all_steps_are_judged_as_each_step_alone(made) -> None:
    """The sampled walk recomputes the sampled rows of every step before reporting them (one prefill per
    step under theta_k, one TOPLOC call for all steps): each step gets exactly what recompute_states
    gives its rows alone, in either precision. Under bf16 with zero TOPLOC thresholds the rows bf16
    fails are re-checked in float32 (theta_k loaded again) and pass; a state that does not fit the
    model is a training_replay reject at its step, whether its rows or its replay read it."""
    from concord.client.engine import sampler as smp
    from concord.client.engine.grpo import restore_inner_state
    from concord.validator.pipeline import assigned_indices, sub_batch
    from concord.validator.tiny_prefill import recompute_many, recompute_states

    env, base, bundle = made
    states = states_of(bundle)
    base_state = {PARAM_PREFIX + n: p.detach().float() for n, p in base.named_parameters()}
    strict = dataclasses.replace(
        SAMPLED, max_exp_mismatches=0, max_mant_err_mean=0.0, max_mant_err_median=0.0, prefill_precision="bf16"
    )
    s = sample((0, 3, 5), (1, 2, 7), (1,))
    for vcfg in (dataclasses.replace(SAMPLED, prefill_precision="fp32"), strict):

        def theta(k: int):
            return restore_inner_state(base, base_state if k == 0 else states[k], k, CFG.grpo)[0]

        items = []
        for k, rows in enumerate(s.rows):
            want_i, want_j = assigned_indices(k, CFG.grpo)
            keys = smp.sample_keys(bundle.task_id, bundle.round, bundle.trainer, [(want_i[n], want_j[n]) for n in rows])
            part = sub_batch(bundle.batches[k], list(rows))
            proofs = tuple(bundle.proofs[k][n] for n in rows)
            items.append((lambda k=k: theta(k), part, proofs, part.lengths, keys))
        together = recompute_many(items, CFG.sampler, vcfg)
        assert len(together) == 2
        for k, (_, part, proofs, lengths, keys) in enumerate(items):
            alone = recompute_states(theta(k), part, proofs, lengths, keys, CFG.sampler, vcfg)
            got = together[k]
            assert got.toploc == alone.toploc and got.fp32_rows == alone.fp32_rows
            assert torch.equal(got.hidden, alone.hidden) and torch.equal(got.logits, alone.logits)
        if vcfg is strict:
            assert sum(got.fp32_rows for got in together) > 0  # the re-check ran ...
            assert all(r.ok for got in together for r in got.toploc)  # ... and float32 passed them
        assert verify_bundle(base, bundle, env, CFG, vcfg, s, states).accepted
    missing = next(k for k in states[1] if k.startswith(PARAM_PREFIX))
    unfit = {k: v for k, v in states[1].items() if k != missing}  # a parameter missing
    for read_by in (sample((0,), (1,), ()), sample((0,), (), (1,))):
        v = verify_bundle(base, bundle, env, CFG, SAMPLED, read_by, {1: unfit, 2: states[2]})
        assert (v.accepted, v.failed_check) == (False, "training_replay")
        assert v.result("training_replay").evidence == {"step": 1, "state_unusable": 1.0}

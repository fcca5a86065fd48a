"""Detection power of the validator's checks, against real toploc and torch.

Each attack is played by a *consistent* cheater (`forge`): after tampering it recomputes
everything it can - proofs from a prefill of the tampered tokens under the right model,
rewards, stats, the delta by replaying the inner steps, the proof root - so the one check
the attack targets is the only thing that can catch it. Tampering hits the last inner step
(no later batch depends on it).
"""

from __future__ import annotations

import dataclasses

import pytest
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
from concord.client.engine.config import DEFAULT_TASK, TaskConfig, ValidationConfig
from concord.client.engine.envs import SYM0, make_env, rewards
from concord.client.engine.grpo import inner_update, make_inner_optimizer, pin_determinism, replay_training, state_delta
from concord.client.engine.model import build_policy, clone_policy, policy_state
from concord.client.engine.rollout import RolloutBatch, completion_mask, generate, generate_tokens, prefill
from concord.client.engine.sampler import sample_keys
from concord.validator.pipeline import assigned_indices
from concord.validator.tiny_checks import verify_bundle
from concord.validator.tiny_prefill import (
    check_sampling,
    recompute_states,
    rollout_sampling_rejects,
    rollout_toploc_rejects,
    sampling_gaps,
)

TRAINER = "0x" + "ab" * 20
TASK_ID, ROUND = 7, 3
# The demo task with H = 2 inner steps of 16 prompts x 8 samples (the demo's trainers take 32
# prompts a step): 256 rollouts per bundle.
CFG: TaskConfig = dataclasses.replace(
    DEFAULT_TASK, grpo=dataclasses.replace(DEFAULT_TASK.grpo, inner_steps=2, prompts_per_step=16)
)
VCFG = ValidationConfig()


@pytest.fixture(scope="module", autouse=True)
def _deterministic() -> None:
    pin_determinism(1)


@pytest.fixture(scope="module")
def env():
    return make_env(CFG.env)


@pytest.fixture(scope="module")
def base() -> torch.nn.Module:
    return build_policy(CFG.model)


@pytest.fixture(scope="module")
def honest(base, env) -> tuple[Bundle, list[RolloutBatch]]:
    """The honest bundle and the trainer's own batches (hidden states kept)."""
    from concord.client.engine.grpo import train_round

    batches, delta = train_round(base, env, CFG.grpo, CFG.sampler, TASK_ID, ROUND, TRAINER)
    proofs = tuple(batch_proofs(b) for b in batches)
    bundle = Bundle(
        TASK_ID,
        ROUND,
        ROUND,
        TRAINER,
        tuple(strip_private(b) for b in batches),
        proofs,
        delta,
        claimed_mean_reward(batches),
        claimed_work_units(batches),
        proofs_root(proofs),
    )
    return bundle, batches


def theta(base: torch.nn.Module, batches: list[RolloutBatch], k: int) -> torch.nn.Module:
    """theta_k: the base after k inner steps on batches[:k]."""
    policy = clone_policy(base)
    opt = make_inner_optimizer(policy, CFG.grpo)
    for b in batches[:k]:
        inner_update(policy, opt, b, CFG.grpo, base)
    return policy


def forge(
    base,
    env,
    honest: Bundle,
    batches: list[RolloutBatch],
    keep_rewards: bool = False,
    proof_policies: list[torch.nn.Module] | None = None,
    **claims,
) -> Bundle:
    """A self-consistent bundle around (possibly tampered) batches; `claims` override fields."""
    policy = clone_policy(base)
    opt = make_inner_optimizer(policy, CFG.grpo)
    fixed, proofs = [], []
    for k, b in enumerate(batches):
        mask = completion_mask(b.completions, CFG.sampler.stop_at_eos)
        r = b.rewards if keep_rewards else torch.from_numpy(rewards(env, b.prompts.numpy(), b.completions.numpy()))
        b = dataclasses.replace(b, mask=mask, lengths=mask.sum(1), rewards=r)
        prover = policy if proof_policies is None else proof_policies[k]
        proofs.append(batch_proofs(dataclasses.replace(b, hidden=prefill(prover, b).hidden)))
        inner_update(policy, opt, b, CFG.grpo, base)
        fixed.append(strip_private(b))
    delta = state_delta(policy_state(policy), policy_state(base))
    fields = {
        "task_id": honest.task_id,
        "round": honest.round,
        "base_round": honest.base_round,
        "trainer": honest.trainer,
        "batches": tuple(fixed),
        "proofs": tuple(proofs),
        "delta": delta,
        "mean_reward": claimed_mean_reward(fixed),
        "work_units": claimed_work_units(fixed),
        "proof_root": proofs_root(tuple(proofs)),
    }
    fields.update(claims)
    return Bundle(**fields)


def last_step_replaced(honest: Bundle, batch: RolloutBatch) -> list[RolloutBatch]:
    return list(honest.batches[:-1]) + [batch]


# ----------------------------------------------------------------------------- honest


@pytest.mark.parametrize("precision", ["fp32", "bf16"], ids=["fp32-prefill", "bf16-prefill"])
def test_honest_bundle_accepted_with_exact_replay(base, env, honest, precision):
    bundle, _ = honest
    n = sum(b.n for b in bundle.batches)
    assert n == 256
    bf16_prefill = precision == "bf16"
    v = verify_bundle(base, bundle, env, CFG, dataclasses.replace(VCFG, prefill_precision=precision))
    assert v.accepted, v.results[-1]
    assert [r.name for r in v.results] == ["schema"] + ["prompts", "toploc", "sampling", "rewards"] * 2 + [
        "work_units",
        "training_replay",
        "proof_root",
    ]
    for r in v.results:
        if r.name == "toploc":  # fp32 prefill: the trainer's own states; bf16: within rounding, far under 38
            assert r.evidence["rejected"] == 0 and r.evidence["worst_exp_mismatches"] <= (8 if bf16_prefill else 2)
        if r.name == "sampling":
            assert r.evidence["rejected_tokens"] == 0
            assert r.evidence["max_gap"] < (VCFG.sampling_tie_tol if bf16_prefill else 1e-4)
    assert v.result("training_replay").evidence["rel_l2"] == 0.0  # same process: bit-identical
    assert bundle.work_units == sum(int(b.lengths.sum()) for b in bundle.batches) > 256


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_honest_rollouts_zero_rejects(env, dtype):
    """>= 200 honest rollouts generated with KV cache, verified by one full prefill (float32, and
    bf16 autocast as validators run it first): no rejects."""
    policy = build_policy(CFG.model).to(dtype)
    keys_seen = 0
    rejects_toploc = rejects_sampling = mismatches = 0
    bf16_rejects = 0
    max_gap = 0.0
    for k in range(2):
        idx, _ = assigned_indices(k, CFG.grpo)
        batch = generate(policy, env, sorted(set(idx)), CFG.grpo.group_size, CFG.sampler, TASK_ID, ROUND, TRAINER)
        proofs = batch_proofs(batch)
        out = prefill(policy, batch)
        rejects_toploc += sum(rollout_toploc_rejects(out.hidden, batch, proofs, batch.lengths, VCFG))
        rejects_sampling += sum(rollout_sampling_rejects(out.logits, batch, batch.keys, CFG.sampler, VCFG))
        gap, mask = sampling_gaps(out.logits, batch, batch.keys, CFG.sampler)
        mismatches += int(((gap > 0) & mask).sum())
        max_gap = max(max_gap, float(gap[mask].max()))
        fast = prefill(policy, batch, bf16=True)
        bf16_rejects += sum(
            a or b
            for a, b in zip(
                rollout_toploc_rejects(fast.hidden, batch, proofs, batch.lengths, VCFG),
                rollout_sampling_rejects(fast.logits, batch, batch.keys, CFG.sampler, VCFG),
                strict=True,
            )
        )
        keys_seen += batch.n
    print(
        f"\nhonest {dtype}: {mismatches} near-tie mismatches, largest gap {max_gap:.2e}; "
        f"{bf16_rejects} rollouts would go to the float32 re-check after a bf16 prefill"
    )
    assert keys_seen == 256
    assert (rejects_toploc, rejects_sampling) == (0, 0)
    assert bf16_rejects <= 8  # the float32 re-check is the exception, or the bf16 pass saves nothing


def test_bf16_prefill_failures_are_rechecked_in_float32(base, env, honest):
    """With no near-tie tolerance bf16 rounding flips some honest choices; those rollouts are
    recomputed in float32, where they match exactly, and the bundle is accepted (bf16 configured:
    whatever this machine's "auto" would choose)."""
    bundle, _ = honest
    strict = dataclasses.replace(VCFG, sampling_tie_tol=0.0, prefill_precision="bf16")
    b, k = bundle.batches[0], 0
    keys = smp.sample_keys(
        bundle.task_id, bundle.round, bundle.trainer, list(zip(*assigned_indices(k, CFG.grpo), strict=True))
    )
    out = recompute_states(base, b, bundle.proofs[k], b.lengths, keys, CFG.sampler, strict)
    assert (out.precision.precision, out.precision.reason) == ("bf16", "configured")
    assert 0 < out.fp32_rows < b.n
    assert check_sampling(out.logits, b, keys, CFG.sampler, strict).ok
    assert all(r.ok for r in out.toploc)
    assert verify_bundle(base, bundle, env, CFG, strict).accepted


# ----------------------------------------------------------------------------- model and prompts


def test_different_model_rejected_by_toploc(env, honest):
    other = build_policy(dataclasses.replace(CFG.model, seed=1))
    v = verify_bundle(other, honest[0], env, CFG, VCFG)
    assert v.failed_check == "toploc"
    ev = v.result("toploc").evidence
    assert ev["rejected"] == ev["rollouts"] == 128  # every rollout, not just one
    assert ev["worst_exp_mismatches"] > 38


def test_altered_prompt_rejected(base, env, honest):
    bundle, _ = honest
    b = bundle.batches[-1]
    prompts = b.prompts.clone()
    prompts[5, 2] = SYM0 + (int(prompts[5, 2]) - SYM0 + 1) % 8
    forged = forge(base, env, bundle, last_step_replaced(bundle, dataclasses.replace(b, prompts=prompts)))
    v = verify_bundle(base, forged, env, CFG, VCFG)
    assert v.failed_check == "prompts"
    assert v.result("prompts").evidence == {"step": 1, "index_mismatches": 0, "rows_altered": 1}


@pytest.mark.parametrize("items,min_rate", [(1, 0.3), (2, 1.0)])
def test_altered_prompt_seen_by_toploc_alone(base, env, honest, items, min_rate):
    """Proofs from the true prompt against a prefill of a prompt with `items` symbols changed.

    The prompt check catches any edit; TOPLOC alone on this tiny random-init model catches
    about half of the one-symbol edits (measured 62/128) and every two-symbol edit.
    """
    _, batches = honest
    b = batches[0]
    prompts = b.prompts.clone()
    for c in range(1, 1 + items):
        prompts[:, c] = SYM0 + (prompts[:, c] - SYM0 + 3) % 8
    out = prefill(base, dataclasses.replace(b, prompts=prompts))
    rate = sum(rollout_toploc_rejects(out.hidden, b, batch_proofs(b), b.lengths, VCFG)) / b.n
    print(f"\naltered prompt ({items} symbols): toploc reject rate {rate:.3f}")
    assert rate >= min_rate


# ----------------------------------------------------------------------------- tokens and seeds


def _other_token(tok: int) -> int:
    """A different symbol token (never PAD or EOS, so the completion's length is unchanged)."""
    return SYM0 + (tok - SYM0 + 1) % 8 if tok >= SYM0 else SYM0


@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_one_altered_token_rejected(base, env, honest, where):
    bundle, _ = honest
    b = bundle.batches[-1]
    full = [n for n in range(b.n) if int(b.lengths[n]) == b.completions.shape[1]]  # rows of C counted tokens
    rows = full[:4]
    assert len(rows) == 4
    c = b.completions.shape[1]
    t = {"first": 0, "middle": c // 2, "last": c - 1}[where]
    for n in rows:
        comps = b.completions.clone()
        comps[n, t] = _other_token(int(comps[n, t]))
        forged = forge(base, env, bundle, last_step_replaced(bundle, dataclasses.replace(b, completions=comps)))
        v = verify_bundle(base, forged, env, CFG, VCFG)
        assert v.failed_check == "sampling", (n, t, v.results[-1])
        ev = v.result("sampling").evidence
        assert (
            ev["rejected_tokens"] >= 1 and ev["rejected_rollouts"] == 1
        )  # later tokens may fail too: their prefix changed


def test_every_single_token_position_rejected(base, env, honest):
    """One altered token at each position 0..C-1 of one row: 8 attacks, 8 rejects."""
    bundle, _ = honest
    b = bundle.batches[-1]
    n = next(n for n in range(b.n) if int(b.lengths[n]) == b.completions.shape[1])
    caught = 0
    for t in range(b.completions.shape[1]):
        comps = b.completions.clone()
        comps[n, t] = _other_token(int(comps[n, t]))
        forged = forge(base, env, bundle, last_step_replaced(bundle, dataclasses.replace(b, completions=comps)))
        caught += verify_bundle(base, forged, env, CFG, VCFG).failed_check == "sampling"
    assert caught == b.completions.shape[1] == CFG.sampler.max_new_tokens


def test_single_token_edit_not_seen_by_toploc(base, env, honest):
    """Why sampling replay exists: TOPLOC (proofs built before the edit) mostly passes one edit."""
    _, batches = honest
    b = batches[0]
    comps = b.completions.clone()
    rows = [n for n in range(b.n) if int(b.lengths[n]) >= 4]
    for n in rows:
        comps[n, 2] = _other_token(int(comps[n, 2]))
    proofs = batch_proofs(b)
    out = prefill(base, dataclasses.replace(b, completions=comps))
    toploc = rollout_toploc_rejects(out.hidden, b, proofs, b.lengths, VCFG)
    sampling = rollout_sampling_rejects(
        out.logits, dataclasses.replace(b, completions=comps), b.keys, CFG.sampler, VCFG
    )
    rate_toploc = sum(toploc[n] for n in rows) / len(rows)
    print(f"\none edited token per rollout: toploc reject rate {rate_toploc:.3f} over {len(rows)} rollouts")
    assert sum(sampling[n] for n in rows) == len(rows)
    assert rate_toploc < 0.5  # measured: see docs/SECURITY.md


def test_cherry_picked_samples_rejected(base, env, honest):
    """Draw 2G samples per prompt with the round's own sampler, keep the best G, relabel them j=0..G-1."""
    bundle, batches = honest
    g = CFG.grpo.group_size
    theta_last = theta(base, batches, CFG.grpo.inner_steps - 1)
    idx = sorted(set(assigned_indices(CFG.grpo.inner_steps - 1, CFG.grpo)[0]))
    wide = generate(theta_last, env, idx, 2 * g, CFG.sampler, TASK_ID, ROUND, TRAINER)
    keep = []
    for a in range(len(idx)):
        rows = list(range(a * 2 * g, (a + 1) * 2 * g))
        rows.sort(key=lambda r: (-float(wide.rewards[r]), -r))  # best first, later seeds on ties
        keep += sorted(rows[:g])
    moved = sum(1 for a in range(len(idx)) for r in keep[a * g : (a + 1) * g] if r % (2 * g) >= g)
    assert moved > 0
    sel = torch.tensor(keep)
    width = int(wide.lengths[sel].max())  # the cheater trims to its kept rows, as generation would have
    picked = dataclasses.replace(
        bundle.batches[-1], completions=wide.completions[sel, :width], rewards=wide.rewards[sel]
    )
    assert float(picked.rewards.mean()) > float(bundle.batches[-1].rewards.mean())
    forged = forge(base, env, bundle, last_step_replaced(bundle, picked))
    v = verify_bundle(base, forged, env, CFG, VCFG)
    assert v.failed_check == "sampling"
    assert v.result("sampling").evidence["rejected_rollouts"] >= moved // 2


def test_foreign_seeds_rejected(base, env, honest):
    """The assigned prompts sampled with the next round's seeds (a batch reused across rounds)."""
    bundle, batches = honest
    theta_last = theta(base, batches, CFG.grpo.inner_steps - 1)
    i, j = assigned_indices(CFG.grpo.inner_steps - 1, CFG.grpo)
    keys = sample_keys(TASK_ID, ROUND + 1, TRAINER, list(zip(i, j, strict=True)))
    comps, _, _ = generate_tokens(theta_last, bundle.batches[-1].prompts, keys, CFG.sampler)
    reused = dataclasses.replace(bundle.batches[-1], completions=comps)
    v = verify_bundle(base, forge(base, env, bundle, last_step_replaced(bundle, reused)), env, CFG, VCFG)
    assert v.failed_check == "sampling"
    assert v.result("sampling").evidence["rejected_rollouts"] >= 0.9 * 128


# ----------------------------------------------------------------------------- rewards and claims


def test_swapped_rewards_rejected(base, env, honest):
    bundle, _ = honest
    b = bundle.batches[-1]
    r = b.rewards.clone()
    lo, hi = int(r.argmin()), int(r.argmax())
    assert r[lo] != r[hi]
    r[lo], r[hi] = r[hi].clone(), r[lo].clone()
    forged = forge(base, env, bundle, last_step_replaced(bundle, dataclasses.replace(b, rewards=r)), keep_rewards=True)
    v = verify_bundle(base, forged, env, CFG, VCFG)
    assert v.failed_check == "rewards"
    assert v.result("rewards").evidence["mismatched"] == 2


def test_inflated_rewards_rejected(base, env, honest):
    bundle, _ = honest
    b = bundle.batches[-1]
    r = (b.rewards + 0.25).clamp(max=1.0)
    forged = forge(base, env, bundle, last_step_replaced(bundle, dataclasses.replace(b, rewards=r)), keep_rewards=True)
    v = verify_bundle(base, forged, env, CFG, VCFG)
    assert v.failed_check == "rewards"
    assert v.result("rewards").evidence["mismatched"] == int((b.rewards < 1.0).sum())


@pytest.mark.parametrize("field,value", [("work_units", 1), ("mean_reward", 0.5)])
def test_inflated_claims_rejected(base, env, honest, field, value):
    bundle, _ = honest
    cheat = dataclasses.replace(bundle, **{field: getattr(bundle, field) + value})
    v = verify_bundle(base, cheat, env, CFG, VCFG)
    assert v.failed_check == "work_units"


# ----------------------------------------------------------------------------- delta


def _with_delta(bundle: Bundle, delta: dict[str, torch.Tensor]) -> Bundle:
    return dataclasses.replace(bundle, delta=delta)


@pytest.mark.parametrize(
    "change", [{"lr": 2 * CFG.grpo.lr}, {"weight_decay": 0.1}, {"std_normalize": True}, {"kl_coef": 0.5}]
)
def test_delta_from_other_hyperparameters_rejected(base, env, honest, change):
    bundle, batches = honest
    other = dataclasses.replace(CFG.grpo, **change)
    delta = replay_training(base, batches, other)
    v = verify_bundle(base, _with_delta(bundle, delta), env, CFG, VCFG)
    assert v.failed_check == "training_replay"
    assert v.result("training_replay").evidence["rel_l2"] > 5 * VCFG.replay_rel_l2_max


def test_gradient_clip_threshold_is_invisible_to_replay(base, env, honest):
    """A documented limit: AdamW is invariant to a uniform gradient scale, so a delta trained with
    grad_clip 0.1 instead of 1.0 (every step clipped either way) replays within tolerance."""
    bundle, batches = honest
    delta = replay_training(base, batches, dataclasses.replace(CFG.grpo, grad_clip=0.1))
    v = verify_bundle(base, _with_delta(bundle, delta), env, CFG, VCFG)
    assert v.accepted
    assert v.result("training_replay").evidence["rel_l2"] < 1e-4


def test_random_delta_rejected(base, env, honest):
    bundle, _ = honest
    gen = torch.Generator().manual_seed(0)
    delta = {k: torch.randn(t.shape, generator=gen) * float(t.std() + 1e-6) for k, t in bundle.delta.items()}
    v = verify_bundle(base, _with_delta(bundle, delta), env, CFG, VCFG)
    assert v.failed_check == "training_replay"
    assert abs(v.result("training_replay").evidence["cosine"]) < 0.1


def test_delta_scaled_by_1_01_rejected(base, env, honest):
    bundle, _ = honest
    v = verify_bundle(base, _with_delta(bundle, {k: t * 1.01 for k, t in bundle.delta.items()}), env, CFG, VCFG)
    assert v.failed_check == "training_replay"
    ev = v.result("training_replay").evidence
    assert ev["cosine"] > 0.999999 and ev["rel_l2"] == pytest.approx(0.01, rel=1e-4)


def test_out_of_vocabulary_token_rejected_by_schema(base, env, honest):
    bundle, _ = honest
    comps = bundle.batches[-1].completions.clone()
    comps[0, 0] = 999
    cheat = dataclasses.replace(
        bundle, batches=bundle.batches[:-1] + (dataclasses.replace(bundle.batches[-1], completions=comps),)
    )
    v = verify_bundle(base, cheat, env, CFG, VCFG)
    assert v.failed_check == "schema" and v.result("schema").evidence["problems"] == 1


def test_delta_with_missing_tensor_rejected_by_schema(base, env, honest):
    bundle, _ = honest
    delta = dict(bundle.delta)
    delta.pop(next(iter(delta)))
    assert verify_bundle(base, _with_delta(bundle, delta), env, CFG, VCFG).failed_check == "schema"


# ----------------------------------------------------------------------------- proofs


def _with_rollout_proofs(bundle: Bundle, n: int, proofs: tuple[bytes, ...]) -> Bundle:
    step = list(bundle.proofs[-1])
    step[n] = proofs
    all_proofs = bundle.proofs[:-1] + (tuple(step),)
    return dataclasses.replace(bundle, proofs=all_proofs, proof_root=proofs_root(all_proofs))


@pytest.mark.parametrize(
    "attack", ["zero", "truncated", "missing_chunk", "empty", "extra_chunk", "modulus_one", "garbage"]
)
def test_bad_proof_rejected_without_crash(base, env, honest, attack):
    bundle, _ = honest
    good = bundle.proofs[-1][3]
    bad = {
        "zero": (bytes(258),) + good[1:],
        "truncated": (good[0][:100],) + good[1:],
        "missing_chunk": good[:-1],
        "empty": (),
        "extra_chunk": good + (good[-1],),
        "modulus_one": (b"\x00\x01" + good[0][2:],) + good[1:],
        "garbage": (bytes(range(256)) + b"\xff\xff",) + good[1:],
    }[attack]
    v = verify_bundle(base, _with_rollout_proofs(bundle, 3, bad), env, CFG, VCFG)
    assert v.failed_check == "toploc"
    assert v.result("toploc").evidence["rejected"] == 1 and v.result("toploc").evidence["first_rejected"] == 3


def test_wrong_proof_root_rejected(base, env, honest):
    bundle, _ = honest
    v = verify_bundle(base, dataclasses.replace(bundle, proof_root=bytes(32)), env, CFG, VCFG)
    assert v.failed_check == "proof_root"


# ----------------------------------------------------------------------------- stale model


def test_rollouts_from_one_step_older_model(base, env, honest):
    """Batch 1 generated by theta_0 (one GRPO step older than claimed), the rest consistent.

    Measured (docs/SECURITY.md): with proofs from theta_0, what the cheater actually ran,
    TOPLOC rejects every rollout (one AdamW step at lr 3e-3 moves each weight by ~lr, 15% of
    the init scale); a cheater who pays for a theta_1 prefill to build proofs passes TOPLOC
    and is caught by sampling replay on 76/128 rollouts (tolerance 0.01), so the bundle is
    rejected either way.
    """
    bundle, batches = honest
    idx = sorted(set(assigned_indices(1, CFG.grpo)[0]))
    stale = generate(base, env, idx, CFG.grpo.group_size, CFG.sampler, TASK_ID, ROUND, TRAINER)
    theta1 = theta(base, batches, 1)
    out = prefill(theta1, stale)
    toploc_rate = sum(rollout_toploc_rejects(out.hidden, stale, batch_proofs(stale), stale.lengths, VCFG)) / stale.n
    sampling_rate = sum(rollout_sampling_rejects(out.logits, stale, stale.keys, CFG.sampler, VCFG)) / stale.n
    print(
        f"\nstale theta_0 rollouts under theta_1: toploc reject rate {toploc_rate:.3f}, "
        f"sampling reject rate {sampling_rate:.3f} over {stale.n} rollouts"
    )
    assert toploc_rate >= 0.9  # one AdamW step moves every weight by ~lr: the states move a lot
    assert sampling_rate >= 0.05
    for provers, caught_by in (([base, base], "toploc"), (None, "sampling")):
        forged = forge(base, env, bundle, [batches[0], stale], proof_policies=provers)
        assert verify_bundle(base, forged, env, CFG, VCFG).failed_check == caught_by

"""make_bundle: the trainer's round as a submission, with its claims stated and recomputable."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from concord.client.engine.bundle import claimed_mean_reward, make_bundle, proof_root
from concord.client.engine.config import DEFAULT_TASK, GRPOConfig
from concord.client.engine.envs import make_env
from concord.client.engine.grpo import pin_determinism
from concord.client.engine.model import build_policy, policy_state
from concord.client.engine.proofs import PROOF_BYTES, merkle_root, rollout_proofs_hash
from concord.validator.tiny_checks import verify_bundle

TRAINER = "0x" + "12" * 20
CFG = dataclasses.replace(DEFAULT_TASK, grpo=GRPOConfig(prompts_per_step=4, group_size=4, inner_steps=3))


@pytest.fixture(scope="module")
def setup():
    pin_determinism(1)
    env, base = make_env(CFG.env), build_policy(CFG.model)
    return env, base, make_bundle(base, env, CFG, 5, 2, TRAINER, base_round=1)


def test_bundle_fields_and_claims(setup):
    env, base, b = setup
    assert (b.task_id, b.round, b.base_round, b.trainer) == (5, 2, 1, TRAINER)
    assert len(b.batches) == len(b.proofs) == 3
    assert all(batch.n == 16 and len(p) == 16 for batch, p in zip(b.batches, b.proofs, strict=True))
    assert b.work_units == sum(int(batch.mask.sum()) for batch in b.batches)
    assert 16 * 3 <= b.work_units <= 16 * 3 * CFG.sampler.max_new_tokens
    assert b.mean_reward == float(torch.cat([batch.rewards for batch in b.batches]).double().mean())
    assert b.mean_reward == claimed_mean_reward(b.batches)
    assert set(b.delta) == set(policy_state(base)) and all(t.dtype == torch.float32 for t in b.delta.values())


def test_bundle_carries_no_trainer_side_states(setup):
    _, _, b = setup
    assert all(batch.hidden.numel() == 0 and batch.logprobs.numel() == 0 for batch in b.batches)


def test_one_proof_list_per_rollout(setup):
    """Prompt (one chunk) + ceil(length / 32) decode chunks; 258-byte proofs at hidden size 64."""
    _, _, b = setup
    for batch, proofs in zip(b.batches, b.proofs, strict=True):
        for n in range(batch.n):
            length = int(batch.lengths[n])
            assert len(proofs[n]) == 1 + -(-length // 32)
            assert all(len(p) == PROOF_BYTES for p in proofs[n][:1])  # 10 x 64 prompt values >= 128


def test_proof_root_is_merkle_of_rollout_hashes(setup):
    _, _, b = setup
    leaves = [rollout_proofs_hash(list(p)) for step in b.proofs for p in step]
    assert len(leaves) == 48
    assert b.proof_root == proof_root(b) == merkle_root(leaves)


def test_make_bundle_is_deterministic_and_verifies(setup):
    env, base, b = setup
    again = make_bundle(base, env, CFG, 5, 2, TRAINER, base_round=1)
    assert again.proof_root == b.proof_root and again.work_units == b.work_units
    assert all(torch.equal(again.delta[k], b.delta[k]) for k in b.delta)
    v = verify_bundle(base, b, env, CFG)
    assert v.accepted and v.result("training_replay").evidence["rel_l2"] == 0.0
    other = make_bundle(base, env, CFG, 5, 3, TRAINER)
    assert other.proof_root != b.proof_root

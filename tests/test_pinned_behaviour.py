"""Pinned behaviour (issue 22): one small deterministic round per model kind, the tiny transformer and
the LM (SmolLM2-135M + LoRA), recorded as literals before the workload seam moved any code, so that
the refactor can be held to "same behaviour to the bit".

Per kind: a trainer's round (its submission's digest in a real IPFS daemon, the delta's and every
inner state's bytes, the claimed rewards), a validator's checks of it (full mode, sampled mode on a
fixed sample, and one cheat: inflated rewards) with every check's name, outcome and evidence, and
the outer step on the accepted delta (the next model's digest, or on the LM the adapters' bytes).

The literals were computed once on the code before the seam (commit 19cfb11); a change of any digest,
reward or evidence number here is a change of protocol behaviour, not of layout.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from task_terms import TWO_TERMS

from concord.client.content.model_store import put_model
from concord.client.content.store import Store
from concord.client.content.submission import put_submission
from concord.client.engine import lm, text_envs
from concord.client.engine.bundle import make_bundle
from concord.client.engine.config import DEFAULT_TASK, GRPOConfig, OuterConfig, SamplerConfig, ValidationConfig
from concord.client.engine.envs import make_env
from concord.client.engine.grpo import pin_determinism
from concord.client.engine.lm_grpo import make_submission
from concord.client.engine.lm_rollout import AdapterConfig, LMRollouts, adapter_state, attach_adapters
from concord.client.engine.model import build_policy, policy_state
from concord.client.runtime.lm_work import put_lm_submission
from concord.validator.aggregate import outer_step
from concord.validator.lm_checks import verify_submission
from concord.validator.sampling import CheckSample
from concord.validator.tiny_checks import verify_bundle
from concord.validator.verdict import Verdict

TRAINER = "0x" + "cd" * 20
FP32 = ValidationConfig(prefill_precision="fp32")
SAMPLED = ValidationConfig(prefill_precision="fp32", mode="sampled", row_fraction=0.25, replay_steps=1)
OUTER = OuterConfig()


def tensors_sha(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over (name, dtype, shape, bytes) in name order: the exact content of a state dict."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu().reshape(-1)
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def verdict_sha(verdict: Verdict) -> str:
    """sha256 of every result's (name, ok, evidence, rows), evidence keys sorted, floats by repr."""
    rows = [
        [r.name, r.ok, sorted((k, repr(float(v))) for k, v in r.evidence.items()), list(r.rows)]
        for r in verdict.results
    ]
    return hashlib.sha256(json.dumps([verdict.accepted, verdict.failed_check, rows]).encode()).hexdigest()


def summary(verdict: Verdict) -> tuple[bool, str, int]:
    return verdict.accepted, verdict.failed_check, len(verdict.results)


# ----------------------------------------------------------------------------- the tiny model

TINY = dataclasses.replace(DEFAULT_TASK, grpo=GRPOConfig(prompts_per_step=2, group_size=4, inner_steps=2))

TINY_PINS: dict[str, Any] = {
    "submission": "0xacb0e4412156ee10af21544729337f3b75fe84707ed098e251055218a3b49e96",
    "delta": "2d0a197bff18aca8574a2fc66064999b85b760a38c48b65361d130f71905312a",
    "states": [
        "ef3e56adadbf754985a74297ea91ea6368b0dae9621fac30c77cfdab2a62b097",
        "d3de6f16a194f6dcc417303f8d4165aa0c918c93559de2c13e87265dec853286",
    ],
    "rewards": [
        [
            0.005989897422516857,
            -0.05301784866438485,
            0.033253623983578756,
            0.06631302614006838,
            -0.03627396003955378,
            0.013074652045550406,
            0.08192323485814712,
            0.07580502089187785,
        ],
        [
            -0.01592013615346597,
            0.1391473913076976,
            0.033253623983578756,
            0.027982075749794673,
            0.0426854537919602,
            0.025010649564768776,
            -0.03935256877292391,
            0.13555689742051194,
        ],
    ],
    "mean_reward": 0.03346443959560767,
    "work_units": 119,
    "full": (True, "", 12),
    "full_sha": "889ab0e0236e50d8453372d89974f075fc59347754f89f7bcd60d7c871ca2652",
    "sampled": (True, "", 15),
    "sampled_sha": "0dbd89531237d46b039e153c41d66ce215ea94868694f0be165148fd4346ed16",
    "cheat": (False, "rewards", 5),
    "cheat_sha": "268cec477fa6af10e7e5ee64497e1add0f1f9ada22870cee5af9b3179548ec27",
    "model0": "0x69c141a535ad4c4186994b02c00bec19d7e47f0dfdf28fa36b5af7d65b696d33",
    "model1": "0x1b5bec90c4e9b685189d5bd4c30d15e8741a9d91c6f1f4f877f4022f7dae6589",
}


@pytest.fixture(scope="module")
def tiny() -> dict[str, Any]:
    pin_determinism(1)
    env, base = make_env(TINY.env), build_policy(TINY.model)
    bundle = make_bundle(base, env, TINY, 3, 1, TRAINER, base_round=0)
    return {"env": env, "base": base, "bundle": bundle}


def test_tiny_round_is_pinned(tiny: dict[str, Any], store: Store) -> None:
    env, base, bundle = tiny["env"], tiny["base"], tiny["bundle"]
    got: dict[str, Any] = {}
    digest, _ = put_submission(store, bundle)
    got["submission"] = str(digest)
    got["delta"] = tensors_sha(bundle.delta)
    got["states"] = [tensors_sha(s) for s in bundle.states]
    got["rewards"] = [b.rewards.tolist() for b in bundle.batches]
    got["mean_reward"], got["work_units"] = bundle.mean_reward, bundle.work_units
    full = verify_bundle(base, bundle, env, TINY, FP32)
    got["full"], got["full_sha"] = summary(full), verdict_sha(full)
    sample = CheckSample(((1, 6), (0, 3)), (1,), False)
    sampled = verify_bundle(base, bundle, env, TINY, SAMPLED, sample, dict(enumerate(bundle.states, start=1)))
    got["sampled"], got["sampled_sha"] = summary(sampled), verdict_sha(sampled)
    b0 = bundle.batches[0]
    inflated = dataclasses.replace(
        bundle, batches=(dataclasses.replace(b0, rewards=b0.rewards + 1), *bundle.batches[1:])
    )
    cheat = verify_bundle(base, inflated, env, TINY, FP32)
    got["cheat"], got["cheat_sha"] = summary(cheat), verdict_sha(cheat)
    model0 = put_model(store, policy_state(base), TINY.model, {}, parent_digest=None)
    state, momentum = outer_step(policy_state(base), {str(digest): bundle.delta}, {}, OUTER)
    got["model0"] = str(model0)
    got["model1"] = str(put_model(store, state, TINY.model, momentum, parent_digest=model0))
    assert got == TINY_PINS


# ----------------------------------------------------------------------------- the LM

LM_GRPO = GRPOConfig(prompts_per_step=2, group_size=2, inner_steps=2, lr=2e-3, optimizer="adamw")
LM_PINS: dict[str, Any] = {
    "submission": "0x9bdf7375a53a456e4d80cc933b8231190c3054665cce7bf30e0300e1d074ef29",
    "delta": "b9f634dc7d0b6058a0c10e7ea54a0acf3917773a79d2d1d9366e00cccae6b63a",
    "states": ["b9f634dc7d0b6058a0c10e7ea54a0acf3917773a79d2d1d9366e00cccae6b63a"],
    "rewards": [[[1.0, 0.0], [0.0, 0.0]], [[1.0, 1.0], [1.0, 1.0]]],
    "mean_reward": 0.625,
    "work_units": 20,
    "full": (True, "", 20),
    "full_sha": "344127a87f88cc953f6b4967ef65f0bfda85543221643bb682f32b17f718f037",
    "sampled": (True, "", 20),
    "sampled_sha": "cb2805d1ae11b735b794f938e6435461c1a3f4e92ed6660278282fda2f928ced",
    "cheat": (False, "rewards", 5),
    "cheat_sha": "0c23b09e2747e966b057eea1f6853c5d271d7a9792bb564969350fc0c0a8bbfe",
    "model1": "dc47206a1ade895925cc3bab8e18e9372c112944470404e31e0970011a0e4651",
    "momentum1": "e99ce60c25d6141b7b11f9fea0f39dc0c63c509ba1711b9d819a65244e0aca69",
}


@pytest.fixture(scope="module")
def lm_round(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    threads = torch.get_num_threads()
    pin_determinism(1)
    loaded = lm.load(lm.SMOLLM2_135M, Path(tmp_path_factory.mktemp("lm-models")))
    model = attach_adapters(loaded.model, AdapterConfig())
    # issue 12's two one-digit terms, named (the default task has 2-4 since issue 24): the pins stay the code's
    env = text_envs.make_text_env("chain_sum", TWO_TERMS, context=loaded.context)
    rollouts = LMRollouts.for_env(model, loaded.tokenizer, env, SamplerConfig(1.0, env.max_new_tokens))
    base = adapter_state(model)
    sub, _ = make_submission(rollouts, base, LM_GRPO, 12, 5, TRAINER)  # round 5: groups with a reward signal
    yield {"rollouts": rollouts, "base": base, "sub": sub}
    torch.set_num_threads(threads)


def test_lm_round_is_pinned(lm_round: dict[str, Any], store: Store) -> None:
    rollouts, base, sub = lm_round["rollouts"], lm_round["base"], lm_round["sub"]
    got: dict[str, Any] = {}
    got["submission"] = str(put_lm_submission(store, sub))
    got["delta"] = tensors_sha(sub.delta)
    got["states"] = [tensors_sha(s) for s in sub.states]
    got["rewards"] = [[g.rewards.tolist() for g in groups] for groups in sub.steps]
    got["mean_reward"], got["work_units"] = sub.mean_reward, sub.work_units
    full = verify_submission(rollouts, base, sub, LM_GRPO, FP32)
    got["full"], got["full_sha"] = summary(full), verdict_sha(full)
    sample = CheckSample(((1,), (2, 3)), (1,), False)
    sampled = verify_submission(rollouts, base, sub, LM_GRPO, SAMPLED, sample=sample)
    got["sampled"], got["sampled_sha"] = summary(sampled), verdict_sha(sampled)
    g0 = sub.batches[0]  # step 0's first group
    inflated = dataclasses.replace(sub, batches=(dataclasses.replace(g0, rewards=g0.rewards + 1), *sub.batches[1:]))
    cheat = verify_submission(rollouts, base, inflated, LM_GRPO, FP32)
    got["cheat"], got["cheat_sha"] = summary(cheat), verdict_sha(cheat)
    state, momentum = outer_step(base, {"sub": sub.delta}, {}, OUTER)
    got["model1"], got["momentum1"] = tensors_sha(state), tensors_sha(momentum)
    assert got == LM_PINS

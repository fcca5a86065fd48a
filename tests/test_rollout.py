"""Rollouts: seeded KV-cache generation, and the one-pass prefill validators replay it with."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from concord.client.engine.config import EnvConfig, ModelConfig, SamplerConfig
from concord.client.engine.envs import EOS, PAD, make_env
from concord.client.engine.model import build_policy
from concord.client.engine.rollout import completion_logits, completion_mask, generate, prefill
from concord.client.engine.sampler import perturbed_scores, top2_gap

TRAINER = "0x" + "ab" * 20
ENV = EnvConfig("sort", {"n_min": 4, "n_max": 6, "alphabet": 8})


@pytest.fixture(scope="module", params=["tiny", "hf"])
def policy(request):
    return build_policy(ModelConfig(kind=request.param, d_model=32, n_layers=2, n_heads=4, max_seq_len=24, seed=2))


def test_prefill_recomputes_generation_states_and_choices(policy) -> None:
    env = make_env(ENV)
    cfg = SamplerConfig(temperature=1.0, max_new_tokens=8)
    batch = generate(policy, env, list(range(8)), 4, cfg, task_id=5, round_=2, trainer=TRAINER)
    N, P, C = batch.n, batch.prompt_len, batch.completions.shape[1]
    assert (N, P) == (32, env.prompt_len) and batch.hidden.shape == (N, P + C, 32)
    out = prefill(policy, batch)
    assert out.hidden.shape == batch.hidden.shape
    assert (out.hidden - batch.hidden).abs().max().item() < 1e-5
    # every generated token (the last included) is the seeded choice under the prefill's logits
    logits = completion_logits(out.logits, P, C)  # [N, C, V]
    steps = np.arange(C)[None, :].repeat(N, 0)
    scores = perturbed_scores(logits, batch.keys[:, None].repeat(C, 1), steps, cfg.temperature)
    chosen = scores.argmax(-1)
    agree = (chosen == batch.completions) | ~batch.mask
    assert bool(agree.all()), f"mismatch where gap = {top2_gap(scores)[~agree]}"
    # sampling-time log-probs equal the prefill's
    logp = torch.log_softmax(logits, -1).gather(2, batch.completions[:, :, None])[:, :, 0]
    assert ((logp - batch.logprobs).abs() * batch.mask).max().item() < 1e-4


def test_same_inputs_same_rollouts_and_other_trainers_differ(policy) -> None:
    env, cfg = make_env(ENV), SamplerConfig(max_new_tokens=8)
    a = generate(policy, env, [0, 1, 2], 4, cfg, 1, 0, TRAINER)
    b = generate(policy, env, [0, 1, 2], 4, cfg, 1, 0, TRAINER)
    c = generate(policy, env, [0, 1, 2], 4, cfg, 1, 0, "0x" + "cd" * 20)
    assert torch.equal(a.completions, b.completions) and torch.equal(a.rewards, b.rewards)
    assert not torch.equal(a.prompts, c.prompts)
    assert a.prompt_idx.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert a.sample_idx.tolist() == [0, 1, 2, 3] * 3
    # samples of one group share the prompt but not the randomness
    assert torch.equal(a.prompts[0], a.prompts[3]) and len(set(a.keys.tolist())) == 12


def test_mask_and_padding_rules() -> None:
    comp = torch.tensor([[9, 10, EOS, PAD, PAD], [9, 9, 9, 9, 9], [EOS, PAD, PAD, PAD, PAD]])
    mask = completion_mask(comp)
    assert mask.tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]]
    assert completion_mask(comp, stop_at_eos=False).all()
    policy = build_policy(ModelConfig(d_model=32, n_layers=1, n_heads=4, max_seq_len=24, seed=0))
    batch = generate(policy, make_env(ENV), list(range(16)), 4, SamplerConfig(max_new_tokens=8), 1, 0, TRAINER)
    after_eos = ~batch.mask
    assert bool((batch.completions[after_eos] == PAD).all())
    assert bool((batch.logprobs[after_eos] == 0).all())
    assert batch.lengths.tolist() == batch.mask.sum(1).tolist()
    assert batch.work_units == int(batch.mask.sum())
    for row, n in zip(batch.completions, batch.lengths, strict=True):
        eos = (row == EOS).nonzero()
        assert n == (eos[0, 0] + 1 if len(eos) else row.numel())


def test_temperature_zero_is_greedy() -> None:
    policy = build_policy(ModelConfig(d_model=32, n_layers=1, n_heads=4, max_seq_len=24, seed=0))
    batch = generate(policy, make_env(ENV), [0, 1], 3, SamplerConfig(temperature=0.0, max_new_tokens=6), 1, 0, TRAINER)
    assert torch.equal(batch.completions[0], batch.completions[1])  # no noise: one answer per prompt
    logits = completion_logits(prefill(policy, batch).logits, batch.prompt_len, batch.completions.shape[1])
    assert bool(((logits.argmax(-1) == batch.completions) | ~batch.mask).all())

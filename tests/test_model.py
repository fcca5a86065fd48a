"""Policies: the two implementations honour one protocol, KV-cache decoding matches a full forward."""

from __future__ import annotations

import pytest
import torch

from concord.client.engine.config import ModelConfig
from concord.client.engine.model import (
    HFPolicy,
    Policy,
    SequenceTooLong,
    StateMismatch,
    TinyTransformer,
    build_policy,
    load_policy_state,
    param_count,
    policy_state,
)

CONFIGS = [
    ModelConfig(kind="tiny", d_model=32, n_layers=2, n_heads=4, max_seq_len=24, seed=3),
    ModelConfig(kind="hf", hf_arch="qwen2", d_model=32, n_layers=2, n_heads=4, max_seq_len=24, seed=3),
    ModelConfig(kind="hf", hf_arch="llama", d_model=32, n_layers=2, n_heads=4, max_seq_len=24, seed=3),
]


def _decode_all(policy, tokens: torch.Tensor, split: int):
    out, cache = policy.decode(tokens[:, :split], None)
    logits, hidden = [out.logits], [out.hidden]
    for t in range(split, tokens.shape[1]):
        out, cache = policy.decode(tokens[:, t : t + 1], cache)
        logits.append(out.logits)
        hidden.append(out.hidden)
    return torch.cat(logits, 1), torch.cat(hidden, 1)


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"{c.kind}-{c.hf_arch}")
def test_kv_cache_decode_matches_full_forward(cfg: ModelConfig) -> None:
    policy = build_policy(cfg)
    assert isinstance(policy, Policy)
    tokens = torch.randint(0, cfg.vocab_size, (3, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full = policy(tokens)
        logits, hidden = _decode_all(policy, tokens, split=5)
    assert full.logits.shape == (3, 12, cfg.vocab_size) and full.logits.dtype == torch.float32
    assert full.hidden.shape == (3, 12, cfg.d_model)
    assert (logits - full.logits).abs().max().item() < 1e-5
    assert (hidden - full.hidden).abs().max().item() < 1e-5


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"{c.kind}-{c.hf_arch}")
def test_init_is_a_pure_function_of_the_seed(cfg: ModelConfig) -> None:
    a, b = policy_state(build_policy(cfg)), policy_state(build_policy(cfg))
    assert list(a) == list(b)
    assert all(torch.equal(a[k], b[k]) for k in a)
    c = policy_state(build_policy(ModelConfig(**{**cfg.__dict__, "seed": cfg.seed + 1})))
    assert any(not torch.equal(a[k], c[k]) for k in a if a[k].std() > 0)


def test_hidden_is_post_final_norm() -> None:
    """TinyTransformer: the hidden state is the LayerNorm output (unit variance per position)."""
    # Tokens from 1: the HF configs map PAD (id 0) to a zero embedding row, so a sequence that
    # opens with PAD has an all-zero residual at position 0 and an RMS of 0 there. Prompts never
    # do (they open with BOS); the test draws like a prompt, from a seeded generator.
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(1, 32, (2, 7), generator=gen)  # [B=2, T=7]
    policy = build_policy(CONFIGS[0])
    with torch.no_grad():
        hidden = policy(tokens).hidden
    var = hidden.var(dim=-1, unbiased=False)
    assert torch.allclose(var, torch.ones_like(var), atol=0.05)  # eps of LayerNorm
    assert hidden.mean(-1).abs().max().item() < 1e-5
    hf = build_policy(CONFIGS[1])
    with torch.no_grad():
        h = hf(tokens).hidden
    rms = h.pow(2).mean(-1).sqrt()  # Qwen2 RMSNorm with unit weight at init
    assert torch.allclose(rms, torch.ones_like(rms), atol=0.05)


def test_hf_policy_loads_from_a_local_directory(tmp_path) -> None:
    policy = build_policy(CONFIGS[1])
    assert isinstance(policy, HFPolicy)
    policy.hf.save_pretrained(tmp_path)
    loaded = build_policy(ModelConfig(**{**CONFIGS[1].__dict__, "hf_path": str(tmp_path), "seed": 99}))
    tokens = torch.randint(0, 32, (2, 9))
    with torch.no_grad():
        assert torch.equal(policy(tokens).logits, loaded(tokens).logits)


def test_state_roundtrip_and_mismatch() -> None:
    a, b = build_policy(CONFIGS[0]), build_policy(ModelConfig(**{**CONFIGS[0].__dict__, "seed": 7}))
    load_policy_state(b, policy_state(a))
    assert all(torch.equal(x, y) for x, y in zip(policy_state(a).values(), policy_state(b).values(), strict=True))
    bad = dict(policy_state(a))
    bad.pop("lm_head.weight")
    bad["extra"] = torch.zeros(1)
    with pytest.raises(StateMismatch) as err:
        load_policy_state(b, bad)
    assert err.value.missing == ["lm_head.weight"] and err.value.unexpected == ["extra"]
    assert param_count(a) == sum(t.numel() for t in policy_state(a).values())


def test_sequence_longer_than_max_seq_len_is_refused() -> None:
    policy = TinyTransformer(CONFIGS[0])
    with pytest.raises(SequenceTooLong) as err:
        policy(torch.zeros(1, 25, dtype=torch.long))
    assert err.value.length == 25 and err.value.limit == 24

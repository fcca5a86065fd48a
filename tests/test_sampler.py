"""Seeded sampling: keys from (task, round, trainer, i, j), Gumbel-max noise per token, replayable."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from concord.client.engine.sampler import (
    BadTrainerAddress,
    choose,
    gumbel_noise,
    perturbed_scores,
    prompt_seed,
    sample_key,
    sample_keys,
    top2_gap,
)

A = "0x" + "11" * 20
B = "0x" + "22" * 20


def test_keys_depend_on_every_field() -> None:
    base = sample_key(1, 2, A, 3, 4)
    variants = [
        sample_key(2, 2, A, 3, 4),
        sample_key(1, 3, A, 3, 4),
        sample_key(1, 2, B, 3, 4),
        sample_key(1, 2, A, 4, 4),
        sample_key(1, 2, A, 3, 5),
        prompt_seed(1, 2, A, 3),
    ]
    assert len({base, *variants}) == 7
    assert sample_key(1, 2, A.upper().replace("0X", "0x"), 3, 4) == base  # checksum case does not matter
    with pytest.raises(BadTrainerAddress):
        sample_key(1, 2, "0x1234", 3, 4)


def test_noise_is_a_pure_function_of_key_and_step() -> None:
    keys = sample_keys(7, 0, A, [(0, 0), (0, 1), (1, 0)])
    g1 = gumbel_noise(keys, 5, 32)
    g2 = gumbel_noise(keys, np.array([5, 5, 5]), 32)
    assert g1.shape == (3, 32) and np.array_equal(g1, g2)
    assert not np.array_equal(gumbel_noise(keys, 6, 32), g1)
    assert not np.array_equal(g1[0], g1[1])
    # one row at a time gives the same numbers as the vectorised call
    assert np.array_equal(gumbel_noise(keys[1:2], 5, 32)[0], g1[1])
    steps = np.arange(4)[None, :].repeat(3, 0)
    grid = gumbel_noise(keys[:, None].repeat(4, 1), steps, 32)  # [3, 4, 32]
    assert np.array_equal(grid[:, 2], gumbel_noise(keys, 2, 32))


def test_gumbel_max_samples_the_softmax() -> None:
    """Frequencies of seeded choices over 40k keys match softmax(logits / T) within 1 percentage point."""
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0, 0.5, 0.0, 0.0, -3.0])
    keys = np.arange(40_000, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    for temp in (1.0, 0.5):
        picks = choose(logits.expand(len(keys), -1), keys, 3, temp)
        freq = torch.bincount(picks, minlength=8).double() / len(keys)
        want = torch.softmax(logits.double() / temp, 0)
        assert (freq - want).abs().max().item() < 0.01
    noise = gumbel_noise(keys, 0, 1)[:, 0]
    assert abs(noise.mean() - 0.5772) < 0.02  # Euler-Mascheroni: the Gumbel mean


def test_temperature_zero_is_greedy_and_gap_is_replayable() -> None:
    logits = torch.randn(16, 32, generator=torch.Generator().manual_seed(0))
    keys = sample_keys(1, 0, A, [(i, 0) for i in range(16)])
    assert torch.equal(choose(logits, keys, 0, 0.0), logits.argmax(-1))
    scores = perturbed_scores(logits, keys, 0, 1.0)
    gap = top2_gap(scores)
    assert (gap > 0).all()
    assert torch.equal(scores.argmax(-1), choose(logits, keys, 0, 1.0))
    # a logit change smaller than the gap cannot flip the choice
    nudged = logits + (gap.float()[:, None] * 0.49) * torch.randn(16, 32).sign() * 0.5
    assert torch.equal(choose(nudged, keys, 0, 1.0), choose(logits, keys, 0, 1.0))


def test_vectorised_noise_is_fast() -> None:
    """Thousands of tokens per second: 8192 tokens (128 samples x 64 steps) in one call (CPU time,
    so a loaded machine does not fail it)."""
    keys = sample_keys(1, 0, A, [(i, j) for i in range(64) for j in range(2)])  # [128]
    steps = np.arange(64)[None, :].repeat(128, 0)  # [128, 64]
    for vocab, floor in ((32, 20_000), (4096, 1_000)):  # floors leave room for a loaded machine
        t0 = time.process_time()
        g = gumbel_noise(keys[:, None].repeat(64, 1), steps, vocab)  # [128, 64, V]
        dt = time.process_time() - t0
        assert g.shape == (128, 64, vocab)
        assert 8192 / dt > floor, f"{8192 / dt:.0f} tokens/s at vocab {vocab}"

"""Asynchronous rounds: the staleness rule of the outer step (validator.aggregate.staleness_weight) and
a simulated network at asyncLevel 2 that learns with it and stalls without it."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from concord.client.engine.config import ConfigError, OuterConfig
from concord.validator.aggregate import BadStaleness, outer_step, staleness_weight


def _inputs() -> tuple[dict[str, torch.Tensor], dict[str, dict[str, torch.Tensor]], dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(5)
    base = {"w": torch.randn(40, 17, generator=g), "b": torch.randn(17, generator=g)}
    deltas = {f"{k:064x}": {n: torch.randn(t.shape, generator=g) * 1e-2 for n, t in base.items()} for k in (9, 2, 4)}
    momentum = {n: torch.randn(t.shape, generator=g) * 1e-3 for n, t in base.items()}
    return base, deltas, momentum


def test_fresh_deltas_change_no_bit() -> None:
    """Staleness 0 (asyncLevel 0, or a delta built on model r itself) is the outer step as it was:
    the same bits with or without the staleness map, whatever the discount."""
    base, deltas, momentum = _inputs()
    cfg = OuterConfig(lr=0.7, momentum=0.5, nesterov=True, clip=1.0, agreement=True)
    old_state, old_mom = outer_step(base, deltas, momentum, cfg)
    for discount in (0.0, 1.0, 7.5):
        c = dataclasses.replace(cfg, staleness_discount=discount)
        state, mom = outer_step(base, deltas, momentum, c, dict.fromkeys(deltas, 0))
        assert all(torch.equal(state[n], old_state[n]) and torch.equal(mom[n], old_mom[n]) for n in base)
    assert staleness_weight(0, cfg) == 1.0


def test_a_stale_delta_weighs_one_over_one_plus_discount_times_staleness() -> None:
    base = {"w": torch.tensor([1.0, 2.0])}
    deltas = {"a": {"w": torch.tensor([0.3, -0.3])}, "b": {"w": torch.tensor([0.0, 0.6])}}
    cfg = OuterConfig(lr=1.0, momentum=0.0, clip=0, agreement=False, staleness_discount=1.0)
    state, _ = outer_step(base, deltas, {}, cfg, {"a": 2, "b": 0})
    # a weighs 1/3, b weighs 1; the sum is still divided by K = 2
    want = base["w"] + (deltas["a"]["w"] * torch.tensor(1 / 3, dtype=torch.float32) + deltas["b"]["w"]) / 2
    assert torch.equal(state["w"], want)
    assert staleness_weight(2, cfg) == 1 / 3 and staleness_weight(1, cfg) == 0.5
    half = dataclasses.replace(cfg, staleness_discount=0.5)
    assert staleness_weight(2, half) == 0.5
    off = dataclasses.replace(cfg, staleness_discount=0.0)  # no discount: stale deltas count as fresh
    plain, _ = outer_step(base, deltas, {}, off, {"a": 2, "b": 1})
    assert torch.equal(plain["w"], outer_step(base, deltas, {}, off)[0]["w"])


def test_the_staleness_rule_is_deterministic_and_order_free() -> None:
    """Every validator computes the same bits: the weights are floats of integers, applied per delta
    before the fixed-order sum; the order the deltas or their staleness arrive in changes nothing."""
    base, deltas, momentum = _inputs()
    cfg = OuterConfig(lr=1.0, momentum=0.5, staleness_discount=1.0)
    stale = {k: i for i, k in enumerate(sorted(deltas))}  # 0, 1, 2
    a = outer_step(base, deltas, momentum, cfg, stale)
    rev_deltas = {k: deltas[k] for k in reversed(list(deltas))}
    rev_stale = {k: stale[k] for k in reversed(list(stale))}
    b = outer_step(base, rev_deltas, momentum, cfg, rev_stale)
    assert all(torch.equal(a[0][n], b[0][n]) and torch.equal(a[1][n], b[1][n]) for n in base)
    fresh = outer_step(base, deltas, momentum, cfg)
    assert not torch.equal(a[0]["w"], fresh[0]["w"])  # the rule does act on stale deltas


def test_bad_staleness_and_bad_discount_are_refused() -> None:
    base, deltas, momentum = _inputs()
    key = sorted(deltas)[0]
    for bad in ({}, {key: -1}, {key: 1.5}, {key: True}):
        stale = {**dict.fromkeys(deltas, 0), **bad} if bad else dict.fromkeys(sorted(deltas)[1:], 0)
        with pytest.raises(BadStaleness) as err:
            outer_step(base, deltas, momentum, OuterConfig(), stale)  # type: ignore[arg-type]
        assert err.value.key == key
    for bad_discount in (-0.1, 2e3):
        with pytest.raises(ConfigError, match="staleness_discount"):
            OuterConfig(staleness_discount=bad_discount)


def test_async_2_learns_with_the_staleness_rule() -> None:
    """The default task with 8 prompts per inner step at asyncLevel 2, 20 rounds: with the rule
    (staleness_discount 1) the last 3 rounds' mean reward is 0.157 (from 0.054 at round 1); with stale
    deltas as if fresh (staleness_discount 0, the rule before issue 23) it peaks at 0.121 and unlearns
    to 0.050 (measured: 0.064, 0.041, 0.046). The threshold 0.12 passes the first and fails the second."""
    from concord.client.engine.config import DEFAULT_TASK
    from concord.client.engine.grpo import pin_determinism
    from scripts.simulate import simulate_decentralized

    pin_determinism(1)
    task = dataclasses.replace(DEFAULT_TASK, grpo=dataclasses.replace(DEFAULT_TASK.grpo, prompts_per_step=8))
    assert task.outer.staleness_discount == 1.0  # the default is the rule under test
    curve = simulate_decentralized(task, 20, async_level=2)
    assert curve.rewards[0] < 0.06
    assert sum(curve.rewards[-3:]) / 3 > 0.12

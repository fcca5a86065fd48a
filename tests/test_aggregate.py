"""DiLoCo outer step: fixed-order mean, Nesterov momentum by hand, identical bytes in two processes."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from client.content.weights import save_shards
from client.engine.config import OuterConfig
from validator.aggregate import (
    DeltaShapeMismatch,
    mean_delta,
    momentum_from_tensors,
    momentum_to_tensors,
    outer_step,
)


def _inputs() -> tuple[dict, dict]:
    g = torch.Generator().manual_seed(0)
    base = {"w": torch.randn(64, 33, generator=g), "b": torch.randn(33, generator=g)}
    deltas = {
        f"{k:064x}": {n: torch.randn(t.shape, generator=g) * 1e-3 for n, t in base.items()} for k in (7, 3, 11, 5)
    }
    return base, deltas


def test_mean_is_independent_of_submission_order() -> None:
    base, deltas = _inputs()
    shuffled = {k: deltas[k] for k in reversed(list(deltas))}
    a, b = mean_delta(base, deltas), mean_delta(base, shuffled)
    assert all(torch.equal(a[n], b[n]) for n in a)
    want = sum(deltas[k]["w"].double() for k in deltas) / 4
    assert (a["w"].double() - want).abs().max().item() < 1e-9


def test_nesterov_outer_step_by_hand() -> None:
    base = {"w": torch.tensor([1.0, 2.0])}
    deltas = {"a": {"w": torch.tensor([0.2, -0.2])}, "b": {"w": torch.tensor([0.0, 0.4])}}
    cfg = OuterConfig(lr=0.5, momentum=0.9, nesterov=True)
    s1, m1 = outer_step(base, deltas, {}, cfg)
    g = torch.tensor([-0.1, -0.1])  # -mean(delta)
    assert torch.allclose(m1["w"], g)
    assert torch.allclose(s1["w"], base["w"] - 0.5 * (g + 0.9 * g))
    s2, m2 = outer_step(s1, deltas, m1, cfg)
    m2_want = 0.9 * g + g
    assert torch.allclose(m2["w"], m2_want)
    assert torch.allclose(s2["w"], s1["w"] - 0.5 * (g + 0.9 * m2_want))
    heavy, _ = outer_step(s1, deltas, m1, OuterConfig(lr=0.5, momentum=0.9, nesterov=False))
    assert torch.allclose(heavy["w"], s1["w"] - 0.5 * m2_want)
    # lr 1, no momentum: the model becomes base + mean delta
    plain, _ = outer_step(base, deltas, {}, OuterConfig(lr=1.0, momentum=0.0))
    assert torch.allclose(plain["w"], torch.tensor([1.1, 2.1]))
    # no accepted delta: nothing moves
    same, mom = outer_step(s1, {}, m1, cfg)
    assert torch.equal(same["w"], s1["w"]) and torch.equal(mom["w"], m1["w"])


def test_bad_delta_is_refused() -> None:
    base, deltas = _inputs()
    deltas["bad"] = {"w": torch.zeros(3), "b": torch.zeros(33)}
    with pytest.raises(DeltaShapeMismatch) as err:
        outer_step(base, deltas, {}, OuterConfig())
    assert err.value.key == "bad" and err.value.name == "w"


def _digests(directory: str) -> list[str]:
    base, deltas = _inputs()
    cfg = OuterConfig(lr=0.7, momentum=0.9, nesterov=True)
    state, mom = outer_step(base, deltas, {}, cfg)
    state, mom = outer_step(state, deltas, mom, cfg)
    return [s.sha256 for s in save_shards({**state, **momentum_to_tensors(mom)}, directory)]


def test_two_processes_produce_identical_model_bytes(tmp_path) -> None:
    here = _digests(str(tmp_path / "a"))
    code = (
        "import sys; sys.path.insert(0, '.'); from tests.test_aggregate import _digests; print(*_digests(sys.argv[1]))"
    )
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "b")], capture_output=True, text=True, check=True)
    assert out.stdout.split() == here
    mom = momentum_from_tensors(momentum_to_tensors({"w": torch.ones(2)}))
    assert list(mom) == ["w"]

"""DiLoCo outer step: norm clip to clip x the round's median, fixed-order mean, Nesterov momentum by
hand, identical bytes in two processes."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from concord.client.content.weights import save_shards
from concord.client.engine.config import ConfigError, OuterConfig
from concord.validator.aggregate import (
    DeltaShapeMismatch,
    agreement_weights,
    clip_deltas,
    exact_dot,
    global_norm,
    mean_delta,
    median,
    momentum_from_tensors,
    momentum_to_tensors,
    outer_step,
    weigh_deltas,
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
    cfg = OuterConfig(lr=0.5, momentum=0.9, nesterov=True, clip=0)  # the mean as it comes (clip: below)
    s1, m1 = outer_step(base, deltas, {}, cfg)
    g = torch.tensor([-0.1, -0.1])  # -mean(delta)
    assert torch.allclose(m1["w"], g)
    assert torch.allclose(s1["w"], base["w"] - 0.5 * (g + 0.9 * g))
    s2, m2 = outer_step(s1, deltas, m1, cfg)
    m2_want = 0.9 * g + g
    assert torch.allclose(m2["w"], m2_want)
    assert torch.allclose(s2["w"], s1["w"] - 0.5 * (g + 0.9 * m2_want))
    heavy, _ = outer_step(s1, deltas, m1, OuterConfig(lr=0.5, momentum=0.9, nesterov=False, clip=0))
    assert torch.allclose(heavy["w"], s1["w"] - 0.5 * m2_want)
    # lr 1, no momentum: the model becomes base + mean delta
    plain, _ = outer_step(base, deltas, {}, OuterConfig(lr=1.0, momentum=0.0, clip=0))
    assert torch.allclose(plain["w"], torch.tensor([1.1, 2.1]))
    # no accepted delta: nothing moves
    same, mom = outer_step(s1, {}, m1, cfg)
    assert torch.equal(same["w"], s1["w"]) and torch.equal(mom["w"], m1["w"])


def test_a_delta_over_clip_times_the_median_norm_is_scaled_to_it_and_the_others_keep_their_bits() -> None:
    """Norms 3, 4, 5 and a poisoner's 100: median 4.5; clip 1 scales 5 -> 4.5 and 100 -> 4.5, clip 2
    only the poisoner (to 9), clip 0 nothing. Order of the deltas changes no bit."""
    base = {"w": torch.zeros(2), "b": torch.zeros(1)}
    deltas = {
        "a": {"w": torch.tensor([3.0, 0.0]), "b": torch.tensor([0.0])},
        "b": {"w": torch.tensor([0.0, 4.0]), "b": torch.tensor([0.0])},
        "c": {"w": torch.tensor([3.0, 0.0]), "b": torch.tensor([4.0])},
        "p": {"w": torch.tensor([-60.0, -80.0]), "b": torch.tensor([0.0])},
    }
    assert [global_norm(d) for d in deltas.values()] == [3.0, 4.0, 5.0, 100.0]
    one = clip_deltas(deltas, 1.0)
    assert one["a"] is deltas["a"] and one["b"] is deltas["b"]  # at or under the bound: untouched
    assert global_norm(one["c"]) == pytest.approx(4.5, rel=1e-7) and global_norm(one["p"]) == pytest.approx(4.5)
    assert torch.equal(one["p"]["w"], torch.tensor([-60.0, -80.0]) * torch.tensor(4.5 / 100, dtype=torch.float32))
    two = clip_deltas(deltas, 2.0)
    assert all(two[k] is deltas[k] for k in "abc") and global_norm(two["p"]) == pytest.approx(9.0)
    assert clip_deltas(deltas, 0) == deltas
    cfg = OuterConfig(lr=1.0, momentum=0.0, clip=1.0, agreement=False)
    s1, _ = outer_step(base, deltas, {}, cfg)
    s2, _ = outer_step(base, {k: deltas[k] for k in reversed(list(deltas))}, {}, cfg)
    assert torch.equal(s1["w"], s2["w"]) and torch.equal(s1["b"], s2["b"])
    want = (
        torch.tensor([3.0, 0.0]) + torch.tensor([0.0, 4.0]) + torch.tensor([2.7, 0.0]) + torch.tensor([-2.7, -3.6])
    ) / 4
    assert torch.allclose(s1["w"], want, atol=1e-6)
    assert median([3.0]) == 3.0 and median([4.0, 1.0, 3.0]) == 3.0 and median([1.0, 4.0]) == 2.5


def test_a_delta_against_the_others_weighs_nothing_and_agreeing_ones_weigh_fully() -> None:
    """Three honest deltas near one direction and a poisoner that reverses one of them: the poisoner's
    cosine with the coordinate-wise median is negative (weight 0), the honest ones weigh a_i / A
    capped at 1; the mean still divides by K = 4, so the poisoner's slot adds nothing."""
    g = torch.Generator().manual_seed(3)
    common = torch.randn(400, generator=g)
    honest = {f"h{i}": {"w": (common + 0.5 * torch.randn(400, generator=g)) * 1e-2} for i in range(3)}
    deltas = {**honest, "p": {"w": honest["h0"]["w"] * -1.0}}
    w = agreement_weights(deltas)
    assert w["p"] == 0.0 and all(0.9 < w[k] <= 1.0 for k in honest) and sorted(w.values())[-1] == 1.0
    weighed = weigh_deltas(deltas)
    assert torch.equal(weighed["p"]["w"], torch.zeros(400))
    assert all(weighed[k] is deltas[k] for k in honest if w[k] == 1.0)
    base = {"w": torch.zeros(400)}
    cfg = OuterConfig(lr=1.0, momentum=0.0, clip=0, agreement=True)  # the weights alone (clip: above)
    with_p, _ = outer_step(base, deltas, {}, cfg)
    want = sum(weighed[k]["w"] for k in sorted(honest)) / 4
    assert torch.allclose(with_p["w"], want, atol=1e-7)
    # fewer than 3 deltas, or no agreement at all: every weight is 1
    assert agreement_weights({k: honest[k] for k in ("h0", "h1")}) == {"h0": 1.0, "h1": 1.0}
    opposed = {
        "a": {"w": torch.tensor([1.0, 0.0])},
        "b": {"w": torch.tensor([-1.0, 0.0])},
        "c": {"w": torch.tensor([0.0, 0.0])},
    }
    assert agreement_weights(opposed) == {"a": 1.0, "b": 1.0, "c": 1.0}


def test_exact_dot_adds_exact_products_in_a_fixed_order() -> None:
    a = np.array([1e8, 1.0, -1e8, 3.0], dtype=np.float32)
    b = np.ones(4, dtype=np.float32)
    assert exact_dot(a, b) == 4.0  # one product per lane, lanes by fsum: exact (float32 sums give 0 or 3)
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(3000, generator=g).numpy(), torch.randn(3000, generator=g).numpy()
    want = math.fsum((x.astype(np.float64) * y.astype(np.float64)).tolist())  # the exactly rounded sum
    assert exact_dot(x, y) == pytest.approx(want, rel=1e-14, abs=1e-13)
    lanes = x.astype(np.float64) * y.astype(np.float64)  # the rule by hand: lane j sums j, j + 1024, ...
    by_hand = [sum(lanes[j::1024][i] for i in range(len(lanes[j::1024]))) for j in range(1024)]
    assert exact_dot(x, y) == math.fsum(by_hand)


def test_global_norm_is_the_exact_norm_whatever_the_tensor_split() -> None:
    g = torch.Generator().manual_seed(1)
    flat = torch.randn(5000, generator=g) * 1e-3
    whole = {"x": flat}
    split = {"a": flat[:1234], "b": flat[1234:].reshape(2, -1)}  # names sorted: a then b, the same order
    assert global_norm(whole) == global_norm(split)
    assert global_norm(whole) == pytest.approx(float(flat.double().norm()), rel=1e-14)
    assert global_norm({}) == 0.0 and global_norm({"z": torch.zeros(3)}) == 0.0
    with pytest.raises(ConfigError, match="clip"):
        OuterConfig(clip=0.5)


def test_bad_delta_is_refused() -> None:
    base, deltas = _inputs()
    deltas["bad"] = {"w": torch.zeros(3), "b": torch.zeros(33)}
    with pytest.raises(DeltaShapeMismatch) as err:
        outer_step(base, deltas, {}, OuterConfig())
    assert err.value.key == "bad" and err.value.name == "w"


def _digests(directory: str) -> list[str]:
    base, deltas = _inputs()
    deltas["f" * 64] = {n: t * 37.0 for n, t in deltas[f"{7:064x}"].items()}  # a poisoner's norm: clipped
    deltas["e" * 64] = {n: t * -5.0 for n, t in deltas[f"{3:064x}"].items()}  # and against the others: weighed
    cfg = OuterConfig(lr=0.7, momentum=0.9, nesterov=True, clip=1.0, agreement=True)
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

"""DiLoCo outer step: accepted deltas -> norm clip -> mean pseudo-gradient -> Nesterov SGD -> next model.

Computed on CPU in float32 with a fixed operation order so that honest validators produce
identical bytes (and so the same model digest):
- bounded influence, norm (cfg.clip > 0): each delta's global L2 norm n_i, the same float on every
  machine (`global_norm`: float32 values squared exactly in float64, summed lane by lane in a fixed
  order, the lanes by math.fsum, then sqrt); the round's median norm med (the mean of the two
  middle ones for an even count); a delta with n_i > clip x med is multiplied by the float32 of
  (clip x med) / n_i (float64), every other delta is left bit for bit as it came;
- bounded influence, direction (cfg.agreement, K >= 3 deltas): the coordinate-wise median c of the
  (clipped) deltas (torch.median over the K: one of the values, the lower middle for an even K);
  each delta's cosine a_i with c from dot products computed as the norms are (`exact_dot`); with A = the
  median of the a_i, a delta's weight is w_i = min(1, max(0, a_i / A)) (1 for all when A <= 0) and
  a delta with w_i < 1 is multiplied by the float32 of w_i; the sum is still divided by K. So a
  delta that points against what the others agree on counts for nothing, one that agrees at least
  as well as the median one counts fully, and no weight exceeds 1;
- deltas are summed in ascending order of their key (the submission's bundle digest, hex),
  starting from zeros, then divided by their count;
- pseudo-gradient g = -mean(delta);
- m' = momentum * m + g;  step = g + momentum * m' (Nesterov) or m' (heavy ball);
- theta' = theta - lr * step.
Momentum buffers start at zero (an empty state dict) and are saved beside the weights with
client.content.weights under the names `momentum.<param>`. No accepted delta: the model and the
momentum stay as they are.

Asynchronous rounds (asyncLevel a >= 1): a delta built on model b = baseRound (r - a <= b <= r, the
contract's window) is applied to model r with staleness s = r - b; after the bounded-influence weights
it is multiplied by the float32 of staleness_weight(s) = 1 / (1 + cfg.staleness_discount x s)
(float64), still divided by K. With cfg.staleness_rebase = c > 0 a stale delta is first rebased onto
model r, before the bounded-influence weights: d' = d - c x (theta_r - theta_b), float32 elementwise
(g = theta_r - theta_b, g x float32(c), d - that), theta_b the state of model b, the model its validators
replayed it from (first order: a delta is mostly the correction its inner steps make to theta_b, and
the rounds between b and r already made part of it). A fresh delta (s = 0) weighs exactly 1, is never
rebased and keeps its bits, so asyncLevel 0 computes what it computed before either rule existed.
(On a node: validator.next_model.)
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping

import numpy as np
import torch

from concord.client.engine.config import OuterConfig

log = logging.getLogger("concord.validator")

MOMENTUM_PREFIX = "momentum."
NORM_LANES = 1024  # global_norm's partial sums: lane j sums elements j, j + 1024, ... in order


class DeltaShapeMismatch(ValueError):
    def __init__(self, key: str, name: str, expected: tuple[int, ...], got: tuple[int, ...] | None):
        super().__init__(f"delta {key}: tensor {name!r} expected shape {expected}, got {got}")
        self.key, self.name, self.expected, self.got = key, name, expected, got


def check_deltas(base: Mapping[str, torch.Tensor], deltas: Mapping[str, Mapping[str, torch.Tensor]]) -> None:
    """Every delta has exactly the base's names and shapes; else DeltaShapeMismatch (key order)."""
    for key in sorted(deltas):
        delta = deltas[key]
        for name, t in base.items():
            d = delta.get(name)
            if d is None or tuple(d.shape) != tuple(t.shape) or set(delta) != set(base):
                raise DeltaShapeMismatch(key, name, tuple(t.shape), None if d is None else tuple(d.shape))


def mean_delta(
    base: Mapping[str, torch.Tensor], deltas: Mapping[str, Mapping[str, torch.Tensor]]
) -> dict[str, torch.Tensor]:
    """Mean of deltas (keyed by bundle digest), summed in sorted key order, float32."""
    check_deltas(base, deltas)
    total = {n: torch.zeros(t.shape, dtype=torch.float32) for n, t in base.items()}
    for key in sorted(deltas):
        for name, acc in total.items():
            acc.add_(deltas[key][name].to(torch.float32))
    return {n: acc / len(deltas) for n, acc in total.items()}


def flat32(delta: Mapping[str, torch.Tensor]) -> np.ndarray:
    """All of a delta's values as one float32 vector, tensors in name order."""
    if not delta:
        return np.zeros(0, dtype=np.float32)
    return np.concatenate([delta[n].detach().to("cpu", torch.float32).numpy().reshape(-1) for n in sorted(delta)])


def exact_dot(a: np.ndarray, b: np.ndarray) -> float:
    """sum(a * b) of two float32 vectors, the same float on every machine: each product is exact in
    float64 (24-bit mantissas), lane j (of NORM_LANES) adds products j, j + NORM_LANES, ... one by one
    in float64 (elementwise IEEE additions in a fixed order: no SIMD reassociation can change them),
    math.fsum adds the lanes exactly rounded (within ~1e-15 relative of the exact sum)."""
    prod = np.zeros(-(-a.size // NORM_LANES) * NORM_LANES, dtype=np.float64)
    prod[: a.size] = a.astype(np.float64) * b.astype(np.float64)  # [L * NORM_LANES] exact, zero padded
    lanes = np.zeros(NORM_LANES, dtype=np.float64)
    for row in prod.reshape(-1, NORM_LANES):
        lanes += row
    return math.fsum(lanes.tolist())


def global_norm(delta: Mapping[str, torch.Tensor]) -> float:
    """The L2 norm of all of a delta's values (as float32), the same float on every machine:
    sqrt(exact_dot(x, x))."""
    flat = flat32(delta)
    return math.sqrt(exact_dot(flat, flat))


def _scaled(delta: Mapping[str, torch.Tensor], factor: float) -> dict[str, torch.Tensor]:
    """delta x the float32 of ``factor`` (one rounding per element)."""
    f = torch.tensor(np.float32(factor))
    return {n: t.to(torch.float32) * f for n, t in delta.items()}


def median(values: list[float]) -> float:
    """The middle value, or the mean of the two middle ones for an even count."""
    v = sorted(values)
    mid = len(v) // 2
    return v[mid] if len(v) % 2 else (v[mid - 1] + v[mid]) / 2


def clip_deltas(deltas: Mapping[str, Mapping[str, torch.Tensor]], clip: float) -> dict[str, Mapping[str, torch.Tensor]]:
    """Each delta with global_norm > clip x median(norms) scaled down to that norm (float32 factor);
    the others, and every delta when clip = 0, returned as they are (the module's rule)."""
    if clip == 0 or not deltas:
        return dict(deltas)
    norms = {key: global_norm(d) for key, d in deltas.items()}
    bound = clip * median(list(norms.values()))
    return {key: _scaled(d, bound / norms[key]) if norms[key] > bound else d for key, d in deltas.items()}


def agreement_weights(deltas: Mapping[str, Mapping[str, torch.Tensor]]) -> dict[str, float]:
    """Each delta's weight w_i = min(1, max(0, a_i / A)): a_i its cosine with the coordinate-wise
    median of the deltas, A the median a_i (1 for every delta when there are fewer than 3 or A <= 0)."""
    keys = sorted(deltas)
    if len(keys) < 3:
        return dict.fromkeys(keys, 1.0)
    first = deltas[keys[0]]
    center = {n: torch.stack([deltas[k][n].to(torch.float32) for k in keys]).median(dim=0).values for n in first}
    c = flat32(center)
    c_norm = math.sqrt(exact_dot(c, c))
    cos = {}
    for k in keys:
        x = flat32(deltas[k])
        denom = math.sqrt(exact_dot(x, x)) * c_norm
        cos[k] = exact_dot(x, c) / denom if denom > 0 else 0.0
    typical = median(list(cos.values()))
    if typical <= 0:
        return dict.fromkeys(keys, 1.0)
    return {k: min(1.0, max(0.0, a / typical)) for k, a in cos.items()}


def weigh_deltas(deltas: Mapping[str, Mapping[str, torch.Tensor]]) -> dict[str, Mapping[str, torch.Tensor]]:
    """Each delta times its agreement weight (float32 factor); a delta of weight 1 keeps its bits."""
    weights = agreement_weights(deltas)
    return {k: d if weights[k] == 1.0 else _scaled(d, weights[k]) for k, d in deltas.items()}


class BadStaleness(ValueError):
    def __init__(self, key: str, staleness: int | None):
        super().__init__(f"delta {key}: staleness must be an int >= 0, got {staleness!r}")
        self.key, self.staleness = key, staleness


def staleness_weight(staleness: int, cfg: OuterConfig) -> float:
    """The weight of a delta built on model r - ``staleness`` in model r's outer step:
    1 / (1 + cfg.staleness_discount x staleness), exactly 1.0 for a fresh delta."""
    return 1.0 / (1.0 + cfg.staleness_discount * staleness)


def staleness_of(staleness: Mapping[str, int], key: str) -> int:
    """A delta's staleness r - baseRound: an int >= 0, else BadStaleness naming the delta."""
    s = staleness.get(key)
    if not isinstance(s, int) or isinstance(s, bool) or s < 0:
        raise BadStaleness(key, s)
    return s


def discount_stale(
    deltas: Mapping[str, Mapping[str, torch.Tensor]], staleness: Mapping[str, int], cfg: OuterConfig
) -> dict[str, Mapping[str, torch.Tensor]]:
    """Each delta times its staleness weight (float32 factor); a delta of weight 1 keeps its bits."""
    out: dict[str, Mapping[str, torch.Tensor]] = {}
    for key in sorted(deltas):
        s = staleness_of(staleness, key)
        w = staleness_weight(s, cfg)
        out[key] = deltas[key] if w == 1.0 else _scaled(deltas[key], w)
    return out


class MissingBase(ValueError):
    def __init__(self, key: str, staleness: int):
        super().__init__(f"delta {key}: staleness {staleness} needs its base model's state to be rebased")
        self.key, self.staleness = key, staleness


def rebase_stale(
    deltas: Mapping[str, Mapping[str, torch.Tensor]],
    model: Mapping[str, torch.Tensor],
    bases: Mapping[str, Mapping[str, torch.Tensor]] | None,
    staleness: Mapping[str, int],
    cfg: OuterConfig,
) -> dict[str, Mapping[str, torch.Tensor]]:
    """Each stale delta (staleness > 0) rebased onto model r: d - c x (model r - model b), c the float32
    of cfg.staleness_rebase and model b = ``bases[key]`` (float32, elementwise in this order: g = r - b,
    g x c, d - that). A fresh delta, and every delta when c = 0, keeps its bits (module docstring)."""
    out: dict[str, Mapping[str, torch.Tensor]] = {}
    c = torch.tensor(np.float32(cfg.staleness_rebase))
    for key in sorted(deltas):
        s = staleness_of(staleness, key)
        if cfg.staleness_rebase == 0 or s == 0:
            out[key] = deltas[key]
            continue
        base = None if bases is None else bases.get(key)
        if base is None:
            raise MissingBase(key, s)
        d = deltas[key]
        b32 = {n: t.detach().to("cpu", torch.float32) for n, t in base.items()}  # as the outer step's base32
        out[key] = {n: d[n].detach().to("cpu", torch.float32) - (model[n] - b32[n]) * c for n in d}
    return out


def outer_step(
    base: Mapping[str, torch.Tensor],
    deltas: Mapping[str, Mapping[str, torch.Tensor]],
    momentum: Mapping[str, torch.Tensor],
    cfg: OuterConfig,
    staleness: Mapping[str, int] | None = None,
    bases: Mapping[str, Mapping[str, torch.Tensor]] | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(next model state, next momentum state) from the base state and accepted deltas; ``staleness``
    (key -> r - baseRound, default 0 for every delta) discounts stale deltas after the bounded-influence
    weights, and with cfg.staleness_rebase > 0 rebases them first onto ``base`` from ``bases`` (key -> the
    state of model baseRound; needed for every stale delta) (module docstring)."""
    base32 = {n: t.detach().to("cpu", torch.float32) for n, t in base.items()}
    if not deltas:
        return {n: t.clone() for n, t in base32.items()}, {n: t.clone() for n, t in momentum.items()}
    check_deltas(base32, deltas)
    if staleness is not None:
        deltas = rebase_stale(deltas, base32, bases, staleness, cfg)
    bounded = clip_deltas(deltas, cfg.clip)
    weighed = weigh_deltas(bounded) if cfg.agreement else bounded
    if staleness is not None:
        weighed = discount_stale(weighed, staleness, cfg)
    avg = mean_delta(base32, weighed)
    new_state, new_mom = {}, {}
    for name, theta in base32.items():
        g = -avg[name]
        m = momentum.get(name)
        m_new = g.clone() if m is None else m.to(torch.float32) * cfg.momentum + g
        if cfg.momentum == 0:
            step = g
        elif cfg.nesterov:
            step = g + cfg.momentum * m_new
        else:
            step = m_new
        new_state[name] = theta - cfg.lr * step
        new_mom[name] = m_new
    return new_state, new_mom


def momentum_to_tensors(momentum: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Momentum buffers under `momentum.<param>` names, for client.content.weights.save_shards."""
    return {MOMENTUM_PREFIX + n: t for n, t in momentum.items()}


def momentum_from_tensors(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {n[len(MOMENTUM_PREFIX) :]: t for n, t in tensors.items() if n.startswith(MOMENTUM_PREFIX)}

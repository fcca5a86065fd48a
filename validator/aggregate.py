"""DiLoCo outer step: accepted deltas -> norm clip -> mean pseudo-gradient -> Nesterov SGD -> next model.

Computed on CPU in float32 with a fixed operation order so that honest validators produce
identical bytes (and so the same model digest):
- bounded influence (cfg.clip > 0): each delta's global L2 norm n_i is computed exactly rounded
  (`global_norm`: float32 values squared exactly in float64, summed lane by lane in a fixed order,
  the lanes by math.fsum, then sqrt); the round's median norm med (the mean of the two middle
  ones for an even count); a delta with n_i > clip x med is multiplied by the float32 of
  (clip x med) / n_i (float64), every other delta is left bit for bit as it came;
- deltas are summed in ascending order of their key (the submission's bundle digest, hex),
  starting from zeros, then divided by their count;
- pseudo-gradient g = -mean(delta);
- m' = momentum * m + g;  step = g + momentum * m' (Nesterov) or m' (heavy ball);
- theta' = theta - lr * step.
Momentum buffers start at zero (an empty state dict) and are saved beside the weights with
client.content.weights under the names `momentum.<param>`. No accepted delta: the model and the
momentum stay as they are.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch

from client.engine.config import OuterConfig

MOMENTUM_PREFIX = "momentum."
NORM_LANES = 1024  # global_norm's partial sums: lane j sums elements j, j + 1024, ... in order


class DeltaShapeMismatch(ValueError):
    def __init__(self, key: str, name: str, expected: tuple[int, ...], got: tuple[int, ...] | None):
        super().__init__(f"delta {key}: tensor {name!r} expected shape {expected}, got {got}")
        self.key, self.name, self.expected, self.got = key, name, expected, got


def mean_delta(
    base: Mapping[str, torch.Tensor], deltas: Mapping[str, Mapping[str, torch.Tensor]]
) -> dict[str, torch.Tensor]:
    """Mean of deltas (keyed by bundle digest), summed in sorted key order, float32."""
    total = {n: torch.zeros(t.shape, dtype=torch.float32) for n, t in base.items()}
    for key in sorted(deltas):
        delta = deltas[key]
        for name, acc in total.items():
            d = delta.get(name)
            if d is None or tuple(d.shape) != tuple(acc.shape) or set(delta) != set(total):
                raise DeltaShapeMismatch(key, name, tuple(acc.shape), None if d is None else tuple(d.shape))
            acc.add_(d.to(torch.float32))
    return {n: acc / len(deltas) for n, acc in total.items()}


def global_norm(delta: Mapping[str, torch.Tensor]) -> float:
    """The L2 norm of all of a delta's values (as float32), the same float on every machine: each
    square is exact in float64, lane j (of NORM_LANES) adds elements j, j + NORM_LANES, ... of the
    tensors in name order one by one (elementwise IEEE additions in a fixed order: no SIMD
    reassociation can change them), math.fsum adds the lanes exactly rounded, then sqrt."""
    if not delta:
        return 0.0
    flat = np.concatenate([delta[n].detach().to("cpu", torch.float32).numpy().reshape(-1) for n in sorted(delta)])
    sq = np.zeros(-(-flat.size // NORM_LANES) * NORM_LANES, dtype=np.float64)
    sq[: flat.size] = flat.astype(np.float64) ** 2  # [L * NORM_LANES] exact squares, zero padded
    lanes = np.zeros(NORM_LANES, dtype=np.float64)
    for row in sq.reshape(-1, NORM_LANES):
        lanes += row
    return math.sqrt(math.fsum(lanes.tolist()))


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
    out: dict[str, Mapping[str, torch.Tensor]] = {}
    for key, d in deltas.items():
        if norms[key] > bound:
            factor = torch.tensor(np.float32(bound / norms[key]))  # float32 scalar: one rounding per element
            out[key] = {n: t.to(torch.float32) * factor for n, t in d.items()}
        else:
            out[key] = d
    return out


def outer_step(
    base: Mapping[str, torch.Tensor],
    deltas: Mapping[str, Mapping[str, torch.Tensor]],
    momentum: Mapping[str, torch.Tensor],
    cfg: OuterConfig,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(next model state, next momentum state) from the base state and accepted deltas."""
    base32 = {n: t.detach().to("cpu", torch.float32) for n, t in base.items()}
    if not deltas:
        return {n: t.clone() for n, t in base32.items()}, {n: t.clone() for n, t in momentum.items()}
    avg = mean_delta(base32, clip_deltas(deltas, cfg.clip))
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

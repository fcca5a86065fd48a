"""DiLoCo outer step: accepted deltas -> mean pseudo-gradient -> Nesterov SGD -> next model.

Computed on CPU in float32 with a fixed operation order so that honest validators produce
identical bytes (and so the same model digest):
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

from collections.abc import Mapping

import torch

from client.engine.config import OuterConfig

MOMENTUM_PREFIX = "momentum."


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
    avg = mean_delta(base32, deltas)
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

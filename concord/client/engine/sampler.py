"""Seeded sampling: Gumbel-max with noise that anyone can recompute from public values.

Sample j of prompt i in round r of task T by trainer A gets a 64-bit key
    key = sha256("concord.sample.v1" | T:32B | r:32B | A:20B | i:4B | j:4B)[:8]  (big-endian)
and token t (0-based within the completion) over vocabulary entry v gets the uniform
    u = ((mix(mix(key ^ mix(t*G + 1)) + (v+1)*G) >> 11) + 0.5) / 2^53
with G = 0x9E3779B97F4A7C15, mix = the splitmix64 finalizer, all arithmetic mod 2^64, and
Gumbel noise g = -log(-log(u)). The chosen token is
argmax_v(logits_v / temperature + g_v), computed in float64; temperature 0 means argmax of
the logits (no noise). The counter-based form is vectorised over samples and vocabulary.
Prompts use a separate domain: prompt_seed(T, r, A, i).
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch

GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


class BadTrainerAddress(ValueError):
    def __init__(self, trainer: str):
        super().__init__(f"trainer must be a 20-byte hex address, got {trainer!r}")
        self.trainer = trainer


def address_bytes(trainer: str) -> bytes:
    """20 raw bytes of a 0x-prefixed hex address (case-insensitive, so checksummed forms agree)."""
    body = trainer[2:] if trainer.lower().startswith("0x") else trainer
    try:
        raw = bytes.fromhex(body)
    except ValueError:
        raise BadTrainerAddress(trainer) from None
    if len(raw) != 20:
        raise BadTrainerAddress(trainer)
    return raw


def _digest(domain: bytes, task_id: int, round_: int, trainer: str, *idx: int) -> int:
    data = domain + task_id.to_bytes(32, "big") + round_.to_bytes(32, "big") + address_bytes(trainer)
    data += b"".join(i.to_bytes(4, "big") for i in idx)
    return int.from_bytes(hashlib.sha256(data).digest()[:8], "big")


def prompt_seed(task_id: int, round_: int, trainer: str, i: int) -> int:
    """Seed of prompt i for (task, round, trainer): the environment draws the prompt from it."""
    return _digest(b"concord.prompt.v1", task_id, round_, trainer, i)


def sample_key(task_id: int, round_: int, trainer: str, i: int, j: int) -> int:
    """64-bit key of sample j of prompt i; token t's noise is a counter-based function of (key, t)."""
    return _digest(b"concord.sample.v1", task_id, round_, trainer, i, j)


def sample_keys(task_id: int, round_: int, trainer: str, pairs: list[tuple[int, int]]) -> np.ndarray:
    """Keys [N] uint64 for (i, j) pairs."""
    return np.array([sample_key(task_id, round_, trainer, i, j) for i, j in pairs], dtype=np.uint64)


def _mix(z: np.ndarray) -> np.ndarray:
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    mixed: np.ndarray = z ^ (z >> np.uint64(31))
    return mixed


def gumbel_noise(keys: np.ndarray, steps: np.ndarray | int, vocab: int) -> np.ndarray:
    """Gumbel noise [..., V] float64 for keys [...] (uint64) at completion steps [...] (broadcast)."""
    keys = np.asarray(keys, dtype=np.uint64)
    steps = np.broadcast_to(np.asarray(steps, dtype=np.uint64), keys.shape)
    with np.errstate(over="ignore"):
        s = _mix(keys ^ _mix(steps * GOLDEN + np.uint64(1)))  # [...]
        v = (np.arange(vocab, dtype=np.uint64) + np.uint64(1)) * GOLDEN  # [V]
        x = _mix(s[..., None] + v)  # [..., V]
    u = ((x >> np.uint64(11)).astype(np.float64) + 0.5) * (1.0 / 9007199254740992.0)  # (0, 1)
    return -np.log(-np.log(u))


def perturbed_scores(
    logits: torch.Tensor, keys: np.ndarray, steps: np.ndarray | int, temperature: float
) -> torch.Tensor:
    """Scores [..., V] float64 whose argmax is the seeded choice; logits [..., V], keys [...]."""
    scaled = logits.detach().to(torch.float64)
    if temperature == 0:
        return scaled
    noise = torch.from_numpy(gumbel_noise(keys, steps, logits.shape[-1]))
    return scaled / temperature + noise


def choose(logits: torch.Tensor, keys: np.ndarray, steps: np.ndarray | int, temperature: float) -> torch.Tensor:
    """Seeded choice [...] int64 from logits [..., V]."""
    return perturbed_scores(logits, keys, steps, temperature).argmax(dim=-1)


def top2_gap(scores: torch.Tensor) -> torch.Tensor:
    """Best minus second-best perturbed score [...]: a validator tolerates mismatches only below a gap."""
    top = scores.topk(2, dim=-1).values
    return top[..., 0] - top[..., 1]

"""Which rows and inner steps one validator checks expensively (docs/PROTOCOL.md, "Sampled checks").

Rule. Under ``validation.mode = "sampled"`` the expensive checks of one submission are drawn from
the round's check seed (fixed on chain after the submit phase closed; IConcord.fixSeed), the
validator's own address and the submission's bundle digest:

    score(tag, a, b) = sha256(seed[32] | validator[20] | bundle_digest[32] | tag | a[4] | b[4])
    rows:  of the H x N rollouts (inner step k, row n), the m = ceil(row_fraction * H * N) with the
           smallest score(b"row", k, n) get the prefill checks (TOPLOC + sampling replay) under
           theta_k;
    steps: the s = min(replay_steps, H) inner steps with the smallest score(b"step", k, 0) are
           replayed alone: inner state k (theta_k and the optimizer state the submission commits
           to; theta_0 and a fresh optimizer for k = 0) -> one GRPO step on the verified batch k
           -> compared with inner state k + 1 (for k = H - 1: theta_base + delta).

Every input is public once the seed is fixed, so anyone can recompute a validator's sample and
audit its verdict; none of it is known when the trainer commits its bundle (the seed comes from a
block after the submit phase closed). Different validators draw different samples, so more
validators cover more rows. ``mode = "full"`` checks every row and every step.

The cheap checks (schema, prompts, rewards, work units, proof root) always run on everything.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

from client.digest import Digest
from client.engine.config import ValidationConfig


class SampleInputError(ValueError):
    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"sample {field}: {reason}")
        self.field, self.reason = field, reason


@dataclass(frozen=True)
class CheckSample:
    """What one validator checks expensively in one submission: rows per inner step, steps to replay."""

    rows: tuple[tuple[int, ...], ...]  # rows[k] = sorted row indexes of inner step k that get the prefill checks
    steps: tuple[int, ...]  # sorted inner steps replayed alone
    full: bool  # every row and every step (mode "full", or a sample that covers everything)

    def states_needed(self) -> tuple[int, ...]:
        """Inner states (1..H-1) this sample reads: theta_k for sampled rows and replayed steps of
        step k, and state k + 1 to compare a replay of step k with."""
        h = len(self.rows)
        need = {k for k in range(1, h) if self.rows[k] or k in self.steps}
        need |= {k + 1 for k in self.steps if k + 1 < h}
        return tuple(sorted(need))

    @property
    def row_count(self) -> int:
        return sum(len(r) for r in self.rows)


def full_sample(inner_steps: int, rows_per_step: int) -> CheckSample:
    rows = tuple(tuple(range(rows_per_step)) for _ in range(inner_steps))
    return CheckSample(rows, tuple(range(inner_steps)), True)


def _score(seed: bytes, validator: bytes, bundle: bytes, tag: bytes, a: int, b: int) -> bytes:
    return hashlib.sha256(seed + validator + bundle + tag + a.to_bytes(4, "big") + b.to_bytes(4, "big")).digest()


def _address_bytes(validator: str) -> bytes:
    text = validator[2:] if validator.lower().startswith("0x") else validator
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raw = b""
    if len(raw) != 20:
        raise SampleInputError("validator", f"expected a 20-byte hex address, got {validator!r}")
    return raw


def rows_to_check(total: int, row_fraction: float) -> int:
    """m = ceil(row_fraction * total), at least 1 and at most total."""
    return min(total, max(1, math.ceil(row_fraction * total - 1e-9)))


def draw_sample(
    seed: bytes,
    validator: str,
    bundle_digest: Digest,
    inner_steps: int,
    rows_per_step: int,
    vcfg: ValidationConfig,
) -> CheckSample:
    """This validator's sample of one submission (the rule in the module docstring)."""
    if vcfg.mode == "full":
        return full_sample(inner_steps, rows_per_step)
    if len(seed) != 32:
        raise SampleInputError("seed", f"expected 32 bytes, got {len(seed)}")
    if inner_steps < 1 or rows_per_step < 1:
        raise SampleInputError("shape", f"need >= 1 inner step and row, got {inner_steps} x {rows_per_step}")
    who, bundle = _address_bytes(validator), bundle_digest.bytes
    total = inner_steps * rows_per_step
    m = rows_to_check(total, vcfg.row_fraction)
    ranked = sorted(
        ((k, n) for k in range(inner_steps) for n in range(rows_per_step)),
        key=lambda kn: _score(seed, who, bundle, b"row", kn[0], kn[1]),
    )
    chosen: list[list[int]] = [[] for _ in range(inner_steps)]
    for k, n in ranked[:m]:
        chosen[k].append(n)
    s = min(vcfg.replay_steps, inner_steps)
    steps = sorted(sorted(range(inner_steps), key=lambda k: _score(seed, who, bundle, b"step", k, 0))[:s])
    rows = tuple(tuple(sorted(r)) for r in chosen)
    return CheckSample(rows, tuple(steps), m == total and s == inner_steps)


# ----------------------------------------------------------------------------- detection probability


def p_rows_hit(total: int, checked: int, touched: int) -> float:
    """P(a uniform sample of ``checked`` of ``total`` rows contains at least one of ``touched`` rows)
    (hypergeometric): 1 - C(total - touched, checked) / C(total, checked)."""
    if touched <= 0 or checked <= 0:
        return 0.0
    if touched + checked > total:
        return 1.0
    miss = 1.0
    for i in range(checked):
        miss *= (total - touched - i) / (total - i)
    return 1.0 - miss


def p_majority(validators: int, p_one: float) -> float:
    """P(a strict majority of ``validators`` independent samples, each catching with ``p_one``,
    catch): what a slash needs on chain (a strict majority of revealing validators reject)."""
    need = validators // 2 + 1
    return sum(
        math.comb(validators, j) * p_one**j * (1 - p_one) ** (validators - j) for j in range(need, validators + 1)
    )


def breakeven_slash(gain: float, p_detect: float) -> float:
    """The smallest slash at which a cheat with per-round detection ``p_detect`` and gain ``gain``
    (the reward it takes when not caught) has negative expected value:
    EV = (1 - p) * gain - p * slash < 0  <=>  slash > gain * (1 - p) / p."""
    if p_detect <= 0:
        return math.inf
    return gain * (1 - p_detect) / p_detect

"""Which rows and inner steps one validator checks expensively (docs/PROTOCOL.md, "Sampled checks").

Rule. Under ``validation.mode = "sampled"`` the expensive checks of one submission are drawn from
the round's check seed (fixed on chain after the submit phase closed), the validator's own address
and the submission's bundle digest, every one of them from the validator's own ranking:

    rank(tag, a, b) = sha256(seed[32] | validator[20] | bundle_digest[32] | tag | a[4] | b[4])
    rows:  m = ceil(row_fraction * H * N) of the H x N rollouts (inner step k, row n): the m with
           the smallest rank(b"row", k, n); they get the prefill checks (TOPLOC + sampling replay)
           under theta_k;
    steps: when the submission is this validator's to replay, s = min(replay_steps, H) inner steps,
           the s with the smallest rank(b"step", k, 0); each is replayed alone: inner state k
           (theta_k and the optimizer state the submission commits to; theta_0 and a fresh
           optimizer for k = 0) -> one GRPO step on the verified batch k -> compared with the
           committed inner state k + 1. Else none.
    replay: the submission is this validator's to replay when replay_fraction = 1 (the default) or
           int(rank(b"replay", 0, 0)) < replay_fraction x 2^256: probability q = replay_fraction,
           independent per validator and of its rows.

Replaying a fraction q (issue 24 item 5: on the LM the replay costs about what the trainer's own
training did). A cheat only the replay sees (a trainer that skips its training) is caught by one
validator with q; a failed replay is flagged like a failed row (a STEP flag), so every honest
validator replays that submission and the round catches it with 1 - (1 - q)^V. Who chooses the
draw: nobody before the trainer commits its bundle digest (the seed is fixed after the submit
phase); after, the seed is the validators' commit-reveal, so m colluding validators that reveal
last pick among 2^m seeds at the price of m slashes. That helps a colluding validator skip a replay
(it could vote accept anyway), never the cheater against an honest validator's own draw, which
hashes that validator's address. Who can stall it: a validator withholding its share stalls the
seed as for the rows (validator.shares); the replay draw adds no wait of its own.

Why every sample is the validator's own: a validator whose sample fails a row or a step flags it
(validator.flags: submission, row or step, check) before the commit deadline, and every honest
validator re-checks exactly what is flagged before it commits, so a cheat one honest validator
catches is rejected by all of them. Detection per round then grows with the number of validators:
a cheat touching t of T rows or steps, each validator checking c of them, is caught with
1 - (1 - p_hit(T, c, t))^V (a one-step forger, H = 10, replay_steps = 1: 1 - 0.9^V, 0.271 at
V = 3, 0.41 at V = 5). Every input is public once the seed is fixed, so anyone can recompute a
validator's sample and audit its verdict; none of it is known when the trainer commits its bundle.
``mode = "full"`` checks every row and every step.

The cheap checks (schema, prompts, rewards, work units, proof root, and delta = theta_H - theta_base
from the committed state H, bit for bit) always run on everything.
"""

from __future__ import annotations

import functools
import hashlib
import heapq
import math
from collections.abc import Callable
from dataclasses import dataclass

from concord.client.digest import Digest
from concord.client.engine.config import ValidationConfig


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
        """Inner states (1..H) this sample reads: theta_k for the sampled rows and the replay of step
        k, state k + 1 to compare that replay with, and state H (the delta's check, always)."""
        h = len(self.rows)
        need = {k for k in range(1, h) if self.rows[k] or k in self.steps}
        need |= {k + 1 for k in self.steps} | {h}
        return tuple(sorted(need))

    @property
    def row_count(self) -> int:
        return sum(len(r) for r in self.rows)


def full_sample(inner_steps: int, rows_per_step: int) -> CheckSample:
    rows = tuple(tuple(range(rows_per_step)) for _ in range(inner_steps))
    return CheckSample(rows, tuple(range(inner_steps)), True)


def merge(sample: CheckSample, extra: CheckSample) -> CheckSample:
    """Every row and step of ``sample`` and of ``extra`` (one submission's shape): a validator's own
    sample together with the rows and steps others flagged (validator.flags.flagged_sample)."""
    if len(sample.rows) != len(extra.rows):
        raise SampleInputError("shape", f"samples of {len(sample.rows)} and {len(extra.rows)} inner steps")
    rows = tuple(tuple(sorted(set(a) | set(b))) for a, b in zip(sample.rows, extra.rows, strict=True))
    return CheckSample(rows, tuple(sorted(set(sample.steps) | set(extra.steps))), sample.full or extra.full)


def _ranking(seed: bytes, validator: bytes, bundle: bytes, tag: bytes) -> Callable[[tuple[int, int]], bytes]:
    """(a, b) -> sha256(seed | validator | bundle | tag | a[4] | b[4]), hashing the shared prefix once."""
    head = hashlib.sha256(seed + validator + bundle + tag)

    def score(ab: tuple[int, int]) -> bytes:
        h = head.copy()
        h.update(ab[0].to_bytes(4, "big") + ab[1].to_bytes(4, "big"))
        return h.digest()

    return score


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
    rank = functools.partial(_ranking, seed, _address_bytes(validator), bundle_digest.bytes)
    total = inner_steps * rows_per_step
    m = rows_to_check(total, vcfg.row_fraction)
    cells = [(k, n) for k in range(inner_steps) for n in range(rows_per_step)]
    chosen: list[list[int]] = [[] for _ in range(inner_steps)]
    for k, n in heapq.nsmallest(m, cells, key=rank(b"row")):  # = sorted(cells, key=...)[:m]
        chosen[k].append(n)
    s = min(vcfg.replay_steps, inner_steps) if replays(rank(b"replay")((0, 0)), vcfg.replay_fraction) else 0
    steps = sorted(k for k, _ in heapq.nsmallest(s, [(k, 0) for k in range(inner_steps)], key=rank(b"step")))
    rows = tuple(tuple(sorted(r)) for r in chosen)
    return CheckSample(rows, tuple(steps), m == total and s == inner_steps)


def replays(score: bytes, replay_fraction: float) -> bool:
    """Whether a submission is this validator's to replay: always at replay_fraction 1, else when its
    32-byte rank, read as an integer, is below replay_fraction x 2^256 (the rule in the module doc)."""
    return replay_fraction >= 1 or int.from_bytes(score, "big") < replay_fraction * 2.0**256


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


def p_one_caught(p_rows: float, replay_fails: bool, replay_fraction: float, has_steps: bool) -> float:
    """P(one validator's own sample catches a cheat): its rows hold a changed row (``p_rows``), or the
    submission is its to replay (``replay_fraction``, independent of the rows) with a step in the
    sample (``has_steps``) and the replay fails: 1 - (1 - p_rows) x (1 - q [replay fails])."""
    p_replay = replay_fraction if (replay_fails and has_steps) else 0.0
    return 1.0 - (1.0 - p_rows) * (1.0 - p_replay)


def p_any(validators: int, p_one: float) -> float:
    """P(at least one of ``validators`` independent own samples, each catching with ``p_one``, catches):
    the slash probability under flags when every validator is honest (one flag makes every honest
    validator re-check and reject): 1 - (1 - p_one)^V."""
    return 1.0 - (1.0 - p_one) ** validators


def p_flagged(total: int, checked: int, touched: int, validators: int) -> tuple[float, float]:
    """(per validator, per round) probabilities that a cheat touching ``touched`` of ``total`` rows
    (or steps) is caught when each validator checks its own ``checked`` of them and flags what fails."""
    p_one = p_rows_hit(total, checked, touched)
    return p_one, p_any(validators, p_one)


def p_majority(validators: int, p_one: float) -> float:
    """P(a strict majority of ``validators`` independent samples, each catching with ``p_one``,
    catch): what a slash would need without flags (a strict majority of revealing validators reject)."""
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

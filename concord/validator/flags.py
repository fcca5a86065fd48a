"""Flags: where a validator's own sample found a fault, for every other validator to re-check
(docs/PROTOCOL.md, "Sampled checks"; issue 21).

Rule. Each validator checks its own sample of each submission (validator.sampling). When a sampled
row or replayed step fails, it flags that item before the commit deadline; every honest validator
re-checks exactly the flagged items (``flagged_sample``: those rows and steps, plus the cheap checks
it runs on everything anyway) before it commits, and rejects when one fails. So a cheat that one
honest validator catches is rejected by every honest validator, and detection per round is
1 - (1 - p_one)^V over V validators (validator.sampling.p_any).

What is flagged: only a failure of an expensive, sampled check (a row's TOPLOC or sampling replay
under theta_k, a step's replay from inner state k), one item per rejected submission (the first
failing row, or the step). A cheap check failure (schema, prompts, rewards, lengths and PAD, work
units, proof root, delta = theta_H - theta_base) needs no flag: every validator runs those on
everything and reaches the same verdict alone.

One flag on chain is one uint256 word (the layout fixed with the contract, low bit first):

    bits   0..31   submission index in the round
    bits  32..39   kind: 1 = ROW (row n of inner step k), 2 = STEP (the replay of inner step k; n = 0)
    bits  40..71   inner step k
    bits  72..103  row n
    bits 104..111  check code (CHECK_CODES)
    bits 112..255  zero

Bound on false flags: a validator posts at most MAX_FLAGS words per round (the contract's bound),
and each flagged item costs a re-checker one step replay or the prefill of one row (plus the cheap
checks of that submission, which it runs anyway). So one round's re-check work per validator is at
most MAX_FLAGS x (number of validators) items whatever the flaggers do; a flag that re-checks clean
changes nothing and costs its flagger its own gas.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from concord.validator.sampling import CheckSample
from concord.validator.verdict import Verdict

MAX_FLAGS = 8  # words per validator and round (the contract's bound)
ROW, STEP = 1, 2  # FlagItem.kind
CHECK_CODES: dict[str, int] = {  # check name <-> code (bits 104..111); 0 is no check
    "schema": 1,
    "prompts": 2,
    "toploc": 3,
    "sampling": 4,
    "rewards": 5,
    "work_units": 6,
    "training_replay": 7,
    "proof_root": 8,
}
CHECK_NAMES = {code: name for name, code in CHECK_CODES.items()}
ROW_CHECKS = ("toploc", "sampling")  # flagged as ROW items
STEP_CHECKS = ("training_replay",)  # flagged as a STEP item (only a replay of step k >= 0)

_U32, _U8 = (1 << 32) - 1, (1 << 8) - 1


class FlagError(ValueError):
    """A flag word or item that breaks the layout: ``field`` names the part, ``value`` what it held."""

    def __init__(self, field: str, value: int, reason: str) -> None:
        super().__init__(f"flag {field} = {value}: {reason}")
        self.field, self.value, self.reason = field, value, reason


@dataclass(frozen=True)
class FlagItem:
    """One flagged item: row ``row`` of inner step ``step`` (ROW), or the replay of step ``step`` (STEP,
    row 0), of submission ``submission`` of the round, failing check ``check`` (a CHECK_CODES value)."""

    submission: int
    kind: int
    step: int
    row: int
    check: int

    def __post_init__(self) -> None:
        for name in ("submission", "step", "row"):
            value = getattr(self, name)
            if type(value) is not int or not 0 <= value <= _U32:
                raise FlagError(name, value, "expected a u32")
        if self.kind not in (ROW, STEP):
            raise FlagError("kind", self.kind, f"expected {ROW} (row) or {STEP} (step)")
        if self.check not in CHECK_NAMES:
            raise FlagError("check", self.check, f"expected one of {sorted(CHECK_NAMES)}")
        if self.kind == STEP and self.row != 0:
            raise FlagError("row", self.row, "a STEP flag has row 0")

    def to_word(self) -> int:
        """The uint256 the contract stores (layout in the module docstring)."""
        return self.submission | self.kind << 32 | self.step << 40 | self.row << 72 | self.check << 104

    @staticmethod
    def from_word(word: int) -> FlagItem:
        """The inverse of to_word; FlagError for a word no FlagItem encodes to (set high bits included)."""
        if type(word) is not int or not 0 <= word < 1 << 256:
            raise FlagError("word", word if type(word) is int else -1, "expected a uint256")
        if word >> 112:
            raise FlagError("word", word, "bits 112..255 must be zero")
        return FlagItem(
            submission=word & _U32,
            kind=(word >> 32) & _U8,
            step=(word >> 40) & _U32,
            row=(word >> 72) & _U32,
            check=(word >> 104) & _U8,
        )

    @property
    def check_name(self) -> str:
        return CHECK_NAMES[self.check]


def flags_from_verdict(submission: int, verdict: Verdict) -> tuple[FlagItem, ...]:
    """What a rejecting verdict of a sampled check makes this validator flag: the first failing row of
    a failed row check, or the failed step of a replay; nothing for an accepted verdict or a cheap
    check's failure (every validator sees that alone)."""
    if verdict.accepted:
        return ()
    result = verdict.result(verdict.failed_check)
    ev = result.evidence
    step = int(ev.get("step", ev.get("worst_step", -1)))  # the LM's whole-round replay names its worst step
    code = CHECK_CODES[result.name]
    if result.name in ROW_CHECKS and result.rows and step >= 0:
        return (FlagItem(submission, ROW, step, result.rows[0], code),)
    if result.name in STEP_CHECKS and step >= 0:  # step -1: the delta-vs-state link, a cheap check
        return (FlagItem(submission, STEP, step, 0, code),)
    return ()


def round_flags(items: Iterable[FlagItem]) -> tuple[FlagItem, ...]:
    """The words one validator posts for a round: its items, one per submission at most (the first in
    submission order), at most MAX_FLAGS of them."""
    first: dict[int, FlagItem] = {}
    for item in sorted(items, key=lambda f: f.to_word()):
        first.setdefault(item.submission, item)
    return tuple(first[s] for s in sorted(first))[:MAX_FLAGS]


def flagged_sample(items: Iterable[FlagItem], inner_steps: int, rows_per_step: int) -> CheckSample:
    """The sample that re-checks exactly ``items`` (one submission's flags, from any validators): their
    rows and their steps. An item outside the submission's shape (step >= H, row >= N) flags nothing:
    a false flag costs no re-check beyond the cheap checks. Run it with the validator's own sample
    (validator.sampling.merge) or alone after it, through the same walk (validator.pipeline.verify)."""
    rows: list[set[int]] = [set() for _ in range(inner_steps)]
    steps: set[int] = set()
    for item in items:
        if item.step >= inner_steps:
            continue
        if item.kind == ROW and item.row < rows_per_step:
            rows[item.step].add(item.row)
        elif item.kind == STEP:
            steps.add(item.step)
    return CheckSample(tuple(tuple(sorted(r)) for r in rows), tuple(sorted(steps)), False)

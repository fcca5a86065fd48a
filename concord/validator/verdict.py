"""A check's outcome and a submission's verdict (DESIGN.md section 6): what every check of validator.pipeline
returns, what the evidence documents (validator.store) and flags (validator.flags) are made of."""

from __future__ import annotations

from dataclasses import dataclass

CHECKS = ("schema", "prompts", "toploc", "sampling", "rewards", "work_units", "training_replay", "proof_root")


@dataclass(frozen=True)
class CheckResult:
    """One check's outcome. ``evidence`` holds numbers only, with ``step`` = the inner step it judged
    (-1 for a whole-submission check); ``rows`` = the rows of that step that failed a row check (TOPLOC,
    sampling replay), in row order: where validator.flags points other validators."""

    name: str
    ok: bool
    evidence: dict[str, float]
    rows: tuple[int, ...] = ()


@dataclass(frozen=True)
class Verdict:
    accepted: bool
    failed_check: str  # "" when accepted
    results: tuple[CheckResult, ...]

    def result(self, name: str) -> CheckResult:
        """The last result of the named check (checks run once per inner step)."""
        return [r for r in self.results if r.name == name][-1]


class Run:
    """Checks in protocol order: ``failed(result)`` records one and gives the rejecting Verdict when it
    failed (the first failure rejects), ``accepted()`` the Verdict once all passed."""

    def __init__(self) -> None:
        self.results: list[CheckResult] = []

    def failed(self, r: CheckResult | None) -> Verdict | None:
        """``r`` recorded (None: no check to record); the rejecting Verdict when it failed."""
        if r is None:
            return None
        self.results.append(r)
        return None if r.ok else Verdict(False, r.name, tuple(self.results))

    def accepted(self) -> Verdict:
        return Verdict(True, "", tuple(self.results))

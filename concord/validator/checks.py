"""The validator's half of the workload registry (client.runtime.workload): each model kind's checks, by
Workload.kind. The walk is one (validator.pipeline.verify); what a kind computes is its KindChecks:

    "tiny"  validator.tiny_checks   a bundle of the tiny transformer (client.runtime.tiny_work.TinyWork)
    "lm"    validator.lm_checks     an LM submission, LoRA adapters (client.runtime.lm_work.LMWork)

No other validator module asks which kind a task is (tests/test_layout.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from concord.client.engine.config import ValidationConfig
from concord.validator import lm_checks, tiny_checks
from concord.validator.sampling import CheckSample
from concord.validator.verdict import Verdict

States = dict[int, Any]  # inner states fetched apart (Workload.states_apart), by step

# (workload, model(baseRound) as Workload.base gives it, the fetched submission, criteria, this validator's
# sample or None for every row and step, the inner states the sample needs) -> the verdict
Judge = Callable[[Any, Any, Any, ValidationConfig, CheckSample | None, States], Verdict]
JUDGES: dict[str, Judge] = {"tiny": tiny_checks.judge, "lm": lm_checks.judge}


def check(
    workload: Any, base: Any, sub: Any, vcfg: ValidationConfig, sample: CheckSample | None, states: States
) -> Verdict:
    """Checks 1 to 6 of a submission of ``workload``'s kind (validator.pipeline.verify)."""
    return JUDGES[workload.kind](workload, base, sub, vcfg, sample, states)

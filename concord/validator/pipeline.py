"""The one check walk of a submission (DESIGN.md section 6, checks 1 to 6), whatever its model kind.

    schema -> per inner step k, per unit (Unit below: the tiny model's whole step, or one of the
    LM's groups): prompts -> the prefill of its checked rows under theta_k: TOPLOC + sampling replay
    (bf16 first, the rows that fail re-checked in float32) -> rewards recomputed -> the unit rebuilt from
    verified fields -> work units and mean reward -> proof root -> training replay -> verdict

with the first failure rejecting (validator.verdict). What a kind computes is its KindChecks
(validator.tiny_checks, validator.lm_checks; chosen by validator.checks); its Plan says which of the
protocol's walk orders holds (each pinned by tests/test_pinned_behaviour.py):

    chain     theta_k is the validator's own replay (the tiny model in full mode): step k's rows are
              prefilled under it, the replayed delta is judged right after the work units
    deferred  sampled mode with the inner states apart (the tiny model): the cheap checks (prompts, the
              length rule, rewards) run on every unit first, then proof root, then the delta's link to
              the committed state H, then per step the sampled rows' prefill and the step's replay alone
    neither   theta_k is the submission's committed state (the LM): the sampled rows are prefilled with
              their unit, and the round's replay (when there is a step to replay) comes last
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from concord.client.engine import sampler as smp
from concord.client.engine.bundle import RolloutProofs
from concord.client.engine.config import GRPOConfig, SamplerConfig, ValidationConfig
from concord.client.engine.proofs import ProofCheck
from concord.client.engine.rollout import RolloutBatch, completion_mask
from concord.client.runtime.workload import Submission
from concord.validator.rules import (
    check_proof_root,
    check_work_units,
    length_rule,
    lengths_result,
    prompts_result,
    rewards_result,
    sampling_result,
    toploc_result,
)
from concord.validator.sampling import CheckSample
from concord.validator.verdict import CheckResult, Run, Verdict


@dataclass(frozen=True)
class Unit:
    """Rows [first, first + batch.n) of inner step k, as submitted, with their assignment (module doc)."""

    k: int
    first: int  # the unit's first row in step k (row n of step k: samples and flags count this way)
    batch: RolloutBatch
    proofs: tuple[RolloutProofs, ...]  # one proof list per row
    want_i: list[int]  # the assigned prompt index of each row
    want_j: list[int]  # the assigned sample index of each row
    where: dict[str, float]  # the evidence's location: {"step": k} (+ "prompt": i for a unit of one prompt)


def assigned_indices(k: int, grpo: GRPOConfig) -> tuple[list[int], list[int]]:
    """(prompt index i, sample index j) per row of inner step k, rows ordered i-major."""
    idx = range(k * grpo.prompts_per_step, (k + 1) * grpo.prompts_per_step)
    pairs = [(i, j) for i in idx for j in range(grpo.group_size)]
    return [i for i, _ in pairs], [j for _, j in pairs]


def sub_batch(batch: RolloutBatch, rows: list[int]) -> RolloutBatch:
    """Rollouts ``rows`` of a batch (the ones a sample gives the prefill checks)."""
    idx = torch.tensor(rows, dtype=torch.long)

    def pick(t: torch.Tensor) -> torch.Tensor:  # per-row tensors only; empty placeholders stay as they are
        return t[idx] if t.dim() > 0 and t.shape[0] == batch.n else t

    return dataclasses.replace(
        batch,
        prompt_idx=pick(batch.prompt_idx),
        sample_idx=pick(batch.sample_idx),
        keys=np.asarray(batch.keys)[rows] if len(batch.keys) == batch.n else batch.keys,
        prompts=batch.prompts[idx],
        completions=batch.completions[idx],
        mask=pick(batch.mask),
        lengths=pick(batch.lengths),
        rewards=pick(batch.rewards),
        logprobs=pick(batch.logprobs),
        hidden=pick(batch.hidden),
    )


def verified_batch(
    unit: Unit, rewards: torch.Tensor, mask: torch.Tensor, keys: np.ndarray, sampler: SamplerConfig, grpo: GRPOConfig
) -> RolloutBatch:
    """The unit's rows rebuilt from checked or recomputed fields only (what training replay consumes)."""
    return dataclasses.replace(
        unit.batch,
        prompt_idx=torch.tensor(unit.want_i),
        sample_idx=torch.tensor(unit.want_j),
        keys=keys,
        mask=mask,
        lengths=mask.sum(1),
        rewards=rewards,
        logprobs=torch.empty(0),
        hidden=torch.empty(0),
        temperature=sampler.temperature,
        group_size=grpo.group_size,
    )


@dataclass(frozen=True)
class Plan:
    """What the walk checks of one submission, and in which order (module doc)."""

    rows: tuple[tuple[int, ...], ...]  # per inner step, the rows that get the prefill checks
    steps: tuple[int, ...]  # the inner steps whose replay alone is judged (deferred)
    deferred: bool
    chain: bool


@dataclass(frozen=True)
class Part:
    """Rows ``rows`` (indexes into the unit) of one unit, to prefill under theta_k."""

    unit: Unit
    rows: list[int]
    keys: np.ndarray  # [R] their assigned sampler keys
    counted: torch.Tensor  # [R, C] their counted tokens (up to and including the first EOS)
    rule: tuple[int, bool]  # the unit's length rule (validator.rules.length_rule)


@dataclass(frozen=True)
class Rows:
    """A part's prefill, as checks 3 and 4 judge it (re-checked in float32 where bf16 failed)."""

    toploc: list[ProofCheck]  # [R]
    gap: torch.Tensor  # [R, C] float64 (validator.rules.completion_gaps)


class KindChecks(Protocol):
    """A model kind's part of the walk over one submission (module doc)."""

    @property
    def claims(self) -> Submission: ...  # what the walk reads of the submission beyond its units

    grpo: GRPOConfig
    sampler: SamplerConfig
    vcfg: ValidationConfig
    pad: int  # what follows the first EOS
    eos: int
    may_stop: bool  # generation stops early once every row emitted EOS
    detailed: bool  # the evidence also gives tolerated near-ties and reward means (the tiny model's)

    def plan(self, sample: CheckSample | None) -> Plan: ...
    def schema(self) -> CheckResult: ...
    def units(self, k: int) -> list[Unit]: ...
    def prompt(self, i: int) -> list[int]: ...
    def rewards(self, unit: Unit) -> torch.Tensor: ...
    def prefill(self, parts: Sequence[Part]) -> dict[int, Rows]: ...
    def advance(self, k: int, verified: list[RolloutBatch]) -> object: ...
    def replay(self, verified: list[list[RolloutBatch]]) -> CheckResult | None: ...
    def replay_step(self, k: int, verified: list[RolloutBatch]) -> CheckResult: ...
    def proofs(self) -> tuple[tuple[RolloutProofs, ...], ...]: ...


def state_unusable(k: int) -> CheckResult:
    """Inner state k was fetched and is canonical, yet theta_k does not load into this model."""
    return CheckResult("training_replay", False, {"step": k, "state_unusable": 1.0})


def part_of(unit: Unit, step_rows: Sequence[int], mask: torch.Tensor, keys: np.ndarray, rule: tuple[int, bool]) -> Part:
    """The unit's rows among ``step_rows`` (rows of step k), with their sampler keys and counted tokens."""
    rows = [n - unit.first for n in step_rows if unit.first <= n < unit.first + unit.batch.n]
    return Part(unit, rows, keys[rows], mask[torch.tensor(rows, dtype=torch.long)], rule)


def rows_results(kind: KindChecks, part: Part, rows: Rows, lengths: bool) -> list[CheckResult]:
    """Checks 3 and 4 on a part's prefill (rows named as rows of the step; ``lengths``: with the unit's
    length rule)."""
    at = [part.unit.first + n for n in part.rows]
    where: dict[str, float] = {"step": part.unit.k}
    rule = part.rule if lengths else None
    sampling = sampling_result(where, rows.gap, part.counted, at, kind.vcfg, rule, kind.detailed)
    return [toploc_result(rows.toploc, part.unit.k, at), sampling]


def verify(kind: KindChecks, sample: CheckSample | None = None) -> Verdict:
    """Checks 1 to 6 of one submission in protocol order (module doc); the first failure rejects.
    ``sample`` (validator.sampling.draw_sample; None: every row and step) limits the prefill checks to its
    rows and the replay to its steps."""
    run = Run()
    done = run.failed
    plan = kind.plan(sample)
    if (v := done(kind.schema())) is not None:
        return v
    c = kind.claims
    verified: list[list[RolloutBatch]] = []
    parts: list[Part] = []  # the deferred plan's, judged after the cheap checks
    for k in range(len(plan.rows)):
        step: list[RolloutBatch] = []
        for unit in kind.units(k):
            b = unit.batch
            prompts = {i: kind.prompt(i) for i in dict.fromkeys(unit.want_i)}  # each assigned prompt once
            expected = torch.tensor([prompts[i] for i in unit.want_i])
            if (v := done(prompts_result(unit.where, b, unit.want_i, unit.want_j, expected))) is not None:
                return v
            mask = completion_mask(b.completions, kind.sampler.stop_at_eos, kind.eos)
            lengths = length_rule(b.completions, mask, kind.pad, kind.eos, kind.sampler.max_new_tokens, kind.may_stop)
            keys = smp.sample_keys(c.task_id, c.round, c.trainer, list(zip(unit.want_i, unit.want_j, strict=True)))
            part = part_of(unit, plan.rows[k], mask, keys, lengths)
            if plan.deferred:
                checked = [lengths_result(unit.where, *lengths)]
                parts += [part] if part.rows else []
            elif part.rows:
                checked = rows_results(kind, part, kind.prefill([part])[0], True)
            else:  # none of the unit's rows sampled: the length rule still holds for every row
                empty = Rows([], torch.zeros(0, b.completions.shape[1]))
                checked = rows_results(kind, part, empty, True)
            for r in checked:
                if (v := done(r)) is not None:
                    return v
            recomputed = kind.rewards(unit)
            if (v := done(rewards_result(unit.where, b.rewards, recomputed, kind.detailed))) is not None:
                return v
            step.append(verified_batch(unit, recomputed, mask, keys, kind.sampler, kind.grpo))
        if plan.chain:
            kind.advance(k, step)  # theta_{k+1}: the next step's rows are prefilled under the replay's own
        verified.append(step)
    flat = [b for step in verified for b in step]
    if (v := done(check_work_units(kind.claims.work_units, kind.claims.mean_reward, flat))) is not None:
        return v
    if plan.chain and (v := done(kind.replay(verified))) is not None:
        return v
    if (v := done(check_proof_root(kind.proofs(), kind.claims.proof_root))) is not None:
        return v
    if not plan.chain and (v := done(kind.replay(verified))) is not None:
        return v
    if plan.deferred:
        return deferred(kind, plan, parts, verified, run)
    return run.accepted()


def deferred(kind: KindChecks, plan: Plan, parts: list[Part], verified: list[list[RolloutBatch]], run: Run) -> Verdict:
    """The expensive checks of a deferred plan, step by step: the sampled rows' prefill under the committed
    theta_k (all steps' prefills first, then their TOPLOC arithmetic together: KindChecks.prefill), then
    step k's replay alone from inner state k."""
    got = kind.prefill(parts)
    for k in range(len(plan.rows)):
        for n, part in enumerate(parts):
            if part.unit.k != k:
                continue
            checked = (
                rows_results(kind, part, got[n], False) if n in got else [state_unusable(k)]
            )  # theta_k did not load
            for r in checked:
                if (v := run.failed(r)) is not None:
                    return v
        if k in plan.steps and (v := run.failed(kind.replay_step(k, verified[k]))) is not None:
            return v
    return run.accepted()

"""The tiny model's prefill for checks 3 and 4 (DESIGN.md 6.3-6.4): one forward pass under theta_k gives
the hidden states TOPLOC is verified against and the logits the sampling replay is judged on. Its first
precision is vcfg.prefill_precision as this machine resolves it (client.engine.precision); under bf16
every rollout that fails TOPLOC or sampling replay is recomputed in float32 and judged on that, so bf16
rounding only ever speeds up rollouts that pass."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from concord.client.engine.config import SamplerConfig, ValidationConfig
from concord.client.engine.envs import EOS, PAD
from concord.client.engine.grpo import InnerStateError
from concord.client.engine.model import Policy
from concord.client.engine.precision import PrefillPrecision, choose_for
from concord.client.engine.proofs import ProofCheck
from concord.client.engine.rollout import RolloutBatch, completion_logits, completion_mask, prefill
from concord.validator.rules import completion_gaps, length_rule, sampling_result, toploc_many, toploc_rows
from concord.validator.verdict import CheckResult


@dataclass(frozen=True)
class Recomputed:
    """One batch's prefill, as the TOPLOC and sampling checks consume it."""

    hidden: torch.Tensor  # [N, P+C, D] float32
    logits: torch.Tensor  # [N, P+C, V] float32
    toploc: list[ProofCheck]  # per rollout, on ``hidden``
    fp32_rows: int  # rollouts recomputed in float32 after failing under bf16
    precision: PrefillPrecision  # what the pass ran in first, and why


# (theta_k: loaded on demand, InnerStateError when it does not fit; the rows; their proofs; their
# recomputed completion lengths [N]; their assigned sampler keys [N])
PrefillItem = tuple[Callable[[], Policy], RolloutBatch, tuple[tuple[bytes, ...], ...], torch.Tensor, np.ndarray]


def recompute_many(items: Sequence[PrefillItem], sampler: SamplerConfig, vcfg: ValidationConfig) -> list[Recomputed]:
    """The prefill of several batches, each rollout's result what recompute_states gives it alone: one
    prefill per batch under its theta (the items up to, not including, the first whose theta does not
    load), the TOPLOC arithmetic of all of them in one call, then under bf16 the float32 re-check of the
    rows that failed (theta loaded again) with their TOPLOC in one more."""
    firsts: list[tuple[PrefillPrecision, torch.Tensor, torch.Tensor]] = []
    for theta, batch, *_ in items:
        try:
            firsts.append(prefill_pass(theta(), batch, vcfg))
        except InnerStateError:
            break
    done = items[: len(firsts)]
    first = toploc_many([(h, b, p, n, None) for (_, h, _), (_, b, p, n, _) in zip(firsts, done, strict=True)], vcfg)
    passes = [(hidden, logits) for _, hidden, logits in firsts]
    rechecked: dict[int, list[int]] = {}
    for at, ((precision, hidden, logits), (theta, batch, _, _, keys)) in enumerate(zip(firsts, done, strict=True)):
        rows = bf16_failures(precision, logits, batch, keys, first[at], sampler, vcfg)
        if rows:
            passes[at], rechecked[at] = float32_rows(theta(), batch, rows, hidden, logits), rows
    again = toploc_many([(passes[at][0], *done[at][1:4], rows) for at, rows in rechecked.items()], vcfg)
    for (at, fixed), results in zip(rechecked.items(), again, strict=True):
        for n, r in zip(fixed, results, strict=True):
            first[at][n] = r
    return [Recomputed(*passes[at], first[at], len(rechecked.get(at, ())), firsts[at][0]) for at in range(len(firsts))]


def recompute_states(
    policy: Policy,
    batch: RolloutBatch,
    proofs: tuple[tuple[bytes, ...], ...],
    lengths: torch.Tensor,  # [N] recomputed completion lengths
    keys: np.ndarray,  # [N] the assigned sampling keys
    sampler: SamplerConfig,
    vcfg: ValidationConfig,
) -> Recomputed:
    """The prefill pass of checks 3 and 4 on one batch under ``policy`` (module doc)."""
    return recompute_many([(lambda: policy, batch, proofs, lengths, keys)], sampler, vcfg)[0]


def prefill_pass(
    policy: Policy, batch: RolloutBatch, vcfg: ValidationConfig
) -> tuple[PrefillPrecision, torch.Tensor, torch.Tensor]:
    """(precision, hidden [N, P+C, D], logits [N, P+C, V]): the first prefill of checks 3 and 4, in the
    precision this machine chooses for a batch of this many tokens."""
    precision = choose_for(policy, vcfg.prefill_precision, batch.tokens.numel())
    out = prefill(policy, batch, bf16=precision.bf16)
    return precision, out.hidden, out.logits


def bf16_failures(
    precision: PrefillPrecision,
    logits: torch.Tensor,  # [N, P+C, V] from the first pass
    batch: RolloutBatch,
    keys: np.ndarray,  # [N]
    per_row: list[ProofCheck],  # [N] TOPLOC on the first pass
    sampler: SamplerConfig,
    vcfg: ValidationConfig,
) -> list[int]:
    """The float32 re-check rule: the rows a first pass under bf16 failed (TOPLOC or sampling replay)
    are to be recomputed in float32 and judged on that; a float32 first pass is final (no rows)."""
    if not precision.bf16:
        return []
    gap, mask = sampling_gaps(logits, batch, keys, sampler)
    failed = ((gap > vcfg.sampling_tie_tol) & mask).any(dim=1) | torch.tensor([not r.ok for r in per_row])
    rows: list[int] = failed.nonzero().flatten().tolist()
    return rows


def float32_rows(
    policy: Policy, batch: RolloutBatch, rows: list[int], hidden: torch.Tensor, logits: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(hidden, logits) with ``rows`` replaced by a float32 forward of those rollouts alone."""
    with torch.no_grad():
        exact = policy(batch.tokens[rows])
    hidden, logits = hidden.clone(), logits.clone()
    hidden[rows], logits[rows] = exact.hidden, exact.logits
    return hidden, logits


def sampling_gaps(
    logits: torch.Tensor,  # [N, P+C, V] recomputed by the prefill pass
    batch: RolloutBatch,
    keys: np.ndarray,  # [N] uint64, recomputed from (task, round, trainer, i, j)
    sampler: SamplerConfig,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(gap [N, C] float64, mask [N, C]): completion_gaps on the full-sequence logits, and the mask
    recomputed from the submitted tokens (True up to and including the first EOS)."""
    c_logits = completion_logits(logits, batch.prompt_len, batch.completions.shape[1])  # [N, C, V]
    gap = completion_gaps(c_logits, batch.completions, keys, sampler.temperature)
    return gap, completion_mask(batch.completions, sampler.stop_at_eos)


def check_sampling(
    logits: torch.Tensor,
    batch: RolloutBatch,
    keys: np.ndarray,
    sampler: SamplerConfig,
    vcfg: ValidationConfig,
    k: int = 0,
    lengths: bool = True,
) -> CheckResult:
    """Check 4 on a batch's prefill: every counted token (the last included) is the seeded choice up to the
    near-tie tolerance; with ``lengths`` also PAD after EOS and generation ran to max_new_tokens unless
    every row had stopped (the rule of the whole batch: without it, the rows are a sample's)."""
    gap, mask = sampling_gaps(logits, batch, keys, sampler)
    rule = length_rule(batch.completions, mask, PAD, EOS, sampler.max_new_tokens, sampler.stop_at_eos)
    return sampling_result({"step": k}, gap, mask, range(batch.n), vcfg, rule if lengths else None, True)


def rollout_sampling_rejects(
    logits: torch.Tensor, batch: RolloutBatch, keys: np.ndarray, sampler: SamplerConfig, vcfg: ValidationConfig
) -> list[bool]:
    """Per-rollout sampling-replay reject flags [N] (for measuring detection rates)."""
    gap, mask = sampling_gaps(logits, batch, keys, sampler)
    bad = ((gap > vcfg.sampling_tie_tol) & mask).any(dim=1) | ((batch.completions != PAD) & ~mask).any(dim=1)  # [N]
    flags: list[bool] = bad.tolist()
    return flags


def rollout_toploc_rejects(
    hidden: torch.Tensor,
    batch: RolloutBatch,
    proofs: tuple[tuple[bytes, ...], ...],
    lengths: torch.Tensor,
    vcfg: ValidationConfig,
) -> list[bool]:
    """Per-rollout TOPLOC reject flags [N] (for measuring detection rates)."""
    return [not r.ok for r in toploc_rows(hidden, batch, proofs, lengths, vcfg)]

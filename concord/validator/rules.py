"""The rules every model kind's checks share (DESIGN.md section 6): each a pure function from recomputed
and submitted numbers to a CheckResult, whatever model produced them. The walk that runs them in protocol
order is validator.pipeline; what a kind computes (prefill, rewards, replay) is its KindChecks."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from concord.client.engine import sampler as smp
from concord.client.engine.bundle import RolloutProofs, claimed_mean_reward, proofs_root
from concord.client.engine.config import ValidationConfig
from concord.client.engine.grpo import delta_similarity
from concord.client.engine.proofs import ProofCheck, ToplocThresholds, verify_many_rollout_proofs
from concord.client.engine.rollout import RolloutBatch
from concord.validator.verdict import CheckResult

# ----------------------------------------------------------------------------- 1. schema


def delta_like(d: object, base: dict[str, torch.Tensor]) -> bool:
    """A dict with exactly the base's names and shapes, every value a finite tensor (a delta or an inner
    step's state of either workload: the policy's parameters, or the LM's adapters)."""
    if not isinstance(d, dict) or set(d) != set(base):
        return False
    return all(
        isinstance(d[n], torch.Tensor) and tuple(d[n].shape) == tuple(t.shape) and bool(torch.isfinite(d[n]).all())
        for n, t in base.items()
    )


def root_like(root: object) -> bool:
    """A 32-byte proof root."""
    return isinstance(root, (bytes, bytearray)) and len(root) == 32


def rows_ok(b: RolloutBatch, n: int, proofs: Sequence[object], max_new_tokens: int, vocab: int) -> tuple[bool, bool]:
    """(shapes ok, tokens ok) of one batch (or group) of ``n`` rows: 2-d tokens, a reward and a proof list
    per row, 1..max_new_tokens completions; int64 token ids inside the vocabulary (out-of-range ids would
    crash the prefill's embedding)."""
    shapes_ok = (
        b.prompts.dim() == 2
        and b.completions.dim() == 2
        and b.prompts.shape[0] == b.completions.shape[0] == n
        and b.rewards.shape == (n,)
        and len(proofs) == n
        and 1 <= b.completions.shape[1] <= max_new_tokens
    )
    tokens_ok = all(t.dtype == torch.int64 and bool(((t >= 0) & (t < vocab)).all()) for t in (b.prompts, b.completions))
    return shapes_ok, tokens_ok


# ----------------------------------------------------------------------------- 2. prompts


def prompts_result(
    where: dict[str, float], b: RolloutBatch, want_i: list[int], want_j: list[int], expected: torch.Tensor
) -> CheckResult:
    """Row n must carry prompt want_i[n], sample want_j[n] and exactly the tokens ``expected`` [n, P] (the
    environment's prompt of prompt_seed(task, round, trainer, i))."""
    idx_bad = sum(
        int((got != torch.tensor(want)).sum()) if got.shape == (len(want),) else len(want)
        for got, want in ((b.prompt_idx, want_i), (b.sample_idx, want_j))
    )
    rows_bad = b.n if expected.shape != b.prompts.shape else int((expected != b.prompts).any(dim=1).sum())
    ok = idx_bad == 0 and rows_bad == 0
    return CheckResult("prompts", ok, {**where, "index_mismatches": idx_bad, "rows_altered": rows_bad})


# ----------------------------------------------------------------------------- 3. TOPLOC


def toploc_thresholds(vcfg: ValidationConfig) -> ToplocThresholds:
    return ToplocThresholds(vcfg.max_exp_mismatches, vcfg.max_mant_err_mean, vcfg.max_mant_err_median)


TOPLOCRows = tuple[
    torch.Tensor,  # hidden [N, P+C, D] recomputed by a prefill pass
    RolloutBatch,
    tuple[tuple[bytes, ...], ...],  # proofs [N]
    torch.Tensor,  # lengths [N] recomputed completion lengths
    list[int] | None,  # the rows to verify (None: all)
]


def toploc_many(items: list[TOPLOCRows], vcfg: ValidationConfig) -> list[list[ProofCheck]]:
    """toploc_rows of several batches, each rollout's result the same as alone, with the verification
    arithmetic of all of them in one verify_many_rollout_proofs call (one pass per chunk size
    instead of one per batch: what a sampled check of a few rows in each of H steps pays)."""
    flat: list[tuple[torch.Tensor, torch.Tensor, list[bytes]]] = []
    counts: list[int] = []
    for hidden, batch, proofs, lengths, rows in items:
        p, picked = batch.prompt_len, range(batch.n) if rows is None else rows
        flat += [(hidden[n, :p], hidden[n, p : p + int(lengths[n])], list(proofs[n])) for n in picked]
        counts.append(len(picked))
    results = verify_many_rollout_proofs(flat, toploc_thresholds(vcfg))
    starts = np.cumsum([0, *counts])
    return [results[a:b] for a, b in zip(starts[:-1], starts[1:], strict=True)]


def toploc_rows(
    hidden: torch.Tensor,  # [N, P+C, D] recomputed by the prefill pass
    batch: RolloutBatch,
    proofs: tuple[tuple[bytes, ...], ...],
    lengths: torch.Tensor,  # [N] recomputed completion lengths
    vcfg: ValidationConfig,
    rows: list[int] | None = None,
) -> list[ProofCheck]:
    """TOPLOC verification of rollouts ``rows`` (default: all) against the recomputed states."""
    return toploc_many([(hidden, batch, proofs, lengths, rows)], vcfg)[0]


def toploc_result(per_row: list[ProofCheck], k: int = 0, rows: Sequence[int] | None = None) -> CheckResult:
    """The TOPLOC check of one inner step from its per-rollout results (of rows ``rows`` of the step,
    default 0..N-1): any rejected rollout rejects."""
    bad = [n for n, r in enumerate(per_row) if not r.ok]
    where = tuple(bad if rows is None else [rows[n] for n in bad])
    return CheckResult(
        "toploc",
        not bad,
        {
            "step": k,
            "rollouts": len(per_row),
            "rejected": len(bad),
            "first_rejected": where[0] if where else -1,
            "worst_exp_mismatches": max((r.worst_exp_mismatches for r in per_row), default=0),
            "worst_mant_err_mean": max((r.worst_mant_err_mean for r in per_row), default=0.0),
            "worst_mant_err_median": max((r.worst_mant_err_median for r in per_row), default=0.0),
        },
        where,
    )


# ----------------------------------------------------------------------------- 4. sampling replay


def completion_gaps(
    c_logits: torch.Tensor,  # [N, C, V] the logits that chose completion tokens 0..C-1
    completions: torch.Tensor,  # [N, C] the submitted tokens
    keys: np.ndarray,  # [N] uint64 sampler keys
    temperature: float,
) -> torch.Tensor:
    """gap [N, C] float64: best perturbed score minus the submitted token's (0 where it is the seeded
    choice, inf for a token outside the vocabulary)."""
    n, c = completions.shape
    steps = np.broadcast_to(np.arange(c, dtype=np.uint64)[None, :], (n, c))
    keys_nc = np.broadcast_to(np.asarray(keys, dtype=np.uint64)[:, None], (n, c))
    scores = smp.perturbed_scores(c_logits, keys_nc, steps, temperature)  # [N, C, V] float64
    chosen = scores.gather(2, completions[:, :, None].clamp(0, scores.shape[-1] - 1))[:, :, 0]
    gap = scores.max(dim=-1).values - chosen  # [N, C] >= 0
    in_vocab = (completions >= 0) & (completions < scores.shape[-1])
    return torch.where(in_vocab, gap, torch.full_like(gap, math.inf))


def length_rule(
    completions: torch.Tensor,  # [N, C] the submitted tokens
    mask: torch.Tensor,  # [N, C] counted tokens (up to and including the first EOS)
    pad: int,
    eos: int,
    max_new_tokens: int,
    may_stop: bool,  # generation stops at EOS at all
) -> tuple[int, bool]:
    """(tokens after the first EOS that are not ``pad``, length ok): generation stops before
    max_new_tokens only once every row has emitted EOS, right at the step it happened. The cheap part
    of check 4, on every row of a batch (or group) whatever the sample."""
    pad_bad = int(((completions != pad) & ~mask).sum())
    c = completions.shape[1]
    stopped_early = may_stop and bool((completions == eos).any(dim=1).all()) and int(mask.sum(1).max()) == c
    return pad_bad, c == max_new_tokens or stopped_early


def lengths_result(where: dict[str, float], pad_bad: int, length_ok: bool) -> CheckResult:
    """Check 4's cheap part alone (sampled mode runs it on every row, the replay on the sampled ones)."""
    return CheckResult(
        "sampling", pad_bad == 0 and length_ok, {**where, "pad_after_eos_bad": pad_bad, "length_ok": float(length_ok)}
    )


def sampling_result(
    where: dict[str, float],
    gap: torch.Tensor,  # [R, C] of the replayed rows (completion_gaps)
    counted: torch.Tensor,  # [R, C] their counted tokens
    rows: Sequence[int],  # the step's row index of each replayed row
    vcfg: ValidationConfig,
    lengths: tuple[int, bool] | None,  # the unit's length_rule, judged with the replay; None: judged apart
    tolerated: bool,  # the evidence also counts the near-ties tolerated (the tiny model's evidence)
) -> CheckResult:
    """Every counted token of the replayed rows is the seeded choice up to the near-tie tolerance (and,
    with ``lengths``, PAD after EOS and the generation length)."""
    mismatched = (gap > 0) & counted
    rejected = (gap > vcfg.sampling_tie_tol) & counted
    bad_rows = rejected.any(dim=1)
    ev: dict[str, float] = {**where}
    if lengths is None:
        ev["rows"] = len(rows)
    ev.update(tokens=int(counted.sum()), mismatched=int(mismatched.sum()))
    if tolerated:
        ev["tolerated"] = int((mismatched & ~rejected).sum())
    ev.update(rejected_tokens=int(rejected.sum()), rejected_rollouts=int(bad_rows.sum()))
    ok = int(rejected.sum()) == 0
    if lengths is not None:
        ev.update(pad_after_eos_bad=lengths[0], length_ok=float(lengths[1]))
        ok = ok and lengths[0] == 0 and lengths[1]
    ev["max_gap"] = float(torch.where(counted, gap, torch.zeros_like(gap)).max()) if counted.numel() else 0.0
    return CheckResult("sampling", ok, ev, tuple(rows[n] for n in bad_rows.nonzero().flatten().tolist()))


# ----------------------------------------------------------------------------- 5. rewards, work units


def rewards_result(
    where: dict[str, float], claimed: torch.Tensor, recomputed: torch.Tensor, means: bool
) -> CheckResult:
    """The claimed rewards must equal the recomputed ones [n] float64 exactly (``means``: the evidence also
    gives both means, the tiny model's evidence)."""
    claimed = claimed.to(torch.float64)
    if claimed.shape != recomputed.shape:
        return CheckResult(
            "rewards", False, {**where, "mismatched": len(recomputed), **({"max_abs_diff": math.inf} if means else {})}
        )
    diff = (claimed - recomputed).abs()
    ev = {**where, "mismatched": int((diff != 0).sum()), "max_abs_diff": float(diff.max())}
    if means:
        ev.update(claimed_mean=float(claimed.mean()), recomputed_mean=float(recomputed.mean()))
    return CheckResult("rewards", bool((diff == 0).all()), ev)


def check_work_units(claimed_units: int, claimed_mean: float, verified: list[RolloutBatch]) -> CheckResult:
    """work_units = counted generated tokens; mean_reward = mean recomputed reward (exact); ``verified``:
    every row of the submission, rebuilt from checked fields (either workload's)."""
    units = int(sum(int(b.lengths.sum()) for b in verified))
    mean_r = claimed_mean_reward(verified)
    ok = units == claimed_units and mean_r == claimed_mean
    return CheckResult(
        "work_units",
        ok,
        {
            "claimed_work_units": claimed_units,
            "recomputed_work_units": units,
            "claimed_mean_reward": claimed_mean,
            "recomputed_mean_reward": mean_r,
        },
    )


# ----------------------------------------------------------------------------- 6. training replay, proof root


def check_training_replay(
    replayed: dict[str, torch.Tensor], submitted: dict[str, torch.Tensor], vcfg: ValidationConfig
) -> CheckResult:
    """The submitted delta against the validator's own H inner steps (cosine and relative L2)."""
    cos, rel = delta_similarity(submitted, replayed)
    ok = cos >= vcfg.replay_cos_min and rel <= vcfg.replay_rel_l2_max
    return CheckResult("training_replay", ok, {"cosine": cos, "rel_l2": rel})


def check_proof_root(proofs: tuple[tuple[RolloutProofs, ...], ...], claimed: bytes) -> CheckResult:
    """The claimed proof root (what went on chain) equals the Merkle root of the proofs (per inner step,
    its rows' proof lists in row order: the Merkle leaves' order)."""
    root = proofs_root(proofs)
    return CheckResult("proof_root", root == bytes(claimed), {"leaves": sum(len(s) for s in proofs)})

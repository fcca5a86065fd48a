"""A validator's checks of one bundle (DESIGN.md section 6, items 1 in memory to 6).

Per inner step k the validator walks the trainer's path itself, trusting nothing it can
recompute: prompts from the seeded assignment -> one prefill pass under theta_k -> TOPLOC
against that pass's hidden states -> sampling replay against its logits -> rewards and work
units -> theta_{k+1} = inner_update(theta_k, batch k rebuilt from verified fields only). The
replayed delta is then compared with the submitted one and the proof root recomputed.

Every check is a named function returning CheckResult(name, ok, evidence); evidence holds
numbers only. `verify_bundle` stops at the first failing check: any failure rejects.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from concord.client import timing
from concord.client.engine import sampler as smp
from concord.client.engine.bundle import Bundle, RolloutProofs, claimed_mean_reward, proofs_root
from concord.client.engine.config import GRPOConfig, SamplerConfig, TaskConfig, ValidationConfig
from concord.client.engine.envs import EOS, PAD, Env, rewards
from concord.client.engine.grpo import (
    PARAM_PREFIX,
    InnerStateError,
    delta_similarity,
    inner_state,
    inner_update,
    make_inner_optimizer,
    restore_inner_state,
    state_delta,
)
from concord.client.engine.model import Policy, clone_policy, policy_state
from concord.client.engine.precision import PrefillPrecision, choose_for
from concord.client.engine.proofs import ProofCheck, ToplocThresholds, verify_many_rollout_proofs
from concord.client.engine.rollout import (
    RolloutBatch,
    completion_logits,
    completion_mask,
    prefill,
)
from concord.validator.sampling import CheckSample

CHECKS = ("schema", "prompts", "toploc", "sampling", "rewards", "work_units", "training_replay", "proof_root")


def toploc_thresholds(vcfg: ValidationConfig) -> ToplocThresholds:
    return ToplocThresholds(vcfg.max_exp_mismatches, vcfg.max_mant_err_mean, vcfg.max_mant_err_median)


@dataclass(frozen=True)
class CheckResult:
    """One check's outcome. ``evidence`` holds numbers only, with ``step`` = the inner step it judged
    (-1 for a whole-bundle check); ``rows`` = the rows of that step that failed a row check (TOPLOC,
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


# ----------------------------------------------------------------------------- 1. schema


def check_schema(policy_base: Policy, bundle: Bundle, cfgs: TaskConfig) -> CheckResult:
    """Shapes and fields: H batches of the task's size, int64 tokens inside the vocabulary, a proof
    list per rollout, a finite delta with exactly the base model's names and shapes, batches
    tagged with the bundle's ids, a 32-byte proof root."""
    grpo, n = cfgs.grpo, cfgs.grpo.rollouts_per_step
    ev: dict[str, float] = {"batches": len(bundle.batches), "expected_batches": grpo.inner_steps}
    problems = 0
    if len(bundle.batches) != grpo.inner_steps or len(bundle.proofs) != len(bundle.batches):
        problems += 1
    for b, proofs in zip(bundle.batches, bundle.proofs, strict=False):  # a count mismatch is counted above
        shapes_ok = (
            b.prompts.dim() == 2
            and b.completions.dim() == 2
            and b.prompts.shape[0] == n
            and b.completions.shape[0] == n
            and b.rewards.shape == (n,)
            and len(proofs) == n
            and b.prompt_idx.shape == (n,)
            and b.sample_idx.shape == (n,)
            and 1 <= b.completions.shape[1] <= cfgs.sampler.max_new_tokens
        )
        ids_ok = (b.task_id, b.round, b.trainer.lower()) == (bundle.task_id, bundle.round, bundle.trainer.lower())
        vocab = policy_base.config.vocab_size  # out-of-range ids would crash the prefill's embedding
        tokens_ok = shapes_ok and all(
            t.dtype == torch.int64 and bool(((t >= 0) & (t < vocab)).all()) for t in (b.prompts, b.completions)
        )
        problems += (not shapes_ok) + (not ids_ok) + (not tokens_ok)
    names_ok = delta_like(bundle.delta, policy_state(policy_base))
    problems += not names_ok
    problems += not root_like(bundle.proof_root)
    ev.update(problems=problems, delta_ok=float(names_ok))
    return CheckResult("schema", problems == 0, ev)


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


# ----------------------------------------------------------------------------- 2. prompts


def assigned_indices(k: int, grpo: GRPOConfig) -> tuple[list[int], list[int]]:
    """(prompt index i, sample index j) per row of inner step k, rows ordered i-major."""
    idx = range(k * grpo.prompts_per_step, (k + 1) * grpo.prompts_per_step)
    pairs = [(i, j) for i in idx for j in range(grpo.group_size)]
    return [i for i, _ in pairs], [j for _, j in pairs]


def check_prompts(batch: RolloutBatch, k: int, bundle: Bundle, env: Env, grpo: GRPOConfig) -> CheckResult:
    """Row n of step k must carry prompt i = k*prompts_per_step + n // G, sample j = n % G,
    and exactly the tokens env.prompt(prompt_seed(task, round, trainer, i))."""
    want_i, want_j = assigned_indices(k, grpo)
    idx_bad = int((batch.prompt_idx != torch.tensor(want_i)).sum() + (batch.sample_idx != torch.tensor(want_j)).sum())
    first = k * grpo.prompts_per_step
    per_prompt = [
        env.prompt(smp.prompt_seed(bundle.task_id, bundle.round, bundle.trainer, i))
        for i in range(first, first + grpo.prompts_per_step)
    ]  # each assigned prompt once: row n carries prompt first + n // G
    expected = torch.tensor(per_prompt).repeat_interleave(grpo.group_size, dim=0)  # [N, P]
    if expected.shape != batch.prompts.shape:
        rows_bad = batch.n
    else:
        rows_bad = int((expected != batch.prompts).any(dim=1).sum())
    return CheckResult(
        "prompts", idx_bad == 0 and rows_bad == 0, {"step": k, "index_mismatches": idx_bad, "rows_altered": rows_bad}
    )


# ----------------------------------------------------------------------------- 3. TOPLOC


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


def rollout_toploc_rejects(
    hidden: torch.Tensor,
    batch: RolloutBatch,
    proofs: tuple[tuple[bytes, ...], ...],
    lengths: torch.Tensor,
    vcfg: ValidationConfig,
) -> list[bool]:
    """Per-rollout TOPLOC reject flags [N] (for measuring detection rates)."""
    return [not r.ok for r in toploc_rows(hidden, batch, proofs, lengths, vcfg)]


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


def length_rule(
    completions: torch.Tensor,  # [N, C] the submitted tokens
    mask: torch.Tensor,  # [N, C] counted tokens (up to and including the first EOS)
    pad: int,
    eos: int,
    max_new_tokens: int,
    may_stop: bool,  # generation stops at EOS at all (the sampler's stop_at_eos)
) -> tuple[int, bool]:
    """(tokens after the first EOS that are not ``pad``, length ok): generation stops before
    max_new_tokens only once every row has emitted EOS, right at the step it happened. The cheap part
    of check 4, on every row of a batch (or group) whatever the sample."""
    pad_bad = int(((completions != pad) & ~mask).sum())
    c = completions.shape[1]
    stopped_early = may_stop and bool((completions == eos).any(dim=1).all()) and int(mask.sum(1).max()) == c
    return pad_bad, c == max_new_tokens or stopped_early


class Run:
    """Checks in protocol order: ``failed(result)`` records one and gives the rejecting Verdict when it
    failed (the first failure rejects), ``accepted()`` the Verdict once all passed."""

    def __init__(self) -> None:
        self.results: list[CheckResult] = []

    def failed(self, r: CheckResult) -> Verdict | None:
        self.results.append(r)
        return None if r.ok else Verdict(False, r.name, tuple(self.results))

    def accepted(self) -> Verdict:
        return Verdict(True, "", tuple(self.results))


def check_sampling(
    logits: torch.Tensor,
    batch: RolloutBatch,
    keys: np.ndarray,
    sampler: SamplerConfig,
    vcfg: ValidationConfig,
    k: int = 0,
) -> CheckResult:
    """Every counted token (the last included) is the seeded choice up to the near-tie tolerance;
    PAD after EOS; generation ran to max_new_tokens unless every row had stopped."""
    gap, mask = sampling_gaps(logits, batch, keys, sampler)
    mismatched = (gap > 0) & mask
    rejected_tok = (gap > vcfg.sampling_tie_tol) & mask
    pad_bad, length_ok = length_rule(batch.completions, mask, PAD, EOS, sampler.max_new_tokens, sampler.stop_at_eos)
    bad_rows = rejected_tok.any(dim=1)
    ok = int(rejected_tok.sum()) == 0 and pad_bad == 0 and length_ok
    return CheckResult(
        "sampling",
        ok,
        {
            "step": k,
            "tokens": int(mask.sum()),
            "mismatched": int(mismatched.sum()),
            "tolerated": int((mismatched & ~rejected_tok).sum()),
            "rejected_tokens": int(rejected_tok.sum()),
            "rejected_rollouts": int(bad_rows.sum()),
            "pad_after_eos_bad": pad_bad,
            "length_ok": float(length_ok),
            "max_gap": float(torch.where(mask, gap, torch.zeros_like(gap)).max()),
        },
        tuple(bad_rows.nonzero().flatten().tolist()),
    )


def rollout_sampling_rejects(
    logits: torch.Tensor, batch: RolloutBatch, keys: np.ndarray, sampler: SamplerConfig, vcfg: ValidationConfig
) -> list[bool]:
    """Per-rollout sampling-replay reject flags [N] (for measuring detection rates)."""
    gap, mask = sampling_gaps(logits, batch, keys, sampler)
    bad = ((gap > vcfg.sampling_tie_tol) & mask).any(dim=1) | ((batch.completions != PAD) & ~mask).any(dim=1)  # [N]
    flags: list[bool] = bad.tolist()
    return flags


# ----------------------------------------------------------------------------- 3 + 4: the prefill pass


@dataclass(frozen=True)
class Recomputed:
    """One inner step's prefill, as the TOPLOC and sampling checks consume it."""

    hidden: torch.Tensor  # [N, P+C, D] float32
    logits: torch.Tensor  # [N, P+C, V] float32
    toploc: list[ProofCheck]  # per rollout, on ``hidden``
    fp32_rows: int  # rollouts recomputed in float32 after failing under bf16
    precision: PrefillPrecision  # what the pass ran in first, and why


def recompute_states(
    policy: Policy,
    batch: RolloutBatch,
    proofs: tuple[tuple[bytes, ...], ...],
    lengths: torch.Tensor,  # [N] recomputed completion lengths
    keys: np.ndarray,  # [N] the assigned sampling keys
    sampler: SamplerConfig,
    vcfg: ValidationConfig,
) -> Recomputed:
    """The prefill pass of checks 3 and 4. Its first precision is vcfg.prefill_precision as this
    machine resolves it for a batch of this size (client.engine.precision: configured, native
    bf16, or measured once per process and size class). Under bf16 autocast, every rollout that
    fails TOPLOC or sampling replay is recomputed in float32 and judged on that, so bf16 rounding
    only ever speeds up rollouts that pass (DESIGN.md 6.3-6.4)."""
    precision, hidden, logits = prefill_pass(policy, batch, vcfg)
    per_row = toploc_rows(hidden, batch, proofs, lengths, vcfg)
    rows = bf16_failures(precision, logits, batch, keys, per_row, sampler, vcfg)
    if rows:
        hidden, logits = float32_rows(policy, batch, rows, hidden, logits)
        for n, r in zip(rows, toploc_rows(hidden, batch, proofs, lengths, vcfg, rows), strict=True):
            per_row[n] = r
    return Recomputed(hidden, logits, per_row, len(rows), precision)


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


# ----------------------------------------------------------------------------- 5. rewards, work units


def check_rewards(
    batch: RolloutBatch, env: Env, k: int = 0, recomputed: torch.Tensor | None = None
) -> tuple[CheckResult, torch.Tensor]:
    """Rewards recomputed from (prompt, completion) must equal the claimed ones exactly (``recomputed``:
    [N] float64 already computed for this batch by step_rewards)."""
    if recomputed is None:
        recomputed = torch.from_numpy(rewards(env, batch.prompts.numpy(), batch.completions.numpy()))  # [N] float64
    claimed = batch.rewards.to(torch.float64)
    if claimed.shape != recomputed.shape:
        return CheckResult("rewards", False, {"step": k, "mismatched": batch.n, "max_abs_diff": math.inf}), recomputed
    diff = (claimed - recomputed).abs()
    return CheckResult(
        "rewards",
        bool((diff == 0).all()),
        {
            "step": k,
            "mismatched": int((diff != 0).sum()),
            "max_abs_diff": float(diff.max()),
            "claimed_mean": float(claimed.mean()),
            "recomputed_mean": float(recomputed.mean()),
        },
    ), recomputed


def step_rewards(batches: tuple[RolloutBatch, ...] | list[RolloutBatch], env: Env) -> list[torch.Tensor]:
    """rewards() of every batch [N_k] float64, with one call for all batches of one prompt and
    completion width (rewards is exact row by row, so which rows share a call changes no bit)."""
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for k, b in enumerate(batches):
        by_shape.setdefault((*b.prompts.shape[1:], -1, *b.completions.shape[1:]), []).append(k)
    out: list[torch.Tensor] = [torch.empty(0)] * len(batches)
    for ks in by_shape.values():
        prompts = np.concatenate([batches[k].prompts.numpy() for k in ks])
        completions = np.concatenate([batches[k].completions.numpy() for k in ks])
        flat = torch.from_numpy(rewards(env, prompts, completions))  # [sum N_k] float64
        sizes = np.cumsum([0] + [batches[k].n for k in ks])
        for k, a, b in zip(ks, sizes[:-1], sizes[1:], strict=True):
            out[k] = flat[a:b]
    return out


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


# ----------------------------------------------------------------------------- 6. training replay


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


# ----------------------------------------------------------------------------- the whole bundle


def verified_batch(
    batch: RolloutBatch,
    k: int,
    bundle: Bundle,
    env_rewards: torch.Tensor,
    mask: torch.Tensor,
    keys: np.ndarray,
    cfgs: TaskConfig,
) -> RolloutBatch:
    """Batch k rebuilt from checked or recomputed fields only (what training replay consumes)."""
    want_i, want_j = assigned_indices(k, cfgs.grpo)
    return dataclasses.replace(
        batch,
        task_id=bundle.task_id,
        round=bundle.round,
        trainer=bundle.trainer,
        prompt_idx=torch.tensor(want_i),
        sample_idx=torch.tensor(want_j),
        keys=keys,
        mask=mask,
        lengths=mask.sum(1),
        rewards=env_rewards,
        logprobs=torch.empty(0),
        hidden=torch.empty(0),
        temperature=cfgs.sampler.temperature,
        group_size=cfgs.grpo.group_size,
    )


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


def check_lengths(batch: RolloutBatch, sampler: SamplerConfig, k: int = 0) -> CheckResult:
    """The cheap part of check 4 on every rollout: PAD after EOS, and generation ran to
    max_new_tokens unless every row had stopped (sampled mode runs it on the whole batch, the
    token-by-token replay only on the sampled rows)."""
    mask = completion_mask(batch.completions, sampler.stop_at_eos)
    pad_bad, length_ok = length_rule(batch.completions, mask, PAD, EOS, sampler.max_new_tokens, sampler.stop_at_eos)
    return CheckResult(
        "sampling", pad_bad == 0 and length_ok, {"step": k, "pad_after_eos_bad": pad_bad, "length_ok": float(length_ok)}
    )


def verify_bundle(
    policy_base: Policy,
    bundle: Bundle,
    env: Env,
    cfgs: TaskConfig,
    vcfg: ValidationConfig = ValidationConfig(),
    sample: CheckSample | None = None,
    states: dict[int, dict[str, torch.Tensor]] | None = None,
) -> Verdict:
    """Run checks 1 (in memory) to 6 in protocol order; the first failure rejects. ``sample`` (from
    validator.sampling.draw_sample) limits the prefill checks to its rows and training replay to
    its steps, each replayed alone from the inner ``states`` it needs (``sample.states_needed()``,
    fetched by client.content.submission.fetch_states); None or a full sample checks everything."""
    if sample is not None and not sample.full:
        return verify_sampled(policy_base, bundle, env, cfgs, vcfg, sample, states or {})
    run = Run()
    done = run.failed

    if (v := done(check_schema(policy_base, bundle, cfgs))) is not None:
        return v
    policy = clone_policy(policy_base)
    optimizer = make_inner_optimizer(policy, cfgs.grpo)
    verified: list[RolloutBatch] = []
    for k, batch in enumerate(bundle.batches):
        if (v := done(check_prompts(batch, k, bundle, env, cfgs.grpo))) is not None:
            return v
        want_i, want_j = assigned_indices(k, cfgs.grpo)
        keys = smp.sample_keys(bundle.task_id, bundle.round, bundle.trainer, list(zip(want_i, want_j, strict=True)))
        mask = completion_mask(batch.completions, cfgs.sampler.stop_at_eos)
        out = recompute_states(policy, batch, bundle.proofs[k], mask.sum(1), keys, cfgs.sampler, vcfg)  # theta_k
        if (v := done(toploc_result(out.toploc, k))) is not None:
            return v
        if (v := done(check_sampling(out.logits, batch, keys, cfgs.sampler, vcfg, k))) is not None:
            return v
        r, env_rewards = check_rewards(batch, env, k)
        if (v := done(r)) is not None:
            return v
        vb = verified_batch(batch, k, bundle, env_rewards, mask, keys, cfgs)
        with timing.span("replay"):
            inner_update(policy, optimizer, vb, cfgs.grpo, policy_base)  # theta_{k+1}
        verified.append(vb)
    if (v := done(check_work_units(bundle.work_units, bundle.mean_reward, verified))) is not None:
        return v
    replayed = state_delta(policy_state(policy), policy_state(policy_base))
    if (v := done(check_training_replay(replayed, bundle.delta, vcfg))) is not None:
        return v
    if (v := done(check_proof_root(bundle.proofs, bundle.proof_root))) is not None:
        return v
    return run.accepted()


# ----------------------------------------------------------------------------- sampled mode


def check_state_step(
    before: dict[str, torch.Tensor],  # inner state k (or theta_0 + a fresh optimizer)
    replayed: dict[str, torch.Tensor],  # inner state after replaying step k from ``before``
    committed: dict[str, torch.Tensor],  # inner state k + 1 as the submission committed it
    vcfg: ValidationConfig,
    k: int,
) -> CheckResult:
    """Replay of one inner step against the committed next state: the parameter update by cosine and
    relative L2 (as the whole delta), the optimizer state by relative L2; names must match."""
    if set(replayed) != set(committed):
        return CheckResult("training_replay", False, {"step": k, "names_differ": len(set(replayed) ^ set(committed))})
    params = [n for n in replayed if n.startswith(PARAM_PREFIX)]
    moments = [n for n in replayed if not n.startswith(PARAM_PREFIX)]
    upd_replayed = {n: replayed[n] - before[n] for n in params}
    upd_committed = {n: committed[n] - before[n] for n in params}
    cos, rel = delta_similarity(upd_committed, upd_replayed)
    opt_rel = 0.0
    if moments:
        a = torch.cat([committed[n].reshape(-1).double() for n in moments])
        b = torch.cat([replayed[n].reshape(-1).double() for n in moments])
        nb = float(b.norm())
        opt_rel = float((a - b).norm() / nb) if nb > 0 else float((a - b).norm())
    ok = cos >= vcfg.replay_cos_min and rel <= vcfg.replay_rel_l2_max and opt_rel <= vcfg.replay_rel_l2_max
    return CheckResult("training_replay", ok, {"step": k, "cosine": cos, "rel_l2": rel, "opt_rel_l2": opt_rel})


def check_delta_state(
    policy_base: Policy, delta: dict[str, torch.Tensor], last: dict[str, torch.Tensor]
) -> CheckResult:
    """The cheap link from the committed states to what gets aggregated: the delta must be exactly
    theta_H (committed inner state H) minus theta_base, computed as the trainer computes it."""
    theta_h = {k.removeprefix(PARAM_PREFIX): t for k, t in last.items() if k.startswith(PARAM_PREFIX)}
    base = policy_state(policy_base)
    if set(theta_h) != set(base) or set(delta) != set(base):
        return CheckResult("training_replay", False, {"step": -1, "names_differ": 1.0})
    diff = max(float((delta[n] - state_delta({n: theta_h[n]}, {n: base[n]})[n]).abs().max()) for n in base)
    return CheckResult("training_replay", diff == 0.0, {"step": -1, "delta_minus_state_max_abs": diff})


def check_sampling_rows(
    logits: torch.Tensor,
    part: RolloutBatch,
    keys: np.ndarray,
    sampler: SamplerConfig,
    vcfg: ValidationConfig,
    k: int,
    rows: Sequence[int] | None = None,  # the step's row index of each row of ``part`` (default 0..n-1)
) -> CheckResult:
    """Check 4 on sampled rows only: every counted token is the seeded choice up to the near-tie
    tolerance. The generation-length rule is a property of the whole batch (it stops early only
    once every row emitted EOS), so it runs on the whole batch (`check_lengths`), never on a sample
    of rows, whose longest row need not reach the batch's width."""
    gap, mask = sampling_gaps(logits, part, keys, sampler)
    mismatched = (gap > 0) & mask
    rejected_tok = (gap > vcfg.sampling_tie_tol) & mask
    return CheckResult(
        "sampling",
        int(rejected_tok.sum()) == 0,
        {
            "step": k,
            "rows": part.n,
            "tokens": int(mask.sum()),
            "mismatched": int(mismatched.sum()),
            "tolerated": int((mismatched & ~rejected_tok).sum()),
            "rejected_tokens": int(rejected_tok.sum()),
            "rejected_rollouts": int(rejected_tok.any(dim=1).sum()),
            "max_gap": float(torch.where(mask, gap, torch.zeros_like(gap)).max()) if mask.numel() else 0.0,
        },
        tuple(n if rows is None else rows[n] for n in rejected_tok.any(dim=1).nonzero().flatten().tolist()),
    )


@dataclass(frozen=True)
class SampledRows:
    """Checks 3 and 4's recomputation for the sampled rows of one inner step."""

    part: RolloutBatch  # the sampled rows (sub_batch)
    keys: np.ndarray  # [n] their assigned sampler keys
    out: Recomputed  # their prefill under theta_k, TOPLOC and float32 re-check done


def recompute_sampled(
    bundle: Bundle,
    sample: CheckSample,
    verified: list[RolloutBatch],
    cfgs: TaskConfig,
    vcfg: ValidationConfig,
    theta: Callable[[int], Policy],  # k -> theta_k (raises InnerStateError when state k does not fit)
) -> dict[int, SampledRows]:
    """The sampled rows of every step, recomputed in step order up to (not including) the first step
    whose theta does not load: one prefill per step under theta_k, then the TOPLOC arithmetic of all
    steps in one call, then under bf16 the float32 re-check of the rows that failed (theta_k loaded
    again) with their TOPLOC in one more. Each row's result is what recompute_states gives it alone;
    verify_sampled reports them in protocol order."""
    parts: dict[int, tuple[RolloutBatch, np.ndarray]] = {}  # k -> (the sampled rows, their sampler keys)
    firsts: dict[int, tuple[PrefillPrecision, torch.Tensor, torch.Tensor]] = {}  # k -> prefill_pass
    for k, sampled in enumerate(sample.rows):
        if not sampled:
            continue
        try:
            policy = theta(k)
        except InnerStateError:
            break
        want_i, want_j = assigned_indices(k, cfgs.grpo)
        pairs = [(want_i[n], want_j[n]) for n in sampled]
        parts[k] = (
            sub_batch(bundle.batches[k], list(sampled)),
            smp.sample_keys(bundle.task_id, bundle.round, bundle.trainer, pairs),
        )
        firsts[k] = prefill_pass(policy, parts[k][0], vcfg)

    def toploc_input(k: int, hidden: torch.Tensor, rows: list[int] | None) -> TOPLOCRows:
        proofs = tuple(bundle.proofs[k][n] for n in sample.rows[k])
        return hidden, parts[k][0], proofs, verified[k].lengths[list(sample.rows[k])], rows

    first = toploc_many([toploc_input(k, hidden, None) for k, (_, hidden, _) in firsts.items()], vcfg)
    per_row = dict(zip(firsts, first, strict=True))
    passes = {k: (hidden, logits) for k, (_, hidden, logits) in firsts.items()}
    rechecked: dict[int, list[int]] = {}
    for k, (precision, hidden, logits) in firsts.items():
        rows = bf16_failures(precision, logits, *parts[k], per_row[k], cfgs.sampler, vcfg)
        if rows:
            passes[k], rechecked[k] = float32_rows(theta(k), parts[k][0], rows, hidden, logits), rows
    again = toploc_many([toploc_input(k, passes[k][0], rows) for k, rows in rechecked.items()], vcfg)
    for (k, fixed), results in zip(rechecked.items(), again, strict=True):
        for n, r in zip(fixed, results, strict=True):
            per_row[k][n] = r
    return {
        k: SampledRows(*parts[k], Recomputed(*passes[k], per_row[k], len(rechecked.get(k, ())), firsts[k][0]))
        for k in firsts
    }


def verify_sampled(
    policy_base: Policy,
    bundle: Bundle,
    env: Env,
    cfgs: TaskConfig,
    vcfg: ValidationConfig,
    sample: CheckSample,
    states: dict[int, dict[str, torch.Tensor]],
) -> Verdict:
    """Sampled mode (validator.sampling): the cheap checks on everything (schema, prompts, lengths and
    PAD, rewards, work units, proof root), then the prefill checks on the sampled rows of each step
    under theta_k, then each sampled inner step replayed alone; the first failure rejects."""
    run = Run()
    done = run.failed

    missing = [k for k in sample.states_needed() if k not in states]
    if missing:
        raise ValueError(f"inner states {missing} are needed by this sample and were not fetched")
    if (v := done(check_schema(policy_base, bundle, cfgs))) is not None:
        return v
    recomputed_rewards = step_rewards(bundle.batches, env)
    verified: list[RolloutBatch] = []
    for k, batch in enumerate(bundle.batches):
        if (v := done(check_prompts(batch, k, bundle, env, cfgs.grpo))) is not None:
            return v
        if (v := done(check_lengths(batch, cfgs.sampler, k))) is not None:
            return v
        r, env_rewards = check_rewards(batch, env, k, recomputed_rewards[k])
        if (v := done(r)) is not None:
            return v
        mask = completion_mask(batch.completions, cfgs.sampler.stop_at_eos)
        # sampler keys only where the sampling replay needs them (training does not read them)
        verified.append(verified_batch(batch, k, bundle, env_rewards, mask, np.asarray(batch.keys), cfgs))
    if (v := done(check_work_units(bundle.work_units, bundle.mean_reward, verified))) is not None:
        return v
    if (v := done(check_proof_root(bundle.proofs, bundle.proof_root))) is not None:
        return v
    h = len(bundle.batches)
    if (v := done(check_delta_state(policy_base, bundle.delta, states[h]))) is not None:
        return v
    base_state = {PARAM_PREFIX + n: t.float() for n, t in policy_state(policy_base).items()}  # theta_0, no momenta
    work = clone_policy(policy_base)  # theta_k is loaded into this one policy, step by step

    def inner(k: int) -> tuple[Policy, torch.optim.Optimizer]:  # (theta_k, its optimizer) into ``work``
        return restore_inner_state(policy_base, base_state if k == 0 else states[k], k, cfgs.grpo, work)

    def state_unusable(k: int) -> Verdict:  # state k fetched and canonical, yet not one of this model and optimizer
        rejected = done(CheckResult("training_replay", False, {"step": k, "state_unusable": 1.0}))
        assert rejected is not None
        return rejected

    sampled = recompute_sampled(bundle, sample, verified, cfgs, vcfg, lambda k: inner(k)[0])
    for k in range(h):
        if sample.rows[k]:  # checks 3 and 4 on the sampled rows, under theta_k, with their assigned sampler keys
            if k not in sampled:  # recompute_sampled stopped here: theta_k did not load
                return state_unusable(k)
            rows = sampled[k]
            if (v := done(toploc_result(rows.out.toploc, k, sample.rows[k]))) is not None:
                return v
            r = check_sampling_rows(rows.out.logits, rows.part, rows.keys, cfgs.sampler, vcfg, k, sample.rows[k])
            if (v := done(r)) is not None:
                return v
        if k in sample.steps:  # check 6 on one inner step, replayed alone from inner state k
            try:
                policy, optimizer = inner(k)
            except InnerStateError:
                return state_unusable(k)
            before = base_state if k == 0 else states[k]
            with timing.span("replay"):
                inner_update(policy, optimizer, verified[k], cfgs.grpo, policy_base)
            r = check_state_step(before, inner_state(policy, optimizer), states[k + 1], vcfg, k)
            if (v := done(r)) is not None:
                return v
    return run.accepted()

"""A validator's checks of one LM submission (client.engine.lm_grpo.LMSubmission): the checks of
validator/checks.py on a pretrained LM with LoRA adapters, group by group.

Per inner step k and group (prompt i): the prompt tokens and indices must be the seeded
assignment's -> one prefill of the group under adapters_k (prompt once, completions on the shared
cache; client.engine.lm_rollout.prefill_group) -> TOPLOC on its 576-wide hidden states -> sampling
replay on its completion logits over the 49,152-token vocabulary (the near-tie tolerance of
ValidationConfig) -> rewards recomputed by the text environment's scorer. Then adapters_{k+1} =
inner_update(adapters_k, verified groups) and finally the replayed delta against the submitted one,
work units, mean reward and the proof root.

Sampled mode (docs/PROTOCOL.md "Sampled checks"; validator.sampling.draw_sample over the H steps of
A x G rows, row n of step k = row n % G of group n // G): the cheap checks (schema, prompts, rewards,
PAD and length rule, work units, proof root) run on every group; the prefill checks (TOPLOC,
sampling replay) only on the sampled rows, each group's sampled rows in one prefill; the training
replay runs when the sample has a step to replay. An LM submission commits its adapters after every
step but not the optimizer's state, so the replay is the whole round's (H steps from the base), not
one step alone.

Precision: with ``bf16`` the prefill runs under bf16 autocast and every group with a row that fails
TOPLOC or sampling there is recomputed in float32 and judged on that (the rule of
validator.checks.recompute_states: bf16 rounding can only speed up a group that passes).
The first failing check rejects; evidence holds numbers only.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from concord.client import timing
from concord.client.engine import sampler as smp
from concord.client.engine.config import GRPOConfig, ValidationConfig
from concord.client.engine.grpo import delta_similarity, inner_optimizer, state_delta
from concord.client.engine.lm_grpo import LMSubmission, inner_update
from concord.client.engine.lm_rollout import (
    LMRollouts,
    adapter_parameters,
    adapter_state,
    load_adapter_state,
    model_device,
    prefill_group,
)
from concord.client.engine.rollout import RolloutBatch, completion_mask
from concord.validator.checks import (
    CheckResult,
    Run,
    Verdict,
    check_proof_root,
    check_work_units,
    completion_gaps,
    delta_like,
    length_rule,
    root_like,
    sub_batch,
    toploc_result,
    toploc_rows,
)
from concord.validator.sampling import CheckSample


def check_group_prompt(batch: RolloutBatch, sub: LMSubmission, i: int, rollouts: LMRollouts, k: int) -> CheckResult:
    """Every row of the group carries prompt index i, sample index j = row, and exactly the tokens of
    the environment's prompt of prompt_seed(task, round, trainer, i)."""
    g = batch.group_size
    idx_bad = int((batch.prompt_idx != i).sum() + (batch.sample_idx != torch.arange(batch.n)).sum()) + abs(batch.n - g)
    want = rollouts.env.prompt_ids(rollouts.tokenizer, smp.prompt_seed(sub.task_id, sub.round, sub.trainer, i))
    expected = torch.tensor([want] * batch.n)
    rows_bad = batch.n if expected.shape != batch.prompts.shape else int((expected != batch.prompts).any(dim=1).sum())
    return CheckResult(
        "prompts",
        idx_bad == 0 and rows_bad == 0,
        {"step": k, "prompt": i, "index_mismatches": idx_bad, "rows_altered": rows_bad},
    )


def check_group_sampling(
    logits: torch.Tensor,
    batch: RolloutBatch,
    keys: np.ndarray,
    rollouts: LMRollouts,
    vcfg: ValidationConfig,
    k: int,
    rows: list[int] | None = None,
) -> CheckResult:
    """Every counted token of rows ``rows`` (default all; ``logits`` [len(rows), C, V] are theirs) is the
    seeded choice up to the near-tie tolerance; on every row PAD (= EOS) after the first EOS, and
    decoding ran to max_new_tokens unless every row had stopped right then."""
    eos, sampler = rollouts.eos, rollouts.sampler
    mask = completion_mask(batch.completions, sampler.stop_at_eos, eos)
    picked = torch.arange(batch.n) if rows is None else torch.tensor(rows, dtype=torch.int64)  # [R]
    if len(picked):
        gap = completion_gaps(logits, batch.completions[picked], keys[picked.numpy()], sampler.temperature)
    else:  # no row of this group in the sample: the PAD and length rules below still hold for every row
        gap = torch.zeros(0, batch.completions.shape[1])
    counted = mask[picked]  # [R, C] the sampled rows' counted tokens
    rejected = (gap > vcfg.sampling_tie_tol) & counted
    pad_bad, length_ok = length_rule(batch.completions, mask, eos, eos, sampler.max_new_tokens, True)  # PAD = EOS
    ok = int(rejected.sum()) == 0 and pad_bad == 0 and length_ok
    return CheckResult(
        "sampling",
        ok,
        {
            "step": k,
            "tokens": int(counted.sum()),
            "mismatched": int(((gap > 0) & counted).sum()),
            "rejected_tokens": int(rejected.sum()),
            "rejected_rollouts": int(rejected.any(dim=1).sum()),
            "pad_after_eos_bad": pad_bad,
            "length_ok": float(length_ok),
            "max_gap": float(torch.where(counted, gap, torch.zeros_like(gap)).max()) if len(picked) else 0.0,
        },
        tuple(int(picked[r]) for r in rejected.any(dim=1).nonzero().flatten().tolist()),
    )


def check_group_rewards(
    batch: RolloutBatch, rollouts: LMRollouts, sub: LMSubmission, i: int, k: int
) -> tuple[CheckResult, torch.Tensor]:
    """The claimed rewards must equal the environment's scorer on the decoded completions, exactly."""
    seed = smp.prompt_seed(sub.task_id, sub.round, sub.trainer, i)
    recomputed = rollouts.rewards(seed, batch.completions)
    claimed = batch.rewards.to(torch.float64)
    if claimed.shape != recomputed.shape:
        return CheckResult("rewards", False, {"step": k, "prompt": i, "mismatched": batch.n}), recomputed
    diff = (claimed - recomputed).abs()
    return CheckResult(
        "rewards",
        bool((diff == 0).all()),
        {"step": k, "prompt": i, "mismatched": int((diff != 0).sum()), "max_abs_diff": float(diff.max())},
    ), recomputed


def check_schema(
    sub: LMSubmission, base: dict[str, torch.Tensor], grpo: GRPOConfig, rollouts: LMRollouts
) -> CheckResult:
    """H steps of prompts_per_step groups of G rows, token ids inside the vocabulary, completions no
    longer than max_new_tokens, a proof list per rollout, H - 1 intermediate states and a delta, each
    finite with exactly the adapters' names and shapes."""
    vocab, problems = len(rollouts.tokenizer), 0
    if len(sub.steps) != grpo.inner_steps or len(sub.proofs) != len(sub.steps):
        problems += 1
    for groups, proofs in zip(sub.steps, sub.proofs, strict=False):
        if len(groups) != grpo.prompts_per_step or len(proofs) != len(groups):
            problems += 1
        for b, p in zip(groups, proofs, strict=False):
            ok = (
                b.prompts.dim() == 2
                and b.completions.dim() == 2
                and b.prompts.shape[0] == b.completions.shape[0] == grpo.group_size
                and b.rewards.shape == (grpo.group_size,)
                and len(p) == grpo.group_size
                and 1 <= b.completions.shape[1] <= rollouts.sampler.max_new_tokens
                and all(
                    t.dtype == torch.int64 and bool(((t >= 0) & (t < vocab)).all()) for t in (b.prompts, b.completions)
                )
                and (b.task_id, b.round, b.trainer.lower()) == (sub.task_id, sub.round, sub.trainer.lower())
            )
            problems += not ok
    delta_ok = len(sub.states) == grpo.inner_steps - 1 and all(delta_like(d, base) for d in (*sub.states, sub.delta))
    problems += not delta_ok
    problems += not root_like(sub.proof_root)
    return CheckResult("schema", problems == 0, {"problems": problems, "delta_ok": float(delta_ok)})


def verify_submission(
    rollouts: LMRollouts,
    base: dict[str, torch.Tensor],
    sub: LMSubmission,
    grpo: GRPOConfig,
    vcfg: ValidationConfig = ValidationConfig(),
    bf16: bool = False,
    replay: bool = True,
    sample: CheckSample | None = None,
) -> Verdict:
    """Checks in protocol order on the LM; the first failure rejects.

    Step k's rollouts are checked under the submitted adapters_k (``sub.step_adapters``), so the
    inference checks need no replay. ``replay=True`` then re-runs the H inner steps from the base on
    the verified groups (the fresh optimizer of the round) and requires every replayed adapters_{k+1}
    to match the submitted one (the last is the delta): a state that training did not produce fails
    here. ``replay=False`` stops after the inference checks: what ``concord bench lm`` times as verify_s.
    ``sample`` (validator.sampling.draw_sample; None = every row and the replay) limits the prefill
    checks to its rows and runs the replay only when it has a step to replay (module doc)."""
    run = Run()
    done = run.failed

    if (v := done(check_schema(sub, base, grpo, rollouts))) is not None:
        return v
    model = rollouts.model
    steps: list[list[RolloutBatch]] = []
    for k, groups in enumerate(sub.steps):
        load_adapter_state(model, sub.step_adapters(base, k))
        with torch.no_grad(), torch.autocast(model_device(model).type, dtype=torch.bfloat16, enabled=bf16):
            prefix = rollouts.prefix()  # the shared prompt prefix under adapters_k, in the prefill's precision
        step_verified = []
        for a, batch in enumerate(groups):
            i = k * grpo.prompts_per_step + a
            if (v := done(check_group_prompt(batch, sub, i, rollouts, k))) is not None:
                return v
            keys = smp.sample_keys(sub.task_id, sub.round, sub.trainer, [(i, j) for j in range(grpo.group_size)])
            mask = completion_mask(batch.completions, rollouts.sampler.stop_at_eos, rollouts.eos)
            g = grpo.group_size
            rows = list(range(g)) if sample is None else [n - a * g for n in sample.rows[k] if a * g <= n < (a + 1) * g]
            per_row, sampling = [], check_group_sampling(torch.empty(0), batch, keys, rollouts, vcfg, k, [])
            if rows:
                part = sub_batch(batch, rows)
                proofs = tuple(sub.proofs[k][a][j] for j in rows)
                with timing.span("verification"):
                    hidden, logits = prefill_group(model, part, bf16=bf16, prefix=prefix)
                    lengths = mask[torch.tensor(rows)].sum(1)
                    per_row = toploc_rows(hidden, part, proofs, lengths, vcfg)
                    sampling = check_group_sampling(logits, batch, keys, rollouts, vcfg, k, rows)
                    if bf16 and (not sampling.ok or not all(r.ok for r in per_row)):
                        hidden, logits = prefill_group(model, part, bf16=False)  # the float32 re-check
                        per_row = toploc_rows(hidden, part, proofs, lengths, vcfg)
                        sampling = check_group_sampling(logits, batch, keys, rollouts, vcfg, k, rows)
            at = [a * g + j for j in rows]  # the sampled rows as rows n of step k (validator.flags)
            if (v := done(toploc_result(per_row, k, at))) is not None:
                return v
            if (v := done(dataclasses.replace(sampling, rows=tuple(a * g + j for j in sampling.rows)))) is not None:
                return v
            r, env_rewards = check_group_rewards(batch, rollouts, sub, i, k)
            if (v := done(r)) is not None:
                return v
            step_verified.append(
                dataclasses.replace(
                    batch,
                    keys=keys,
                    mask=mask,
                    lengths=mask.sum(1),
                    rewards=env_rewards,
                    temperature=rollouts.sampler.temperature,
                    group_size=grpo.group_size,
                )
            )
        steps.append(step_verified)
    verified = [b for groups in steps for b in groups]
    if (v := done(check_work_units(sub.work_units, sub.mean_reward, verified))) is not None:
        return v
    if (v := done(check_proof_root(sub.flat_proofs, sub.proof_root))) is not None:
        return v
    replay = replay and (sample is None or bool(sample.steps))
    if replay and (v := done(check_replay(rollouts, base, sub, steps, grpo, vcfg))) is not None:
        return v
    return run.accepted()


def check_replay(
    rollouts: LMRollouts,
    base: dict[str, torch.Tensor],
    sub: LMSubmission,
    steps: list[list[RolloutBatch]],
    grpo: GRPOConfig,
    vcfg: ValidationConfig,
) -> CheckResult:
    """The H inner steps replayed from the base on the verified groups; every replayed adapters_{k+1}
    against the submitted one (cosine and relative L2 of the deltas from the base); the worst step is
    the evidence."""
    model = rollouts.model
    load_adapter_state(model, base)
    optimizer = inner_optimizer(adapter_parameters(model), grpo)
    worst_cos, worst_rel, worst_step = 1.0, 0.0, -1
    for k, groups in enumerate(steps):
        with timing.span("replay"):
            inner_update(model, optimizer, groups, grpo, rollouts.prefix_ids)  # adapters_{k+1}
        claimed = sub.states[k] if k < len(sub.states) else sub.delta
        cos, rel = delta_similarity(claimed, state_delta(adapter_state(model), base))
        if cos < worst_cos or rel > worst_rel:
            worst_cos, worst_rel, worst_step = min(cos, worst_cos), max(rel, worst_rel), k
    ok = worst_cos >= vcfg.replay_cos_min and worst_rel <= vcfg.replay_rel_l2_max
    return CheckResult("training_replay", ok, {"cosine": worst_cos, "rel_l2": worst_rel, "worst_step": worst_step})

"""The LM's part of the check walk (validator.pipeline.KindChecks): a pretrained LM with LoRA adapters
(client.engine.bundle.Bundle with A = prompts_per_step groups per step), each inner step A units of one
group (prompt i, G rows).

theta_k is the submission's committed adapters_k, so the inference checks need no replay: a group's checked
rows are prefilled together (prompt once, completions on the shared cache; lm_rollout.prefill_group), under
bf16 a group failing check 3 or 4 again in float32. The replay re-runs the H inner steps from the base (no
optimizer state is committed: no step alone) and requires every replayed adapters_{k+1} to match the
submitted one (the last is the delta); it runs when the sample has a step to replay."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from concord.client import timing
from concord.client.engine import sampler as smp
from concord.client.engine.bundle import Bundle, RolloutProofs
from concord.client.engine.config import GRPOConfig, ValidationConfig
from concord.client.engine.grpo import delta_similarity, inner_optimizer, state_delta
from concord.client.engine.lm_grpo import inner_update
from concord.client.engine.lm_rollout import (
    LMRollouts,
    Prefix,
    adapter_parameters,
    adapter_state,
    load_adapter_state,
    model_device,
    prefill_group,
)
from concord.client.engine.rollout import RolloutBatch
from concord.validator.pipeline import Part, Plan, Rows, Unit, sub_batch, verify
from concord.validator.rules import completion_gaps, delta_like, root_like, rows_ok, toploc_rows
from concord.validator.sampling import CheckSample, full_sample
from concord.validator.verdict import CheckResult, Verdict


class LMChecks:
    """KindChecks of one LM submission under the round's adapters ``base`` (module doc)."""

    detailed, may_stop = False, True

    def __init__(
        self,
        rollouts: LMRollouts,
        base: dict[str, torch.Tensor],
        sub: Bundle,
        grpo: GRPOConfig,
        vcfg: ValidationConfig,
        bf16: bool,
        replay: bool,
    ) -> None:
        self.rollouts, self.base, self.claims, self.grpo, self.vcfg = rollouts, base, sub, grpo, vcfg
        self.sampler, self.bf16, self.replaying = rollouts.sampler, bf16, replay
        self.pad = self.eos = rollouts.eos  # PAD is EOS
        self.loaded: tuple[int, Prefix | None] | None = None  # (k, the shared prompt prefix under adapters_k)

    def plan(self, sample: CheckSample | None) -> Plan:
        self.replaying = self.replaying and (sample is None or bool(sample.steps))
        s = full_sample(self.grpo.inner_steps, self.grpo.rollouts_per_step) if sample is None else sample
        return Plan(s.rows, s.steps, deferred=False, chain=False)

    def schema(self) -> CheckResult:
        """H steps of prompts_per_step groups of G rows, token ids inside the vocabulary, completions no
        longer than max_new_tokens, a proof list per rollout, H - 1 intermediate states and a delta, each
        finite with exactly the adapters' names and shapes."""
        sub, grpo, vocab, problems = self.claims, self.grpo, len(self.rollouts.tokenizer), 0
        if len(sub.steps) != grpo.inner_steps or len(sub.step_proofs) != len(sub.steps):
            problems += 1
        for groups, proofs in zip(sub.steps, sub.step_proofs, strict=False):
            if len(groups) != grpo.prompts_per_step or len(proofs) != len(groups):
                problems += 1
            for b, p in zip(groups, proofs, strict=False):
                shapes_ok, tokens_ok = rows_ok(b, grpo.group_size, p, self.sampler.max_new_tokens, vocab)
                ids_ok = (b.task_id, b.round, b.trainer.lower()) == (sub.task_id, sub.round, sub.trainer.lower())
                problems += not (shapes_ok and tokens_ok and ids_ok)
        states = (*sub.states, sub.delta)
        delta_ok = len(sub.states) == grpo.inner_steps - 1 and all(delta_like(d, self.base) for d in states)
        problems += (not delta_ok) + (not root_like(sub.proof_root))
        return CheckResult("schema", problems == 0, {"problems": problems, "delta_ok": float(delta_ok)})

    def units(self, k: int) -> list[Unit]:
        g, first, proofs = self.grpo.group_size, k * self.grpo.prompts_per_step, self.claims.step_proofs[k]
        return [
            Unit(k, a * g, b, proofs[a], [first + a] * g, list(range(g)), {"step": k, "prompt": first + a})
            for a, b in enumerate(self.claims.steps[k])
        ]

    def seed(self, i: int) -> int:
        return smp.prompt_seed(self.claims.task_id, self.claims.round, self.claims.trainer, i)

    def prompt(self, i: int) -> list[int]:
        ids: list[int] = self.rollouts.env.prompt_ids(self.rollouts.tokenizer, self.seed(i))
        return ids

    def rewards(self, unit: Unit) -> torch.Tensor:
        return self.rollouts.rewards(self.seed(unit.want_i[0]), unit.batch.completions)

    def adapters(self, k: int) -> Prefix | None:
        """adapters_k on the model, and the shared prompt prefix under them (in the prefill's precision)."""
        if self.loaded is None or self.loaded[0] != k:
            model = self.rollouts.model
            load_adapter_state(model, step_adapters(self.claims, self.base, k))
            with torch.no_grad(), torch.autocast(model_device(model).type, dtype=torch.bfloat16, enabled=self.bf16):
                self.loaded = (k, self.rollouts.prefix())
        return self.loaded[1]

    def prefill(self, parts: Sequence[Part]) -> dict[int, Rows]:
        return {at: self.prefill_part(p) for at, p in enumerate(parts)}

    def prefill_part(self, p: Part) -> Rows:
        """One group's checked rows under adapters_k; under bf16 a failing group again in float32."""
        prefix, model, batch = self.adapters(p.unit.k), self.rollouts.model, p.unit.batch
        part, proofs = sub_batch(batch, p.rows), tuple(p.unit.proofs[j] for j in p.rows)
        with timing.span("verification"):
            hidden, logits = prefill_group(model, part, bf16=self.bf16, prefix=prefix)
            per_row = toploc_rows(hidden, part, proofs, p.counted.sum(1), self.vcfg)
            gap = completion_gaps(logits, part.completions, p.keys, self.sampler.temperature)
            rejected = bool(((gap > self.vcfg.sampling_tie_tol) & p.counted).any())
            if self.bf16 and (not all(r.ok for r in per_row) or rejected or p.rule != (0, True)):  # check 4 failed
                hidden, logits = prefill_group(model, part, bf16=False)  # the float32 re-check
                per_row = toploc_rows(hidden, part, proofs, p.counted.sum(1), self.vcfg)
                gap = completion_gaps(logits, part.completions, p.keys, self.sampler.temperature)
        return Rows(per_row, gap)

    def advance(self, k: int, verified: list[RolloutBatch]) -> None:
        raise AssertionError("the LM's plan never chains")  # theta_k is the committed adapters_k

    def replay_step(self, k: int, verified: list[RolloutBatch]) -> CheckResult:
        raise AssertionError("the LM's plan never defers")  # no optimizer state committed: no step alone

    def replay(self, verified: list[list[RolloutBatch]]) -> CheckResult | None:
        """The H inner steps replayed from the base on the verified groups; every replayed adapters_{k+1}
        against the submitted one (cosine and relative L2 of the deltas from the base); the worst step is
        the evidence. None when the plan has no step to replay."""
        if not self.replaying:
            return None
        model, sub = self.rollouts.model, self.claims
        load_adapter_state(model, self.base)
        self.loaded = None
        optimizer = inner_optimizer(adapter_parameters(model), self.grpo)
        worst_cos, worst_rel, worst_step = 1.0, 0.0, -1
        for k, groups in enumerate(verified):
            with timing.span("replay"):
                inner_update(model, optimizer, groups, self.grpo, self.rollouts.prefix_ids)  # adapters_{k+1}
            claimed = sub.states[k] if k < len(sub.states) else sub.delta
            cos, rel = delta_similarity(claimed, state_delta(adapter_state(model), self.base))
            if cos < worst_cos or rel > worst_rel:
                worst_cos, worst_rel, worst_step = min(cos, worst_cos), max(rel, worst_rel), k
        ok = worst_cos >= self.vcfg.replay_cos_min and worst_rel <= self.vcfg.replay_rel_l2_max
        return CheckResult("training_replay", ok, {"cosine": worst_cos, "rel_l2": worst_rel, "worst_step": worst_step})

    def proofs(self) -> tuple[tuple[RolloutProofs, ...], ...]:
        """Per step, the proofs of its rows in (group, sample) order: the Merkle leaves' order."""
        return tuple(tuple(p for group in step for p in group) for step in self.claims.step_proofs)


def step_adapters(sub: Bundle, base: dict[str, torch.Tensor], k: int) -> dict[str, torch.Tensor]:
    """adapters_k, under which step k's groups were generated (claimed; the replay checks it): the base,
    plus the submission's state k (adapters_k - adapters_base) after step 0."""
    if k == 0:
        return base
    return {name: base[name] + sub.states[k - 1][name] for name in base}


def verify_submission(
    rollouts: LMRollouts,
    base: dict[str, torch.Tensor],
    sub: Bundle,
    grpo: GRPOConfig,
    vcfg: ValidationConfig = ValidationConfig(),
    bf16: bool = False,
    replay: bool = True,
    sample: CheckSample | None = None,
) -> Verdict:
    """Checks in protocol order on the LM (validator.pipeline.verify); the first failure rejects.
    ``replay=False`` stops after the inference checks: what ``concord bench lm`` times as verify_s.
    ``sample`` (validator.sampling.draw_sample; None = every row and the replay) limits the prefill
    checks to its rows and runs the replay only when it has a step to replay."""
    return verify(LMChecks(rollouts, base, sub, grpo, vcfg, bf16, replay), sample)


def judge(
    work: Any, base: Any, sub: Bundle, vcfg: ValidationConfig, sample: CheckSample | None, states: Any
) -> Verdict:
    """The registry's entry (validator.checks): a submission of an LM task (client.runtime.lm_work.LMWork),
    on its one peft model (held under the workload's lock)."""
    with work.lock:
        return verify_submission(work.rollouts, base, sub, work.spec.task.grpo, vcfg, bf16=work.bf16, sample=sample)

"""The tiny transformer's part of the check walk (validator.pipeline.KindChecks): a bundle's H batches of
N rows, each inner step one unit, the whole policy trained.

theta_k: in full mode the validator's own replay (theta_{k+1} = inner_update(theta_k, batch k rebuilt from
verified fields), the replayed delta compared with the submitted one); in sampled mode the committed inner
state k (client.content.submission.fetch_states: only the states the sample needs), the delta's link to
state H checked bit for bit and each sampled step replayed alone from state k against state k + 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from concord.client import timing
from concord.client.engine import sampler as smp
from concord.client.engine.bundle import Bundle, RolloutProofs
from concord.client.engine.config import TaskConfig, ValidationConfig
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
from concord.client.engine.rollout import RolloutBatch
from concord.validator.pipeline import Part, Plan, Rows, Unit, assigned_indices, state_unusable, sub_batch, verify
from concord.validator.rules import (
    check_training_replay,
    delta_like,
    root_like,
    rows_ok,
)
from concord.validator.sampling import CheckSample, full_sample
from concord.validator.tiny_prefill import recompute_many, sampling_gaps
from concord.validator.verdict import CheckResult, Verdict

States = dict[int, dict[str, torch.Tensor]]


class TinyChecks:
    """KindChecks of one bundle under theta_base = ``policy_base`` (module doc)."""

    pad, eos, detailed = PAD, EOS, True

    def __init__(
        self, policy_base: Policy, bundle: Bundle, env: Env, cfgs: TaskConfig, vcfg: ValidationConfig, states: States
    ) -> None:
        self.base, self.claims, self.env, self.cfgs, self.vcfg = policy_base, bundle, env, cfgs, vcfg
        self.grpo, self.sampler, self.may_stop = cfgs.grpo, cfgs.sampler, cfgs.sampler.stop_at_eos
        self.states = states
        self.chain: tuple[Policy, torch.optim.Optimizer] | None = None  # full mode: the replay's theta_k
        self.work: Policy | None = None  # sampled mode: theta_k loaded into this one policy, step by step
        self.step_rewards: list[torch.Tensor] | None = None

    def plan(self, sample: CheckSample | None) -> Plan:
        if sample is None or sample.full:
            policy = clone_policy(self.base)
            self.chain = (policy, make_inner_optimizer(policy, self.grpo))
            every = full_sample(self.grpo.inner_steps, self.grpo.rollouts_per_step)
            return Plan(every.rows, every.steps, deferred=False, chain=True)
        missing = [k for k in sample.states_needed() if k not in self.states]
        if missing:
            raise ValueError(f"inner states {missing} are needed by this sample and were not fetched")
        return Plan(sample.rows, sample.steps, deferred=True, chain=False)

    def schema(self) -> CheckResult:
        """H batches of the task's size tagged with the bundle's ids, int64 tokens inside the vocabulary, a
        proof list per rollout, a finite delta with exactly the base model's names and shapes, a 32-byte
        proof root."""
        bundle, grpo, n = self.claims, self.grpo, self.grpo.rollouts_per_step
        ev: dict[str, float] = {"batches": len(bundle.batches), "expected_batches": grpo.inner_steps}
        problems = int(len(bundle.batches) != grpo.inner_steps or len(bundle.proofs) != len(bundle.batches))
        for b, proofs in zip(bundle.batches, bundle.proofs, strict=False):  # a count mismatch is counted above
            shapes_ok, tokens_ok = rows_ok(b, n, proofs, self.sampler.max_new_tokens, self.base.config.vocab_size)
            shapes_ok = shapes_ok and b.prompt_idx.shape == (n,) and b.sample_idx.shape == (n,)
            ids_ok = (b.task_id, b.round, b.trainer.lower()) == (bundle.task_id, bundle.round, bundle.trainer.lower())
            problems += (not shapes_ok) + (not ids_ok) + (not (shapes_ok and tokens_ok))
        names_ok = delta_like(bundle.delta, policy_state(self.base))
        problems += (not names_ok) + (not root_like(bundle.proof_root))
        ev.update(problems=problems, delta_ok=float(names_ok))
        return CheckResult("schema", problems == 0, ev)

    def units(self, k: int) -> list[Unit]:
        want_i, want_j = assigned_indices(k, self.grpo)
        return [Unit(k, 0, self.claims.batches[k], self.claims.proofs[k], want_i, want_j, {"step": k})]

    def prompt(self, i: int) -> list[int]:
        c = self.claims
        return self.env.prompt(smp.prompt_seed(c.task_id, c.round, c.trainer, i))

    def rewards(self, unit: Unit) -> torch.Tensor:
        if self.step_rewards is None:
            self.step_rewards = step_rewards(self.claims.batches, self.env)
        return self.step_rewards[unit.k]

    def inner(self, k: int) -> tuple[Policy, torch.optim.Optimizer]:
        """(theta_k, its optimizer): the replay's own (full mode), else restored from committed state k
        (InnerStateError: it does not fit the model)."""
        if self.chain is not None:
            return self.chain
        if self.work is None:
            self.work = clone_policy(self.base)
        return restore_inner_state(self.base, self.state(k), k, self.grpo, self.work)

    def state(self, k: int) -> dict[str, torch.Tensor]:
        """Inner state k as committed (k = 0: theta_base and a fresh optimizer, no momenta)."""
        if k == 0:
            return {PARAM_PREFIX + n: t.float() for n, t in policy_state(self.base).items()}
        return self.states[k]

    def prefill(self, parts: Sequence[Part]) -> dict[int, Rows]:
        items = []
        for p in parts:
            rows = p.unit.batch if self.chain is not None else sub_batch(p.unit.batch, p.rows)
            proofs = tuple(p.unit.proofs[n] for n in p.rows)
            items.append((lambda k=p.unit.k: self.inner(k)[0], rows, proofs, p.counted.sum(1), p.keys))
        out = recompute_many(items, self.sampler, self.vcfg)
        return {
            at: Rows(r.toploc, sampling_gaps(r.logits, items[at][1], items[at][4], self.sampler)[0])
            for at, r in enumerate(out)
        }

    def advance(self, k: int, verified: list[RolloutBatch]) -> dict[str, torch.Tensor]:
        """theta_{k+1} = inner_update(theta_k, batch k as verified), in place; the inner state after it."""
        policy, optimizer = self.inner(k)
        with timing.span("replay"):
            inner_update(policy, optimizer, verified[0], self.grpo, self.base)
        return inner_state(policy, optimizer)

    def replay(self, verified: list[list[RolloutBatch]]) -> CheckResult:
        """Full mode: the replayed delta against the submitted one; sampled: the delta's link to state H."""
        if self.chain is not None:
            replayed = state_delta(policy_state(self.chain[0]), policy_state(self.base))
            return check_training_replay(replayed, self.claims.delta, self.vcfg)
        return check_delta_state(self.base, self.claims.delta, self.states[len(verified)])

    def replay_step(self, k: int, verified: list[RolloutBatch]) -> CheckResult:
        """Inner step k replayed alone from committed state k, against committed state k + 1."""
        try:
            replayed = self.advance(k, verified)
        except InnerStateError:
            return state_unusable(k)
        return check_state_step(self.state(k), replayed, self.states[k + 1], self.vcfg, k)

    def proofs(self) -> tuple[tuple[RolloutProofs, ...], ...]:
        return self.claims.proofs


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


def verify_bundle(
    policy_base: Policy,
    bundle: Bundle,
    env: Env,
    cfgs: TaskConfig,
    vcfg: ValidationConfig = ValidationConfig(),
    sample: CheckSample | None = None,
    states: States | None = None,
) -> Verdict:
    """Checks 1 to 6 of a bundle (validator.pipeline.verify); a sampled ``sample`` reads the inner ``states``
    it needs (``sample.states_needed()``, client.content.submission.fetch_states)."""
    return verify(TinyChecks(policy_base, bundle, env, cfgs, vcfg, states or {}), sample)


def judge(
    work: Any, base: Policy, bundle: Bundle, vcfg: ValidationConfig, sample: CheckSample | None, states: States
) -> Verdict:
    """The registry's entry (validator.checks): a bundle of a tiny task (client.runtime.tiny_work.TinyWork)."""
    return verify_bundle(base, bundle, work.env, work.spec.task, vcfg, sample, states)

"""Adversarial trainers (issue 5): what each cheater does, played through the honest node's hooks.

A Cheat is a name, one line saying what the cheater does, what should catch it, the first
round it can act in (earlier rounds it trains honestly), and what it does in place of the
honest steps of the trainer's round (DESIGN.md section 5), any of which may be None:

    model(policy, ctx) -> policy          build the round on another model than model(baseRound)
    bundle(bundle, ctx) -> Bundle         tamper with the bundle before upload
    upload(store, bundle, ctx) -> Claim   replace the honest upload (manifest-level cheats)
    claim(claim, ctx) -> Claim | None     replace what goes on chain; None: nothing to submit yet

`CheatingTrainer(cheat)` is a client.trainer.TrainerHooks that plays one Cheat on a real node:
`python -m scripts.adversaries.trainer run --cheat MODE <concord trainer run flags>` runs it.

Bundle cheaters are *consistent* where the mode says so: after tampering they recompute
everything they can (rewards, work units, proofs, the delta by replaying the inner steps, the
proof root), so only the check the attack targets can catch them. `concord bench attacks`
and the demo iterate CHEATS.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from ipfshttpclient import multipart
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from concord.client import chain
from concord.client.content.manifest import (
    ShardRef,
    SubmissionManifest,
    canonical_bytes,
    canonical_cid,
    digest_of,
)
from concord.client.content.store import Store
from concord.client.content.submission import (
    PROOFS_NAME,
    ROLLOUTS_NAME,
    SubmissionLimits,
    encode_stats,
    put_submission,
    state_files,
    submission_files,
)
from concord.client.digest import Digest
from concord.client.engine.bundle import (
    Bundle,
    batch_proofs,
    claimed_mean_reward,
    claimed_work_units,
    proofs_root,
    strip_private,
)
from concord.client.engine.config import TaskConfig
from concord.client.engine.envs import SYM0, Env, rewards
from concord.client.engine.grpo import (
    inner_state,
    inner_update,
    make_inner_optimizer,
    state_delta,
)
from concord.client.engine.model import build_policy, clone_policy, policy_state
from concord.client.engine.rollout import (
    RolloutBatch,
    completion_mask,
    generate,
    generate_tokens,
    prefill,
)
from concord.client.engine.sampler import prompt_seed
from concord.client.runtime.connect import Node
from concord.client.runtime.display import fields
from concord.client.runtime.task import TaskContext, model_for_round
from concord.client.trainer import Prepared, TrainerHooks
from scripts.adversaries.lm_cheats import NotApplicable, inflate_group_rewards

log = logging.getLogger("concord.trainer.cheat")


@dataclass(frozen=True)
class CheatContext:
    """What a cheat may use in round ``round``: the task, the honest base model, chain access."""

    task_id: int
    round: int
    base_round: int  # the in-window model the trainer claims
    trainer: str
    task: TaskConfig
    env: Env
    async_level: int
    limits: SubmissionLimits
    policy: torch.nn.Module  # model(base_round); shared: clone before changing it
    model: Callable[[int], torch.nn.Module]  # model(r) for any final r
    node: Node | None = None  # chain reads of claim hooks


@dataclass(frozen=True)
class Claim:
    """What a trainer submits on chain besides (task, round)."""

    base_round: int
    digest: Digest  # sha256 of the submission manifest
    proof_root: bytes  # 32 bytes
    work_units: int


@dataclass(frozen=True)
class Cheat:
    name: str
    doc: str  # one line: what the cheater does
    caught_by: str  # the check (verify_submission's failed_check) or contract error that stops it
    first_round: int = 0
    after_window: bool = False  # first_round counts after the async window: acts from first_round + asyncLevel
    model: Callable[[torch.nn.Module, CheatContext], torch.nn.Module] | None = None
    bundle: Callable[[Bundle, CheatContext], Bundle] | None = None
    upload: Callable[[Store, Bundle, CheatContext], Claim] | None = None
    claim: Callable[[Claim, CheatContext], Claim | None] | None = None
    lm: Callable[[Bundle], Bundle] | None = None  # the cheat on an LM task (lm_cheats)

    def acts(self, round_: int, async_level: int) -> bool:
        """Whether the cheat acts in ``round_`` (before that the node behaves honestly)."""
        return round_ >= self.first_round + (async_level if self.after_window else 0)


def cheat_context(node: Node, ctx: TaskContext, round_: int, base_round: int) -> CheatContext:
    """The context of a trainer node's round (model lookups go through the node's cache)."""
    return CheatContext(
        ctx.task_id,
        round_,
        base_round,
        node.address,
        ctx.task,
        ctx.env,
        ctx.params.async_level,
        ctx.spec.limits,
        model_for_round(ctx, node.store, base_round),
        lambda r: model_for_round(ctx, node.store, r),
        node,
    )


def honest_upload(store: Store, bundle: Bundle) -> Claim:
    digest, _ = put_submission(store, bundle)
    return Claim(bundle.base_round, digest, bytes(bundle.proof_root), bundle.work_units)


# ----------------------------------------------------------------------------- helpers


def _resealed(bundle: Bundle, batches, proofs=None, delta=None, states=None) -> Bundle:
    """``bundle`` with new batches / proofs / delta / inner states and claims recomputed from them."""
    proofs = bundle.proofs if proofs is None else tuple(proofs)
    return dataclasses.replace(
        bundle,
        batches=tuple(batches),
        proofs=proofs,
        delta=bundle.delta if delta is None else delta,
        states=bundle.states if states is None else tuple(states),
        mean_reward=claimed_mean_reward(batches),
        work_units=claimed_work_units(batches),
        proof_root=proofs_root(proofs),
    )


def _consistent(bundle: Bundle, batches: list[RolloutBatch], ctx: CheatContext, reprove: set[int]) -> Bundle:
    """A self-consistent bundle around tampered batches: masks, rewards, proofs of the steps in
    ``reprove`` (from a prefill under theta_k, as an honest prover would), the delta by replaying
    the inner steps (and the inner states it passes through), the claims. Proofs of other steps are kept."""
    grpo, policy = ctx.task.grpo, clone_policy(ctx.policy)
    opt = make_inner_optimizer(policy, grpo)
    fixed, proofs, states = [], list(bundle.proofs), []
    for k, b in enumerate(batches):
        mask = completion_mask(b.completions, ctx.task.sampler.stop_at_eos)
        r = torch.from_numpy(rewards(ctx.env, b.prompts.numpy(), b.completions.numpy()))
        b = dataclasses.replace(b, mask=mask, lengths=mask.sum(1), rewards=r)
        if k in reprove:
            proofs[k] = batch_proofs(dataclasses.replace(b, hidden=prefill(policy, b).hidden))
        inner_update(policy, opt, b, grpo, ctx.policy)
        states.append(inner_state(policy, opt))
        fixed.append(strip_private(b))
    return _resealed(bundle, fixed, proofs, state_delta(policy_state(policy), policy_state(ctx.policy)), states)


def _theta(ctx: CheatContext, batches, k: int) -> torch.nn.Module:
    """theta_k: the base after k inner steps on batches[:k]."""
    policy = clone_policy(ctx.policy)
    opt = make_inner_optimizer(policy, ctx.task.grpo)
    for b in batches[:k]:
        inner_update(policy, opt, b, ctx.task.grpo, ctx.policy)
    return policy


def _rng(ctx: CheatContext) -> np.random.Generator:
    return np.random.default_rng([ctx.task_id, ctx.round, int(ctx.trainer, 16) % (1 << 63)])


def _submitted(ctx: CheatContext) -> list[chain.Submitted]:
    """This task's Submitted events so far (claim hooks run on a trainer node: ctx.node is set)."""
    client = ctx.node.client
    return [
        e
        for e in client.concord.events(client.deployment.block_number, "latest", ["Submitted"])
        if isinstance(e, chain.Submitted) and e.task_id == ctx.task_id
    ]


def _claim_of(e: chain.Submitted, base_round: int) -> Claim:
    return Claim(base_round, Digest.parse(e.bundle_digest), bytes(e.proof_root), e.work_units)


# ----------------------------------------------------------------------------- proofs


def zero_proofs(bundle: Bundle, ctx: CheatContext) -> Bundle:
    proofs = tuple(tuple(tuple(bytes(len(p)) for p in r) for r in step) for step in bundle.proofs)
    return _resealed(bundle, bundle.batches, proofs)


def random_proofs(bundle: Bundle, ctx: CheatContext) -> Bundle:
    rng = _rng(ctx)
    proofs = tuple(tuple(tuple(rng.bytes(len(p)) for p in r) for r in step) for step in bundle.proofs)
    return _resealed(bundle, bundle.batches, proofs)


def proofs_one_short(bundle: Bundle, ctx: CheatContext) -> Bundle:
    """Drop the last proof of the last step's rollout with the most proofs."""
    step = list(bundle.proofs[-1])
    n = max(range(len(step)), key=lambda i: len(step[i]))
    step[n] = step[n][:-1]
    return _resealed(bundle, bundle.batches, bundle.proofs[:-1] + (tuple(step),))


def foreign_model(policy: torch.nn.Module, ctx: CheatContext) -> torch.nn.Module:
    """Same architecture, another init seed (e.g. a model the cheater prefers or runs cheaper)."""
    dtype = next(policy.parameters()).dtype
    return build_policy(dataclasses.replace(ctx.task.model, seed=ctx.task.model.seed + 1)).to(dtype)


def stale_model(policy: torch.nn.Module, ctx: CheatContext) -> torch.nn.Module:
    return ctx.model(ctx.round - ctx.async_level - 1)


# ----------------------------------------------------------------------------- tokens, seeds, prompts


def _other_token(tok: int) -> int:
    """A different symbol token (never PAD or EOS)."""
    return SYM0 + (tok - SYM0 + 1) % 8 if tok >= SYM0 else SYM0


def altered_token(where: str) -> Callable[[Bundle, CheatContext], Bundle]:
    """One generated token of the last step's longest rollout changed (position first/middle/last of
    its counted tokens); rewards, work units and the delta recomputed, proofs the honest ones."""

    def alter(bundle: Bundle, ctx: CheatContext) -> Bundle:
        b = bundle.batches[-1]
        n = int(torch.argmax(b.lengths))
        length = int(b.lengths[n])
        t = {"first": 0, "middle": length // 2, "last": length - 1}[where]
        comps = b.completions.clone()
        comps[n, t] = _other_token(int(comps[n, t]))
        batches = list(bundle.batches[:-1]) + [dataclasses.replace(b, completions=comps)]
        return _consistent(bundle, batches, ctx, reprove=set())

    return alter


def cherry_pick(bundle: Bundle, ctx: CheatContext) -> Bundle:
    """Last step: 2G samples per prompt with the round's sampler, the best G kept as j = 0..G-1."""
    k, g = len(bundle.batches) - 1, ctx.task.grpo.group_size
    b = bundle.batches[k]
    idx = sorted(set(b.prompt_idx.tolist()))
    wide = generate(
        _theta(ctx, bundle.batches, k), ctx.env, idx, 2 * g, ctx.task.sampler, ctx.task_id, ctx.round, ctx.trainer
    )
    keep: list[int] = []
    for a in range(len(idx)):
        rows = sorted(range(a * 2 * g, (a + 1) * 2 * g), key=lambda r: (-float(wide.rewards[r]), -r))
        keep += sorted(rows[:g])  # best first, later (unassigned) seeds on ties
    sel = torch.tensor(keep)
    width = int(wide.lengths[sel].max())  # trimmed as generation of the kept rows would have been
    picked = dataclasses.replace(b, completions=wide.completions[sel, :width])
    return _consistent(bundle, list(bundle.batches[:k]) + [picked], ctx, reprove={k})


def wrong_prompts(bundle: Bundle, ctx: CheatContext) -> Bundle:
    """Last step on the next round's prompts (sampled with the assigned keys, proved consistently)."""
    k = len(bundle.batches) - 1
    b = bundle.batches[k]
    prompts = torch.tensor(
        [ctx.env.prompt(prompt_seed(ctx.task_id, ctx.round + 1, ctx.trainer, int(i))) for i in b.prompt_idx]
    )  # [N, P]
    comps, _, _ = generate_tokens(_theta(ctx, bundle.batches, k), prompts, b.keys, ctx.task.sampler)
    moved = dataclasses.replace(b, prompts=prompts, completions=comps)
    return _consistent(bundle, list(bundle.batches[:k]) + [moved], ctx, reprove={k})


# ----------------------------------------------------------------------------- claims and delta


def inflate_rewards(bundle: Bundle, ctx: CheatContext | None = None) -> Bundle:
    """Claim reward 1.0 for every rollout (the env's rewards are recomputed by validators)."""
    batches = tuple(dataclasses.replace(b, rewards=torch.ones_like(b.rewards)) for b in bundle.batches)
    return dataclasses.replace(bundle, batches=batches, mean_reward=claimed_mean_reward(batches))


def work_units_plus_one(bundle: Bundle, ctx: CheatContext) -> Bundle:
    return dataclasses.replace(bundle, work_units=bundle.work_units + 1)


def random_delta(bundle: Bundle, ctx: CheatContext) -> Bundle:
    gen = torch.Generator().manual_seed(int(_rng(ctx).integers(1 << 62)))
    delta = {n: torch.randn(t.shape, generator=gen) * float(t.abs().mean() + 1e-6) for n, t in bundle.delta.items()}
    return dataclasses.replace(bundle, delta=delta)


def scaled_delta(bundle: Bundle, ctx: CheatContext) -> Bundle:
    return dataclasses.replace(bundle, delta={n: t * 1.01 for n, t in bundle.delta.items()})


def other_hparams(bundle: Bundle, ctx: CheatContext) -> Bundle:
    """The delta (and the inner states) trained on the same rollouts with twice the task's learning rate."""
    grpo = dataclasses.replace(ctx.task.grpo, lr=2 * ctx.task.grpo.lr)
    policy = clone_policy(ctx.policy)
    opt = make_inner_optimizer(policy, grpo)
    states = []
    for b in bundle.batches:
        inner_update(policy, opt, b, grpo, ctx.policy)
        states.append(inner_state(policy, opt))
    delta = state_delta(policy_state(policy), policy_state(ctx.policy))
    return dataclasses.replace(bundle, delta=delta, states=tuple(states))


def extra_inner_step(bundle: Bundle, ctx: CheatContext) -> Bundle:
    """H + 1 inner steps (more work, more pay): one more batch from theta_H, proved, trained on."""
    grpo, h = ctx.task.grpo, len(bundle.batches)
    policy = _theta(ctx, bundle.batches, h)
    opt = make_inner_optimizer(policy, grpo)
    idx = list(range(h * grpo.prompts_per_step, (h + 1) * grpo.prompts_per_step))
    extra = generate(policy, ctx.env, idx, grpo.group_size, ctx.task.sampler, ctx.task_id, ctx.round, ctx.trainer)
    inner_update(policy, opt, extra, grpo, ctx.policy)
    sealed = _resealed(
        bundle,
        bundle.batches + (strip_private(extra),),
        bundle.proofs + (batch_proofs(extra),),
        state_delta(policy_state(policy), policy_state(ctx.policy)),
    )
    # The chain refuses a claim above the task's maxWorkUnits (WorkUnitsAboveMax, a contract test):
    # this cheater claims at most that, so the bundle lands and the validators' limits must stop it.
    return dataclasses.replace(sealed, work_units=min(sealed.work_units, ctx.task.max_work_units))


# ----------------------------------------------------------------------------- manifest level


@dataclass(frozen=True)
class _ManifestWithheld:
    """A store view that uploads files but only hashes manifests (never stores them)."""

    store: Store

    def put_file(self, src, name=None, pin: bool = True):
        return self.store.put_file(src, name, pin=pin)

    def put_manifest(self, data: bytes, pin: bool = True) -> Digest:
        return digest_of(data)


def unavailable_manifest(store: Store, bundle: Bundle, ctx: CheatContext) -> Claim:
    return honest_upload(_ManifestWithheld(store), bundle)


def malformed_manifest(store: Store, bundle: Bundle, ctx: CheatContext) -> Claim:
    """The files uploaded, then a manifest with an extra field (canonical JSON, wrong schema)."""
    _, manifest = put_submission(_ManifestWithheld(store), bundle)
    doc = dict(manifest.to_json(), version=2)
    digest = store.put_manifest(canonical_bytes(doc))
    return Claim(bundle.base_round, digest, bytes(bundle.proof_root), bundle.work_units)


PADDED_SHARDS = 331  # empty delta shards the padded_delta_shards cheater appends
METADATA_BYTES = 2000  # bytes of safetensors metadata the delta_shard_metadata cheater adds


def _manifest_with_delta(
    store: Store, bundle: Bundle, rollouts: bytes, proofs: bytes, delta: Callable[[], tuple[ShardRef, ...]]
) -> Digest:
    """The bundle's manifest with its ``rollouts`` and ``proofs`` files and stats, and ``delta()`` (called
    after the two files are up) as its delta files, uploaded; its digest."""
    manifest = SubmissionManifest(
        task_id=bundle.task_id,
        round=bundle.round,
        base_round=bundle.base_round,
        trainer=bundle.trainer,
        rollouts=store.put_file(rollouts, ROLLOUTS_NAME),
        proofs=store.put_file(proofs, PROOFS_NAME),
        delta=delta(),
        stats=encode_stats(bundle, bundle.batches),
        states=tuple(store.put_file(data, name) for name, data in state_files(bundle)),  # the honest states
    )
    return store.put_manifest(manifest.to_bytes())


def upload_with_delta(store: Store, bundle: Bundle, shards: list[tuple[str, bytes]]) -> Claim:
    """The honest rollouts, proofs and stats with ``shards`` as the delta files (same tensors, other bytes)."""
    rollouts, proofs, _ = submission_files(bundle)
    digest = _manifest_with_delta(
        store, bundle, rollouts, proofs, lambda: tuple(store.put_file(data, name) for name, data in shards)
    )
    return Claim(bundle.base_round, digest, bytes(bundle.proof_root), bundle.work_units)


def padded_delta_shards(store: Store, bundle: Bundle, ctx: CheatContext) -> Claim:
    """The honest delta's shards followed by PADDED_SHARDS empty safetensors files (no tensors), all
    renamed `delta-{i}-of-{n}`: the same tensors, another digest for the same work."""
    shards = [data for _, data in submission_files(bundle)[2]] + [st_save({})] * PADDED_SHARDS
    n = len(shards)
    return upload_with_delta(
        store, bundle, [(f"delta-{i:05d}-of-{n:05d}.safetensors", data) for i, data in enumerate(shards, start=1)]
    )


def delta_shard_metadata(store: Store, bundle: Bundle, ctx: CheatContext) -> Claim:
    """The honest delta's first shard re-saved with METADATA_BYTES of safetensors metadata (same tensors)."""
    shards = submission_files(bundle)[2]
    name, data = shards[0]
    padded = st_save(dict(st_load(data)), metadata={"note": "x" * METADATA_BYTES})
    return upload_with_delta(store, bundle, [(name, padded)] + shards[1:])


# ----------------------------------------------------------------------------- availability (issue 10)


def add_chunked(store: Store, data: bytes, name: str, chunk: int) -> tuple[ShardRef, list[str]]:
    """Add ``data`` unpinned as a UnixFS file of ``chunk``-byte raw leaves (not the store's chunker);
    returns its reference and its leaves' CIDs in file order."""
    opts = {
        "cid-version": "1",
        "raw-leaves": "true",
        "chunker": f"size-{chunk}",
        "hash": "sha2-256",
        "pin": "false",
        "cid-base": "base32",
        "wrap-with-directory": "false",
    }
    body, headers = multipart.stream_bytes(data, chunk_size=1 << 20)
    resp = store._http.request("/add", opts=opts, decoder="json", data=body, headers=headers, timeout=store.timeout)
    root = canonical_cid(resp[-1]["Hash"])
    node = store._get_node(root, "the cheater's own root", time.monotonic() + store.timeout)
    leaves = [str(c.set(base="base32")) for c in node.links]
    return ShardRef(name, root, digest_of(data).hex(), len(data)), leaves


def withheld_leaf(store: Store, bundle: Bundle, ctx: CheatContext | None = None) -> Claim:
    """The honest bundle, its first delta shard uploaded as one file of two leaves (within the task's size
    limit, its root and sizes true) whose second leaf is removed from the node once the manifest is up:
    a validator gets the root and the first leaf, never the second (a provider that never serves a block)."""
    rollouts, proofs, shards = submission_files(bundle)
    name, data = shards[0]
    first, leaves = add_chunked(store, data, name, len(data) // 2 + 1)
    digest = _manifest_with_delta(
        store, bundle, rollouts, proofs, lambda: (first,) + tuple(store.put_file(d, n) for n, d in shards[1:])
    )
    store._http.request("/block/rm", (leaves[-1],), decoder="json", timeout=store.timeout)
    return Claim(bundle.base_round, digest, bytes(bundle.proof_root), bundle.work_units)


# ----------------------------------------------------------------------------- chain level


def copy_other(claim: Claim, ctx: CheatContext) -> Claim | None:
    """Another trainer's submission of this round as ours; None (wait) until one appears."""
    others = [e for e in _submitted(ctx) if e.round == ctx.round and e.trainer.lower() != ctx.trainer.lower()]
    return _claim_of(others[0], others[0].base_round) if others else None


def replay_own(claim: Claim, ctx: CheatContext) -> Claim:
    """Our own newest earlier submission again (in-window base); the honest claim if there is none."""
    mine = [e for e in _submitted(ctx) if e.round < ctx.round and e.trainer.lower() == ctx.trainer.lower()]
    return _claim_of(max(mine, key=lambda e: e.round), claim.base_round) if mine else claim


def base_outside_window(claim: Claim, ctx: CheatContext) -> Claim:
    return dataclasses.replace(claim, base_round=ctx.round - ctx.async_level - 1)


# ----------------------------------------------------------------------------- the registry

_ALL = (
    Cheat(
        "zero_proofs", "every TOPLOC proof replaced by zero bytes (proof root recomputed)", "toploc", bundle=zero_proofs
    ),
    Cheat(
        "random_proofs",
        "every TOPLOC proof replaced by random bytes (proof root recomputed)",
        "toploc",
        bundle=random_proofs,
    ),
    Cheat(
        "foreign_model_proofs",
        "rollouts generated, proved and trained with another model (same architecture, "
        "other init seed) while claiming model(baseRound)",
        "toploc",
        model=foreign_model,
    ),
    Cheat(
        "altered_token_first",
        "first counted token of one rollout changed, the rest recomputed (honest proofs)",
        "sampling",
        bundle=altered_token("first"),
    ),
    Cheat(
        "altered_token_middle",
        "middle counted token of one rollout changed, the rest recomputed (honest proofs)",
        "sampling",
        bundle=altered_token("middle"),
    ),
    Cheat(
        "altered_token_last",
        "last counted token of one rollout changed, the rest recomputed (honest proofs)",
        "sampling",
        bundle=altered_token("last"),
    ),
    Cheat(
        "cherry_picked",
        "best G of 2G samples per prompt relabelled as the assigned seeds, proved consistently",
        "sampling",
        bundle=cherry_pick,
    ),
    Cheat(
        "wrong_prompts",
        "last inner step on the next round's prompts, proved and trained consistently",
        "prompts",
        bundle=wrong_prompts,
    ),
    Cheat(
        "inflated_rewards",
        "reward 1.0 claimed for every rollout",
        "rewards",
        bundle=inflate_rewards,
        lm=inflate_group_rewards,
    ),
    Cheat(
        "work_units_off_by_one",
        "workUnits = honest + 1, on chain and in the manifest",
        "work_units",
        bundle=work_units_plus_one,
    ),
    Cheat("random_delta", "a random delta of the honest one's scale", "training_replay", bundle=random_delta),
    Cheat("delta_scaled_1_01", "the honest delta times 1.01", "training_replay", bundle=scaled_delta),
    Cheat(
        "other_hparams", "the delta trained on the same rollouts with lr x2", "training_replay", bundle=other_hparams
    ),
    Cheat(
        "copied_bundle",
        "another trainer's digest/proofRoot/workUnits of the same round submitted as its own "
        "(waits for one; misses the round if none appears)",
        "claim.trainer",
        claim=copy_other,
    ),
    Cheat(
        "replayed_bundle",
        "its own previous submission's digest/proofRoot/workUnits submitted again",
        "claim.round",
        first_round=1,
        claim=replay_own,
    ),
    Cheat(
        "base_outside_window",
        "baseRound = round - asyncLevel - 1 on chain",
        "contract: BaseRoundOutOfWindow",
        first_round=1,
        after_window=True,
        claim=base_outside_window,
    ),
    Cheat(
        "stale_model",
        "trained on model(round - asyncLevel - 1) while claiming an in-window baseRound",
        "toploc",
        first_round=1,
        after_window=True,
        model=stale_model,
    ),
    Cheat(
        "unavailable_manifest",
        "a valid manifest's digest submitted, the manifest never uploaded",
        "fetch",
        upload=unavailable_manifest,
    ),
    Cheat(
        "oversized_bundle",
        "H + 1 inner steps: over the task's inner-step and rollout limits (claims at most "
        "maxWorkUnits, which the chain enforces)",
        "fetch",
        bundle=extra_inner_step,
    ),
    Cheat(
        "malformed_manifest",
        "a manifest with a field the schema does not have (canonical JSON)",
        "fetch",
        upload=malformed_manifest,
    ),
    Cheat(
        "proofs_one_short",
        "one proof dropped from one rollout (proof root recomputed)",
        "toploc",
        bundle=proofs_one_short,
    ),
    Cheat(
        "padded_delta_shards",
        f"the honest bundle with {PADDED_SHARDS} empty delta shards appended (same tensors, another digest)",
        "fetch",
        upload=padded_delta_shards,
    ),
    Cheat(
        "delta_shard_metadata",
        f"the honest bundle with {METADATA_BYTES} bytes of metadata in its delta shard (same tensors, another digest)",
        "fetch",
        upload=delta_shard_metadata,
    ),
    Cheat(
        "withheld_leaf",
        "its delta shard uploaded as a file of two leaves, the second never served (block/rm after the manifest is up)",
        "fetch",
        upload=withheld_leaf,
    ),
)

CHEATS: dict[str, Cheat] = {c.name: c for c in _ALL}


# ----------------------------------------------------------------------------- on a trainer node


class CheatingTrainer(TrainerHooks):
    """The trainer node's hooks playing ``cheat``: the honest steps in the rounds before the cheat
    acts (Cheat.acts), the cheat's in place of them after. ``cheated`` holds the rounds in which it
    changed what was built or claimed; every claim it hands over logs a `cheat` line saying so."""

    def __init__(self, cheat: Cheat) -> None:
        self.cheat = cheat
        self.cheated: set[int] = set()

    def _acts(self, ctx: TaskContext, round_: int, step: Callable | None) -> bool:
        return step is not None and self.cheat.acts(round_, ctx.params.async_level)

    def base_model(self, node: Node, ctx: TaskContext, round_: int, base_round: int, policy: Any) -> Any:
        if not self._acts(ctx, round_, self.cheat.model):
            return policy
        self.cheated.add(round_)
        return self.cheat.model(policy, cheat_context(node, ctx, round_, base_round))

    def submission(self, node: Node, ctx: TaskContext, sub: Any) -> Any:
        """The cheat's edit of the round's submission: ``lm`` on an LM task's, ``bundle`` on a tiny one's."""
        if ctx.workload.kind == "lm":
            return self.lm_submission(sub, ctx)
        return self.bundle(node, ctx, sub)

    def bundle(self, node: Node, ctx: TaskContext, bundle: Bundle) -> Bundle:
        if not self._acts(ctx, bundle.round, self.cheat.bundle):
            return bundle
        self.cheated.add(bundle.round)
        return self.cheat.bundle(bundle, cheat_context(node, ctx, bundle.round, bundle.base_round))

    def lm_submission(self, sub: Bundle, ctx: TaskContext) -> Bundle:
        if not self._acts(ctx, sub.round, self.cheat.lm):
            return sub
        try:
            cheated = self.cheat.lm(sub)
        except NotApplicable as e:
            log.warning("cheat %s, round %d: %s; honest this round", self.cheat.name, sub.round, e)
            return sub
        self.cheated.add(sub.round)
        return cheated

    def upload(self, node: Node, ctx: TaskContext, bundle: Bundle) -> str:
        if not self._acts(ctx, bundle.round, self.cheat.upload):
            return super().upload(node, ctx, bundle)
        self.cheated.add(bundle.round)
        return self.cheat.upload(node.store, bundle, cheat_context(node, ctx, bundle.round, bundle.base_round)).digest

    def claim(self, node: Node, ctx: TaskContext, prep: Prepared) -> Prepared | None:
        if self._acts(ctx, prep.round, self.cheat.claim):
            honest = Claim(prep.base_round, prep.digest, prep.proof_root, prep.work_units)
            claim = self.cheat.claim(honest, cheat_context(node, ctx, prep.round, prep.base_round))
            if claim is None:
                return None
            if claim != honest:
                self.cheated.add(prep.round)
            prep = dataclasses.replace(
                prep,
                base_round=claim.base_round,
                digest=claim.digest,
                proof_root=claim.proof_root,
                work_units=claim.work_units,
            )
        cheated = prep.round in self.cheated
        log.log(
            logging.WARNING if cheated else logging.INFO,
            "cheat %s, round %d: %s",
            self.cheat.name,
            prep.round,
            f"cheated (caught by {self.cheat.caught_by})" if cheated else "honest this round",
            extra=fields(
                event="cheat",
                round=prep.round,
                cheat=self.cheat.name,
                cheated=cheated,
                base_round=prep.base_round,
                digest=prep.digest,
                work_units=prep.work_units,
            ),
        )
        return prep

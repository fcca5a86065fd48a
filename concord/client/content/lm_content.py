"""An LM task's content in IPFS (issue 12): its spec, its base model, its round models, its submissions.

The LM reuses the tiny model's wire formats wherever they fit, so there is one encoder and one
strict decoder per kind of file:

* spec      `LMTaskSpec`: kind "lm_task_spec", the LMTaskConfig's tables (client.engine.lm_task:
            source pins, env, adapter, sampler, grpo, outer, validation) plus [limits], one
            canonical raw block like client.content.task_spec's; its sha256 is the on-chain
            specDigest. `fetch_spec` reads either kind of spec by the digest.
* base      the base model's file (the GGUF of a gguf-package source), put in IPFS once per task
            by the initiator (`put_base`); every round model names it, and a node fetches it at most
            once, or uses its installed copy when that has the same sha256 (`resolve_base`). The
            weights it dequantizes to must still hash to the spec's weights_sha256.
* model r   client.content.model_store's ModelManifest with an `LMAdaptersConfig` (base file,
            weights pin, adapter config) and the adapter tensors (peft names, float32) as shards;
            the DiLoCo momentum, when the task has one, as its outer state.
* submission  client.content.submission's files and manifest for `lm_bundle(sub)`: every GRPO group
            is one batch of the rollouts and proofs files (a group's prompt length is its own), in
            (inner step, group) order, so the files' "inner steps" are the H x A groups and the
            limits count groups there; the delta is the adapters' (adapters_H - adapters_base); the
            states are the H - 1 intermediate adapters as deltas from the base
            (`state-{k:04d}.safetensors` = {"param.<name>": adapters_k - adapters_base}, k = 1..H-1),
            so a validator checks step k's groups under adapters_k without replaying steps 0..k-1.
            `fetch_lm_submission` reads it back, every limit and digest checked as for the tiny model.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from concord.client.content.manifest import (
    ManifestError,
    ShardRef,
    canonical_bytes,
    cid_for_digest,
    digest_of,
    parse_canonical,
)
from concord.client.content.model_store import LMAdaptersConfig, ModelError
from concord.client.content.store import ContentMismatch, ContentNotFound, SizeLimitExceeded, Store
from concord.client.content.submission import (
    SubmissionError,
    SubmissionLimits,
    adapter_state_layout,
    fetch_states,
    fetch_submission,
    proofs_bytes_bound,
    put_submission,
)
from concord.client.content.task_spec import KIND as TINY_SPEC_KIND
from concord.client.content.task_spec import TaskSpecError, TaskSpecManifest
from concord.client.digest import Digest
from concord.client.engine.bundle import Bundle
from concord.client.engine.config import ConfigError, from_dict, to_dict
from concord.client.engine.grpo import PARAM_PREFIX
from concord.client.engine.lm import ModelSource, ModelSourceError, file_sha256, gguf_path
from concord.client.engine.lm_grpo import LMSubmission
from concord.client.engine.lm_task import LMTaskConfig
from concord.client.engine.text_envs import BadTextEnvParams, UnknownTextEnv

log = logging.getLogger(__name__)

KIND = "lm_task_spec"
_HEADER_BYTES = 256 + 8  # one safetensors header entry per tensor, and its offsets (as default_limits)
MAX_BASE_BYTES = 16 << 30  # a base file a node agrees to fetch (the 135M GGUF is 98 MB)


# ----------------------------------------------------------------------------- spec


@dataclasses.dataclass(frozen=True)
class LMTaskSpec:
    """An LM task's spec: what its trainers compute and its validators check, and the size limits."""

    task: LMTaskConfig
    limits: SubmissionLimits

    @property
    def validation(self) -> Any:
        return self.task.validation

    def to_json(self) -> dict[str, Any]:
        return {"kind": KIND, **to_dict(self.task), "limits": to_dict(self.limits)}

    def to_bytes(self) -> bytes:
        return canonical_bytes(self.to_json())

    def digest(self) -> Digest:
        """sha256 of the canonical bytes: the task's on-chain specDigest."""
        return digest_of(self.to_bytes())

    @staticmethod
    def from_bytes(data: bytes, source: str = "<manifest>") -> LMTaskSpec:
        """Canonical bytes -> spec; TaskSpecError names the field (kind, a table's key, the encoding)."""
        try:
            obj = parse_canonical(data)
        except ManifestError as e:
            raise TaskSpecError(source, [ConfigError("manifest", e.field, e.reason)]) from None
        if obj.pop("kind", None) != KIND:
            raise TaskSpecError(source, [ConfigError("manifest", "kind", f"expected {KIND!r}")])
        limits = obj.pop("limits", None)
        if limits is None:
            raise TaskSpecError(source, [ConfigError("limits", "*", "missing table")])
        spec = LMTaskSpec(parse_lm_task(obj, source), _limits(limits, source))
        if spec.to_bytes() != bytes(data):
            raise TaskSpecError(
                source, [ConfigError("manifest", "<document>", "not the canonical encoding of its spec")]
            )
        return spec


def _limits(data: Any, source: str) -> SubmissionLimits:
    try:
        return from_dict(SubmissionLimits, data, "limits")
    except ConfigError as e:
        raise TaskSpecError(source, [e]) from None


def parse_lm_task(data: dict[str, Any], source: str = "<dict>") -> LMTaskConfig:
    """An LMTaskConfig from its tables; a TaskSpecError naming the field (source pins, env, adapter ...)."""
    try:
        return from_dict(LMTaskConfig, data, "task")
    except ConfigError as e:
        raise TaskSpecError(source, [e]) from None
    except ModelSourceError as e:
        raise TaskSpecError(source, [ConfigError("source", e.field, f"expected {e.expected}, got {e.got}")]) from None
    except (UnknownTextEnv, BadTextEnvParams) as e:
        raise TaskSpecError(source, [ConfigError("env", getattr(e, "key", "env_id"), str(e))]) from None
    except ValueError as e:  # AdapterConfigError and the like: their message names the field
        raise TaskSpecError(source, [ConfigError("task", "*", str(e))]) from None


def lm_limits(task: LMTaskConfig, adapter_shapes: dict[str, tuple[int, ...]]) -> SubmissionLimits:
    """The limits an honest submission of ``task`` fits into: H x A groups of G rollouts, prompts up to
    the env's max_prompt_tokens, the adapters' delta (client.content.submission.default_limits' rules)."""
    groups = task.grpo.inner_steps * task.grpo.prompts_per_step
    rollouts = groups * task.grpo.group_size
    env = task.env.make()
    params = sum(_numel(s) for s in adapter_shapes.values())
    return SubmissionLimits(
        max_inner_steps=groups,
        max_rollouts=rollouts,
        max_tokens=rollouts * (env.max_prompt_tokens + task.sampler.max_new_tokens),
        max_proof_bytes=proofs_bytes_bound(groups, rollouts, task.sampler.max_new_tokens),
        max_delta_bytes=4 * params + _HEADER_BYTES * len(adapter_shapes),
    )


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def put_lm_spec(store: Store, spec: LMTaskSpec) -> Digest:
    """Store the spec as one raw block; return its digest (the on-chain specDigest)."""
    return store.put_manifest(spec.to_bytes())


def fetch_spec(store: Store, digest: Digest | bytes | str) -> TaskSpecManifest | LMTaskSpec:
    """The spec behind an on-chain specDigest, of either kind; TaskSpecError names its CID and field."""
    source = f"manifest {cid_for_digest(digest)}"
    data = store.get_manifest(digest)
    try:
        kind = parse_canonical(data).get("kind")
    except ManifestError as e:
        raise TaskSpecError(source, [ConfigError("manifest", e.field, e.reason)]) from None
    if kind == KIND:
        return LMTaskSpec.from_bytes(data, source)
    if kind != TINY_SPEC_KIND:
        raise TaskSpecError(source, [ConfigError("manifest", "kind", f"expected {KIND!r} or {TINY_SPEC_KIND!r}")])
    try:
        return TaskSpecManifest.from_bytes(data)
    except ManifestError as e:
        raise TaskSpecError(source, [ConfigError("manifest", e.field, e.reason)]) from None
    except TaskSpecError as e:
        raise TaskSpecError(source, e.errors) from None


# ----------------------------------------------------------------------------- base model file


def base_file(source: ModelSource) -> Path:
    """The file an initiator puts in IPFS as the task's base: the installed GGUF (gguf-package only)."""
    if source.kind != "gguf-package":
        raise ModelSourceError("kind", "gguf-package (the chain path puts the GGUF in IPFS)", repr(source.kind))
    return gguf_path(source)


def put_base(store: Store, source: ModelSource) -> ShardRef:
    """Put the base model's file in IPFS once (the initiator, at publish); its ref goes in every round model."""
    path = base_file(source)
    return store.put_file(path, path.name)


def resolve_base(store: Store, source: ModelSource, ref: ShardRef, cache_dir: Path) -> Path | None:
    """The GGUF to load the base model from: None when the installed distribution's file is the one the
    task put in IPFS (same sha256: `concord.client.engine.lm.load` finds it itself), else the file fetched from
    IPFS by ``ref`` into ``cache_dir/lm-files/<sha256>/`` (once; every byte sha256-checked, never a
    partial file). ModelError names the CID when the content is missing or wrong."""
    try:
        if file_sha256(gguf_path(source)).hex() == ref.sha256:
            return None
    except ModelSourceError:  # not installed here: fetch the task's copy
        pass
    target = Path(cache_dir) / "lm-files" / ref.sha256 / ref.name
    if target.is_file() and file_sha256(target).hex() == ref.sha256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{ref.name}.")
    os.close(fd)
    try:
        store.get_file(ref, tmp, MAX_BASE_BYTES)
        os.replace(tmp, target)
    except (ContentNotFound, ContentMismatch, SizeLimitExceeded) as e:
        raise ModelError("config.base", ref.cid, str(e)) from e
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    log.info("fetched the task's base model %s (%d bytes) from IPFS", ref.cid, ref.size)
    return target


def lm_model_config(spec: LMTaskSpec, base: ShardRef) -> LMAdaptersConfig:
    """The config every round model of the task carries."""
    return LMAdaptersConfig(base, str(spec.task.model_source.weights_sha256), to_dict(spec.task.adapter))


# ----------------------------------------------------------------------------- submissions


def lm_bundle(sub: LMSubmission) -> Bundle:
    """The submission in the tiny model's wire form (module doc): one batch per group, states as deltas."""
    groups = tuple(g for step in sub.steps for g in step)
    proofs = tuple(p for step in sub.proofs for p in step)
    states = tuple({PARAM_PREFIX + n: t.detach().cpu().contiguous() for n, t in s.items()} for s in sub.states)
    return Bundle(
        task_id=sub.task_id,
        round=sub.round,
        base_round=sub.base_round,
        trainer=sub.trainer,
        batches=groups,
        proofs=proofs,
        delta={n: t.detach().cpu().contiguous() for n, t in sub.delta.items()},
        mean_reward=sub.mean_reward,
        work_units=sub.work_units,
        proof_root=bytes(sub.proof_root),
        states=states,
    )


def put_lm_submission(store: Store, sub: LMSubmission, pin: bool = True) -> Digest:
    """Upload the submission's files and manifest; return the digest that goes on chain."""
    digest, _ = put_submission(store, lm_bundle(sub), pin=pin)
    return digest


def fetch_lm_submission(
    store: Store,
    digest: Digest | bytes | str,
    spec: LMTaskSpec,
    adapter_shapes: dict[str, tuple[int, ...]],
    deadline: float | None = None,
) -> LMSubmission:
    """The LMSubmission behind an on-chain digest, every limit, size and sha256 checked (module doc);
    SubmissionError names the field and CID (the trainer's fault), own-store failures pass through."""
    grpo = spec.task.grpo
    cid = cid_for_digest(digest)
    layout = adapter_state_layout(adapter_shapes)  # every state's declared size checked against it, then its tensors
    n_states = grpo.inner_steps - 1
    bundle = fetch_submission(store, digest, spec.limits, adapter_shapes, deadline, n_states, layout)
    groups = grpo.inner_steps * grpo.prompts_per_step
    if len(bundle.batches) != groups:
        raise SubmissionError(
            "rollouts", cid, f"expected {grpo.inner_steps} x {grpo.prompts_per_step} groups", len(bundle.batches)
        )
    for i, b in enumerate(bundle.batches):
        if b.n != grpo.group_size:
            raise SubmissionError(f"rollouts.{i:04d}", cid, f"expected a group of {grpo.group_size} rows", b.n)
    wanted = list(range(1, grpo.inner_steps))
    raw = fetch_states(store, digest, wanted, spec.limits, None, deadline, layout) if wanted else {}
    states = [{n.removeprefix(PARAM_PREFIX): t for n, t in raw[k].items()} for k in wanted]
    a = grpo.prompts_per_step
    return LMSubmission(
        task_id=bundle.task_id,
        round=bundle.round,
        trainer=bundle.trainer,
        steps=tuple(bundle.batches[k * a : (k + 1) * a] for k in range(grpo.inner_steps)),
        proofs=tuple(bundle.proofs[k * a : (k + 1) * a] for k in range(grpo.inner_steps)),
        states=tuple(states),
        delta=bundle.delta,
        mean_reward=bundle.mean_reward,
        work_units=bundle.work_units,
        proof_root=bytes(bundle.proof_root),
        base_round=bundle.base_round,
    )

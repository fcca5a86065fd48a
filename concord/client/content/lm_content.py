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
* submission  client.content.submission's one format; the LM's parameters of it (a batch per GRPO
            group, the H - 1 intermediate adapters as states) are its workload's: client.runtime.lm_work.
"""

from __future__ import annotations

import dataclasses
import logging
import math
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
    SubmissionLimits,
    default_limits,
)
from concord.client.content.task_spec import KIND as TINY_SPEC_KIND
from concord.client.content.task_spec import TaskSpecError, TaskSpecManifest
from concord.client.digest import Digest
from concord.client.engine.config import ConfigError, from_dict, to_dict
from concord.client.engine.lm import ModelSource, ModelSourceError, file_sha256, gguf_path
from concord.client.engine.lm_task import LMTaskConfig
from concord.client.engine.text_envs import BadTextEnvParams, UnknownTextEnv

log = logging.getLogger(__name__)

KIND = "lm_task_spec"
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
    """The limits an honest submission of ``task`` fits into (client.content.submission.default_limits):
    H x A groups of G rollouts, prompts up to the env's max_prompt_tokens, the adapters' delta."""
    params = sum(math.prod(s) for s in adapter_shapes.values())
    prompt_len = task.env.make().max_prompt_tokens
    return default_limits(task, params, len(adapter_shapes), prompt_len, task.grpo.prompts_per_step)


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

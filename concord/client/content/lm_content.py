"""An LM task's content in IPFS (issue 12): its spec, its base model, its round models, its submissions.

The LM reuses the tiny model's wire formats wherever they fit, so there is one encoder and one
strict decoder per kind of file:

* spec      client.content.task_spec's one manifest, `TaskSpecManifest[LMTaskConfig]` (kind
            "lm_task_spec", `lm_task_spec`, limits `lm_limits`); its sha256 is the on-chain specDigest.
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

import logging
import os
import tempfile
from pathlib import Path

from concord.client.content.manifest import ShardRef
from concord.client.content.model_store import LMAdaptersConfig, ModelError
from concord.client.content.store import ContentMismatch, ContentNotFound, SizeLimitExceeded, Store
from concord.client.content.task_spec import TaskSpecManifest
from concord.client.engine.config import to_dict
from concord.client.engine.lm import ModelSource, ModelSourceError, file_sha256, gguf_path
from concord.client.engine.lm_task import LMTaskConfig

log = logging.getLogger(__name__)

MAX_BASE_BYTES = 16 << 30  # a base file a node agrees to fetch (the 135M GGUF is 98 MB)


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


def lm_model_config(spec: TaskSpecManifest[LMTaskConfig], base: ShardRef) -> LMAdaptersConfig:
    """The config every round model of the task carries."""
    return LMAdaptersConfig(base, str(spec.task.model_source.weights_sha256), to_dict(spec.task.adapter))

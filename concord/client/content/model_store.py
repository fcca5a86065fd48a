"""Policies in IPFS: weight shards + outer-optimizer shards + a ModelManifest (DESIGN.md section 4).

`put_model` is a pure function of (weights, config, outer state, parent) up to the CIDs the
daemon derives (fixed chunker, raw leaves), so honest validators aggregating the same
deltas publish the same model digest. `fetch_model` keeps a local copy per digest:

    cache_dir/<digest>/manifest.json       the manifest bytes (sha256 = digest; the dir named digest.hex())
    cache_dir/<digest>/model-*.safetensors weight shards
    cache_dir/<digest>/outer-*.safetensors outer-optimizer shards (DiLoCo momentum)

A digest's directory appears only complete and verified (built in a hidden temp directory,
then renamed). A cache hit re-checks every byte against the manifest's sha256 and touches no
network; a corrupt entry is dropped and fetched again.

Outer state: a dict of float32 tensors (validator.aggregate's momentum, keyed by parameter
name). None or an empty dict is stored as no outer state and fetched back as None.

Config: a tiny/hf policy's ModelConfig, or an LM task's `LMAdaptersConfig` (kind "lm-adapters"):
the round model of an LM task is its base model (one file in IPFS, put once per task and named by
every round's manifest) plus the adapter tensors in the shards.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import torch

from concord.client.content.manifest import (
    DTYPES,
    ManifestError,
    ModelManifest,
    ShardRef,
    cid_for_digest,
    digest_of,
)
from concord.client.content.store import (
    ContentMismatch,
    ContentNotFound,
    SizeLimitExceeded,
    Store,
)
from concord.client.content.weights import DEFAULT_MAX_SHARD_BYTES, shard_bytes, shard_tensors
from concord.client.digest import Digest
from concord.client.engine.config import ConfigError, ModelConfig, from_dict, to_dict

log = logging.getLogger(__name__)

MANIFEST_FILE = "manifest.json"
OUTER_DTYPE = torch.float32


class ModelError(ValueError):
    """A model digest whose content cannot be used: ``field`` says where, ``cid`` which content."""

    def __init__(self, field: str, cid: str, reason: str) -> None:
        super().__init__(f"model {field} [{cid}]: {reason}")
        self.field = field
        self.cid = cid
        self.reason = reason


@dataclass(frozen=True)
class LMAdaptersConfig:
    """An LM task's round model (manifest config kind "lm-adapters"): the base weights and the adapters.

    The shards hold the adapter tensors (peft names); the base model is one file in IPFS, put once
    per task by its initiator and named here by every round's model, so a node fetches it at most
    once (or uses its own copy with the same sha256). The base's weights must hash to the task
    source's ``weights_sha256`` (client.engine.lm), checked on every load."""

    base: ShardRef  # the base model's file (a GGUF for a gguf-package source)
    weights_sha256: str  # the task source's pin of the base weights ("0x" + 64 hex)
    adapter: dict[str, Any]  # rank, alpha, targets, seed (client.engine.lm_rollout.AdapterConfig)
    kind: str = "lm-adapters"  # the manifest's tag (a ModelConfig's kind is "tiny" or "hf")

    KIND: ClassVar[str] = "lm-adapters"

    @staticmethod
    def from_json(obj: dict[str, Any], cid: str) -> LMAdaptersConfig:
        known = {"kind", "base", "weights_sha256", "adapter"}
        if set(obj) != known:
            raise ModelError("config", cid, f"an lm-adapters config has exactly the keys {sorted(known)}")
        try:
            base = ShardRef.from_json(obj["base"], "config.base")
        except ManifestError as e:
            raise ModelError(e.field, cid, e.reason) from None
        if not isinstance(obj["weights_sha256"], str) or not isinstance(obj["adapter"], dict):
            raise ModelError("config.weights_sha256", cid, "expected a digest string and an adapter table")
        return LMAdaptersConfig(base, obj["weights_sha256"], dict(obj["adapter"]))


class FetchedModel(NamedTuple):
    state: dict[str, torch.Tensor]  # parameter name -> tensor (manifest dtype)
    config: ModelConfig | LMAdaptersConfig
    outer_state: dict[str, torch.Tensor] | None  # float32; None for an initial model
    manifest: ModelManifest


def _dtype_name(state: dict[str, torch.Tensor]) -> str:
    names = {str(t.dtype).removeprefix("torch.") for t in state.values()}
    if len(names) != 1 or next(iter(names)) not in DTYPES:
        raise ValueError(f"model tensors must share one dtype of {DTYPES}, got {sorted(names)}")
    return names.pop()


def _renamed(prefix: str, state: dict[str, torch.Tensor], max_shard_bytes: int) -> list[tuple[str, bytes]]:
    return [(prefix + name.removeprefix("model-"), data) for name, data in shard_bytes(state, max_shard_bytes)]


def put_model(
    store: Store,
    state: dict[str, torch.Tensor],
    model_cfg: ModelConfig | LMAdaptersConfig,
    outer_state: dict[str, torch.Tensor] | None,
    parent_digest: Digest | bytes | str | None,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    pin: bool = True,
) -> Digest:
    """Upload weights (+ outer state) as deterministic shards and the manifest; return its digest."""
    if not state:
        raise ValueError("put_model: empty state dict")
    dtype = _dtype_name(state)
    shards = tuple(store.put_file(data, name, pin=pin) for name, data in _renamed("model-", state, max_shard_bytes))
    outer = None
    if outer_state:
        for name, t in outer_state.items():
            if t.dtype != OUTER_DTYPE:
                raise ValueError(f"outer state tensor {name!r}: expected {OUTER_DTYPE}, got {t.dtype}")
        outer = tuple(
            store.put_file(data, name, pin=pin) for name, data in _renamed("outer-", dict(outer_state), max_shard_bytes)
        )
    manifest = ModelManifest(
        config=to_dict(model_cfg),  # either kind's config: its fields, tagged by its kind
        dtype=dtype,
        shards=shards,
        outer_state=outer,
        parent=None if parent_digest is None else Digest.parse(parent_digest, "parent"),
    )
    return store.put_manifest(manifest.to_bytes(), pin=pin)


def fetch_model(store: Store, digest: Digest | bytes | str, cache_dir: Path | str, max_bytes: int) -> FetchedModel:
    """The model behind ``digest``: from cache_dir/<digest hex> when present and intact, else from IPFS."""
    digest = Digest.parse(digest)
    cid = cid_for_digest(digest)
    cache_dir = Path(cache_dir)
    final = cache_dir / digest.hex()
    if final.is_dir():
        try:
            return _load_dir(final, digest, cid)
        except (ModelError, OSError) as e:
            log.warning("cached model %s unusable (%s); dropping it and fetching again", final, e)
            shutil.rmtree(final, ignore_errors=True)

    try:
        data = store.get_manifest(digest)
        manifest = ModelManifest.from_bytes(data)
    except ManifestError as e:
        raise ModelError(f"manifest.{e.field}", cid, e.reason) from None
    except (ContentNotFound, ContentMismatch, SizeLimitExceeded) as e:
        raise ModelError("manifest", cid, str(e)) from e
    _model_config(manifest, cid)  # a bad architecture is refused before any download
    refs = _refs(manifest, cid)
    total = sum(ref.size for _, ref in refs)
    if total > max_bytes:
        raise ModelError(
            "shards",
            cid,
            f"{total} bytes in {len(refs)} file(s), over the limit of {max_bytes}: refused before download",
        )
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=cache_dir, prefix=f".{digest.hex()}."))
    try:
        for field, ref in refs:
            try:
                store.get_file(ref, tmp / ref.name, ref.size)
            except (ContentNotFound, ContentMismatch, SizeLimitExceeded) as e:
                raise ModelError(field, ref.cid, str(e)) from e
        (tmp / MANIFEST_FILE).write_bytes(data)
        fetched = _load_dir(tmp, digest, cid)
        try:
            os.rename(tmp, final)
        except OSError:  # another process finished the same digest first: theirs is as good
            if not final.is_dir():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return fetched


def _refs(manifest: ModelManifest, cid: str) -> list[tuple[str, ShardRef]]:
    """(field, ref) of every file; names unique over weights and outer state (one directory holds both)."""
    refs = [(f"shards[{i}]", r) for i, r in enumerate(manifest.shards)]
    refs += [(f"outer_state[{i}]", r) for i, r in enumerate(manifest.outer_state or ())]
    seen: set[str] = set()
    for field, ref in refs:
        if ref.name == MANIFEST_FILE or ref.name in seen:
            raise ModelError(f"{field}.name", cid, f"file name {ref.name!r} used twice")
        seen.add(ref.name)
    return refs


def _model_config(manifest: ModelManifest, cid: str) -> ModelConfig | LMAdaptersConfig:
    if manifest.config.get("kind") == LMAdaptersConfig.KIND:
        return LMAdaptersConfig.from_json(manifest.config, cid)
    try:
        return from_dict(ModelConfig, manifest.config, "config")
    except ConfigError as e:
        raise ModelError(f"config.{e.key}", cid, e.problem) from None


def _load_dir(directory: Path, digest: Digest, cid: str) -> FetchedModel:
    """Parse and verify a model directory: manifest sha256 = digest, every shard's sha256, dtypes, config."""
    data = (directory / MANIFEST_FILE).read_bytes()
    if digest_of(data) != digest:
        raise ModelError("manifest", cid, f"sha256 of {directory / MANIFEST_FILE} is {digest_of(data)}")
    try:
        manifest = ModelManifest.from_bytes(data)
    except ManifestError as e:
        raise ModelError(f"manifest.{e.field}", cid, e.reason) from None
    config = _model_config(manifest, cid)
    _refs(manifest, cid)
    state = _load_shards(directory, manifest.shards, "shards", getattr(torch, manifest.dtype))
    outer = None
    if manifest.outer_state is not None:
        outer = _load_shards(directory, manifest.outer_state, "outer_state", OUTER_DTYPE)
    return FetchedModel(state, config, outer, manifest)


def _load_shards(
    directory: Path, refs: tuple[ShardRef, ...], field: str, dtype: torch.dtype
) -> dict[str, torch.Tensor]:
    def checked() -> Iterator[tuple[str, bytes]]:
        for i, ref in enumerate(refs):
            data = (directory / ref.name).read_bytes()
            got = hashlib.sha256(data).hexdigest()
            if got != ref.sha256:
                raise ModelError(f"{field}[{i}]", ref.cid, f"sha256 mismatch, expected {ref.sha256}, got {got}")
            yield ref.cid, data

    state: dict[str, torch.Tensor] = {}
    for where, cid, name, t in shard_tensors(checked(), field, ModelError):
        if t.dtype != dtype:
            raise ModelError(where, cid, f"expected dtype {dtype}, got {t.dtype}")
        state[name] = t
    return state

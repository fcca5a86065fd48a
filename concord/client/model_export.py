"""`concord model export ROUND DIR --task N`: a task's model as a directory other tools load.

ROUND is the model's number on chain: 0 is the task's initial model, r + 1 the model round r produced
(what `modelDigest(task, r + 1)` names); it must be final. The export fetches the model by its digest
(every byte checked against the manifest, the manifest against the on-chain digest), writes

    DIR/model.safetensors   every weight, names as the model's own loader wants them
    DIR/config.json         kind "hf": the transformers config (AutoModelForCausalLM.from_pretrained(DIR)
                            loads it); kind "tiny": {"model_type": "concord-tiny", "concord": ModelConfig}
                            (our TinyTransformer; `load_export` rebuilds it)
    DIR/tokenizer*.json ... kind "hf" with a local hf_path that has tokenizer files: those files
    DIR/manifest.json       the model manifest as stored on IPFS (its sha256 is the on-chain digest)
    DIR/concord.json        task, round, digest, kind

An LM task's model (kind "lm-adapters", client.content.lm_content) exports as a plain transformers
model: the base (loaded and checked against the task spec's pins, from the installed GGUF or the
task's copy in IPFS) with the round's LoRA adapters merged into its weights,

    DIR/model.safetensors, DIR/config.json, DIR/tokenizer*.json   the merged model (from_pretrained(DIR))
    DIR/adapters.safetensors                                     the adapters as the manifest shards hold them
    DIR/manifest.json, DIR/concord.json                          as above

and its re-digest checks the adapters against the manifest's shards (the merge is a pure function of
the pinned base and those adapters).

Then the export re-digests what it wrote (`verify_export`): the tensors read back from DIR/model.safetensors,
sharded by the content store's rule, must give the manifest's shard hashes, and the manifest's sha256
the digest. DIR is written in a temporary sibling and renamed, so it appears only complete and verified;
an existing non-empty DIR is refused before anything is fetched. `concord model verify DIR` re-runs
the check on a directory alone (no chain, no IPFS).
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from concord.client import chain
from concord.client.chain import ChainError
from concord.client.content.manifest import ManifestError, ModelManifest, digest_of
from concord.client.content.model_store import ModelError, fetch_model
from concord.client.content.store import Store, StoreError
from concord.client.content.weights import DEFAULT_MAX_SHARD_BYTES, shard_bytes
from concord.client.digest import Digest
from concord.client.engine.config import ConfigError, ModelConfig
from concord.client.runtime.tiny_work import WEIGHTS_FILE
from concord.client.runtime.workload import read_export, write_export

log = logging.getLogger(__name__)

MANIFEST_FILE = "manifest.json"
META_FILE = "concord.json"
MAX_MODEL_BYTES = 8 << 30  # refuse a manifest announcing more than this before download


class ExportError(ValueError):
    """An export that cannot be made or does not verify; ``field`` names the argument or the file."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field, self.problem = field, problem


@dataclass(frozen=True)
class Exported:
    directory: Path
    task_id: int
    round: int
    digest: Digest
    kind: str
    tensors: int
    files: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "directory": str(self.directory),
            "task_id": self.task_id,
            "round": self.round,
            "digest": str(self.digest),
            "kind": self.kind,
            "tensors": self.tensors,
            "files": list(self.files),
        }


# ----------------------------------------------------------------------------- writing and checking


def load_export(directory: Path) -> tuple[dict[str, torch.Tensor], ModelConfig | None, ModelManifest]:
    """An exported directory read back: the state under the model's own names (as the content store keeps
    them), its ModelConfig and the manifest; ExportError names a missing or malformed file. For an LM
    task's export the state is the adapters (as the manifest's shards hold them) and the config None."""
    directory = Path(directory)
    try:
        manifest = ModelManifest.from_bytes((directory / MANIFEST_FILE).read_bytes())
        state, cfg = read_export(directory, manifest)  # the model's kind reads its files back
    except OSError as e:
        raise ExportError(
            str(directory), f"cannot read {Path(e.filename or '').name or 'a file'}: {e.strerror}"
        ) from None
    except (ManifestError, ConfigError) as e:
        raise ExportError(str(directory / MANIFEST_FILE), str(e)) from None
    except Exception as e:  # safetensors raises its own SafetensorError (no common base with ours)
        raise ExportError(str(directory / WEIGHTS_FILE), f"not a safetensors file: {e}") from None
    return state, cfg, manifest


def verify_export(directory: Path, digest: Digest | None = None) -> Digest:
    """Re-digest an export: the weights read back give the manifest's shard hashes, the manifest gives
    ``digest`` (when given); returns the digest. ExportError names the first thing that differs."""
    state, _, manifest = load_export(directory)
    data = (Path(directory) / MANIFEST_FILE).read_bytes()
    got = digest_of(data)
    if digest is not None and got != digest:
        raise ExportError(MANIFEST_FILE, f"sha256 is {got}, the chain says {digest}")
    try:
        dtype = getattr(torch, manifest.dtype)
        state = {n: t.to(dtype) if t.dtype != dtype else t for n, t in state.items()}
        shards = shard_bytes(state, DEFAULT_MAX_SHARD_BYTES)  # put_model's weight shards: model-000i-of-000n
    except (ValueError, RuntimeError) as e:
        raise ExportError(WEIGHTS_FILE, f"cannot re-shard the weights: {e}") from None
    want = [(ref.name, ref.sha256) for ref in manifest.shards]
    have = [(name, hashlib.sha256(blob).hexdigest()) for name, blob in shards]
    if want != have:
        raise ExportError(WEIGHTS_FILE, f"the weights do not re-digest to the manifest's shards: {want} != {have}")
    return got


def export_model(
    store: Store,
    task_id: int,
    round_: int,
    digest: Digest,
    directory: Path,
    max_bytes: int = MAX_MODEL_BYTES,
    spec_digest: Digest | bytes | None = None,
) -> Exported:
    """Fetch model ``digest`` (verified), write it under ``directory`` (module doc) and re-digest it there
    (an LM task's model needs the task's ``spec_digest``: its spec names the base model's source and pins
    and the adapter config)."""
    directory = Path(directory)
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise ExportError("DIR", f"{directory} exists and is not an empty directory")
    parent = directory.resolve().parent
    scratch = next(p for p in (parent, *parent.parents) if p.is_dir())  # nothing is created before it verifies
    with tempfile.TemporaryDirectory(dir=scratch, prefix=f".{directory.name}.") as tmp:
        fetched = fetch_model(store, digest, Path(tmp) / "cache", max_bytes)
        out = Path(tmp) / "export"
        out.mkdir()
        (out / MANIFEST_FILE).write_bytes(fetched.manifest.to_bytes())
        try:
            files = write_export(out, store, fetched, spec_digest)  # the model's kind writes its files
        except ModelError as e:
            raise ExportError("ROUND", str(e)) from None
        meta = {"task_id": task_id, "round": round_, "digest": str(digest), "kind": fetched.config.kind}
        (out / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        verify_export(out, digest)
        if directory.exists():
            directory.rmdir()  # empty (checked above)
        parent.mkdir(parents=True, exist_ok=True)
        out.rename(directory)
    files = sorted({*files, MANIFEST_FILE, META_FILE})
    return Exported(directory, task_id, round_, digest, fetched.config.kind, len(fetched.state), tuple(files))


# ----------------------------------------------------------------------------- CLI


def _round_digest(client: chain.ChainClient, task_id: int, round_: int) -> Digest:
    c = client.concord
    if not 1 <= task_id <= c.task_count():
        raise chain.ContractError("UnknownTask", {"taskId": task_id})
    latest = c.latest_model(task_id).model
    if round_ > latest:
        raise ExportError(
            "ROUND", f"model {round_} of task {task_id} is not final (the latest final model is {latest})"
        )
    entry = c.model_digest(task_id, round_)
    if not entry.is_final:
        raise ExportError("ROUND", f"model {round_} of task {task_id} is not final")
    return Digest(entry.digest)


def main(argv: Sequence[str] | None = None) -> int:
    """`concord model export ROUND DIR --task N [connection flags]`, `concord model verify DIR`."""
    from concord.client.runtime import parsers
    from concord.client.runtime.config import NodeConfigError, node_config, parse_layered
    from concord.client.runtime.display import setup_logging
    from concord.client.runtime.errors import explain, quiet_retries

    p = parsers.model_parser()
    args = parse_layered(p, argv)
    try:
        if args.action == "verify":
            meta = json.loads((args.dir / META_FILE).read_text()) if (args.dir / META_FILE).is_file() else {}
            want = Digest.parse(meta["digest"]) if "digest" in meta else None
            print(f"{args.dir}: ok, model digest {verify_export(args.dir, want)}")
            return 0
        setup_logging(args.json_logs, logging.WARNING)
        quiet_retries()
        cfg = node_config(args, "exporter")
        if args.dir.exists() and (not args.dir.is_dir() or any(args.dir.iterdir())):
            raise ExportError("DIR", f"{args.dir} exists and is not an empty directory")
        client = chain.connect(cfg.rpc_url, cfg.deployment)
        digest = _round_digest(client, cfg.task_id, args.round)
        store = Store(cfg.ipfs_api, None, timeout=cfg.ipfs_timeout)
        spec_digest = client.concord.task_params(cfg.task_id).spec_digest
        result = export_model(store, cfg.task_id, args.round, digest, args.dir, spec_digest=spec_digest)
    except (ExportError, NodeConfigError, ChainError, StoreError, ModelError, ValueError) as e:
        print(f"error: {explain(e)}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result.to_json()))
    else:
        print(
            f"model {result.round} of task {result.task_id} ({result.kind}, {result.tensors} tensors) written to "
            f"{result.directory} and re-digested: {result.digest}"
        )
    return 0

"""The tiny transformer's workload (client.runtime.workload): the whole policy trains, one bundle per round.

TinyWork(spec, models_dir)     the task's policies by model digest (ModelCache), its env
base / delta_shapes            model m as a policy (shared: clone before changing it) / its parameter shapes
train                          client.engine.bundle.make_bundle: H x (generate with theta_k, update), proofs
put / fetch / fetch_delta      client.content.submission: the bundle's files and manifest, limits checked
put_model0                     model 0 of a new task (client.initiator, via the registry)
write_export / read_export     the policy's weights and config as a directory (client.model_export)
"""

from __future__ import annotations

import json
import shutil
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from concord.client.content.manifest import cid_for_digest
from concord.client.content.model_store import FetchedModel, LMAdaptersConfig, ModelError, fetch_model, put_model
from concord.client.content.store import Store
from concord.client.content.submission import fetch_submission, inner_state_layout, put_submission
from concord.client.content.task_spec import TaskSpecManifest
from concord.client.digest import Digest
from concord.client.engine.bundle import Bundle, make_bundle
from concord.client.engine.config import ModelConfig, TaskConfig, from_dict, to_dict
from concord.client.engine.envs import Env, make_env
from concord.client.engine.model import Policy, build_policy, load_policy_state, policy_state

MODEL_SLACK_BYTES = 1 << 20


class ModelConfigMismatch(ValueError):
    """A model manifest's architecture differs from the task spec's (the digest names the model)."""

    def __init__(self, digest: Digest, expected: object, got: object) -> None:
        super().__init__(f"model {digest}: config {got} differs from the task spec's {expected}")
        self.digest, self.expected, self.got = digest, expected, got


class ModelCache:
    """Policies by model digest (state: an LRU of built modules). Returned policies are shared: don't train them."""

    def __init__(self, cache_dir: Path, max_bytes: int, keep: int = 4) -> None:
        self.cache_dir = Path(cache_dir)
        self.max_bytes = max_bytes
        self.keep = keep
        self._entries: OrderedDict[Digest, tuple[FetchedModel, Policy]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, store: Store, digest: Digest | bytes | str) -> tuple[FetchedModel, Policy]:
        digest = Digest.parse(digest)
        with self._lock:
            if digest in self._entries:
                self._entries.move_to_end(digest)
                return self._entries[digest]
        fetched = fetch_model(store, digest, self.cache_dir, self.max_bytes)
        if isinstance(fetched.config, LMAdaptersConfig):  # an LM task's round model: LMWork reads it
            raise ModelError("config.kind", cid_for_digest(digest), "LM adapters, not a policy")
        policy = build_policy(fetched.config)
        load_policy_state(policy, {k: v.float() for k, v in fetched.state.items()})
        with self._lock:
            self._entries[digest] = (fetched, policy)
            while len(self._entries) > self.keep:
                self._entries.popitem(last=False)
        return fetched, policy


class TinyWork:
    """The tiny transformer's Workload (client.runtime.workload)."""

    kind = "tiny"
    states_apart = True  # sampled mode fetches the inner states its sample needs (client.content.submission)
    row_flags = True  # and posts / re-checks flagged rows (validator.flags)

    def __init__(self, spec: TaskSpecManifest[TaskConfig], models_dir: Path) -> None:
        self.spec = spec
        self.env: Env = make_env(spec.task.env)
        self.models = ModelCache(models_dir, 2 * spec.limits.max_delta_bytes + MODEL_SLACK_BYTES)  # weights + outer

    def model(self, store: Store, digest: Digest) -> tuple[FetchedModel, Policy]:
        """Model ``digest`` (its architecture checked against the spec) and its policy, shared."""
        fetched, policy = self.models.get(store, digest)
        if fetched.config != self.spec.task.model:
            raise ModelConfigMismatch(digest, self.spec.task.model, fetched.config)
        return fetched, policy

    def base(self, store: Store, digest: Digest) -> Policy:
        return self.model(store, digest)[1]

    def delta_shapes(self, store: Store, digest: Digest) -> dict[str, tuple[int, ...]]:
        return {n: tuple(t.shape) for n, t in policy_state(self.base(store, digest)).items()}

    def model_state(self, store: Store, digest: Digest) -> FetchedModel:
        return self.models.get(store, digest)[0]

    def train(self, base: Policy, task_id: int, round_: int, trainer: str, base_round: int) -> Bundle:
        return make_bundle(base, self.env, self.spec.task, task_id, round_, trainer, base_round)

    def put(self, store: Store, sub: Bundle) -> Digest:
        digest, _ = put_submission(store, sub)
        return digest

    def fetch(
        self, store: Store, digest: Digest | bytes | str, shapes: dict[str, tuple[int, ...]], deadline: float | None
    ) -> Bundle:
        layout = inner_state_layout(shapes, self.spec.task.grpo)  # every listed state's size checked
        return fetch_submission(store, digest, self.spec.limits, shapes, deadline, state_layout=layout)

    def fetch_delta(self, store: Store, digest: Digest | bytes | str) -> dict[str, torch.Tensor]:
        return fetch_submission(store, digest, self.spec.limits).delta


def put_model0(store: Store, spec: TaskSpecManifest[TaskConfig]) -> Digest:
    """Model 0 (client.initiator): the [model] architecture at its seed, no outer state, no parent."""
    return put_model(store, policy_state(build_policy(spec.task.model)), spec.task.model, None, None)


# ----------------------------------------------------------------------------- export (client.model_export)
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
HF_PREFIX = "hf."  # HFPolicy keeps the transformers model under `.hf`: its state names carry this prefix
TINY_MODEL_TYPE = "concord-tiny"
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "added_tokens.json",
    "chat_template.jinja",
    "generation_config.json",
)


def _config_json(cfg: ModelConfig) -> dict[str, Any]:
    if cfg.kind == "tiny":
        return {"model_type": TINY_MODEL_TYPE, "architectures": ["TinyTransformer"], "concord": to_dict(cfg)}
    if cfg.hf_path and (Path(cfg.hf_path) / CONFIG_FILE).is_file():
        from transformers import AutoConfig

        config: Any = AutoConfig.from_pretrained(cfg.hf_path, local_files_only=True)
    else:
        from concord.client.engine.model import hf_config

        config = hf_config(cfg)
    out: dict[str, Any] = config.to_dict()
    out["torch_dtype"] = "float32"
    return out


def write_export(directory: Path, state: dict[str, torch.Tensor], cfg: ModelConfig) -> list[str]:
    """A tiny or hf policy's export files (client.model_export's module doc) in ``directory``; their names."""
    weights = state if cfg.kind == "tiny" else {n.removeprefix(HF_PREFIX): t for n, t in state.items()}
    save_file({n: t.contiguous() for n, t in weights.items()}, str(directory / WEIGHTS_FILE), metadata={"format": "pt"})
    (directory / CONFIG_FILE).write_text(json.dumps(_config_json(cfg), indent=2, sort_keys=True) + "\n")
    files = [WEIGHTS_FILE, CONFIG_FILE]
    if cfg.kind == "hf" and cfg.hf_path:
        for name in TOKENIZER_FILES:
            if (Path(cfg.hf_path) / name).is_file():
                shutil.copyfile(Path(cfg.hf_path) / name, directory / name)
                files.append(name)
    return files


def read_export(directory: Path, config: dict[str, Any]) -> tuple[dict[str, torch.Tensor], ModelConfig]:
    """The state (the model's own names, as the content store keeps them) and config of an export."""
    cfg = from_dict(ModelConfig, config, "config")
    state = load_file(str(directory / WEIGHTS_FILE))
    return (state if cfg.kind == "tiny" else {HF_PREFIX + n: t for n, t in state.items()}), cfg

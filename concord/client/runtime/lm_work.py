"""An LM task on a node (issue 12): the base model loaded once, the adapters of any round by digest.

    load_lm_work(node, spec, model0, device)  model 0's manifest -> its base file (the installed GGUF when
                                              it has the same sha256, else fetched from IPFS once) ->
                                              client.engine.lm.load (pins checked) -> adapters attached
                                              -> the env's rollouts (LMRollouts)
    round_adapters(ctx, store, m)             model m's adapter tensors by its on-chain digest (final
                                              only), checked against model 0's base and the spec
    put_lm_submission / fetch_lm_submission   the submission in client.content.submission's one format,
                                              with the LM's parameters (a batch per group, H - 1 states)
    parse_lm_spec / put_model0                creating a task (client.initiator, via the registry)
    write_export / read_export                the merged transformers model (client.model_export)

One process holds one peft model: trainer and validator steps run one at a time on it (the
validator judges fetched submissions in its main thread), so `lock` guards the few places a
second thread could reach it.
"""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from safetensors.torch import load_file, save_file

from concord.client.content.lm_content import (
    lm_model_config,
    put_base,
    resolve_base,
)
from concord.client.content.manifest import cid_for_digest
from concord.client.content.model_store import FetchedModel, LMAdaptersConfig, ModelError, fetch_model, put_model
from concord.client.content.store import Store
from concord.client.content.submission import (
    SubmissionError,
    adapter_state_layout,
    fetch_states,
    fetch_submission,
    put_submission,
)
from concord.client.content.task_spec import TaskSpecError, TaskSpecManifest, lm_limits, lm_task_spec, parse_lm_task
from concord.client.digest import Digest
from concord.client.engine import lm
from concord.client.engine.bundle import Bundle
from concord.client.engine.config import ConfigError, to_dict
from concord.client.engine.grpo import PARAM_PREFIX
from concord.client.engine.lm import ModelSourceError
from concord.client.engine.lm_grpo import make_submission
from concord.client.engine.lm_rollout import LMRollouts, adapter_state, attach_adapters, load_adapter_state
from concord.client.engine.lm_task import LMTaskConfig
from concord.client.engine.precision import choose
from concord.client.runtime import paths


class LMModelMismatch(ModelError):
    """A round model of an LM task that names another base file or other adapters than model 0 / the spec."""


@dataclass
class LMWork:
    """An LM task's model on this node: the verified base with adapters attached, and its rollouts; the
    LM's Workload (client.runtime.workload): a round trains the adapters only (client.engine.lm_grpo)."""

    kind: ClassVar[str] = "lm"
    states_apart: ClassVar[bool] = False  # the adapters after every inner step travel in the submission
    # sampled mode posts and re-checks flagged rows and replays (validator.flags), as on the tiny model: the flag
    # window (commitSeconds / 2) is only a bound, it closes once every validator flagged or committed
    row_flags: ClassVar[bool] = True

    spec: TaskSpecManifest[LMTaskConfig]
    loaded: lm.LoadedLM
    rollouts: LMRollouts
    config: LMAdaptersConfig  # model 0's: every round model must carry the same
    device: torch.device
    bf16: bool  # the validator's prefill precision (client.engine.precision.choose)
    precision_reason: str
    models_dir: Path  # round models by digest (client.content.model_store's cache)
    max_model_bytes: int
    shapes: dict[str, tuple[int, ...]]  # the adapters' names and shapes (fixed by the spec's [adapter])
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def model(self) -> Any:
        """The peft model (base + adapters): load_adapter_state before every use."""
        return self.rollouts.model

    @property
    def env(self) -> Any:
        return self.rollouts.env

    def adapter_shapes(self) -> dict[str, tuple[int, ...]]:
        return dict(self.shapes)

    # ------------------------------------------------------------------------- the Workload protocol

    def base(self, store: Store, digest: Digest) -> dict[str, torch.Tensor]:
        return fetch_adapters(self, store, digest).state

    def delta_shapes(self, store: Store, digest: Digest) -> dict[str, tuple[int, ...]]:
        return self.adapter_shapes()  # every round's delta is over the same adapters

    def model_state(self, store: Store, digest: Digest) -> FetchedModel:
        return fetch_adapters(self, store, digest)  # the base file plus adapters: the outer step is on the adapters

    def train(self, base: dict[str, torch.Tensor], task_id: int, round_: int, trainer: str, base_round: int) -> Bundle:
        with self.lock:
            sub, _ = make_submission(self.rollouts, base, self.spec.task.grpo, task_id, round_, trainer)
        return dataclasses.replace(sub, base_round=base_round)

    def put(self, store: Store, sub: Bundle) -> Digest:
        return put_lm_submission(store, sub)

    def fetch(
        self, store: Store, digest: Digest | bytes | str, shapes: dict[str, tuple[int, ...]], deadline: float | None
    ) -> Bundle:
        return fetch_lm_submission(store, digest, self.spec, shapes, deadline)

    def fetch_delta(self, store: Store, digest: Digest | bytes | str) -> dict[str, torch.Tensor]:
        return fetch_lm_submission(store, digest, self.spec, self.adapter_shapes()).delta


def _check_config(
    config: Any, expected: LMAdaptersConfig | None, spec: TaskSpecManifest[LMTaskConfig], digest: Digest
) -> LMAdaptersConfig:
    cid = cid_for_digest(digest)
    if not isinstance(config, LMAdaptersConfig):
        raise LMModelMismatch("config.kind", cid, f"expected an {LMAdaptersConfig.KIND} model on an LM task")
    if config.adapter != to_dict(spec.task.adapter):
        raise LMModelMismatch("config.adapter", cid, f"{config.adapter} differs from the spec's [adapter]")
    if config.weights_sha256 != str(spec.task.model_source.weights_sha256):
        raise LMModelMismatch("config.weights_sha256", cid, "differs from the spec's [source] weights_sha256")
    if expected is not None and config.base != expected.base:
        raise LMModelMismatch("config.base", cid, f"names base {config.base.cid}, model 0 {expected.base.cid}")
    return config


def load_lm_work(
    store: Store,
    spec: TaskSpecManifest[LMTaskConfig],
    model0: Digest,
    models_dir: Path,
    lm_cache: Path,
    device: str = "cpu",
    precision: str = "",
    precision_record: Path | None = None,
) -> LMWork:
    """Model 0 of the task, its base loaded and verified, adapters attached (module doc). Round models
    are cached in ``models_dir`` (the node's), the base file and its dequantized weights in ``lm_cache``
    (shared by the nodes of a machine: client.runtime.paths.models_dir()). ``precision`` overrides the
    spec's validation.prefill_precision ("" = the spec's); "auto" is the machine's recorded choice in
    ``precision_record`` (default: client.runtime.paths.home(), shared by the nodes of a machine)."""
    max_bytes = 2 * spec.limits.max_delta_bytes + (1 << 20)  # adapters + outer state
    fetched = fetch_model(store, model0, models_dir, max_bytes)
    config = _check_config(fetched.config, None, spec, model0)
    source = spec.task.model_source
    gguf = resolve_base(store, source, config.base, lm_cache)
    loaded = lm.load(source, lm_cache, gguf)
    dev = torch.device(device)
    model = attach_adapters(loaded.model.to(dev), spec.task.adapter)
    env = spec.task.env.make(context=loaded.context)
    rollouts = LMRollouts.for_env(model, loaded.tokenizer, env, spec.task.sampler)
    cfg = loaded.model.config
    wanted = precision or spec.task.validation.prefill_precision
    if wanted not in ("auto", "bf16", "fp32"):
        raise ValueError(f"prefill precision: expected auto, bf16 or fp32, got {wanted!r}")
    # one group's completion positions: what a prefill of validator.lm_checks runs through the head;
    # decided once per machine and recorded under $CONCORD_HOME (client.engine.precision)
    tokens = spec.task.grpo.group_size * spec.task.sampler.max_new_tokens
    record = paths.home() if precision_record is None else precision_record
    chosen = choose(wanted, dev, cfg.hidden_size, cfg.intermediate_size, tokens, record)  # type: ignore[arg-type]
    shapes = {n: tuple(t.shape) for n, t in adapter_state(model).items()}
    work = LMWork(spec, loaded, rollouts, config, dev, chosen.bf16, chosen.reason, Path(models_dir), max_bytes, shapes)
    got = {n: tuple(t.shape) for n, t in fetched.state.items()}
    if got != shapes:
        raise LMModelMismatch("shards", cid_for_digest(model0), "model 0's tensors are not the spec's adapters")
    return work


def fetch_adapters(work: LMWork, store: Store, digest: Digest) -> FetchedModel:
    """A round model's adapters (cached on disk by digest), checked against model 0 and the spec."""
    fetched = fetch_model(store, digest, work.models_dir, work.max_model_bytes)
    _check_config(fetched.config, work.config, work.spec, digest)
    got = {n: tuple(t.shape) for n, t in fetched.state.items()}
    if got != work.adapter_shapes():
        raise LMModelMismatch("shards", cid_for_digest(digest), "tensors are not the spec's adapters")
    return fetched


# ----------------------------------------------------------------------------- the submission's wire form
# client.content.submission's one format with the LM's parameters: every GRPO group is one batch of the
# rollouts and proofs files (a group's prompt length is its own), in (inner step, group) order, so the
# files' "inner steps" are the H x A groups and the limits count groups there (lm_limits); the delta is
# the adapters' (adapters_H - adapters_base); the states are the H - 1 intermediate adapters as deltas
# from the base ("param.<name>" = adapters_k - adapters_base, k = 1..H-1), so a validator checks step
# k's groups under adapters_k without replaying steps 0..k-1.


def lm_bundle(sub: Bundle) -> Bundle:
    """The submission as it goes on the wire (above): states named "param.<name>", tensors on the CPU."""
    states = tuple({PARAM_PREFIX + n: t.detach().cpu().contiguous() for n, t in s.items()} for s in sub.states)
    delta = {n: t.detach().cpu().contiguous() for n, t in sub.delta.items()}
    return dataclasses.replace(sub, delta=delta, states=states)


def put_lm_submission(store: Store, sub: Bundle, pin: bool = True) -> Digest:
    """Upload the submission's files and manifest; return the digest that goes on chain."""
    digest, _ = put_submission(store, lm_bundle(sub), pin=pin)
    return digest


def fetch_lm_submission(
    store: Store,
    digest: Digest | bytes | str,
    spec: TaskSpecManifest[LMTaskConfig],
    adapter_shapes: dict[str, tuple[int, ...]],
    deadline: float | None = None,
) -> Bundle:
    """The submission behind an on-chain digest, every limit, size and sha256 checked (module doc), its
    groups per step the spec's; SubmissionError names the field and CID (the trainer's fault), own-store
    failures pass through."""
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
    states = tuple({n.removeprefix(PARAM_PREFIX): t for n, t in raw[k].items()} for k in wanted)
    return dataclasses.replace(bundle, states=states, groups_per_step=grpo.prompts_per_step)


# ----------------------------------------------------------------------------- creating a task (client.initiator)


def initial_adapters(task: LMTaskConfig) -> dict[str, torch.Tensor]:
    """An LM task's model 0 adapters: the [adapter] config at its seed on the pinned base model."""
    loaded = lm.load(task.model_source, paths.models_dir())
    return {n: t.detach().clone() for n, t in adapter_state(attach_adapters(loaded.model, task.adapter)).items()}


def parse_lm_spec(data: dict[str, Any], source: str) -> TaskSpecManifest[LMTaskConfig]:
    """An LM task file's spec (every table but [chain]), limits derived from its adapters' shapes."""
    task = parse_lm_task(data, source)
    if task.model_source.kind != "gguf-package":  # its base goes to IPFS as one file (lm_content.put_base)
        problem = f"an LM task on chain needs a gguf-package source, got {task.model_source.kind!r}"
        raise TaskSpecError(source, [ConfigError("source", "kind", problem)])
    try:
        shapes = {n: tuple(t.shape) for n, t in initial_adapters(task).items()}
    except ModelSourceError as e:
        raise TaskSpecError(source, [ConfigError("source", e.field, f"expected {e.expected}, got {e.got}")]) from None
    return lm_task_spec(task, lm_limits(task, shapes))


def put_model0(store: Store, spec: TaskSpecManifest[LMTaskConfig]) -> Digest:
    """Model 0: the base model's file (put in IPFS here, once per task) and the adapters at their seed."""
    base = put_base(store, spec.task.model_source)
    return put_model(store, initial_adapters(spec.task), lm_model_config(spec, base), None, None)


# ----------------------------------------------------------------------------- export (client.model_export)
ADAPTERS_FILE = "adapters.safetensors"


def write_export(
    directory: Path,
    store: Store,
    spec: TaskSpecManifest[LMTaskConfig],
    config: LMAdaptersConfig,
    adapters: dict[str, torch.Tensor],
) -> list[str]:
    """The merged transformers model of an LM task's round (client.model_export's module doc) and its
    adapters as the manifest's shards hold them, into ``directory``; the files' names."""
    source = spec.task.model_source
    gguf = resolve_base(store, source, config.base, paths.models_dir())
    loaded = lm.load(source, paths.models_dir(), gguf)
    peft_model = attach_adapters(loaded.model, spec.task.adapter)
    load_adapter_state(peft_model, adapters)
    merged = peft_model.merge_and_unload()
    merged.save_pretrained(str(directory), safe_serialization=True)
    loaded.tokenizer.save_pretrained(str(directory))
    save_file({n: t.contiguous() for n, t in adapters.items()}, str(directory / ADAPTERS_FILE))
    return sorted(p.name for p in directory.iterdir())


def read_export(directory: Path) -> dict[str, torch.Tensor]:
    """An LM export's adapters (the merged model is the base's plus these)."""
    return load_file(str(directory / ADAPTERS_FILE))

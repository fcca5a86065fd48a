"""An LM task on a node (issue 12): the base model loaded once, the adapters of any round by digest.

    load_lm_work(node, spec, model0, device)  model 0's manifest -> its base file (the installed GGUF when
                                              it has the same sha256, else fetched from IPFS once) ->
                                              client.engine.lm.load (pins checked) -> adapters attached
                                              -> the env's rollouts (LMRollouts)
    round_adapters(ctx, store, m)             model m's adapter tensors by its on-chain digest (final
                                              only), checked against model 0's base and the spec

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

from concord.client.content.lm_content import LMTaskSpec, fetch_lm_submission, put_lm_submission, resolve_base
from concord.client.content.manifest import cid_for_digest
from concord.client.content.model_store import FetchedModel, LMAdaptersConfig, ModelError, fetch_model
from concord.client.content.store import Store
from concord.client.digest import Digest
from concord.client.engine import lm
from concord.client.engine.config import to_dict
from concord.client.engine.lm_grpo import LMSubmission, make_submission
from concord.client.engine.lm_rollout import LMRollouts, adapter_state, attach_adapters
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
    row_flags: ClassVar[bool] = False  # sampled mode on the LM draws its own rows only (no flag round)

    spec: LMTaskSpec
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

    def train(
        self, base: dict[str, torch.Tensor], task_id: int, round_: int, trainer: str, base_round: int
    ) -> LMSubmission:
        with self.lock:
            sub, _ = make_submission(self.rollouts, base, self.spec.task.grpo, task_id, round_, trainer)
        return dataclasses.replace(sub, base_round=base_round)

    def put(self, store: Store, sub: LMSubmission) -> Digest:
        return put_lm_submission(store, sub)

    def fetch(
        self, store: Store, digest: Digest | bytes | str, shapes: dict[str, tuple[int, ...]], deadline: float | None
    ) -> LMSubmission:
        return fetch_lm_submission(store, digest, self.spec, shapes, deadline)

    def fetch_delta(self, store: Store, digest: Digest | bytes | str) -> dict[str, torch.Tensor]:
        return fetch_lm_submission(store, digest, self.spec, self.adapter_shapes()).delta


def _check_config(config: Any, expected: LMAdaptersConfig | None, spec: LMTaskSpec, digest: Digest) -> LMAdaptersConfig:
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
    spec: LMTaskSpec,
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

"""One seam per model kind (issue 22): what a node does with a task's model, whatever the kind.

A task's spec names its model kind once; `load_workload` (the registry) builds that kind's Workload
when a node loads the task, and the nodes (trainer, validator) call only the protocol below. The two
implementations:

    client.runtime.tiny_work.TinyWork   the tiny transformer: the whole policy is trained, a bundle per round
    client.runtime.lm_work.LMWork       a pretrained LM (SmolLM2) with LoRA adapters: only the adapters train

No code outside these two modules and this registry asks which kind a task is (tests/test_layout.py).

    base(store, digest)          model ``digest`` as a round builds on it (tiny: the policy, cached and
                                 shared, read only; LM: the adapters' state)
    delta_shapes(store, digest)  the names and shapes a delta on that model must have
    model_state(store, digest)   model ``digest``'s trainable tensors and outer state (the outer step's base)
    train(base, task_id, round_, trainer, base_round)
                                 a trainer's round: generate with seeded sampling, prove (TOPLOC), H GRPO
                                 inner steps, claims -> a Submission
    put(store, sub)              the submission on the wire (its manifest's digest: what goes on chain)
    fetch(store, digest, shapes, deadline)
                                 a submission back from its digest, every limit checked (SubmissionError)
    fetch_delta(store, digest)   only its delta (an accepted submission's, for the outer step)
    states_apart                 sampled mode fetches the inner states a sample needs apart from the
                                 submission (tiny); False: they travel inside it (LM)
    row_flags                    sampled mode posts and re-checks flagged rows (validator.flags)

Kind-level steps that run before a workload exists also go through this registry: a task file's spec
(`parse_task_file`, by the kind the file declares), its model 0 (`put_initial_model`), a model's export
(`write_export` / `read_export`, by the kind its manifest declares). The GRPO inner step is one
(client.engine.grpo.grpo_step); its flat-step rule is the kind's: the LM skips groups whose rows all
scored alike and the optimizer step when none is left, the tiny model always steps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import torch

from concord.client.content.manifest import ModelManifest, cid_for_digest, digest_of
from concord.client.content.model_store import FetchedModel, LMAdaptersConfig, ModelError
from concord.client.content.store import Store
from concord.client.content.task_spec import LM_KIND, TaskSpecManifest, fetch_task_spec, parse_task_spec
from concord.client.digest import Digest
from concord.client.engine.bundle import Bundle
from concord.client.engine.config import ModelConfig
from concord.client.engine.lm_task import is_lm_task
from concord.client.runtime import lm_work, paths, tiny_work
from concord.client.runtime.lm_work import LMWork, load_lm_work, parse_lm_spec
from concord.client.runtime.tiny_work import TinyWork

Shapes = dict[str, tuple[int, ...]]


# every kind's submission in memory: client.engine.bundle's one format, parameterised by the workload
# (groups per inner step, what its states hold); the claims a validator compares with the chain's
Submission = Bundle


class Workload(Protocol):
    """A model kind as the nodes use it (module doc)."""

    @property
    def kind(self) -> str: ...
    @property
    def env(self) -> Any: ...  # the task's environment (client.engine.envs.Env or client.engine.text_envs.TextEnv)
    @property
    def states_apart(self) -> bool: ...
    @property
    def row_flags(self) -> bool: ...

    def base(self, store: Store, digest: Digest) -> Any: ...
    def delta_shapes(self, store: Store, digest: Digest) -> Shapes: ...
    def model_state(self, store: Store, digest: Digest) -> FetchedModel: ...
    def train(self, base: Any, task_id: int, round_: int, trainer: str, base_round: int) -> Submission: ...
    def put(self, store: Store, sub: Any) -> Digest: ...
    def fetch(
        self, store: Store, digest: Digest | bytes | str, shapes: Shapes, deadline: float | None
    ) -> Submission: ...
    def fetch_delta(self, store: Store, digest: Digest | bytes | str) -> dict[str, torch.Tensor]: ...


def load_workload(
    store: Store, spec: TaskSpecManifest[Any], model0: Digest, models_dir: Path, device: str = "cpu"
) -> Workload:
    """The registry: the spec's model kind, chosen once. An LM spec loads and verifies the base model and
    attaches the adapters (client.runtime.lm_work); a tiny spec keeps a cache of policies by digest."""
    if spec.kind == LM_KIND:
        return load_lm_work(store, spec, model0, models_dir, paths.models_dir(), device)
    return TinyWork(spec, models_dir)


def fetches_states_apart(spec: TaskSpecManifest[Any]) -> bool:
    """Whether a validator of ``spec`` fetches inner states apart, after the check seed (sampled mode on a
    kind with states_apart), before any workload exists: the late-fetch rule counts their fetch from
    shareEnd (client.content.submission.content_due_s)."""
    apart = LMWork.states_apart if spec.kind == LM_KIND else TinyWork.states_apart
    return bool(spec.validation.mode == "sampled" and apart)


def parse_task_file(data: dict[str, Any], source: str) -> TaskSpecManifest[Any]:
    """A task file's spec (every table but [chain]) by the kind the file declares (an LM task has a
    [source] table: client.engine.lm_task.is_lm_task); TaskSpecError names every bad field."""
    return parse_lm_spec(data, source) if is_lm_task(data) else parse_task_spec(data, source)


def put_initial_model(store: Store, spec: TaskSpecManifest[Any]) -> Digest:
    """Model 0 of a task about to be published, as its kind builds it (tiny_work / lm_work.put_model0)."""
    if spec.kind == LM_KIND:
        return lm_work.put_model0(store, spec)
    return tiny_work.put_model0(store, spec)


def write_export(directory: Path, store: Store, fetched: FetchedModel, spec_digest: Digest | bytes | None) -> list[str]:
    """A fetched model's export files in ``directory`` as its kind writes them (client.model_export): the
    tiny/hf policy's weights and config, or an LM task's merged model (it needs the task's spec, by
    ``spec_digest``: the base's source, pins and adapter config); ModelError when it has no LM spec."""
    if isinstance(fetched.config, LMAdaptersConfig):
        spec = None if spec_digest is None else fetch_task_spec(store, spec_digest)
        if spec is None or spec.kind != LM_KIND:
            cid = cid_for_digest(digest_of(fetched.manifest.to_bytes()))
            raise ModelError("config.kind", cid, "an LM task's adapters, but the task has no LM spec")
        return lm_work.write_export(directory, store, spec, fetched.config, fetched.state)
    return tiny_work.write_export(directory, fetched.state, fetched.config)


def read_export(directory: Path, manifest: ModelManifest) -> tuple[dict[str, torch.Tensor], ModelConfig | None]:
    """An export's state and config read back, by the kind its manifest declares (an LM export: its
    adapters as the shards hold them, and no ModelConfig)."""
    if manifest.config.get("kind") == LMAdaptersConfig.KIND:
        return lm_work.read_export(directory), None
    return tiny_work.read_export(directory, manifest.config)

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
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import torch

from concord.client.content.lm_content import LMTaskSpec
from concord.client.content.model_store import FetchedModel
from concord.client.content.store import Store
from concord.client.content.task_spec import TaskSpecManifest
from concord.client.digest import Digest
from concord.client.runtime import paths
from concord.client.runtime.lm_work import load_lm_work
from concord.client.runtime.tiny_work import TinyWork

Shapes = dict[str, tuple[int, ...]]


class Submission(Protocol):
    """What every kind's submission carries (client.engine.bundle.Bundle, client.engine.lm_grpo.LMSubmission):
    the claims a validator compares with the chain's, and the delta the outer step sums."""

    @property
    def task_id(self) -> int: ...
    @property
    def round(self) -> int: ...
    @property
    def trainer(self) -> str: ...
    @property
    def base_round(self) -> int: ...
    @property
    def proof_root(self) -> bytes: ...
    @property
    def work_units(self) -> int: ...
    @property
    def mean_reward(self) -> float: ...
    @property
    def delta(self) -> dict[str, torch.Tensor]: ...
    @property
    def rollouts(self) -> int: ...


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
    store: Store, spec: TaskSpecManifest | LMTaskSpec, model0: Digest, models_dir: Path, device: str = "cpu"
) -> Workload:
    """The registry: the spec's model kind, chosen once. An LM spec loads and verifies the base model and
    attaches the adapters (client.runtime.lm_work); a tiny spec keeps a cache of policies by digest."""
    if isinstance(spec, LMTaskSpec):
        return load_lm_work(store, spec, model0, models_dir, paths.models_dir(), device)
    return TinyWork(spec, models_dir)

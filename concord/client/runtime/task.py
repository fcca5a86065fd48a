"""A task as a node sees it, and its models.

load_task_context(node, task_id) -> TaskContext
                                      on-chain params + the spec fetched by its on-chain digest + env
                                      (+ on an LM task, ``lm``: the base model and adapters, lm_work)
fetch_round_model(ctx, store, m) -> FetchedModel   model m by its on-chain digest (must be final)
model_for_round(ctx, store, m) -> torch policy     the same as a policy, cached by digest (read only!)
current_round_now(client, task), phase_now(client, task, r)   views as of the pending block
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from concord.client.chain import ChainClient, Phase, TaskParams
from concord.client.content.lm_content import LMTaskSpec, fetch_spec
from concord.client.content.manifest import cid_for_digest
from concord.client.content.model_store import FetchedModel, LMAdaptersConfig, ModelError, fetch_model
from concord.client.content.store import Store
from concord.client.content.task_spec import TaskSpecManifest
from concord.client.digest import Digest
from concord.client.engine.envs import make_env
from concord.client.engine.model import Policy, build_policy, load_policy_state
from concord.client.runtime import paths
from concord.client.runtime.connect import Node
from concord.client.runtime.lm_work import LMWork, fetch_adapters, load_lm_work

MODEL_SLACK_BYTES = 1 << 20


class UnknownTask(ValueError):
    def __init__(self, task_id: int, task_count: int) -> None:
        super().__init__(f"task {task_id} does not exist (the contract has tasks 1..{task_count})")
        self.task_id, self.task_count = task_id, task_count


class ModelNotFinal(RuntimeError):
    def __init__(self, task_id: int, model: int) -> None:
        super().__init__(f"task {task_id}: model {model} is not final yet")
        self.task_id, self.model = task_id, model


class ModelConfigMismatch(ValueError):
    """A model manifest's architecture differs from the task spec's (the digest names the model)."""

    def __init__(self, digest: Digest, expected: object, got: object) -> None:
        super().__init__(f"model {digest}: config {got} differs from the task spec's {expected}")
        self.digest, self.expected, self.got = digest, expected, got


# ----------------------------------------------------------------------------- the task and its models


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
        if isinstance(fetched.config, LMAdaptersConfig):  # an LM task's round model: round_adapters reads it
            raise ModelError("config.kind", cid_for_digest(digest), "LM adapters, not a policy")
        policy = build_policy(fetched.config)
        load_policy_state(policy, {k: v.float() for k, v in fetched.state.items()})
        with self._lock:
            self._entries[digest] = (fetched, policy)
            while len(self._entries) > self.keep:
                self._entries.popitem(last=False)
        return fetched, policy


@dataclass(frozen=True)
class TaskContext:
    """A task as a node sees it: on-chain params, the spec behind params.spec_digest, the env; on an
    LM task (an LMTaskSpec) also ``lm``, the loaded base model with its adapters."""

    task_id: int
    params: TaskParams
    spec: TaskSpecManifest | LMTaskSpec
    env: Any  # Env (tiny) or TextEnv (LM)
    client: ChainClient = field(repr=False)
    models: ModelCache = field(repr=False)
    lm: LMWork | None = field(default=None, repr=False)

    @property
    def task(self) -> Any:
        """The spec's TaskConfig, or LMTaskConfig on an LM task (both have sampler, grpo, outer)."""
        return self.spec.task

    @property
    def spec_digest(self) -> Digest:
        return Digest.parse(self.params.spec_digest, "specDigest")


def load_task_context(node: Node, task_id: int, device: str = "cpu") -> TaskContext:
    """Read the task's params, fetch and check its spec by the on-chain digest, build its env (on an
    LM task: load and verify the base model on ``device``, attach the adapters)."""
    concord = node.client.concord
    count = concord.task_count()
    if not 1 <= task_id <= count:
        raise UnknownTask(task_id, count)
    params = concord.task_params(task_id)
    spec = fetch_spec(node.store, params.spec_digest)
    max_model_bytes = 2 * spec.limits.max_delta_bytes + MODEL_SLACK_BYTES  # weights + outer state
    models = ModelCache(node.state_dir / "models", max_model_bytes)
    if isinstance(spec, LMTaskSpec):
        model0 = Digest.parse(params.initial_model_digest, "initialModelDigest")
        work = load_lm_work(node.store, spec, model0, node.state_dir / "models", paths.models_dir(), device)
        return TaskContext(task_id, params, spec, work.rollouts.env, node.client, models, work)
    return TaskContext(task_id, params, spec, make_env(spec.task.env), node.client, models)


def round_adapters(ctx: TaskContext, store: Store, model: int) -> FetchedModel:
    """Model ``model`` of an LM task: its adapter tensors (and outer state) by the on-chain digest."""
    if ctx.lm is None:
        raise TypeError(f"task {ctx.task_id} is not an LM task")
    md = ctx.client.concord.model_digest(ctx.task_id, model)
    if not md.is_final:
        raise ModelNotFinal(ctx.task_id, model)
    return fetch_adapters(ctx.lm, store, Digest.parse(md.digest, f"model {model} digest"))


def fetch_round_model(ctx: TaskContext, store: Store, model: int) -> FetchedModel:
    """Model ``model`` of the task (0 = initial) by its on-chain digest; ModelNotFinal if not fixed yet."""
    return _round_model(ctx, store, model)[0]


def model_for_round(ctx: TaskContext, store: Store, model: int) -> Policy:
    """Model ``model`` as a policy, cached by digest. Shared: clone before changing it."""
    return _round_model(ctx, store, model)[1]


def _round_model(ctx: TaskContext, store: Store, model: int) -> tuple[FetchedModel, Policy]:
    md = ctx.client.concord.model_digest(ctx.task_id, model)
    if not md.is_final:
        raise ModelNotFinal(ctx.task_id, model)
    digest = Digest.parse(md.digest, f"model {model} digest")
    fetched, policy = ctx.models.get(store, digest)
    if fetched.config != ctx.task.model:
        raise ModelConfigMismatch(digest, ctx.task.model, fetched.config)
    return fetched, policy


# ----------------------------------------------------------------------------- views "now"
# Phases are decided by block timestamps. On a chain that mines only on transactions the
# latest block can be minutes old; a transaction sent now executes in the pending block, so
# "can I act now?" is asked of the pending block.


def current_round_now(client: ChainClient, task_id: int) -> int:
    """The newest round as a transaction sent now would see it."""
    round_: int = client.concord.contract.call("currentRound", task_id, block="pending")[0]
    return round_


def phase_now(client: ChainClient, task_id: int, round_: int) -> Phase:
    return Phase(client.concord.contract.call("phaseOf", task_id, round_, block="pending")[0])

"""A task as a node sees it, and its models.

load_task_context(node, task_id) -> TaskContext
                                      on-chain params + the spec fetched by its on-chain digest + its
                                      model kind's workload (client.runtime.workload, chosen once here)
final_model_digest(ctx, m) -> Digest  model m's on-chain digest (must be final)
round_base(ctx, store, m)             model m as a round builds on it (Workload.base)
model_for_round(ctx, store, m) -> torch policy     a tiny task's model m, cached by digest (read only!)
current_round_now(client, task), phase_now(client, task, r)   views as of the pending block
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from concord.client.chain import ChainClient, Phase, TaskParams
from concord.client.content.store import Store
from concord.client.content.task_spec import TaskSpecManifest, fetch_task_spec
from concord.client.digest import Digest
from concord.client.engine.model import Policy
from concord.client.runtime.connect import Node
from concord.client.runtime.tiny_work import ModelConfigMismatch
from concord.client.runtime.workload import Workload, load_workload

__all__ = ["ModelConfigMismatch", "ModelNotFinal", "TaskContext", "UnknownTask"]


class UnknownTask(ValueError):
    def __init__(self, task_id: int, task_count: int) -> None:
        super().__init__(f"task {task_id} does not exist (the contract has tasks 1..{task_count})")
        self.task_id, self.task_count = task_id, task_count


class ModelNotFinal(RuntimeError):
    def __init__(self, task_id: int, model: int) -> None:
        super().__init__(f"task {task_id}: model {model} is not final yet")
        self.task_id, self.model = task_id, model


# ----------------------------------------------------------------------------- the task and its models


@dataclass(frozen=True)
class TaskContext:
    """A task as a node sees it: on-chain params, the spec behind params.spec_digest, and its model kind's
    workload (client.runtime.workload: on an LM task the loaded base model with its adapters)."""

    task_id: int
    params: TaskParams
    spec: TaskSpecManifest[Any]
    client: ChainClient = field(repr=False)
    workload: Workload = field(repr=False)

    @property
    def env(self) -> Any:
        """Env (tiny) or TextEnv (LM)."""
        return self.workload.env

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
    spec = fetch_task_spec(node.store, params.spec_digest)
    model0 = Digest.parse(params.initial_model_digest, "initialModelDigest")
    workload = load_workload(node.store, spec, model0, node.state_dir / "models", device)
    return TaskContext(task_id, params, spec, node.client, workload)


def final_model_digest(ctx: TaskContext, model: int) -> Digest:
    """Model ``model``'s on-chain digest; ModelNotFinal if it is not fixed yet."""
    md = ctx.client.concord.model_digest(ctx.task_id, model)
    if not md.is_final:
        raise ModelNotFinal(ctx.task_id, model)
    return Digest.parse(md.digest, f"model {model} digest")


def round_base(ctx: TaskContext, store: Store, model: int) -> Any:
    """Model ``model`` as a round builds on it (Workload.base: a shared policy, or the LM's adapters)."""
    return ctx.workload.base(store, final_model_digest(ctx, model))


def model_for_round(ctx: TaskContext, store: Store, model: int) -> Policy:
    """round_base on a tiny task: model ``model`` as a policy, cached by digest. Shared: clone before changing it."""
    policy: Policy = round_base(ctx, store, model)
    return policy


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

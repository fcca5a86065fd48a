"""The network in one process: K trainers per round + the DiLoCo outer step, vs centralized GRPO.

Both runs see the same number of rollouts per round: the centralized trainer takes
K x prompts_per_step prompts per inner step. Centralized means an ordinary training run:
its optimizer state persists across rounds (nothing has to be re-created by a validator).
The reward of round r is the mean reward of every rollout generated during round r
(sampled at the task's temperature by the models theta_k of the inner steps).

Async level a (the chain's asyncLevel): round r's trainers build on model b = max(0, r - a), the
steady state of trainer.pick_base_round when the validators are the slower side (round r opens once
model r - a is final and a trainer prepares it at once), and the outer step applies their deltas to
model r with staleness s = r - b (validator.aggregate.outer_step), as validators do on chain.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from concord.client.engine.config import TaskConfig
from concord.client.engine.envs import make_env
from concord.client.engine.grpo import inner_update, make_inner_optimizer, train_round
from concord.client.engine.model import (
    build_policy,
    clone_policy,
    load_policy_state,
    policy_state,
)
from concord.client.engine.rollout import generate
from concord.validator.aggregate import outer_step


@dataclass(frozen=True)
class Curve:
    rewards: list[float]  # per round, mean reward of the round's rollouts
    exact: list[float]  # per round, fraction of rollouts with reward 1.0
    seconds: float  # wall time of the whole run


def trainer_address(k: int) -> str:
    """Deterministic stand-in address of simulated trainer k."""
    return "0x" + f"{k + 1:040x}"


def _record_round(
    curve: Curve, r: int, rewards: list[torch.Tensor], on_round: Callable[[int, float, float], None] | None
) -> None:
    """Round ``r``'s mean reward and exact fraction (over ``rewards``) appended to ``curve`` and told to
    ``on_round``."""
    all_rewards = torch.cat(rewards)
    mean, ex = float(all_rewards.mean()), float((all_rewards == 1.0).double().mean())
    curve.rewards.append(mean)
    curve.exact.append(ex)
    if on_round:
        on_round(r, mean, ex)


def simulate_decentralized(
    task: TaskConfig,
    rounds: int,
    task_id: int = 1,
    on_round: Callable[[int, float, float], None] | None = None,
    trainers: Sequence[str] | None = None,
    delta_key: Callable[[int, str], str] | None = None,
    on_model: Callable[[int, dict[str, torch.Tensor], dict[str, torch.Tensor]], None] | None = None,
    async_level: int = 0,
) -> Curve:
    """K = task.trainers_per_round trainers per round, each train_round from the same model; outer_step.

    ``trainers``: the K addresses that seed the prompts and sampling (default ``trainer_address(k)``);
    `concord bench round` passes its on-chain trainers' so both runs draw the same seeds.
    ``delta_key(round, address)``: the key a trainer's delta gets in the outer step, which sums
    deltas in key order (validators key them by bundle digest; default: the address).
    ``on_model(round, state, momentum)``: model round+1 and its outer state, after each outer step.
    ``async_level``: round r trains on model max(0, r - async_level) (module docstring)."""
    if async_level < 0:
        raise ValueError(f"async_level must be >= 0, got {async_level}")
    addresses = [trainer_address(k) for k in range(task.trainers_per_round)] if trainers is None else list(trainers)
    policy, env = build_policy(task.model), make_env(task.env)
    momentum: dict[str, torch.Tensor] = {}
    models = {0: clone_policy(policy)} if async_level else {}  # model m -> its policy, inside the window
    curve = Curve([], [], 0.0)
    start = time.perf_counter()
    for r in range(rounds):
        base_round = max(0, r - async_level)
        base = policy if base_round == r else models[base_round]
        deltas, round_rewards = {}, []
        for addr in addresses:
            batches, delta = train_round(base, env, task.grpo, task.sampler, task_id, r, addr)
            deltas[addr if delta_key is None else delta_key(r, addr)] = delta
            round_rewards += [b.rewards for b in batches]
        staleness = dict.fromkeys(deltas, r - base_round)
        base_state = policy_state(base)
        bases = dict.fromkeys(deltas, base_state)
        new_state, momentum = outer_step(policy_state(policy), deltas, momentum, task.outer, staleness, bases)
        load_policy_state(policy, new_state)
        if async_level:
            models[r + 1] = clone_policy(policy)
            models.pop(r + 1 - async_level - 1, None)  # the window of round r + 1 starts at r + 1 - async_level
        if on_model:
            on_model(r, new_state, momentum)
        _record_round(curve, r, round_rewards, on_round)
    return dataclasses.replace(curve, seconds=time.perf_counter() - start)


def simulate_centralized(
    task: TaskConfig,
    rounds: int,
    task_id: int = 1,
    on_round: Callable[[int, float, float], None] | None = None,
) -> Curve:
    """Plain GRPO in one process: one model and one optimizer for the whole run (no per-round reset,
    no outer step), H inner steps per round of K x prompts_per_step prompts each."""
    grpo = dataclasses.replace(task.grpo, prompts_per_step=task.grpo.prompts_per_step * task.trainers_per_round)
    policy, env = build_policy(task.model), make_env(task.env)
    optimizer = make_inner_optimizer(policy, grpo)
    curve = Curve([], [], 0.0)
    start = time.perf_counter()
    for r in range(rounds):
        ref = clone_policy(policy) if grpo.kl_coef > 0 else None
        round_rewards = []
        for k in range(grpo.inner_steps):
            idx = list(range(k * grpo.prompts_per_step, (k + 1) * grpo.prompts_per_step))
            batch = generate(policy, env, idx, grpo.group_size, task.sampler, task_id, r, trainer_address(0))
            inner_update(policy, optimizer, batch, grpo, ref)
            round_rewards.append(batch.rewards)
        _record_round(curve, r, round_rewards, on_round)
    return dataclasses.replace(curve, seconds=time.perf_counter() - start)

"""The network in one process: K trainers per round + the DiLoCo outer step, vs centralized GRPO.

Both runs see the same number of rollouts per round: the centralized trainer takes
K x prompts_per_step prompts per inner step and applies its own delta directly.
The reward of round r is the mean reward of every rollout generated during round r
(sampled at the task's temperature by the models theta_k of the inner steps).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Callable

import torch

from client.config import TaskConfig
from client.envs import make_env
from client.grpo import train_round
from client.model import build_policy, load_policy_state, policy_state
from validator.aggregate import outer_step


@dataclass(frozen=True)
class Curve:
    rewards: list[float]  # per round, mean reward of the round's rollouts
    exact: list[float]  # per round, fraction of rollouts with reward 1.0
    seconds: float  # wall time of the whole run


def trainer_address(k: int) -> str:
    """Deterministic stand-in address of simulated trainer k."""
    return "0x" + f"{k + 1:040x}"


def _round_stats(rewards: list[torch.Tensor]) -> tuple[float, float]:
    r = torch.cat(rewards)
    return float(r.mean()), float((r == 1.0).double().mean())


def simulate_decentralized(
    task: TaskConfig,
    rounds: int,
    task_id: int = 1,
    on_round: Callable[[int, float, float], None] | None = None,
) -> Curve:
    """K = task.trainers_per_round trainers per round, each train_round from the same model; outer_step."""
    policy, env = build_policy(task.model), make_env(task.env)
    momentum: dict[str, torch.Tensor] = {}
    rewards, exact = [], []
    start = time.perf_counter()
    for r in range(rounds):
        deltas, round_rewards = {}, []
        for k in range(task.trainers_per_round):
            addr = trainer_address(k)
            batches, delta = train_round(policy, env, task.grpo, task.sampler, task_id, r, addr)
            deltas[addr] = delta
            round_rewards += [b.rewards for b in batches]
        new_state, momentum = outer_step(policy_state(policy), deltas, momentum, task.outer)
        load_policy_state(policy, new_state)
        mean, ex = _round_stats(round_rewards)
        rewards.append(mean)
        exact.append(ex)
        if on_round:
            on_round(r, mean, ex)
    return Curve(rewards, exact, time.perf_counter() - start)


def simulate_centralized(
    task: TaskConfig,
    rounds: int,
    task_id: int = 1,
    on_round: Callable[[int, float, float], None] | None = None,
) -> Curve:
    """One trainer with K x the prompts per inner step, same H; theta <- theta_H each round."""
    grpo = dataclasses.replace(task.grpo, prompts_per_step=task.grpo.prompts_per_step * task.trainers_per_round)
    policy, env = build_policy(task.model), make_env(task.env)
    rewards, exact = [], []
    start = time.perf_counter()
    for r in range(rounds):
        batches, delta = train_round(policy, env, grpo, task.sampler, task_id, r, trainer_address(0))
        base = policy_state(policy)
        load_policy_state(policy, {n: base[n] + delta[n] for n in base})
        mean, ex = _round_stats([b.rewards for b in batches])
        rewards.append(mean)
        exact.append(ex)
        if on_round:
            on_round(r, mean, ex)
    return Curve(rewards, exact, time.perf_counter() - start)

"""Reproducible by construction (issue 4): with asyncLevel 0, the same seeds and the same thread
settings, the on-chain run's model after every round is byte for byte the RL engine's in-process
simulation (scripts.simulate.simulate_decentralized): the network adds verification, not noise.

The chain run: 3 trainer processes and 1 validator process, 3 rounds of a small task. The
simulation trains with the same trainer addresses (they seed prompts and sampling), orders the
deltas the way validators do (by bundle digest: the outer step sums in key order) and stores
each model with the validators' encoding (put_model with the outer momentum, parent = model r).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from own_devnet import TASK_FILE, NetworkRun, network_run

from concord.client import chain
from concord.client.chain import Role
from concord.client.content.model_store import put_model
from concord.client.digest import Digest
from concord.client.engine.grpo import pin_determinism
from concord.client.initiator import load_task_file
from scripts.demo import NetworkPlan, demo_nodes
from scripts.simulate import simulate_decentralized

ROUNDS = 3

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


@pytest.fixture(scope="module")
def chain_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NetworkRun]:
    assert load_task_file(TASK_FILE).params.async_level == 0
    plan = NetworkPlan(
        TASK_FILE, ROUNDS, demo_nodes(honest=3, cheat=None, validators=1), timeout_s=150.0, threads=1, live=False
    )
    with network_run(tmp_path_factory.mktemp("reproducible"), plan) as run:
        yield run


def test_chain_models_equal_the_simulation_for_3_rounds(chain_run: NetworkRun):
    c, task_id = chain_run.client.concord, chain_run.outcome.task_id
    on_chain = [Digest.parse(c.model_digest(task_id, m).digest) for m in range(ROUNDS + 1)]
    trainers = chain_run.addresses(Role.TRAINER)
    bundles = {
        (e.round, e.trainer): e.bundle_digest.hex() for e in chain_run.outcome.events if isinstance(e, chain.Submitted)
    }
    assert sorted(bundles) == sorted((r, t) for r in range(ROUNDS) for t in trainers)
    assert len({bundles[(r, t)] for r in range(ROUNDS) for t in trainers}) == ROUNDS * len(trainers)

    task = load_task_file(TASK_FILE).spec.task
    sim = [on_chain[0]]  # model 0 is built from the task's seed by both

    def store_model(round_: int, state: dict, momentum: dict) -> None:
        sim.append(put_model(chain_run.store, state, task.model, momentum, parent_digest=sim[round_]))

    pin_determinism(1)  # the nodes' setting (trainer --threads 1, validator 1)
    curve = simulate_decentralized(
        task, ROUNDS, task_id, trainers=trainers, delta_key=lambda r, addr: bundles[(r, addr)], on_model=store_model
    )
    assert sim == on_chain
    # the rewards agree too: the sim's mean over every rollout = the mean of the accepted bundles' means
    # (each bundle holds the same number of rollouts)
    assert curve.rewards == pytest.approx(list(chain_run.outcome.curve), abs=1e-9)


def test_the_delta_order_matters(chain_run: NetworkRun):
    """The check above can fail: the same deltas summed in another order give other model bytes."""
    c, task_id = chain_run.client.concord, chain_run.outcome.task_id
    bundles = {
        e.trainer: e.bundle_digest.hex()
        for e in chain_run.outcome.events
        if isinstance(e, chain.Submitted) and e.round == 0
    }
    by_digest = sorted(bundles, key=bundles.get)  # the validators' order
    rotated = by_digest[1:] + by_digest[:1]  # (y + z) + x instead of (x + y) + z
    task = load_task_file(TASK_FILE).spec.task
    model0 = Digest.parse(c.model_digest(task_id, 0).digest)
    got: list[Digest] = []

    def store_model(round_: int, state: dict, momentum: dict) -> None:
        got.append(put_model(chain_run.store, state, task.model, momentum, parent_digest=model0))

    pin_determinism(1)
    simulate_decentralized(
        task, 1, task_id, trainers=by_digest, delta_key=lambda r, addr: f"{rotated.index(addr)}", on_model=store_model
    )
    assert got[0] != Digest.parse(c.model_digest(task_id, 1).digest)

"""The network as separate processes (issue 4, first test bullet): 2 trainer and 2 validator
processes on a devnet of their own run 3 rounds of a small task through `scripts.demo.run_network`.

One run per module; each test asserts one part of what it left on chain, in IPFS and in the logs.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from own_devnet import TASK_FILE, NetworkRun, network_run

from concord.client import chain
from concord.client.chain import Role
from concord.client.content.model_store import fetch_model
from concord.client.digest import Digest
from concord.client.initiator import load_task_file
from concord.client.runtime import procs
from scripts.demo import NetworkPlan, demo_nodes

ROUNDS = 3


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NetworkRun]:
    plan = NetworkPlan(TASK_FILE, ROUNDS, demo_nodes(honest=2, cheat=None, validators=2), timeout_s=150.0, live=False)
    with network_run(tmp_path_factory.mktemp("network"), plan) as run:
        yield run


pytestmark = [pytest.mark.slow, pytest.mark.e2e]


def test_every_node_ran_as_its_own_process(network: NetworkRun):
    logs = Path(network.net.state_dir) / "logs"
    for spec in network.plan.nodes:
        lines = [json.loads(x) for x in (logs / f"{spec.name}.log").read_text().splitlines() if x.startswith("{")]
        if spec.role == Role.TRAINER:
            assert [x["round"] for x in lines if x.get("event") == "submitted"] == list(range(ROUNDS))
        else:
            assert [x["round"] for x in lines if x.get("event") == "revealed"] == list(range(ROUNDS))
    pids = json.loads((Path(network.net.state_dir) / "nodes.json").read_text())
    assert len({p["pid"] for p in pids}) == len(network.plan.nodes) == 4
    assert not any(procs.alive(p["pid"]) for p in pids)


def test_model_digest_advances_every_round(network: NetworkRun, tmp_path: Path):
    c, task_id = network.client.concord, network.outcome.task_id
    models = [c.model_digest(task_id, m) for m in range(ROUNDS + 1)]
    assert all(m.is_final for m in models)
    digests = [Digest.parse(m.digest) for m in models]
    assert len(set(digests)) == ROUNDS + 1
    for r in range(ROUNDS):
        (final,) = network.of(chain.RoundFinalized, round=r)
        assert not final.is_void and Digest.parse(final.next_model_digest) == digests[r + 1]
        fetched = fetch_model(network.store, digests[r + 1], tmp_path / "models", 1 << 30)
        assert fetched.manifest.parent == digests[r]  # model r+1 was built on model r
        assert fetched.outer_state is not None  # the outer momentum travels with it
    assert c.latest_model(task_id).model == ROUNDS


def test_both_validators_revealed_the_same_next_model(network: NetworkRun):
    validators = network.addresses(Role.VALIDATOR)
    for r in range(ROUNDS):
        votes = {e.validator: e.next_model_digest for e in network.of(chain.Revealed, round=r)}
        assert sorted(votes) == sorted(validators)
        assert len(set(votes.values())) == 1
        assert next(iter(votes.values())) == network.of(chain.RoundFinalized, round=r)[0].next_model_digest
        assert not any(w for e in network.of(chain.Revealed, round=r) for w in e.reject_words)  # no rejections


def test_rewards_and_fees_paid(network: NetworkRun):
    params = load_task_file(TASK_FILE).params
    trainers, validators = network.addresses(Role.TRAINER), network.addresses(Role.VALIDATOR)
    ledger = network.outcome.ledger
    for r in range(ROUNDS):
        rewards = {e.trainer: e.reward for e in network.of(chain.SubmissionRewarded, round=r)}
        assert sorted(rewards) == sorted(trainers) and all(x > 0 for x in rewards.values())
        # pro rata to work units; division dust (< 1 base unit per trainer) goes back to the budget
        assert (
            params.trainer_reward_per_round - len(trainers) <= sum(rewards.values()) <= params.trainer_reward_per_round
        )
        fees = {e.validator: e.fee for e in network.of(chain.ValidatorPaid, round=r)}
        assert fees == dict.fromkeys(validators, params.validator_fee_per_round // 2)
    assert network.of(chain.SubmissionRejected) == [] and network.of(chain.ValidatorSlashed) == []
    for a in trainers + validators:
        earned = ledger.reward[a] + ledger.fee[a] + ledger.bounty[a]
        assert earned > 0 and ledger.withdrawn[a] == earned  # every token earned was paid out
        assert network.client.concord.balance_of(a) == 0
        assert network.client.concord.node_info(a).stake == 100 * 10**18  # nobody slashed


def test_conservation_holds(network: NetworkRun):
    cons = network.outcome.conservation
    assert cons.holds and cons.token_balance > 0
    t = network.client.concord.totals()
    assert network.client.token.balance_of(network.client.concord.address) == t.escrow + t.staked + t.credited
    # everything left in the contract is the four nodes' stakes (the unused escrow was reclaimed)
    assert (t.staked, t.escrow, t.credited) == (4 * 100 * 10**18, 0, 0)

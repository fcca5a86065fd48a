"""The adversarial suite (issue 5) as tests: the networks of `concord bench attacks`, run once per
module on real devnets with every node its own process, then one test per scenario.

A cheating trainer: each cheating submission rejected by the validators' majority, slashed
slashAmount, the bounty credited to exactly the validators that rejected it, nothing paid to
it (or, for baseRound outside the window, refused by the contract with the custom error).
A cheating validator: it loses exactly what the rules say and the round follows the honest
majority. Always: honest submissions accepted and paid in full, no honest node slashed,
token conservation after settlement.

Those rows are the bench's own judge. tests/chain_judge.py judges the same runs again from the chain
alone (the contract's events and views, read right after settlement, before the devnet goes down)
and shares no code with it: every cheater slashed or unpaid as the rules say, no honest node
slashed, bounties to exactly the rejecting validators, conservation per round, task, node and in all.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from chain_judge import ChainRecord, Scenario, judge, read_chain
from rich.console import Console

from concord.client.chain import Role
from scripts.adversaries.trainer_cheats import CHEATS
from scripts.adversaries.validator_cheats import VALIDATOR_CHEATS
from scripts.bench import attacks as bench_attacks

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


def _run(
    plan: bench_attacks.AttackPlan, state_dir: Path, bench_judge
) -> tuple[bench_attacks.Observed, dict, ChainRecord]:
    """The bench's run of ``plan``, its rows, and the chain as settlement left it (read by wrapping the
    bench's settle_up: the devnet is gone once run_plan returns)."""
    settle_up, read = bench_attacks.settle_up, []

    def settle_then_read(client, initiator, actors, task_id: int) -> None:
        settle_up(client, initiator, actors, task_id)
        read.append(read_chain(client, task_id, {s.address: s.name for s in plan.nodes}))

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(bench_attacks, "settle_up", settle_then_read)
        obs = bench_attacks.run_plan(plan, state_dir, Console(quiet=True))
    assert len(read) == 1
    return obs, {row.scenario: row for row in bench_judge(obs)}, read[0]


def scenarios(plan: bench_attacks.AttackPlan) -> list[Scenario]:
    """Every cheating node of ``plan`` and what its cheat should cost it (from the adversaries' tables)."""
    out = []
    for s in plan.nodes:
        if s.cheat is None:
            continue
        if s.role == Role.TRAINER:
            cheat = CHEATS[s.cheat]
            acts = tuple(r for r in range(plan.rounds) if cheat.acts(r, plan.async_level))
            refused = cheat.caught_by.startswith(bench_attacks.REFUSED_PREFIX)
            out.append(Scenario(s.name, s.address, s.role, cheating_rounds=acts, refused=refused))
        else:
            vcheat = VALIDATOR_CHEATS[s.cheat]
            withholds = vcheat.copies_commit or vcheat.skip_reveal
            out.append(
                Scenario(
                    s.name,
                    s.address,
                    s.role,
                    withholds_reveal=withholds,
                    withholds_share=vcheat.withhold_share,
                    honest_vote=vcheat.honest_vote,
                )
            )
    return out


@pytest.fixture(scope="module")
def trainer_net(tmp_path_factory: pytest.TempPathFactory):
    return _run(
        bench_attacks.trainer_plan(list(CHEATS)), tmp_path_factory.mktemp("attacks"), bench_attacks.judge_trainers
    )


@pytest.fixture(scope="module")
def validator_net(tmp_path_factory: pytest.TempPathFactory):
    return _run(
        bench_attacks.validator_plan(list(VALIDATOR_CHEATS)),
        tmp_path_factory.mktemp("vattacks"),
        bench_attacks.judge_validators,
    )


@pytest.mark.parametrize("mode", sorted(CHEATS))
def test_cheating_trainer_is_caught_and_pays(trainer_net, mode: str) -> None:
    _, rows, _ = trainer_net
    row = rows[mode]
    assert row.detected, row.note
    if CHEATS[mode].caught_by.startswith(bench_attacks.REFUSED_PREFIX):
        assert row.slashed == 0
    else:
        assert row.slashed > 0 and row.bounty > 0


def test_trainer_network_honest_nodes_whole_and_tokens_conserved(trainer_net) -> None:
    obs, rows, _ = trainer_net
    assert sum(r.honest_false_rejects for r in rows.values()) == 0
    honest = [(s.address.lower(), r) for s in obs.plan.trainers() for r in obs.plan.honest_rounds(s)]
    assert bench_attacks.honest_outcome(obs, honest) == (0, [])
    assert bench_attacks.validator_problems(obs, [s.address.lower() for s in obs.plan.validators()]) == []
    assert bench_attacks.expected_bounties(obs) == bench_attacks.paid_bounties(obs)
    assert obs.conservation_ok


@pytest.mark.parametrize("mode", sorted(VALIDATOR_CHEATS))
def test_cheating_validator_loses_what_the_rules_say(validator_net, mode: str) -> None:
    _, rows, _ = validator_net
    assert rows[mode].detected, rows[mode].note


def test_validator_network_follows_the_honest_majority(validator_net) -> None:
    obs, rows, _ = validator_net
    assert sum(r.honest_false_rejects for r in rows.values()) == 0
    assert obs.conservation_ok


@pytest.mark.parametrize("net", ["trainer_net", "validator_net"])
def test_the_chain_alone_agrees(net: str, request: pytest.FixtureRequest) -> None:
    """The independent judge (tests/chain_judge.py) on the chain the run left: no problem anywhere,
    and it judged every scenario the bench reports a row for."""
    obs, rows, record = request.getfixturevalue(net)
    cases = scenarios(obs.plan)
    assert rows and set(rows) <= {s.cheat for s in obs.plan.nodes if s.cheat is not None}
    assert judge(record, cases) == []

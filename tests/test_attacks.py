"""The adversarial suite (issue 5) as tests: the networks of `concord bench attacks`, run once per
module on real devnets with every node its own process, then one test per scenario.

A cheating trainer: each cheating submission rejected by the validators' majority, slashed
slashAmount, the bounty credited to exactly the validators that rejected it, nothing paid to
it (or, for baseRound outside the window, refused by the contract with the custom error).
A cheating validator: it loses exactly what the rules say and the round follows the honest
majority. Always: honest submissions accepted and paid in full, no honest node slashed,
token conservation after settlement.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from scripts.adversaries.trainer_cheats import CHEATS
from scripts.adversaries.validator_cheats import VALIDATOR_CHEATS
from scripts.bench import attacks as bench_attacks

pytestmark = pytest.mark.slow


def _run(plan: bench_attacks.AttackPlan, state_dir: Path, judge) -> tuple[bench_attacks.Observed, dict]:
    obs = bench_attacks.run_plan(plan, state_dir, Console(quiet=True))
    return obs, {row.scenario: row for row in judge(obs)}


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
    _, rows = trainer_net
    row = rows[mode]
    assert row.detected, row.note
    if CHEATS[mode].caught_by.startswith(bench_attacks.REFUSED_PREFIX):
        assert row.slashed == 0
    else:
        assert row.slashed > 0 and row.bounty > 0


def test_trainer_network_honest_nodes_whole_and_tokens_conserved(trainer_net) -> None:
    obs, rows = trainer_net
    assert sum(r.honest_false_rejects for r in rows.values()) == 0
    honest = [(s.address.lower(), r) for s in obs.plan.trainers() for r in obs.plan.honest_rounds(s)]
    assert bench_attacks.honest_outcome(obs, honest) == (0, [])
    assert bench_attacks.validator_problems(obs, [s.address.lower() for s in obs.plan.validators()]) == []
    assert bench_attacks.expected_bounties(obs) == bench_attacks.paid_bounties(obs)
    assert obs.conservation_ok


@pytest.mark.parametrize("mode", sorted(VALIDATOR_CHEATS))
def test_cheating_validator_loses_what_the_rules_say(validator_net, mode: str) -> None:
    _, rows = validator_net
    assert rows[mode].detected, rows[mode].note


def test_validator_network_follows_the_honest_majority(validator_net) -> None:
    obs, rows = validator_net
    assert sum(r.honest_false_rejects for r in rows.values()) == 0
    assert obs.conservation_ok

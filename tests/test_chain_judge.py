"""The chain judge of tests/test_attacks.py (tests/chain_judge.py) on hand-made chain records: it passes
a run that kept the rules and names the node when one did not (a cheater unslashed or paid, an honest
node slashed, tokens that do not add up). A judge that cannot fail would pass any bench run."""

from __future__ import annotations

import dataclasses

import pytest
from chain_judge import ChainRecord, Scenario, judge

from concord.client import chain
from concord.client.chain import Role

TASK = 1
INITIATOR, HONEST, CHEATER, V1, V2, VCHEAT = (f"0x{c * 40}" for c in "abcdef")
NAMES = {HONEST: "trainer-1", CHEATER: "cheat-x", V1: "validator-1", V2: "validator-2", VCHEAT: "vcheat-no_reveal"}
STAKE, SLASH, REWARD, FEE = 100, 80, 300, 30
DIGEST, JUNK = b"\x11" * 32, b"\x22" * 32
SCENARIOS = [
    Scenario("cheat-x", CHEATER, Role.TRAINER, cheating_rounds=(0,)),
    Scenario("vcheat-no_reveal", VCHEAT, Role.VALIDATOR, withholds_reveal=True),
]
META = chain.EventMeta(1, "0x" + "00" * 32, 0)
PARAMS = chain.TaskParams(
    spec_digest=b"\x01" * 32,
    initial_model_digest=b"\x02" * 32,
    trainer_reward_per_round=REWARD,
    validator_fee_per_round=FEE,
    min_trainer_stake=STAKE,
    min_validator_stake=STAKE,
    slash_amount=SLASH,
    submit_seconds=60,
    commit_seconds=60,
    reveal_seconds=60,
    max_rounds=1,
    bounty_bps=5_000,
    async_level=0,
    min_validators=2,
    max_work_units=10,
)


def honest_run() -> tuple[list, dict[str, int]]:
    """One round by the rules: the cheater's submission rejected by both honest validators (slash 80,
    bounty 40 split 20/20), the honest one paid 300, the fee 15/15, the non-revealer slashed 80; the
    slashes less the bounty burned; everyone withdraws. Returns (events, stake per node)."""
    returned = (REWARD + FEE) - REWARD - FEE  # the pool less what was paid: nothing left
    events = [
        *(chain.NodeRegistered(META, a, Role.TRAINER, STAKE) for a in (HONEST, CHEATER)),
        *(chain.NodeRegistered(META, a, Role.VALIDATOR, STAKE) for a in (V1, V2, VCHEAT)),
        chain.TaskCreated(META, TASK, INITIATOR, PARAMS, REWARD + FEE),
        chain.RoundOpened(META, TASK, 0, 0, REWARD + FEE),
        *(chain.Joined(META, TASK, a, Role.TRAINER, 0) for a in (HONEST, CHEATER)),
        *(chain.Joined(META, TASK, a, Role.VALIDATOR, i) for i, a in enumerate((V1, V2, VCHEAT))),
        chain.Submitted(META, TASK, 0, HONEST, 0, 0, b"\x03" * 32, b"\x04" * 32, 10),
        chain.Submitted(META, TASK, 0, CHEATER, 1, 0, b"\x05" * 32, b"\x06" * 32, 10),
        *(chain.Committed(META, TASK, 0, a, b"\x07" * 32) for a in (V1, V2, VCHEAT)),
        *(chain.Revealed(META, TASK, 0, a, (0b10,), DIGEST) for a in (V1, V2)),
        chain.SubmissionRejected(META, TASK, 0, CHEATER, 1, SLASH, 40),
        chain.SubmissionRewarded(META, TASK, 0, HONEST, 0, REWARD),
        *(chain.BountyPaid(META, TASK, 0, a, 20) for a in (V1, V2)),
        *(chain.ValidatorPaid(META, TASK, 0, a, FEE // 2) for a in (V1, V2)),
        chain.ValidatorSlashed(META, TASK, 0, VCHEAT, SLASH),
        chain.RoundFinalized(META, TASK, 0, DIGEST, False, 10, returned),
        chain.StakeBurned(META, TASK, 0, (SLASH - 40) + SLASH),
        chain.Withdrawn(META, HONEST, REWARD),
        *(chain.Withdrawn(META, a, 20 + FEE // 2) for a in (V1, V2)),
    ]
    stake = {HONEST: STAKE, CHEATER: STAKE - SLASH, V1: STAKE, V2: STAKE, VCHEAT: STAKE - SLASH}
    return events, stake


def record(events: list, stake: dict[str, int], **change) -> ChainRecord:
    staked = sum(stake.values())
    rec = ChainRecord(
        TASK,
        tuple(events),
        stake,
        dict.fromkeys([INITIATOR, *stake], 0),
        chain.TaskEscrow(0, 0, 0),
        chain.Totals(0, staked, 0),
        staked,
        NAMES,
    )
    return dataclasses.replace(rec, **change)


def without(events: list, drop) -> list:
    return [e for e in events if not drop(e)]


def test_a_run_by_the_rules_passes() -> None:
    assert judge(record(*honest_run()), SCENARIOS) == []


def test_a_cheater_that_went_unslashed_is_reported() -> None:
    events, stake = honest_run()
    # the same run, but the validators' majority never happened: no rejection, no bounty, stake whole
    events = without(events, lambda e: isinstance(e, chain.SubmissionRejected | chain.BountyPaid))
    problems = judge(record(events, {**stake, CHEATER: STAKE}), SCENARIOS)
    assert "cheat-x: round 0: cheating submission 1 not slashed" in problems
    # and the tokens no longer add up for the round (the burn counted a slash that never was)
    assert "task: round 0: burned 120, slashes less bounties 80" in problems


def test_a_cheater_that_was_paid_is_reported() -> None:
    events, stake = honest_run()
    events.append(chain.SubmissionRewarded(META, TASK, 0, CHEATER, 1, 1))
    problems = judge(record(events, stake), SCENARIOS)
    assert "cheat-x: round 0: cheating submission 1 paid 1" in problems
    assert "cheat-x: credited 0 on chain, the events say 1" in problems  # and nobody holds the token


def test_a_validator_that_withheld_its_reveal_unslashed_or_paid_is_reported() -> None:
    events, stake = honest_run()
    events = without(events, lambda e: isinstance(e, chain.ValidatorSlashed))
    events.append(chain.ValidatorPaid(META, TASK, 0, VCHEAT, 5))
    problems = judge(record(events, {**stake, VCHEAT: STAKE}), SCENARIOS)
    assert "vcheat-no_reveal: round 0: paid a fee of 5" in problems
    assert f"vcheat-no_reveal: round 0: slashed 0 for its withheld reveal, slashAmount {SLASH}" in problems


@pytest.mark.parametrize("who", ["trainer-1", "validator-1"])
def test_an_honest_node_slashed_is_reported(who: str) -> None:
    events, stake = honest_run()
    if who.startswith("trainer"):
        events = without(events, lambda e: isinstance(e, chain.SubmissionRewarded))
        events.append(chain.SubmissionRejected(META, TASK, 0, HONEST, 0, SLASH, 0))
    else:
        events.append(chain.ValidatorSlashed(META, TASK, 0, V1, SLASH))
    problems = judge(record(events, stake), SCENARIOS)
    assert f"{who}: honest and slashed" in problems


def test_a_bounty_to_a_validator_that_did_not_reject_is_reported() -> None:
    events, stake = honest_run()
    events = [
        e if not isinstance(e, chain.Revealed) or e.validator != V2 else dataclasses.replace(e, reject_words=(0,))
        for e in events
    ]
    problems = judge(record(events, stake), SCENARIOS)
    assert "validator-2: round 0: bounty 20, rules say 0" in problems


def test_tokens_that_do_not_add_up_are_reported() -> None:
    events, stake = honest_run()
    problems = judge(
        record(events, stake, escrow=chain.TaskEscrow(7, 7, 0), token_balance=sum(stake.values()) + 7), SCENARIOS
    )
    assert "task: the events leave 0 in escrow, the chain holds 7" in problems
    assert any(p.startswith("network: token balance") for p in problems), problems


def test_a_slash_kept_by_the_task_instead_of_burned_is_reported() -> None:
    events, stake = honest_run()
    events = without(events, lambda e: isinstance(e, chain.StakeBurned))
    problems = judge(record(events, stake), SCENARIOS)
    assert "task: round 0: burned 0, slashes less bounties 120" in problems


def test_a_validator_that_withheld_its_seed_share_must_be_slashed_once() -> None:
    events, stake = honest_run()
    withholder = [
        SCENARIOS[0],
        Scenario("vcheat-no_reveal", VCHEAT, Role.VALIDATOR, withholds_reveal=True, withholds_share=True),
    ]
    events += [
        *(chain.SeedShareCommitted(META, TASK, 0, a) for a in (V1, V2, VCHEAT)),
        *(chain.SeedShareRevealed(META, TASK, 0, a, b"\x09" * 32) for a in (V1, V2)),
    ]
    assert judge(record(events, stake), withholder) == []  # one slash for both withheld reveals
    revealed = [*events, chain.SeedShareRevealed(META, TASK, 0, VCHEAT, b"\x09" * 32)]
    assert "vcheat-no_reveal: round 0: expected a seed share and no share reveal" in judge(
        record(revealed, stake), withholder
    )


def test_a_validator_that_reveals_the_honest_vote_must_be_paid_and_win() -> None:
    """lazy and false_flags reveal the honest validators' vote: the judge wants their digest to win and
    the fee paid (and no slash); a junk digest or a missing fee is named."""
    events, stake = honest_run()
    lazy = [SCENARIOS[0], Scenario("vcheat-no_reveal", VCHEAT, Role.VALIDATOR, honest_vote=True)]
    problems = judge(record(events, stake), lazy)  # the run where it committed and never revealed
    assert "vcheat-no_reveal: round 0: never revealed" in problems
    assert "vcheat-no_reveal: round 0: revealed the honest vote and was paid no fee" in problems
    assert "vcheat-no_reveal: round 0: slashed 80 although it revealed" in problems
    junk = [*events, chain.Revealed(META, TASK, 0, VCHEAT, (0b10,), JUNK)]
    assert "vcheat-no_reveal: round 0: its next-model digest lost the vote" in judge(record(junk, stake), lazy)
    won = [
        *events,
        chain.Revealed(META, TASK, 0, VCHEAT, (0b10,), DIGEST),
        chain.ValidatorPaid(META, TASK, 0, VCHEAT, 1),
    ]
    found = judge(record(won, stake), lazy)
    assert not [p for p in found if "lost the vote" in p or "no fee" in p or "never revealed" in p], found

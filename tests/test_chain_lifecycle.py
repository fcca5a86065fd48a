"""The whole protocol lifecycle through the typed SDK against a real Anvil and the real contracts:
a settled round with slashing and bounty, a void round, the async window, paginated
finalize, withdraw and unbonding, decoded events, and conservation after every step."""

from __future__ import annotations

import dataclasses

import pytest
from task_terms import CHAIN_PARAMS, TOKEN

from concord.client import chain
from concord.client.chain import ContractError, Phase, Role, TaskParams
from concord.client.runtime.seed import commit_shares, reveal_shares, wait_for_seed
from scripts.harness import conservation, digest

BASE = CHAIN_PARAMS


def params(**changes: object) -> TaskParams:
    return dataclasses.replace(BASE, **changes)


def commit_all(
    env, task_id: int, round_: int, validators, words, model: bytes, shares: dict[str, bytes]
) -> dict[str, bytes]:
    """Reveal the validators' seed shares (the last one fixes the seed), then commit the verdict."""
    salts = {}
    info = env.client.concord.round_info(task_id, round_)
    if info.submissions and info.phase == Phase.COMMIT:  # commits wait for the check seed
        reveal_shares(env.client.concord, validators, task_id, round_, shares)
        wait_for_seed(env.client.concord, env.client.rpc, validators[0], task_id, round_)
    for v in validators:
        salts[v.address] = digest(f"salt {v.address} {round_}")
        env.client.concord.commit(
            v, task_id, round_, chain.commit_hash(task_id, round_, words, model, salts[v.address], v.address)
        )
    return salts


def test_commit_hash_matches_the_contracts_pure_view(chain_env) -> None:
    c = chain_env.client.concord
    validator = chain_env.signer(5).address
    for n, rejected in [(1, []), (3, [2]), (256, [0, 255]), (300, [0, 256, 299]), (600, list(range(0, 600, 7)))]:
        words = chain.reject_words(rejected, n)
        assert len(words) == (n + 255) // 256
        assert chain.rejected_indexes(words, n) == sorted(rejected)
        local = chain.commit_hash(7, 3, words, digest("m"), digest("s"), validator)
        assert local == c.commit_hash(7, 3, words, digest("m"), digest("s"), validator)
    # Every field is bound: changing any one changes the hash.
    words = chain.reject_words([1], 3)
    ref = chain.commit_hash(1, 0, words, digest("m"), digest("s"), validator)
    assert ref != chain.commit_hash(2, 0, words, digest("m"), digest("s"), validator)
    assert ref != chain.commit_hash(1, 1, words, digest("m"), digest("s"), validator)
    assert ref != chain.commit_hash(1, 0, [0], digest("m"), digest("s"), validator)
    assert ref != chain.commit_hash(1, 0, words, digest("m2"), digest("s"), validator)
    assert ref != chain.commit_hash(1, 0, words, digest("m"), digest("s2"), validator)
    assert ref != chain.commit_hash(1, 0, words, digest("m"), digest("s"), chain_env.signer(6).address)


def test_full_round_pays_accepted_slashes_cheater_pays_bounty_and_fee(chain_env) -> None:
    env, c, tok = chain_env, chain_env.client.concord, chain_env.client.token
    initiator = env.signer(0)
    trainers = [env.signer(i) for i in (1, 2, 3)]
    validators = [env.signer(i) for i in (4, 5, 6)]
    p = params()
    budget = 3 * p.per_round
    start_block = env.client.rpc.block_number()
    task_id = env.create_task(initiator, p, budget)
    assert c.task_params(task_id) == p
    assert c.task_state(task_id).budget == budget - p.per_round  # round 0 reserved its pool
    assert c.phase_of(task_id, 0) == Phase.SUBMIT
    for t in trainers:
        env.enrol(t, Role.TRAINER, 100 * TOKEN, task_id)
    for v in validators:
        env.enrol(v, Role.VALIDATOR, 120 * TOKEN, task_id)
    assert c.task_state(task_id).trainers == 3 and c.task_state(task_id).validators == 3
    assert conservation(env.client).holds

    work = [10, 20, 30]
    shares = commit_shares(c, validators, task_id, 0)  # the phase closes early only with every share in
    for i, t in enumerate(trainers):
        c.submit(t, task_id, 0, 0, digest(f"bundle {i}"), digest(f"proof {i}"), work[i])
    info = c.round_info(task_id, 0)
    assert info.phase == Phase.COMMIT and info.submissions == 3  # closed early: all joined submitted
    assert c.submission_of(task_id, 0, 2) == chain.SubmissionRecord(trainers[2].address, 0, 30)

    words = chain.reject_words([2], 3)
    model1 = digest("model 1")
    salts = commit_all(env, task_id, 0, validators, words, model1, shares)
    assert c.phase_of(task_id, 0) == Phase.REVEAL
    assert c.commit_status(task_id, 0, validators[0].address) == chain.CommitStatus(True, False)
    for v in validators:
        c.reveal(v, task_id, 0, words, model1, salts[v.address])
    assert c.phase_of(task_id, 0) == Phase.FINALIZE
    assert conservation(env.client).holds

    receipts = c.finalize_all(initiator, task_id, 0, max_items=2)
    assert len(receipts) >= 3  # 6 steps, 2 per call
    assert c.phase_of(task_id, 0) == Phase.FINALIZED
    assert c.model_digest(task_id, 1) == chain.ModelDigest(model1, True)
    assert c.latest_model(task_id) == chain.LatestModel(1, model1)

    events = c.events(start_block)
    rewarded = {e.trainer: e.reward for e in events if isinstance(e, chain.SubmissionRewarded)}
    assert rewarded == {trainers[0].address: 100 * TOKEN, trainers[1].address: 200 * TOKEN}  # 300 pro rata 10:20
    (rejected,) = [e for e in events if isinstance(e, chain.SubmissionRejected)]
    assert (rejected.trainer, rejected.index, rejected.slashed) == (trainers[2].address, 2, 80 * TOKEN)
    bounty = {e.validator: e.amount for e in events if isinstance(e, chain.BountyPaid)}
    assert bounty == {v.address: 40 * TOKEN // 3 for v in validators}  # 50% of 80, split by 3 rejecters
    assert rejected.bounty == sum(bounty.values())  # rounding dust is burned with the rest
    fees = {e.validator: e.fee for e in events if isinstance(e, chain.ValidatorPaid)}
    assert fees == {v.address: 20 * TOKEN for v in validators}
    (fin,) = [e for e in events if isinstance(e, chain.RoundFinalized)]
    assert not fin.is_void and fin.next_model_digest == model1 and fin.accepted_work == 30
    assert fin.returned == 0  # reward and fee all paid out; the slash does not return to the budget
    (burn,) = [e for e in events if isinstance(e, chain.StakeBurned)]
    assert burn.amount == 80 * TOKEN - sum(bounty.values()) == c.burned()  # slash minus bounty, burned
    assert tok.balance_of("0x000000000000000000000000000000000000dEaD") == burn.amount
    assert c.node_info(trainers[2].address).stake == 20 * TOKEN
    assert c.balance_of(trainers[0].address) == 100 * TOKEN
    submitted = c.events(start_block, names=["Submitted"])
    assert [(e.trainer, e.index, e.bundle_digest, e.work_units) for e in submitted] == [
        (t.address, i, digest(f"bundle {i}"), work[i]) for i, t in enumerate(trainers)
    ]
    assert c.events(start_block, max_range=2) == events  # chunked log queries agree
    (created,) = [e for e in events if isinstance(e, chain.TaskCreated)]
    assert (created.task_id, created.initiator, created.params, created.budget) == (
        task_id,
        initiator.address,
        p,
        budget,
    )
    revealed = [e for e in events if isinstance(e, chain.Revealed)]
    assert [(e.validator, e.reject_words, e.next_model_digest) for e in revealed] == [
        (v.address, tuple(words), model1) for v in validators
    ]
    assert all(isinstance(e.role, Role) for e in events if isinstance(e, chain.Joined))
    assert {type(e).__name__ for e in events} >= {
        "TaskCreated",
        "RoundOpened",
        "NodeRegistered",
        "Joined",
        "PhaseClosedEarly",
        "SeedShareCommitted",
        "SeedShareRevealed",
        "CheckSeedFixed",
        "Committed",
        "Revealed",
        "RoundFinalized",
    }
    progressed = [e.cursor for e in events if isinstance(e, chain.FinalizeProgressed)]
    assert progressed == sorted(progressed) and progressed[-1] == 6
    assert conservation(env.client).holds

    # Pull payments: tokens leave only through withdraw.
    for s in [*trainers[:2], *validators]:
        owed = c.balance_of(s.address)
        held = tok.balance_of(s.address)
        receipt = c.withdraw(s, owed)
        assert tok.balance_of(s.address) == held + owed and c.balance_of(s.address) == 0
        (w,) = [e for e in c.receipt_events(receipt) if isinstance(e, chain.Withdrawn)]
        assert (w.account, w.amount) == (s.address, owed)
    assert c.balance_of(trainers[2].address) == 0  # the cheater earned nothing
    assert conservation(env.client).holds


def test_round_with_too_few_reveals_is_void_and_slashes_the_silent_validator(chain_env) -> None:
    env, c = chain_env, chain_env.client.concord
    initiator, trainer = env.signer(0), env.signer(1)
    v1, v2 = env.signer(4), env.signer(5)
    p = params(min_validators=2)
    task_id = env.create_task(initiator, p, 2 * p.per_round)
    env.enrol(trainer, Role.TRAINER, 100 * TOKEN, task_id)
    env.enrol(v1, Role.VALIDATOR, 100 * TOKEN, task_id)
    env.enrol(v2, Role.VALIDATOR, 100 * TOKEN, task_id)
    shares = commit_shares(c, [v1, v2], task_id, 0)
    c.submit(trainer, task_id, 0, 0, digest("b"), digest("p"), 5)
    words = chain.reject_words([], 1)
    salts = commit_all(env, task_id, 0, [v1, v2], words, digest("model 1"), shares)
    c.reveal(v1, task_id, 0, words, digest("model 1"), salts[v1.address])  # v2 stays silent
    assert c.phase_of(task_id, 0) == Phase.REVEAL
    with pytest.raises(ContractError) as early:
        c.finalize(initiator, task_id, 0, 10)
    assert early.value.name == "WrongPhase"
    env.warp(p.reveal_seconds + 1)
    assert c.phase_of(task_id, 0) == Phase.FINALIZE
    block = env.client.rpc.block_number()
    c.finalize_all(initiator, task_id, 0)
    assert c.phase_of(task_id, 0) == Phase.VOID
    events = c.events(block + 1)
    (fin,) = [e for e in events if isinstance(e, chain.RoundFinalized)]
    assert fin.is_void and fin.next_model_digest == p.initial_model_digest
    assert c.model_digest(task_id, 1) == chain.ModelDigest(p.initial_model_digest, True)
    assert not [
        e for e in events if isinstance(e, (chain.SubmissionRewarded, chain.SubmissionRejected, chain.ValidatorPaid))
    ]
    (slashed,) = [e for e in events if isinstance(e, chain.ValidatorSlashed)]
    assert (slashed.validator, slashed.amount) == (v2.address, 80 * TOKEN)
    assert c.node_info(v2.address).stake == 20 * TOKEN
    assert c.node_info(trainer.address).stake == 100 * TOKEN and c.balance_of(trainer.address) == 0
    assert conservation(env.client).holds


def test_async_window_lets_round_r_plus_1_build_on_model_r(chain_env) -> None:
    env, c = chain_env, chain_env.client.concord
    initiator, trainer, validator = env.signer(0), env.signer(1), env.signer(4)
    p = params(async_level=1, min_validators=1)
    task_id = env.create_task(initiator, p, 5 * p.per_round)
    env.enrol(trainer, Role.TRAINER, 100 * TOKEN, task_id)
    env.enrol(validator, Role.VALIDATOR, 100 * TOKEN, task_id)
    shares = commit_shares(c, [validator], task_id, 0)
    c.submit(trainer, task_id, 0, 0, digest("b0"), digest("p0"), 1)
    # Round 0 is in commit; with asyncLevel 1, round 1 is already taking submissions on model 0.
    assert c.phase_of(task_id, 0) == Phase.COMMIT
    assert c.current_round(task_id) == 1 and c.phase_of(task_id, 1) == Phase.SUBMIT
    with pytest.raises(ContractError) as not_final:
        c.submit(trainer, task_id, 1, 1, digest("b1"), digest("p1"), 1)
    assert not_final.value.name == "ModelNotFinal" and not_final.value.params == {"taskId": task_id, "model": 1}
    commit_shares(c, [validator], task_id, 1)  # with it round 1 closes at its one submission
    c.submit(trainer, task_id, 1, 0, digest("b1"), digest("p1"), 1)  # generation did not wait
    words = chain.reject_words([], 1)
    salts = commit_all(env, task_id, 0, [validator], words, digest("model 1"), shares)
    c.reveal(validator, task_id, 0, words, digest("model 1"), salts[validator.address])
    c.finalize_all(initiator, task_id, 0)
    assert c.latest_model(task_id) == chain.LatestModel(1, digest("model 1"))
    assert c.current_round(task_id) == 2
    with pytest.raises(ContractError) as window:
        c.submit(trainer, task_id, 2, 0, digest("b2"), digest("p2"), 1)
    assert window.value.name == "BaseRoundOutOfWindow"
    assert window.value.params == {"taskId": task_id, "round": 2, "baseRound": 0, "asyncLevel": 1}
    c.submit(trainer, task_id, 2, 1, digest("b2"), digest("p2"), 1)
    assert c.round_info(task_id, 2).submissions == 1
    assert conservation(env.client).holds


def test_finalize_is_paginated_one_step_per_item(chain_env) -> None:
    env, c = chain_env, chain_env.client.concord
    initiator = env.signer(0)
    trainers = [env.signer(i) for i in (1, 2, 3, 4, 5)]
    validator = env.signer(6)
    p = params(min_validators=1)
    task_id = env.create_task(initiator, p, 2 * p.per_round)
    for t in trainers:
        env.enrol(t, Role.TRAINER, 100 * TOKEN, task_id)
    env.enrol(validator, Role.VALIDATOR, 100 * TOKEN, task_id)
    shares = commit_shares(c, [validator], task_id, 0)
    for i, t in enumerate(trainers):
        c.submit(t, task_id, 0, 0, digest(f"b{i}"), digest(f"p{i}"), 1)
    words = chain.reject_words([1, 3], 5)
    salts = commit_all(env, task_id, 0, [validator], words, digest("m1"), shares)
    c.reveal(validator, task_id, 0, words, digest("m1"), salts[validator.address])
    cursors = []
    while c.phase_of(task_id, 0) == Phase.FINALIZE:
        c.finalize(initiator, task_id, 0, 1)
        cursors.append(c.finalize_cursor(task_id, 0))
        assert len(cursors) <= 12
    assert [x.cursor for x in cursors[:-1]] == list(range(1, len(cursors)))
    assert cursors[0].total == 10
    assert c.phase_of(task_id, 0) == Phase.FINALIZED
    paid = [c.balance_of(t.address) for t in trainers]
    assert paid == [100 * TOKEN, 0, 100 * TOKEN, 0, 100 * TOKEN]  # 300 over 3 accepted, equal work
    assert conservation(env.client).holds


def test_unbond_waits_for_leave_and_the_delay_then_withdraws(chain_env) -> None:
    env, c, tok = chain_env, chain_env.client.concord, chain_env.client.token
    initiator, trainer = env.signer(0), env.signer(1)
    task_id = env.create_task(initiator, params(), 2 * BASE.per_round)
    env.enrol(trainer, Role.TRAINER, 150 * TOKEN, task_id)
    c.leave(trainer, task_id)
    assert c.member_info(task_id, trainer.address).joined is False
    c.request_unbond(trainer, 50 * TOKEN)
    info = c.node_info(trainer.address)
    assert (info.stake, info.unbonding, info.joined_tasks) == (150 * TOKEN, 50 * TOKEN, 0)
    assert info.unbond_at == env.now() + c.unbond_delay()
    with pytest.raises(ContractError) as early:
        c.complete_unbond(trainer)
    assert early.value.name == "UnbondNotReady"
    env.warp(c.unbond_delay() + 1)
    c.complete_unbond(trainer)
    assert c.node_info(trainer.address).stake == 100 * TOKEN and c.balance_of(trainer.address) == 50 * TOKEN
    held = tok.balance_of(trainer.address)
    c.withdraw(trainer, 50 * TOKEN)
    assert tok.balance_of(trainer.address) == held + 50 * TOKEN
    tok.approve(trainer, c.address, 5 * TOKEN)
    c.add_stake(trainer, 5 * TOKEN)
    assert c.node_info(trainer.address).stake == 105 * TOKEN
    assert conservation(env.client).holds


def test_top_up_and_reclaim_budget_of_a_finished_task(chain_env) -> None:
    """A top-up is taken while a round can still open and refused after (NoFurtherRounds); what
    is left once the last round settled goes back to the initiator."""
    env, c = chain_env, chain_env.client.concord
    initiator, trainer, validator = env.signer(0), env.signer(1), env.signer(4)
    p = params(max_rounds=2, min_validators=1)
    task_id = env.create_task(initiator, p, 2 * p.per_round)
    env.client.token.approve(initiator, c.address, 8 * TOKEN)
    c.top_up(initiator, task_id, 7 * TOKEN)
    assert c.task_state(task_id).budget == p.per_round + 7 * TOKEN
    env.enrol(trainer, Role.TRAINER, 100 * TOKEN, task_id)
    env.enrol(validator, Role.VALIDATOR, 100 * TOKEN, task_id)
    with pytest.raises(ContractError) as not_over:
        c.reclaim_budget(initiator, task_id)
    assert not_over.value.name == "TaskNotOver"
    for r in range(2):
        shares = commit_shares(c, [validator], task_id, r)
        c.submit(trainer, task_id, r, r, digest(f"b{r}"), digest(f"p{r}"), 3)
        words = chain.reject_words([], 1)
        salts = commit_all(env, task_id, r, [validator], words, digest(f"m{r + 1}"), shares)
        c.reveal(validator, task_id, r, words, digest(f"m{r + 1}"), salts[validator.address])
        c.finalize_all(initiator, task_id, r)
        if r == 0:  # round 1, the last, is open: no round can use more money
            with pytest.raises(ContractError) as no_more:
                c.top_up(initiator, task_id, TOKEN)
            assert (no_more.value.name, no_more.value.params) == ("NoFurtherRounds", {"taskId": task_id})
    leftover = c.task_state(task_id).budget
    assert leftover == 7 * TOKEN  # everything else was paid out
    c.reclaim_budget(initiator, task_id)
    assert c.balance_of(initiator.address) == leftover and c.task_state(task_id).budget == 0
    assert conservation(env.client).holds

"""Every bad input gets its named custom error with its arguments AND changes nothing.

Each case is tried twice: through the typed SDK (the revert surfaces at gas estimation, no
nonce spent) and forced on chain with a fixed gas limit (the transaction is mined and
reverts; the SDK recovers the error by replaying the call). Protocol state is compared
before and after both."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest

from client import chain
from client.chain import ContractError, Phase, Role, TaskParams
from scripts.harness import digest

TOKEN = 10**18
P = TaskParams(
    digest("spec"),
    digest("model 0"),
    300 * TOKEN,
    60 * TOKEN,
    100 * TOKEN,
    100 * TOKEN,
    80 * TOKEN,
    600,
    600,
    600,
    0,
    5000,
    0,
    2,
    10**9,
)


def assert_rejected(
    env,
    task_id: int | None,
    watch,
    typed: Callable[[], object],
    signer,
    fn: str,
    args: tuple,
    name: str,
    params: dict | None = None,
) -> ContractError:
    """The typed call and the same call mined on chain both fail with ``name`` and change nothing."""
    before = env.snapshot_state(task_id, watch)
    with pytest.raises(ContractError) as typed_err:
        typed()
    assert typed_err.value.name == name, typed_err.value
    if params is not None:
        assert typed_err.value.params == params
    pending = env.client.concord.contract.send(signer, fn, *args, gas=2_000_000)
    with pytest.raises(ContractError) as mined_err:
        signer.wait(pending)
    assert (mined_err.value.name, mined_err.value.params) == (typed_err.value.name, typed_err.value.params)
    assert env.snapshot_state(task_id, watch) == before
    return typed_err.value


@pytest.fixture
def task(chain_env):
    """A task with trainers 1, 2 and validators 4, 5 joined, round 0 in its submit phase."""
    env = chain_env
    initiator = env.signer(0)
    task_id = env.create_task(initiator, P, 3 * P.per_round)
    trainers = [env.signer(1), env.signer(2)]
    validators = [env.signer(4), env.signer(5)]
    for t in trainers:
        env.enrol(t, Role.TRAINER, 100 * TOKEN, task_id)
    for v in validators:
        env.enrol(v, Role.VALIDATOR, 100 * TOKEN, task_id)
    watch = [s.address for s in [initiator, *trainers, *validators]]
    return env, task_id, initiator, trainers, validators, watch


def _to_reveal(env, task_id, trainers, validators) -> tuple[list[int], bytes, dict[str, bytes]]:
    c = env.client.concord
    for i, t in enumerate(trainers):
        c.submit(t, task_id, 0, 0, digest(f"b{i}"), digest(f"p{i}"), 1)
    words = chain.reject_words([1], len(trainers))
    salts = {}
    for v in validators:
        salts[v.address] = digest(f"salt {v.address}")
        c.commit(v, task_id, 0, chain.commit_hash(task_id, 0, words, digest("m1"), salts[v.address], v.address))
    assert c.phase_of(task_id, 0) == Phase.REVEAL
    return words, digest("m1"), salts


def test_commit_in_submit_phase_is_wrong_phase(task) -> None:
    env, task_id, _, _, validators, watch = task
    v = validators[0]
    args = (task_id, 0, digest("c"))
    err = assert_rejected(
        env,
        task_id,
        watch,
        lambda: env.client.concord.commit(v, *args),
        v,
        "commit",
        args,
        "WrongPhase",
        {"taskId": task_id, "round": 0, "expected": Phase.COMMIT, "actual": Phase.SUBMIT},
    )
    assert (
        isinstance(err.params["actual"], Phase)
        and str(err) == f"WrongPhase(taskId={task_id}, round=0, expected=COMMIT, actual=SUBMIT)"
    )


def test_submit_to_another_round_is_wrong_round(task) -> None:
    env, task_id, _, trainers, _, watch = task
    t = trainers[0]
    args = (task_id, 3, 0, digest("b"), digest("p"), 1)
    assert_rejected(
        env,
        task_id,
        watch,
        lambda: env.client.concord.submit(t, *args),
        t,
        "submit",
        args,
        "WrongRound",
        {"taskId": task_id, "expected": 0, "actual": 3},
    )


def test_second_submit_in_a_round_is_already_submitted(task) -> None:
    env, task_id, _, trainers, _, watch = task
    t = trainers[0]
    env.client.concord.submit(t, task_id, 0, 0, digest("b"), digest("p"), 1)
    args = (task_id, 0, 0, digest("b again"), digest("p"), 1)
    assert_rejected(
        env,
        task_id,
        watch,
        lambda: env.client.concord.submit(t, *args),
        t,
        "submit",
        args,
        "AlreadySubmitted",
        {"taskId": task_id, "round": 0, "trainer": t.address},
    )


def test_unregistered_account_cannot_join(task) -> None:
    env, task_id, _, _, _, watch = task
    stranger = env.signer(8)
    assert_rejected(
        env,
        task_id,
        [*watch, stranger.address],
        lambda: env.client.concord.join(stranger, task_id),
        stranger,
        "join",
        (task_id,),
        "NotRegistered",
        {"account": stranger.address},
    )


def test_unjoined_account_cannot_submit(task) -> None:
    env, task_id, _, _, _, watch = task
    stranger = env.signer(8)
    args = (task_id, 0, 0, digest("b"), digest("p"), 1)
    err = assert_rejected(
        env,
        task_id,
        [*watch, stranger.address],
        lambda: env.client.concord.submit(stranger, *args),
        stranger,
        "submit",
        args,
        "NotJoined",
    )
    assert err.params["account"] == stranger.address


def test_under_staked_trainer_cannot_join(task) -> None:
    env, task_id, _, _, _, watch = task
    poor = env.signer(7)
    env.enrol(poor, Role.TRAINER, 50 * TOKEN)
    assert_rejected(
        env,
        task_id,
        [*watch, poor.address],
        lambda: env.client.concord.join(poor, task_id),
        poor,
        "join",
        (task_id,),
        "InsufficientStake",
        {"account": poor.address, "stake": 50 * TOKEN, "required": 100 * TOKEN},
    )


def test_register_without_allowance_names_the_token_error(task) -> None:
    env, task_id, _, _, _, watch = task
    s = env.signer(7)
    args = (int(Role.TRAINER), 100 * TOKEN)
    assert_rejected(
        env,
        task_id,
        [*watch, s.address],
        lambda: env.client.concord.register(s, Role.TRAINER, 100 * TOKEN),
        s,
        "register",
        args,
        "ERC20InsufficientAllowance",
        {"spender": env.client.concord.address, "allowance": 0, "needed": 100 * TOKEN},
    )


def test_reveal_that_does_not_match_its_commit(task) -> None:
    env, task_id, _, trainers, validators, watch = task
    words, model, salts = _to_reveal(env, task_id, trainers, validators)
    v = validators[0]
    args = (task_id, 0, [0], model, salts[v.address])  # a different bitmap than committed
    assert_rejected(
        env,
        task_id,
        watch,
        lambda: env.client.concord.reveal(v, *args),
        v,
        "reveal",
        args,
        "RevealDoesNotMatchCommit",
        {"taskId": task_id, "round": 0, "validator": v.address},
    )


def test_reveal_twice(task) -> None:
    env, task_id, _, trainers, validators, watch = task
    words, model, salts = _to_reveal(env, task_id, trainers, validators)
    v = validators[0]
    env.client.concord.reveal(v, task_id, 0, words, model, salts[v.address])
    args = (task_id, 0, words, model, salts[v.address])
    assert_rejected(
        env,
        task_id,
        watch,
        lambda: env.client.concord.reveal(v, *args),
        v,
        "reveal",
        args,
        "AlreadyRevealed",
        {"taskId": task_id, "round": 0, "validator": v.address},
    )


def test_finalize_before_reveal_closes(task) -> None:
    env, task_id, initiator, trainers, validators, watch = task
    _to_reveal(env, task_id, trainers, validators)
    args = (task_id, 0, 10)
    assert_rejected(
        env,
        task_id,
        watch,
        lambda: env.client.concord.finalize(initiator, *args),
        initiator,
        "finalize",
        args,
        "WrongPhase",
        {"taskId": task_id, "round": 0, "expected": Phase.FINALIZE, "actual": Phase.REVEAL},
    )


def test_withdraw_beyond_balance(task) -> None:
    env, task_id, _, trainers, _, watch = task
    t = trainers[0]
    assert_rejected(
        env,
        task_id,
        watch,
        lambda: env.client.concord.withdraw(t, 1),
        t,
        "withdraw",
        (1,),
        "InsufficientBalance",
        {"account": t.address, "balance": 0, "requested": 1},
    )


def test_unbond_while_joined_is_pending_work(task) -> None:
    env, task_id, _, trainers, _, watch = task
    t = trainers[0]
    env.client.concord.submit(t, task_id, 0, 0, digest("b"), digest("p"), 1)
    assert_rejected(
        env,
        task_id,
        watch,
        lambda: env.client.concord.request_unbond(t, 10 * TOKEN),
        t,
        "requestUnbond",
        (10 * TOKEN,),
        "PendingWork",
        {"node": t.address, "joinedTasks": 1},
    )


def test_leave_with_unfinalized_work(task) -> None:
    env, task_id, _, trainers, _, watch = task
    t = trainers[0]
    env.client.concord.submit(t, task_id, 0, 0, digest("b"), digest("p"), 1)
    assert_rejected(
        env,
        task_id,
        watch,
        lambda: env.client.concord.leave(t, task_id),
        t,
        "leave",
        (task_id,),
        "WorkNotFinalized",
        {"taskId": task_id, "node": t.address, "round": 0},
    )


def test_create_task_with_bad_parameters(chain_env) -> None:
    env = chain_env
    s = env.signer(0)
    env.client.token.approve(s, env.client.concord.address, 10**6 * TOKEN)
    cases = [
        (dataclasses.replace(P, submit_seconds=0), P.per_round, "ZeroPhaseLength", {}),
        (dataclasses.replace(P, bounty_bps=10_001), P.per_round, "BountyTooHigh", {"bountyBps": 10_001}),
        (dataclasses.replace(P, min_validators=0), P.per_round, "MinValidatorsOutOfRange", None),
        (P, P.per_round - 1, "BudgetBelowOneRound", {"budget": P.per_round - 1, "perRound": P.per_round}),
        (dataclasses.replace(P, max_work_units=0), P.per_round, "ZeroWorkUnits", {}),
    ]
    for params, budget, name, expected in cases:
        args = (params.to_abi(), budget)
        assert_rejected(
            env,
            None,
            [s.address],
            lambda params=params, budget=budget: env.client.concord.create_task(s, params, budget),
            s,
            "createTask",
            args,
            name,
            expected,
        )


def test_submit_above_max_work_units(task) -> None:
    env, task_id, _, trainers, _, watch = task
    t = trainers[0]
    args = (task_id, 0, 0, digest("b"), digest("p"), P.max_work_units + 1)
    assert_rejected(
        env,
        task_id,
        watch,
        lambda: env.client.concord.submit(t, *args),
        t,
        "submit",
        args,
        "WorkUnitsAboveMax",
        {"taskId": task_id, "workUnits": P.max_work_units + 1, "maxWorkUnits": P.max_work_units},
    )


def test_finalize_a_round_that_never_opened(task) -> None:
    env, task_id, initiator, _, _, watch = task
    args = (task_id, 5, 10)
    assert_rejected(
        env,
        task_id,
        watch,
        lambda: env.client.concord.finalize(initiator, *args),
        initiator,
        "finalize",
        args,
        "RoundNotOpened",
        {"taskId": task_id, "round": 5},
    )


def test_close_and_reclaim_rules(task) -> None:
    env, task_id, initiator, trainers, _, watch = task
    t = trainers[0]
    assert_rejected(
        env,
        task_id,
        watch,
        lambda: env.client.concord.close_task(t, task_id),
        t,
        "closeTask",
        (task_id,),
        "NotInitiator",
        {"taskId": task_id, "caller": t.address},
    )
    env.client.concord.close_task(initiator, task_id)
    assert env.client.concord.task_state(task_id).closed
    # round 0 is still in flight: nothing can be reclaimed yet, and a closed task takes no top-up
    assert_rejected(
        env,
        task_id,
        watch,
        lambda: env.client.concord.reclaim_budget(initiator, task_id),
        initiator,
        "reclaimBudget",
        (task_id,),
        "TaskNotOver",
        {"taskId": task_id},
    )
    assert_rejected(
        env,
        task_id,
        watch,
        lambda: env.client.concord.top_up(initiator, task_id, TOKEN),
        initiator,
        "topUp",
        (task_id, TOKEN),
        "TaskIsClosed",
        {"taskId": task_id},
    )
    escrow = env.client.concord.task_escrow(task_id)
    assert escrow.held == escrow.budget + escrow.reserved == 3 * P.per_round

"""Every bad input gets its named custom error with its arguments AND changes nothing.

Each case is tried twice: through the typed SDK (the revert surfaces at gas estimation, no
nonce spent) and forced on chain with a fixed gas limit (the transaction is mined and
reverts; the SDK recovers the error by replaying the call). Protocol state is compared
before and after both."""

from __future__ import annotations

import dataclasses

import pytest
from task_terms import CHAIN_PARAMS, TOKEN

from concord.client import chain
from concord.client.chain import ContractError, Phase, Role
from concord.client.runtime.seed import commit_shares, reveal_shares, wait_for_seed
from scripts.harness import digest

P = CHAIN_PARAMS


def _camel(method: str) -> str:
    first, *rest = method.split("_")
    return first + "".join(w.title() for w in rest)


def assert_rejected(
    env,
    task_id: int | None,
    watch,
    signer,
    method: str,
    args: tuple,
    name: str,
    params: dict | None = None,
    *,
    typed_args: tuple | None = None,
) -> ContractError:
    """The typed call ``concord.method(signer, *typed_args)`` and the same call mined on chain
    (``args`` as the ABI takes them; ``typed_args`` defaults to ``args``) both fail with ``name``
    and change nothing."""
    concord = env.client.concord
    before = env.snapshot_state(task_id, watch)
    with pytest.raises(ContractError) as typed_err:
        getattr(concord, method)(signer, *(args if typed_args is None else typed_args))
    assert typed_err.value.name == name, typed_err.value
    if params is not None:
        assert typed_err.value.params == params
    pending = concord.contract.send(signer, _camel(method), *args, gas=2_000_000)
    with pytest.raises(ContractError) as mined_err:
        signer.wait(pending)
    assert (mined_err.value.name, mined_err.value.params) == (typed_err.value.name, typed_err.value.params)
    assert env.snapshot_state(task_id, watch) == before
    return typed_err.value


@dataclasses.dataclass
class Task:
    """A task with trainers 1, 2 and validators 4, 5 joined, round 0 in its submit phase."""

    env: object
    id: int
    initiator: object
    trainers: list
    validators: list

    @property
    def concord(self):
        return self.env.client.concord

    def rejects(self, signer, method: str, args: tuple, name: str, params: dict | None = None, **kw) -> ContractError:
        """``assert_rejected`` on this task, watching its members and the signer."""
        watch = [s.address for s in [self.initiator, *self.trainers, *self.validators]]
        if signer.address not in watch:
            watch.append(signer.address)
        return assert_rejected(self.env, self.id, watch, signer, method, args, name, params, **kw)

    def to_commit(self) -> dict[str, bytes]:
        """Both validators commit seed shares, both trainers submit: round 0 closed early, its
        shares not revealed yet (returned by address)."""
        c, task_id = self.concord, self.id
        shares = commit_shares(c, self.validators, task_id, 0)
        for i, t in enumerate(self.trainers):
            c.submit(t, task_id, 0, 0, digest(f"b{i}"), digest(f"p{i}"), 1)
        assert c.phase_of(task_id, 0) == Phase.COMMIT
        return shares

    def to_reveal(self) -> tuple[list[int], bytes, dict[str, bytes]]:
        """Round 0 closed, shares revealed and both validators committed: its reveal phase."""
        c, task_id = self.concord, self.id
        reveal_shares(c, self.validators, task_id, 0, self.to_commit())
        words = chain.reject_words([1], len(self.trainers))
        wait_for_seed(c, self.env.client.rpc, self.validators[0], task_id, 0)  # fixed by the last share
        salts = {}
        for v in self.validators:
            salts[v.address] = digest(f"salt {v.address}")
            c.commit(v, task_id, 0, chain.commit_hash(task_id, 0, words, digest("m1"), salts[v.address], v.address))
        assert c.phase_of(task_id, 0) == Phase.REVEAL
        return words, digest("m1"), salts


@pytest.fixture
def task(chain_env) -> Task:
    env = chain_env
    initiator = env.signer(0)
    task_id = env.create_task(initiator, P, 3 * P.per_round)
    trainers = [env.signer(1), env.signer(2)]
    validators = [env.signer(4), env.signer(5)]
    for t in trainers:
        env.enrol(t, Role.TRAINER, 100 * TOKEN, task_id)
    for v in validators:
        env.enrol(v, Role.VALIDATOR, 100 * TOKEN, task_id)
    return Task(env, task_id, initiator, trainers, validators)


def test_commit_in_submit_phase_is_wrong_phase(task: Task) -> None:
    v, tid = task.validators[0], task.id
    expected = {"taskId": tid, "round": 0, "expected": Phase.COMMIT, "actual": Phase.SUBMIT}
    err = task.rejects(v, "commit", (tid, 0, digest("c")), "WrongPhase", expected)
    assert (
        isinstance(err.params["actual"], Phase)
        and str(err) == f"WrongPhase(taskId={tid}, round=0, expected=COMMIT, actual=SUBMIT)"
    )


def test_submit_to_another_round_is_wrong_round(task: Task) -> None:
    args = (task.id, 3, 0, digest("b"), digest("p"), 1)
    task.rejects(task.trainers[0], "submit", args, "WrongRound", {"taskId": task.id, "expected": 0, "actual": 3})


def test_second_submit_in_a_round_is_already_submitted(task: Task) -> None:
    t = task.trainers[0]
    task.concord.submit(t, task.id, 0, 0, digest("b"), digest("p"), 1)
    args = (task.id, 0, 0, digest("b again"), digest("p"), 1)
    task.rejects(t, "submit", args, "AlreadySubmitted", {"taskId": task.id, "round": 0, "trainer": t.address})


def test_unregistered_account_cannot_join(task: Task) -> None:
    stranger = task.env.signer(8)
    task.rejects(stranger, "join", (task.id,), "NotRegistered", {"account": stranger.address})


def test_unjoined_account_cannot_submit(task: Task) -> None:
    stranger = task.env.signer(8)
    err = task.rejects(stranger, "submit", (task.id, 0, 0, digest("b"), digest("p"), 1), "NotJoined")
    assert err.params["account"] == stranger.address


def test_under_staked_trainer_cannot_join(task: Task) -> None:
    poor = task.env.signer(7)
    task.env.enrol(poor, Role.TRAINER, 50 * TOKEN)
    expected = {"account": poor.address, "stake": 50 * TOKEN, "required": 100 * TOKEN}
    task.rejects(poor, "join", (task.id,), "InsufficientStake", expected)


def test_register_without_allowance_names_the_token_error(task: Task) -> None:
    s = task.env.signer(7)
    expected = {"spender": task.concord.address, "allowance": 0, "needed": 100 * TOKEN}
    args = (int(Role.TRAINER), 100 * TOKEN)
    task.rejects(s, "register", args, "ERC20InsufficientAllowance", expected, typed_args=(Role.TRAINER, 100 * TOKEN))


def test_commit_before_the_check_seed_is_fixed(task: Task) -> None:
    """The phase closed with both shares committed; until they are revealed (or shareEnd passes) a
    commit and checkSeed are SeedNotReady with shareEnd; the last share reveal fixes the seed."""
    c, v = task.concord, task.validators[0]
    shares = task.to_commit()
    info = c.seed_info(task.id, 0)
    assert info.share_end == c.round_info(task.id, 0).submit_end + P.commit_seconds // 4
    expected = {"taskId": task.id, "round": 0, "shareEnd": info.share_end}
    task.rejects(v, "commit", (task.id, 0, digest("c")), "SeedNotReady", expected)
    with pytest.raises(ContractError) as err:
        c.check_seed(task.id, 0)
    assert err.value.name == "SeedNotReady" and err.value.params == expected
    block = task.env.client.rpc.block_number()
    reveal_shares(c, task.validators, task.id, 0, shares)
    seed = c.check_seed(task.id, 0)
    (fixed,) = [e for e in c.events(block + 1, "latest", ["CheckSeedFixed"]) if e.task_id == task.id]
    assert (fixed.seed, fixed.anchor_block, fixed.shares_revealed) == (seed, info.anchor_block, 0b11)


def test_seed_share_errors(task: Task) -> None:
    c, tid, (v1, v2) = task.concord, task.id, task.validators
    share = b"\x07" * 32
    c.commit_seed_share(v1, tid, 0, chain.share_hash(share, v1.address, tid, 0))
    who = {"taskId": tid, "round": 0, "validator": v1.address}
    task.rejects(v1, "commit_seed_share", (tid, 0, digest("again")), "ShareAlreadyCommitted", who)
    task.rejects(v1, "reveal_seed_share", (tid, 0, share), "WrongPhase")  # the submit phase is open
    c.commit_seed_share(v2, tid, 0, chain.share_hash(b"\x09" * 32, v2.address, tid, 0))
    for i, t in enumerate(task.trainers):
        c.submit(t, tid, 0, 0, digest(f"b{i}"), digest(f"p{i}"), 1)
    task.rejects(v1, "reveal_seed_share", (tid, 0, b"\x08" * 32), "ShareDoesNotMatch", who)
    task.rejects(v2, "flag", (tid, 0, []), "SeedNotReady", typed_args=(tid, 0, []))
    c.reveal_seed_share(v1, tid, 0, share)
    task.rejects(v1, "reveal_seed_share", (tid, 0, share), "ShareAlreadyRevealed", who)


def test_reveal_that_does_not_match_its_commit(task: Task) -> None:
    words, model, salts = task.to_reveal()
    v = task.validators[0]
    args = (task.id, 0, [0], model, salts[v.address])  # a different bitmap than committed
    task.rejects(v, "reveal", args, "RevealDoesNotMatchCommit", {"taskId": task.id, "round": 0, "validator": v.address})


def test_reveal_twice(task: Task) -> None:
    words, model, salts = task.to_reveal()
    v = task.validators[0]
    args = (task.id, 0, words, model, salts[v.address])
    task.concord.reveal(v, *args)
    task.rejects(v, "reveal", args, "AlreadyRevealed", {"taskId": task.id, "round": 0, "validator": v.address})


def test_finalize_before_reveal_closes(task: Task) -> None:
    task.to_reveal()
    expected = {"taskId": task.id, "round": 0, "expected": Phase.FINALIZE, "actual": Phase.REVEAL}
    task.rejects(task.initiator, "finalize", (task.id, 0, 10), "WrongPhase", expected)


def test_withdraw_beyond_balance(task: Task) -> None:
    t = task.trainers[0]
    task.rejects(t, "withdraw", (1,), "InsufficientBalance", {"account": t.address, "balance": 0, "requested": 1})


def test_unbond_while_joined_is_pending_work(task: Task) -> None:
    t = task.trainers[0]
    task.concord.submit(t, task.id, 0, 0, digest("b"), digest("p"), 1)
    task.rejects(t, "request_unbond", (10 * TOKEN,), "PendingWork", {"node": t.address, "joinedTasks": 1})


def test_leave_with_unfinalized_work(task: Task) -> None:
    t = task.trainers[0]
    task.concord.submit(t, task.id, 0, 0, digest("b"), digest("p"), 1)
    task.rejects(t, "leave", (task.id,), "WorkNotFinalized", {"taskId": task.id, "node": t.address, "round": 0})


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
        assert_rejected(env, None, [s.address], s, "create_task", args, name, expected, typed_args=(params, budget))


def test_submit_above_max_work_units(task: Task) -> None:
    too_many = P.max_work_units + 1
    args = (task.id, 0, 0, digest("b"), digest("p"), too_many)
    expected = {"taskId": task.id, "workUnits": too_many, "maxWorkUnits": P.max_work_units}
    task.rejects(task.trainers[0], "submit", args, "WorkUnitsAboveMax", expected)


def test_finalize_a_round_that_never_opened(task: Task) -> None:
    task.rejects(task.initiator, "finalize", (task.id, 5, 10), "RoundNotOpened", {"taskId": task.id, "round": 5})


def test_close_and_reclaim_rules(task: Task) -> None:
    t, initiator, tid = task.trainers[0], task.initiator, task.id
    task.rejects(t, "close_task", (tid,), "NotInitiator", {"taskId": tid, "caller": t.address})
    task.concord.close_task(initiator, tid)
    assert task.concord.task_state(tid).closed
    # round 0 is still in flight: nothing can be reclaimed yet, and a closed task takes no top-up
    task.rejects(initiator, "reclaim_budget", (tid,), "TaskNotOver", {"taskId": tid})
    task.rejects(initiator, "top_up", (tid, TOKEN), "TaskIsClosed", {"taskId": tid})
    escrow = task.concord.task_escrow(tid)
    assert escrow.held == escrow.budget + escrow.reserved == 3 * P.per_round

"""The validator on chain: stake and join, the round's check seed (validator.shares; client.runtime.seed),
the commit (salt + reveal written to disk first), the reveal of exactly what the plan on disk committed to,
and finalize (any validator may; "already finalized" is fine).

`commit_round` is the commit phase in order: reveal the seed share, wait for the check seed, judge every
submission on this validator's own sample, flag and re-check (validator.recheck), build model r+1
(validator.aggregate), plan, commit.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence

from concord.client import chain
from concord.client.chain import Committed, ContractError, Phase, Role
from concord.client.content.submission import (
    commit_reserve_s,
    content_due_s,
    content_window_s,
    submission_deadline_s,
)
from concord.client.digest import Digest
from concord.client.runtime import lifecycle
from concord.client.runtime.display import fields
from concord.client.runtime.seed import SeedWatch, seed_step
from concord.validator.context import (
    LostPlan,
    PlanMismatch,
    RevealPlan,
    SubmissionVerdict,
    Validator,
    ValidatorError,
    chain_now,
    model_digest,
)
from concord.validator.fetch import wait_fetched
from concord.validator.files import write_atomic
from concord.validator.judge import verify_round
from concord.validator.next_model import compute_next_model
from concord.validator.recheck import flag_window_over, post_flags, recheck_flags
from concord.validator.store import load_plan, plan_path

log = logging.getLogger("concord.validator")

ALREADY_FINAL = ("RoundAlreadySettled", "WrongPhase", "WrongRound")


def ensure_enrolled(v: Validator) -> None:
    """Register as a validator (staking) and join the task, whichever is still missing."""
    c, need = v.concord, v.task.params.min_validator_stake
    tok = lifecycle.token_info(v.client)  # amounts in logs: whole tokens with the symbol
    info = c.node_info(v.me)
    if info.role in (Role.NONE, Role.VALIDATOR):  # --stake below the minimum, above the cap or the wallet: refused
        lifecycle.stake_to_send(v.client, v.me, need, v.cfg.stake, "the task's minimum validator stake")
    if info.role == Role.NONE:
        want = max(need, 0 if v.cfg.stake is None else v.cfg.stake.units(tok.decimals))
        v.client.token.approve(v.signer, c.address, want)
        c.register(v.signer, Role.VALIDATOR, want)
        log.info("registered validator %s with stake %s", v.me, tok.fmt(want), extra=fields(stake=want))
    elif info.role != Role.VALIDATOR:
        raise ValidatorError(f"{v.me} is registered as {info.role.name}, not as a validator: use another key")
    elif info.stake - info.unbonding < need:
        top_up = need - (info.stake - info.unbonding)
        v.client.token.approve(v.signer, c.address, top_up)
        c.add_stake(v.signer, top_up)
        log.info(
            "added stake %s (task %d needs %s)",
            tok.fmt(top_up),
            v.task_id,
            tok.fmt(need),
            extra=fields(stake_added=top_up),
        )
    if not c.member_info(v.task_id, v.me).joined:
        c.join(v.signer, v.task_id)
        log.info("joined task %d as validator %s", v.task_id, v.me, extra=fields(task=v.task_id))


def round_seed(v: Validator, round_: int, submissions: int) -> bytes | None:
    """The round's check seed (fixed on chain after its submit phase; docs/PROTOCOL.md), driving
    ``fixSeed`` forward when needed; None while it is not fixed yet. A round without submissions
    needs none (b"")."""
    if submissions == 0:
        return b""
    if round_ not in v.seeds:
        watch = v.seed_watch.setdefault(round_, SeedWatch())
        seed = seed_step(v.concord, v.client.rpc, v.signer, v.task_id, round_, watch)
        if seed is None:
            return None
        v.seeds[round_] = seed
        v.seed_watch.pop(round_, None)
        log.info("round %d check seed %s", round_, seed.hex(), extra=fields(event="check_seed", round=round_))
    return v.seeds[round_]


def flag_moment(submit_end: float, commit_seconds: int) -> float:
    """Sampled mode: the chain time at which a validator posts its flags with the verdicts it has, shortly
    before the flag window (flagEnd = submitEnd + commitSeconds / 2) ends; content still being fetched then
    is judged later, unflagged (`commit_bound`)."""
    return submit_end + commit_seconds // 2 - max(1.0, commit_seconds / 16)


def commit_bound(sampled: bool, states_apart: bool, submit_end: float, commit_seconds: int, window_s: float) -> float:
    """The chain time at which this validator stops waiting for a round's content (the late-fetch rule,
    client.content.submission.content_due_s): never before a submission's fetch deadline counted from
    submitEnd (from shareEnd for inner states fetched apart after the seed), else as before: in sampled
    mode at the flag moment (`flag_moment`), in full mode at the commit phase's last quarter; never into
    that last quarter (re-checks, the outer step, the commit). A task file is refused unless the rule fits
    (client.initiator.phase_room), so the cap binds only on a task put on chain past the CLI."""
    commit_end = submit_end + commit_seconds
    if sampled:
        usual = flag_moment(submit_end, commit_seconds)
    else:
        usual = commit_end - commit_reserve_s(commit_seconds)
    due = submit_end + content_due_s(commit_seconds, states_apart, window_s)
    return min(max(usual, due), commit_end - commit_reserve_s(commit_seconds))


def set_commit_bound(v: Validator, round_: int) -> None:
    """Bound the commit phase's waits for content (`commit_bound`; each fetch also ends by its own deadline)
    and, in sampled mode, set the flag moment. Content not in by the bound is a reject (the trainer's fault)."""
    if round_ in v.commit_by:
        return
    info = v.concord.round_info(v.task_id, round_)
    commit_s = v.task.params.commit_seconds
    sampled = v.task.spec.validation.mode == "sampled"
    limits = v.task.spec.limits
    # the rule's deadline, or this node's own when its ipfs_timeout is longer (its fetches last that long)
    window = max(content_window_s(limits), submission_deadline_s(limits, v.store.timeout))
    states_apart = sampled and v.task.workload.states_apart
    bound = commit_bound(sampled, states_apart, info.submit_end, commit_s, window)
    now_chain, now = chain_now(v), time.monotonic()
    v.commit_by[round_] = now + max(0.0, bound - now_chain)
    if sampled:
        v.flag_by[round_] = now + max(0.0, min(bound, flag_moment(info.submit_end, commit_s)) - now_chain)


def flag_in_time(v: Validator, round_: int, submissions: int) -> None:
    """Sampled mode, before the flag moment: wait for the round's fetches (bundles and states) until all
    ended or the moment came, judge what is in and flag it. Content still coming then (late, within its
    deadline) is judged after, unflagged: it keeps none of the others' flags out of the window."""
    until = v.flag_by[round_]
    if time.monotonic() >= until or len(v.submissions.get(round_, {})) < submissions:
        return  # past the moment; or an event still to come (commit_round asks again next tick)
    verify_round(v, round_, submissions)  # judges what is in, starts what is not fetching yet (states too)
    while wait_fetched(v, round_, until):  # judged as each fetch ends: a slow one holds back no other
        verify_round(v, round_, submissions)
    post_flags(v, round_, [x for (r, _), x in sorted(v.verdicts.items()) if r == round_])


def plan_commit(v: Validator, round_: int, verdicts: Sequence[SubmissionVerdict], next_digest: Digest) -> RevealPlan:
    """The commitment and what it hides, on disk before anything is sent; never re-planned."""
    existing = load_plan(v.task_dir, round_)
    if existing is not None:
        return existing
    rejected = tuple(x.index for x in verdicts if not x.accepted)
    words = tuple(chain.reject_words(rejected, len(verdicts)))
    salt = os.urandom(32)
    commitment = chain.commit_hash(v.task_id, round_, words, next_digest.bytes, salt, v.me)
    plan = RevealPlan(
        v.task_id, round_, v.me, words, next_digest, salt.hex(), Digest.parse(commitment, "commitment"), rejected
    )
    write_atomic(plan_path(v.task_dir, round_), json.dumps(plan.to_json(), indent=1).encode())
    return plan


def commit(v: Validator, plan: RevealPlan) -> None:
    try:
        v.concord.commit(v.signer, plan.task_id, plan.round, plan.commitment.bytes)
    except ContractError as e:
        if e.name != "AlreadyCommitted":
            raise
    log.info(
        "committed round %d: reject %s, model %s",
        plan.round,
        list(plan.rejected),
        plan.next_model_digest,
        extra=fields(event="committed", round=plan.round, rejected=list(plan.rejected), model=plan.next_model_digest),
    )


def reveal(v: Validator, plan: RevealPlan) -> None:
    try:
        v.concord.reveal(
            v.signer,
            plan.task_id,
            plan.round,
            plan.reject_words,
            plan.next_model_digest.bytes,
            bytes.fromhex(plan.salt),
        )
    except ContractError as e:
        if e.name != "AlreadyRevealed":
            raise
    log.info(
        "revealed round %d: reject %s, model %s",
        plan.round,
        list(plan.rejected),
        plan.next_model_digest,
        extra=fields(event="revealed", round=plan.round, rejected=list(plan.rejected), model=plan.next_model_digest),
    )


def committed_on_chain(v: Validator, round_: int) -> bytes | None:
    """The commitment this validator posted for ``round_`` (its Committed event), if any."""
    for e in v.concord.events(v.client.deployment.block_number, "latest", ["Committed"]):
        if (
            isinstance(e, Committed)
            and e.task_id == v.task_id
            and e.round == round_
            and e.validator.lower() == v.me.lower()
        ):
            return e.commitment
    return None


def commit_round(v: Validator, round_: int, submissions: int) -> bool:
    """Commit phase: reveal the seed share, wait for the check seed, verify every submission on this
    validator's own sample (states fetched concurrently from the seed on, every wait bounded so the commit
    always lands), flag what failed, wait for the other validators' flags and re-check them, build model
    r+1, plan, commit. False while not ready (asked again next tick)."""
    v.hooks.reveal_share(v, round_)
    if round_seed(v, round_, submissions) is None:
        return False
    sampled = submissions > 0 and v.task.spec.validation.mode == "sampled" and v.task.workload.row_flags
    plan = load_plan(v.task_dir, round_)
    if plan is None:
        set_commit_bound(v, round_)
        if sampled:
            flag_in_time(v, round_, submissions)
        verdicts = verify_round(v, round_, submissions, wait=True)
        if verdicts is None:
            return False
        if sampled:
            post_flags(v, round_, verdicts)
            if not flag_window_over(v, round_):
                return False
            recheck_flags(v, round_)
            verdicts = [v.verdicts[(round_, i)] for i in range(submissions)]
        base_digest = model_digest(v, round_)
        if base_digest is None:  # asyncLevel > 0: model r is not final yet (finalize_due gets there)
            return False
        voted, model_from = v.hooks.votes(v, round_, verdicts)
        computed = compute_next_model(v, round_, base_digest, model_from)
        next_digest = Digest.parse(v.hooks.next_model(v, round_, computed), "next_model hook's digest")
        plan = plan_commit(v, round_, voted, next_digest)
    ensure_enrolled(v)  # a slash since start-up leaves the stake below the minimum: top it up
    commit(v, plan)
    v.commit_by.pop(round_, None)
    v.flag_by.pop(round_, None)
    for key in [k for k in v.bundles if k[0] == round_]:
        del v.bundles[key]
    return True


def reveal_round(v: Validator, round_: int) -> None:
    """Reveal phase: reveal exactly what was committed (the plan on disk must match the chain)."""
    plan = load_plan(v.task_dir, round_)
    path = plan_path(v.task_dir, round_)
    if plan is None:
        raise LostPlan(v.task_id, round_, path)
    on_chain = committed_on_chain(v, round_)
    if on_chain is not None and Digest.parse(on_chain, "commitment") != plan.commitment:
        raise PlanMismatch(v.task_id, round_, Digest.parse(on_chain), plan.commitment, path)
    reveal(v, plan)


def finalize_due(v: Validator) -> list[int]:
    """Settle every round whose reveal phase is over, oldest first (rounds finalize in order)."""
    done: list[int] = []
    c = v.concord
    for _ in range(64):  # a bound on rounds per call, not a retry
        round_ = c.task_state(v.task_id).finalized_rounds
        if round_ > c.current_round(v.task_id) or c.phase_of(v.task_id, round_) != Phase.FINALIZE:
            break
        try:
            c.finalize_all(v.signer, v.task_id, round_, v.cfg.finalize_page)
        except (ContractError, chain.TxReverted) as e:
            name = e.name if isinstance(e, ContractError) else "reverted"
            if name not in ALREADY_FINAL and c.task_state(v.task_id).finalized_rounds <= round_:
                raise  # not someone else's finalize of the same round
            log.info("round %d was finalized by someone else (%s)", round_, name)
            continue
        info = c.round_info(v.task_id, round_)
        log.info(
            "finalized round %d (%s): model %d = %s",
            round_,
            info.phase.name,
            round_ + 1,
            Digest.parse(info.next_model_digest),
            extra=fields(
                event="finalized", round=round_, phase=info.phase.name, model=Digest.parse(info.next_model_digest)
            ),
        )
        done.append(round_)
    return done

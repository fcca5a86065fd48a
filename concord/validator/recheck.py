"""Flags (docs/PROTOCOL.md "Flags"): in sampled mode a validator publishes what failed in its own sample
(IConcord.flag: at most MAX_FLAGS items, possibly none), waits until every joined validator flagged or
committed (or the flag window's end), then re-checks exactly the others' flags its own sample did not cover:
a fault found again is a reject (the flagger named in the evidence), a flag that does not hold changes
nothing. So one honest validator's catch is every honest validator's.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from concord.client import timing
from concord.client.chain import ContractError, Submitted
from concord.client.content.submission import SubmissionError, fetch_states, inner_state_layout
from concord.client.digest import Digest
from concord.client.runtime.display import fields
from concord.validator.context import States, SubmissionVerdict, Validator, chain_now
from concord.validator.fetch import base_shapes, fetch_one, record_submissions
from concord.validator.flags import MAX_FLAGS, STEP, FlagItem, flagged_sample, round_flags
from concord.validator.judge import checked, fetch_evidence, rejection
from concord.validator.sampling import CheckSample
from concord.validator.shares import slot_bit
from concord.validator.store import record_verdict

log = logging.getLogger("concord.validator")


def post_flags(v: Validator, round_: int, verdicts: Sequence[SubmissionVerdict]) -> None:
    """Publish what failed in this validator's own samples (at most MAX_FLAGS items; an empty list says
    "nothing failed": the others need not wait for the flag window's end). Once per round."""
    bit = slot_bit(v.concord, v.task_id, v.me)
    info = v.concord.seed_info(v.task_id, round_)
    if bit is None or info.flagged & bit or chain_now(v) >= info.flag_end:
        return
    found = round_flags(FlagItem.from_word(w) for x in verdicts for w in x.flags)
    items = list(v.hooks.flags(v, round_, found))
    try:
        v.concord.flag(v.signer, v.task_id, round_, [item.to_word() for item in items])
    except ContractError as e:
        if e.name in ("AlreadyFlagged", "FlagWindowClosed"):
            return
        raise
    log.info(
        "round %d: flagged %d item(s)",
        round_,
        len(items),
        extra=fields(event="flagged", round=round_, items=[item.to_word() for item in items]),
    )


def flag_window_over(v: Validator, round_: int) -> bool:
    """Whether every flag this round can get is in: each joined validator flagged or committed, or the
    window's deadline passed."""
    info = v.concord.seed_info(v.task_id, round_)
    if chain_now(v) >= info.flag_end:
        return True
    c = v.concord
    for slot in range(c.task_state(v.task_id).validator_slots):
        who = c.validator_at(v.task_id, slot)
        if int(who, 16) == 0 or info.flagged & (1 << slot):
            continue
        if not c.commit_status(v.task_id, round_, who).committed:
            return False
    return True


def recheck_flags(v: Validator, round_: int) -> None:
    """Re-check exactly what the other validators flagged in submissions this validator accepted: the
    flagged rows and steps that its own sample did not cover (one step replay or a few rows each; at most
    MAX_FLAGS per validator). A flagged fault found again turns the verdict into a rejection, with the
    flagger named in the evidence; a flag that does not hold changes nothing."""
    # read from the chain, not only the follower: the window can be seen closed before its events arrive
    anchor = v.concord.seed_info(v.task_id, round_).anchor_block
    record_submissions(v, v.concord.events(anchor or v.client.deployment.block_number, "latest", ["Flagged"]))
    by_sub: dict[int, dict[int, str]] = {}
    for who, words in v.flagged.get(round_, {}).items():
        if who == v.me.lower():
            continue
        for w in words[:MAX_FLAGS]:
            by_sub.setdefault(FlagItem.from_word(w).submission, {})[w] = who
    seen = v.submissions.get(round_, {})
    for index, flaggers in sorted(by_sub.items()):
        verdict = v.verdicts.get((round_, index))
        if verdict is None or not verdict.accepted or index not in seen:
            continue
        sub = seen[index]
        own = v.hooks.sample(v, sub)
        todo = {
            w: who
            for w, who in flaggers.items()
            if (round_, index, w) not in v.rechecked and not _covered(own, FlagItem.from_word(w))
        }
        if todo:
            recheck_one(v, sub, todo)


def _covered(sample: CheckSample, item: FlagItem) -> bool:
    """Whether ``sample`` already checked ``item`` (then this validator's own verdict stands for it)."""
    if not 0 <= item.step < len(sample.rows):
        return False
    if item.kind == STEP:
        return item.step in sample.steps
    return item.row in sample.rows[item.step]


def recheck_one(v: Validator, sub: Submitted, todo: Mapping[int, str]) -> None:
    """The checks of ``sub`` on exactly the flagged items ``todo`` (word -> flagger), through the task's
    model kind's checks (validator.judge.checked) like the judge's own."""
    items = [FlagItem.from_word(w) for w in sorted(todo)]
    grpo = v.task.task.grpo
    extra = flagged_sample(items, grpo.inner_steps, grpo.rollouts_per_step)
    started = time.perf_counter()
    shapes = base_shapes(v, {sub.base_round})[sub.base_round]
    submission = v.bundles.get((sub.round, sub.index))
    if submission is None:  # a restart since the judge: fetched again (from the local cache, usually)
        got = fetch_one(v, sub, shapes)
        if got.down is not None:
            raise got.down
        if got.error is not None or got.bundle is None:
            return  # fetched and accepted before: a refetch failing now is not evidence against the trainer
        submission = v.bundles[(sub.round, sub.index)] = got.bundle
    doc: dict[str, Any] | None = None
    flags: tuple[int, ...] = ()
    states: States = {}
    if v.task.workload.states_apart:  # else they travel inside the submission
        try:
            with timing.span("ipfs"):
                layout = inner_state_layout(shapes, grpo)
                digest = Digest.parse(sub.bundle_digest, "bundleDigest")
                needed = extra.states_needed()
                states = fetch_states(v.store, digest, needed, v.task.spec.limits, shapes, layout=layout)
        except SubmissionError as bad:
            doc = fetch_evidence(v, sub, bad)
    if doc is None:
        verdict = checked(v, sub, submission, extra, states)
        if verdict.accepted:
            v.rechecked |= {(sub.round, sub.index, w) for w in todo}
            log.info(
                "round %d #%d: %d flagged item(s) re-checked, none holds",
                sub.round,
                sub.index,
                len(todo),
                extra=fields(event="flags_rechecked", round=sub.round, index=sub.index, items=sorted(todo)),
            )
            return
        doc, flags = rejection(v, sub, verdict, f" on items flagged by {sorted(set(todo.values()))}")
    record_verdict(v, sub, doc, round(time.perf_counter() - started, 3), flags)

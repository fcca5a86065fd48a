"""Judging: each fetched submission through the checks (validator.checks, the task's model kind's)
into a verdict, recorded before anything is voted (DESIGN.md section 6, steps 1-6).

Submit phase: `verify_round` judges each submission as its fetch ends (pipelined); in sampled mode, once the
seed is fixed, on this validator's own sample (``v.hooks.sample``). Commit phase: every wait is bounded
(validator.consensus.set_commit_bound): content not there in time is a reject, so the commit always lands
with a verdict on every submission; the bound never comes before the content's deadline by the late-fetch
rule (client.content.submission.content_due_s: counted from submitEnd, or shareEnd for inner states).

Content that is not served within its deadline while this validator's own daemon answers is the submitter's
fault (reject); an own-daemon failure (StoreUnavailable / DaemonError) during a submission's fetch is retried
on the next tick, unless the daemon answers a probe right after and the same submission has failed it
OWN_FAILURE_STRIKES times: then its content counts as missing, so no submission can keep a validator from
committing.

The checks are the task's model kind's (validator.checks, keyed by Workload.kind: the validator's half of
the workload registry, client.runtime.workload), through the one walk of validator.pipeline.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from concord.client import timing
from concord.client.chain import Submitted
from concord.client.content.manifest import cid_for_digest
from concord.client.content.store import StoreError
from concord.client.content.submission import SubmissionError
from concord.client.runtime.task import round_base
from concord.validator.checks import check
from concord.validator.context import OWN_STORE_DOWN, ClaimMismatch, Fetched, States, SubmissionVerdict, Validator
from concord.validator.fetch import (
    base_shapes,
    done_fetches,
    fetch_one,
    sample_states,
    start_fetches,
    start_state_fetches,
    states_ready,
)
from concord.validator.flags import flags_from_verdict
from concord.validator.sampling import CheckSample
from concord.validator.store import check_list, evidence_document, own_store_answers, publish_pending, record_verdict
from concord.validator.verdict import Verdict

OWN_FAILURE_STRIKES = 2  # own-daemon failures on one submission's content (daemon healthy after) -> missing


def judge(v: Validator, got: Fetched) -> SubmissionVerdict:
    """Checks 1-6 on a fetched submission under model(baseRound); the verdict is on disk before this
    returns, a rejection's evidence with it (published by `publish_pending`, best effort)."""
    sub = got.sub
    started = time.perf_counter()
    doc: dict[str, Any] | None = None
    flags: tuple[int, ...] = ()
    if isinstance(got.error, SubmissionError):  # unavailable, oversize, malformed: the trainer's fault
        doc = fetch_evidence(v, sub, got.error)
    elif isinstance(got.error, ClaimMismatch):  # copied digest, wrong base round, claims that differ
        mismatch = got.error
        doc = evidence_document(
            v,
            sub,
            f"claim.{mismatch.field}",
            str(mismatch),
            {"field": mismatch.field, "on_chain": str(mismatch.on_chain), "in_manifest": str(mismatch.in_manifest)},
        )
    elif got.bundle is None:  # fetch_one yields a bundle or an error; settle_fetches judges no own-store failure
        raise ValueError(f"round {sub.round} #{sub.index}: fetched with neither a bundle nor an error")
    else:
        doc, flags = judge_submission(v, sub, got.bundle)
    seconds = round(got.seconds + time.perf_counter() - started, 3)
    return record_verdict(v, sub, doc, seconds, flags)


def rejection(
    v: Validator, sub: Submitted, verdict: Verdict, where: str = ""
) -> tuple[dict[str, Any], tuple[int, ...]]:
    """A rejecting verdict's evidence document and the flag words of what failed in the sample (none on a
    workload without row flags: Workload.row_flags)."""
    doc = evidence_document(
        v,
        sub,
        verdict.failed_check,
        f"check {verdict.failed_check} failed{where}",
        verdict.result(verdict.failed_check).evidence,
        check_list(verdict),
    )
    if not v.task.workload.row_flags:
        return doc, ()
    return doc, tuple(item.to_word() for item in flags_from_verdict(sub.index, verdict))


def judge_submission(v: Validator, sub: Submitted, submission: Any) -> tuple[dict[str, Any] | None, tuple[int, ...]]:
    """The task's model kind's checks (validator.checks) under model(baseRound), in sampled mode on this
    validator's sample with the inner states it needs; (the evidence document of a rejection or None, the
    flag words of what failed in the sample). An accepted delta is kept for the outer step."""
    work, sample, states = v.task.workload, None, {}
    if (
        v.task.spec.validation.mode == "sampled"
    ):  # this validator's sample, from the round's seed (commit_round fixed it)
        sample = v.hooks.sample(v, sub)
        if work.states_apart:
            try:
                with timing.span("ipfs"):
                    states = sample_states(v, sub)
            except SubmissionError as bad:  # missing, forged or malformed state: the trainer's fault
                return fetch_evidence(v, sub, bad), ()
    verdict = checked(v, sub, submission, sample, states)
    if not verdict.accepted:
        return rejection(v, sub, verdict)
    v.deltas[(sub.round, sub.index)] = submission.delta
    if sample is not None and work.row_flags:  # kept until the commit: a flag on it is re-checked without a refetch
        v.bundles[(sub.round, sub.index)] = submission
    return None, ()


def checked(v: Validator, sub: Submitted, submission: Any, sample: CheckSample | None, states: States) -> Verdict:
    """Checks 1-6 of ``submission`` under model(baseRound) (validator.checks.check)."""
    with timing.span("ipfs"):
        base = round_base(v.task, v.store, sub.base_round)
    with timing.span("verification"):
        return check(v.task.workload, base, submission, v.task.spec.validation, sample, states)


def fetch_evidence(v: Validator, sub: Submitted, bad: SubmissionError) -> dict[str, Any]:
    """The evidence document of content that is unavailable, oversize or malformed (the trainer's fault)."""
    return evidence_document(v, sub, "fetch", str(bad), {"field": bad.field, "cid": bad.cid, "reason": bad.reason})


def settle_fetches(v: Validator, fetched: Sequence[Fetched]) -> list[SubmissionVerdict]:
    """Judge what was fetched, in order. An own-store failure is retried next tick (raised after the
    others are judged), unless our daemon answers a probe and this submission has failed it
    OWN_FAILURE_STRIKES times: then its content is missing (the submitter's fault) and rejected."""
    verdicts, down = [], None
    for got in fetched:
        if got.down is not None:
            key = (got.sub.round, got.sub.index)
            answers = own_store_answers(v)
            if answers:
                v.strikes[key] = v.strikes.get(key, 0) + 1
            if not answers or v.strikes[key] < OWN_FAILURE_STRIKES:
                down = down or got.down
                continue
            err = SubmissionError(
                "content",
                cid_for_digest(got.sub.bundle_digest),
                f"our IPFS node failed {v.strikes[key]} times on this submission's content while "
                f"answering for other content ({got.down})",
            )
            got = Fetched(got.sub, None, err, None, got.seconds)
        verdicts.append(judge(v, got))
    if down is not None:
        raise down
    return verdicts


def verify_submission(v: Validator, sub: Submitted) -> SubmissionVerdict:
    """Checks 1-6 on one submission under model(baseRound), in the caller's thread; a rejection is
    stored with its evidence (and published, best effort)."""
    key = (sub.round, sub.index)
    if key in v.verdicts:
        return v.verdicts[key]
    shapes = base_shapes(v, {sub.base_round})
    verdict = settle_fetches(v, [fetch_one(v, sub, shapes[sub.base_round])])[0]
    publish_pending(v)
    return verdict


def settle_unsampled(v: Validator, round_: int) -> None:
    """Sampled mode before the round's seed is fixed: the fetches of ``round_`` that ended without a
    bundle (the submitter's content failed: judged now, no sample needed; or our own IPFS node failed:
    raised, so the node reports it and retries) are settled; fetched bundles wait for the seed."""
    down: StoreError | None = None
    for key in [k for k, f in v.fetching.items() if k[0] == round_ and f.done()]:
        future = v.fetching[key]
        if future.exception() is None and future.result().bundle is not None:
            continue
        del v.fetching[key]  # before result(): a fetch that raised is started afresh
        try:
            settle_fetches(v, [future.result()])
        except OWN_STORE_DOWN as e:
            down = down or e
    if down is not None:
        raise down


def verify_round(
    v: Validator, round_: int, expected: int | None = None, wait: bool = False
) -> list[SubmissionVerdict] | None:
    """Verdicts on every submission of ``round_`` seen so far; None while some are still being fetched
    or fewer than ``expected`` are seen. New submissions start fetching at once (`start_fetches`); the
    fetches that are done are judged. ``wait`` (the commit phase) waits for every fetch: each ends by
    its own deadline, so the wait is one deadline at most, however many providers are slow."""
    seen = v.submissions.get(round_, {})
    start_fetches(v, [seen[i] for i in sorted(seen)])
    if v.task.spec.validation.mode == "sampled" and round_ not in v.seeds:
        settle_unsampled(v, round_)
        return None  # sampled checks are drawn from the round's seed: judge bundles once it is fixed
    start_state_fetches(v, round_)
    if expected is not None and sorted(seen) != list(range(expected)):
        wait = False  # an event still to come: pick it up next tick, then wait
    futures = {v.fetching[(round_, i)]: (round_, i) for i in sorted(seen) if (round_, i) in v.fetching}
    # without ``wait``, a fetched bundle whose inner states are still coming waits for the next pass
    ready = (
        done_fetches(futures, v.commit_by.get(round_))
        if wait
        else [f for f in futures if f.done() and states_ready(v, futures[f])]
    )
    down: StoreError | None = None
    for future in ready:  # judged as each fetch ends: a slow one holds back no other
        del v.fetching[futures[future]]  # before result(): a fetch that raised is started afresh
        try:
            settle_fetches(v, [future.result()])
        except OWN_STORE_DOWN as e:
            down = down or e
    if wait:  # past the commit-phase bound: what is still being fetched was not there in time
        for future, key in futures.items():
            if key in v.fetching and not future.done():
                del v.fetching[key]
                future.cancel()
                cid = cid_for_digest(seen[key[1]].bundle_digest)
                late = SubmissionError("content", cid, "not fetched before this validator's commit bound")
                judge(v, Fetched(seen[key[1]], None, late, None, 0.0))
    if down is not None:
        raise down
    if any((round_, i) not in v.verdicts for i in seen):
        return None
    if expected is not None and sorted(seen) != list(range(expected)):
        return None
    return [v.verdicts[(round_, i)] for i in sorted(seen)]

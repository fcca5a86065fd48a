"""Fetching what the validator judges: the task's Submitted (and Flagged) events, each submission's bundle
and, in sampled mode, the inner states its sample reads (docs/SECURITY.md "Validator availability").

Each submission is fetched under its own deadline (client.content.submission.submission_deadline_s), in a
thread of its own from the tick it is seen (up to MAX_FETCH_THREADS at once), so a slow or withholding
provider costs one deadline, not one per submission; a stopping node drops the fetches not yet started and
the running ones end by their deadlines. Once the round's check seed is fixed, every submission's sampled
inner states are fetched at once (`start_state_fetches`), under the same deadlines.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, as_completed, wait
from typing import Any

from concord.client import timing
from concord.client.chain import ConcordEvent, Flagged, Submitted
from concord.client.content.manifest import cid_for_digest
from concord.client.content.submission import (
    SubmissionError,
    fetch_states,
    inner_state_layout,
    submission_deadline_s,
)
from concord.client.digest import Digest
from concord.client.runtime.task import final_model_digest
from concord.client.runtime.workload import Submission
from concord.validator.context import OWN_STORE_DOWN, ClaimMismatch, Fetched, States, Validator
from concord.validator.sampling import CheckSample, draw_sample


def record_submissions(v: Validator, events: Sequence[ConcordEvent]) -> None:
    """Keep this task's Submitted events by (round, index) and its Flagged events by (round, validator)."""
    for e in events:
        if isinstance(e, Submitted) and e.task_id == v.task_id:
            v.submissions.setdefault(e.round, {})[e.index] = e
        elif isinstance(e, Flagged) and e.task_id == v.task_id:
            v.flagged.setdefault(e.round, {})[e.validator.lower()] = tuple(e.items)


def backfill_submissions(v: Validator) -> None:
    """Submitted and Flagged events since the deployment (a restart must see the open rounds' earlier ones)."""
    record_submissions(v, v.concord.events(v.client.deployment.block_number, "latest", ["Submitted", "Flagged"]))


def check_claims(sub: Submitted, bundle: Submission) -> None:
    """DESIGN 6.1: the manifest's task, round, trainer (a copied digest names someone else) and
    baseRound are the on-chain ones; proofRoot and workUnits match the on-chain claims."""
    pairs = [
        ("task_id", sub.task_id, bundle.task_id),
        ("round", sub.round, bundle.round),
        ("trainer", sub.trainer.lower(), bundle.trainer.lower()),
        ("base_round", sub.base_round, bundle.base_round),
        ("proof_root", sub.proof_root.hex(), bytes(bundle.proof_root).hex()),
        ("work_units", sub.work_units, bundle.work_units),
    ]
    for name, on_chain, in_manifest in pairs:
        if on_chain != in_manifest:
            raise ClaimMismatch(name, on_chain, in_manifest)


def fetch_one(v: Validator, sub: Submitted, shapes: dict[str, tuple[int, ...]]) -> Fetched:
    """Fetch and claim-check one submission under its own deadline (safe to run in a thread)."""
    started = time.perf_counter()
    deadline = time.monotonic() + submission_deadline_s(v.task.spec.limits, v.store.timeout)
    bundle: Submission | None = None
    error, down = None, None
    try:
        with timing.span("ipfs"):
            bundle = v.task.workload.fetch(v.store, sub.bundle_digest, shapes, deadline)
        check_claims(sub, bundle)
    except (SubmissionError, ClaimMismatch) as e:
        error = e
    except OWN_STORE_DOWN as e:
        down = e
    return Fetched(sub, bundle, error, down, round(time.perf_counter() - started, 3))


def base_shapes(v: Validator, base_rounds: set[int]) -> dict[int, dict[str, tuple[int, ...]]]:
    """Parameter shapes of each base model (fetched here, in the caller's thread: the task's content,
    not a submitter's, so an own-store failure here is ours)."""
    shapes: dict[int, dict[str, tuple[int, ...]]] = {}
    for base_round in sorted(base_rounds):
        with timing.span("ipfs"):  # final: the chain checked at submit
            shapes[base_round] = v.task.workload.delta_shapes(v.store, final_model_digest(v.task, base_round))
    return shapes


def start_fetches(v: Validator, subs: Sequence[Submitted]) -> None:
    """Start fetching every submission of ``subs`` that has no verdict and no fetch under way, each in a
    thread of its own (up to MAX_FETCH_THREADS at once) under its own deadline."""
    new = [s for s in subs if (s.round, s.index) not in v.verdicts and (s.round, s.index) not in v.fetching]
    if not new:
        return
    shapes = base_shapes(v, {s.base_round for s in new})
    for s in new:
        future: Future[Fetched] = Future()
        v.fetching[(s.round, s.index)] = future
        threading.Thread(
            target=_run_fetch,
            args=(v, s, shapes[s.base_round], future),
            daemon=True,
            name=f"fetch-r{s.round}-i{s.index}",
        ).start()


def _run_fetch(v: Validator, sub: Submitted, shapes: dict[str, tuple[int, ...]], future: Future[Fetched]) -> None:
    """A fetch thread: waits for a slot, then `fetch_one` into ``future`` (unless it was cancelled).
    Daemon threads: a stopping node waits for none of them (each would end by its deadline anyway)."""
    with v.fetch_slots:
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(fetch_one(v, sub, shapes))
        except BaseException as e:  # handed to the tick that collects it (verify_round re-raises)
            future.set_exception(e)


def stop_fetches(v: Validator) -> None:
    """Cancel the fetches still waiting for a slot; running ones end by their deadlines, unwaited for."""
    for future in v.fetching.values():
        future.cancel()
    v.fetching.clear()


def own_sample(v: Validator, sub: Submitted) -> CheckSample:
    """What this validator checks expensively in ``sub`` (validator.sampling, from the round's seed)."""
    grpo, vcfg = v.task.task.grpo, v.task.spec.validation
    digest = Digest.parse(sub.bundle_digest, "bundleDigest")
    return draw_sample(v.seeds[sub.round], v.me, digest, grpo.inner_steps, grpo.rollouts_per_step, vcfg)


def start_state_fetches(v: Validator, round_: int) -> None:
    """Sampled mode, once the round's seed is fixed: start fetching the inner states every seen submission's
    sample needs, each in a thread of its own under its own deadline, all at once (a slow provider costs one
    deadline, however many there are). A workload without states_apart (the LM) carries them in the submission."""
    if v.task.spec.validation.mode != "sampled" or not v.task.workload.states_apart or round_ not in v.seeds:
        return
    seen = v.submissions.get(round_, {})
    new = [seen[i] for i in sorted(seen) if (round_, i) not in v.verdicts and (round_, i) not in v.states]
    if not new:
        return
    shapes = base_shapes(v, {s.base_round for s in new})
    for sub in new:
        future: Future[States] = Future()
        v.states[(sub.round, sub.index)] = future
        wanted = v.hooks.sample(v, sub).states_needed()
        threading.Thread(
            target=_run_state_fetch,
            args=(v, sub, wanted, shapes[sub.base_round], future),
            daemon=True,
            name=f"states-r{sub.round}-i{sub.index}",
        ).start()


def _run_state_fetch(
    v: Validator, sub: Submitted, wanted: Sequence[int], shapes: dict[str, tuple[int, ...]], future: Future[States]
) -> None:
    with v.fetch_slots:
        if not future.set_running_or_notify_cancel():
            return
        deadline = time.monotonic() + submission_deadline_s(v.task.spec.limits, v.store.timeout)
        try:
            with timing.span("ipfs"):
                layout = inner_state_layout(shapes, v.task.task.grpo)
                got = fetch_states(v.store, sub.bundle_digest, wanted, v.task.spec.limits, shapes, deadline, layout)
            future.set_result(got)
        except BaseException as e:  # handed to the judge (SubmissionError: the trainer's fault)
            future.set_exception(e)


def sample_states(v: Validator, sub: Submitted) -> States:
    """The inner states ``sub``'s sample needs: from its fetch started with the seed (waiting at most that
    fetch's deadline), or fetched now. A fetch that failed on our own daemon is dropped, so the next tick
    starts it afresh; SubmissionError (the trainer's fault) is raised to the judge."""
    key = (sub.round, sub.index)
    future = v.states.get(key)
    if future is None:
        start_state_fetches(v, sub.round)
        future = v.states[key]
    until = v.commit_by.get(sub.round)
    try:
        return future.result(timeout=None if until is None else max(0.0, until - time.monotonic()))
    except TimeoutError:
        v.states.pop(key, None)
        cid = cid_for_digest(sub.bundle_digest)
        raise SubmissionError("states", cid, "not fetched before this validator's commit bound") from None
    except SubmissionError:
        raise
    except BaseException:
        del v.states[key]
        raise
    finally:
        if future.done() and future.exception() is None:
            v.states.pop(key, None)


def states_ready(v: Validator, key: tuple[int, int]) -> bool:
    """Whether judging submission ``key`` would not wait for its inner states (fetched, or none under way)."""
    future = v.states.get(key)
    return future is None or future.done()


def wait_fetched(v: Validator, round_: int, until: float) -> bool:
    """Wait until one more fetch of ``round_`` under way (a bundle or inner states) ends; True at once when
    a fetched bundle with its states in waits to be judged; False when nothing is under way or monotonic
    ``until`` came first."""
    if any(f.done() and states_ready(v, k) for k, f in v.fetching.items() if k[0] == round_):
        return True  # ended after the last pass looked
    pending: list[Future[Any]] = [f for k, f in v.fetching.items() if k[0] == round_ and not f.done()]
    pending += [f for k, f in v.states.items() if k[0] == round_ and not f.done()]
    if not pending:
        return False
    ended, _ = wait(pending, timeout=max(0.0, until - time.monotonic()), return_when=FIRST_COMPLETED)
    return bool(ended)


def done_fetches(futures: Mapping[Future[Fetched], Any], until: float | None) -> Iterator[Future[Fetched]]:
    """The futures as each ends (judged at once: a slow one holds back no other), up to monotonic time
    ``until`` (without it, all of them: each ends by its own deadline)."""
    try:
        yield from as_completed(futures, timeout=None if until is None else max(0.0, until - time.monotonic()))
    except TimeoutError:
        return

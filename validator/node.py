"""The validator node: DESIGN.md section 6 as a loop over one task's on-chain rounds.

Every tick reads chain state and does whatever protocol step is due, so a restarted node
picks up exactly where the chain and its state dir say it is:

    round r in Submit   -> commit a secret seed share (validator.shares; the submit phase closes early only
                           once every joined validator's share is in); verify_round: each new Submitted
                           event's bundle starts fetching in a thread of its own (start_fetches) and is
                           judged as its fetch ends (judge) (pipelined; in sampled mode once the seed is fixed)
    round r in Commit   -> reveal the share; once the check seed is fixed, fetch every submission's sampled
                           inner states at once (start_state_fetches) and judge on this validator's own sample
                           (hooks.sample); sampled mode: flag what failed (IConcord.flag: at most MAX_FLAGS
                           items, possibly none), wait until every joined validator flagged or committed (or
                           the flag window's end), re-check exactly the others' flags this sample did not
                           cover (recheck_flags: a fault found again is a reject); compute_next_model from
                           model r, plan_commit (salt + reveal written to disk first), commit. Every wait for
                           content is bounded (set_commit_bound): what is not there in time is a reject, so
                           the commit always lands with a verdict on every submission
    round r in Reveal   -> reveal what the plan on disk committed to
    round in Finalize   -> finalize_due (any validator may; "already finalized" is fine)

State dir (one per validator key; client.runtime adds its event cursor), files written atomically:

    <state>/task-<id>/verdicts/r<round>-i<index>.json   one per submission (canonical JSON)
    <state>/task-<id>/evidence/<digest>.json             rejection evidence, also in IPFS
    <state>/task-<id>/plans/r<round>.json                salt, bitmap, next model, commitment
    <state>/task-<id>/shares/r<round>.hex                the round's secret seed share (before its commitment)
    <state>/models/  <state>/ipfs-cache/                 content caches (by digest)

Next model (DESIGN 6.7): `validator.aggregate.outer_step` over the accepted deltas keyed by
bundle digest (hex, sorted) from model r's weights and outer state, stored with
`put_model(store, state, model r's config, momentum, parent=model r digest)` before its
digest is committed. With no accepted submission the proposal is model r's own digest (the
model stays).

LM tasks (issue 12; TaskContext.lm): the same loop, with `fetch_lm_submission` for the fetch,
`judge_lm` (validator.lm_checks, sampled from the round's seed in sampled mode) for the checks, and
the outer step over the accepted adapter deltas from model r's adapters (`client.runtime.lm_work`),
stored as a model of the same base file.

Availability (issue 10; docs/SECURITY.md "Validator availability"):
  * each submission is fetched under its own deadline (client.content.submission.submission_deadline_s),
    each from the tick it is seen (up to MAX_FETCH_THREADS at once), so a slow or withholding
    provider costs one deadline, not one per submission; a stopping node drops the fetches not
    yet started and the running ones end by their deadlines;
  * a verdict is durable before its evidence is published: the evidence document and the verdict
    are written to the state dir first, the evidence is put in IPFS best effort (retried every
    tick until it is in; `publish_pending`), so no IPFS failure can hold a verdict back;
  * content that is not served within its deadline while this validator's own daemon answers is
    the submitter's fault (reject); an own-daemon failure (StoreUnavailable / DaemonError) during a
    submission's fetch is retried on the next tick, unless the daemon answers a probe right after
    and the same submission has failed it OWN_FAILURE_STRIKES times: then its content counts as
    missing, so no submission can keep a validator from committing.

`ValidatorHooks` names the protocol steps where a validator could act otherwise (verify, vote,
next model, commit, reveal); the node runs the honest defaults; the lab implements them
to play adversaries.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from client import chain, timing
from client.chain import (
    ChainClient,
    Committed,
    Concord,
    ConcordEvent,
    ContractError,
    Flagged,
    Phase,
    Role,
    Signer,
    Submitted,
    keys,
)
from client.content.lm_content import LMTaskSpec, fetch_lm_submission
from client.content.manifest import canonical_bytes, cid_for_digest, digest_of
from client.content.model_store import ModelError, put_model
from client.content.store import DaemonError, Store, StoreError, StoreUnavailable
from client.content.submission import (
    SubmissionError,
    fetch_states,
    fetch_submission,
    inner_state_layout,
    submission_deadline_s,
)
from client.content.task_spec import TaskSpecError
from client.digest import Digest
from client.engine.bundle import Bundle
from client.engine.grpo import pin_determinism
from client.engine.lm import ModelSourceError
from client.engine.lm_grpo import LMSubmission
from client.engine.model import policy_state
from client.runtime import lifecycle, parsers
from client.runtime.config import (
    NodeConfig,
    NodeConfigError,
    check_device,
    node_config,
    parse_layered,
)
from client.runtime.connect import Node, connect_node
from client.runtime.display import (
    Display,
    StepAbandoned,
    disarm_stop_timer,
    fields,
    setup_logging,
    shutdown_event,
)
from client.runtime.errors import explain
from client.runtime.events import EventFollower
from client.runtime.lm_work import fetch_adapters
from client.runtime.metrics import serve_metrics
from client.runtime.seed import SeedWatch, seed_step
from client.runtime.seed import chain_now as seed_chain_now
from client.runtime.task import TaskContext, UnknownTask, load_task_context, model_for_round, round_adapters
from client.units import AmountError, TokenAmount
from validator.aggregate import outer_step
from validator.checks import Verdict, verify_bundle
from validator.files import write_atomic
from validator.flags import MAX_FLAGS, STEP, FlagItem, flagged_sample, flags_from_verdict, round_flags
from validator.lm_checks import verify_submission as verify_lm
from validator.sampling import CheckSample, draw_sample
from validator.shares import commit_share, reveal_share, share_committed, slot_bit

log = logging.getLogger("concord.validator")

EVIDENCE_KIND = "rejection_evidence"
ALREADY_FINAL = ("RoundAlreadySettled", "WrongPhase", "WrongRound")
MAX_TRANSIENT_FAILURES = 20  # consecutive failed ticks (IPFS or RPC down) before giving up
TRANSIENT = (StoreUnavailable, DaemonError, chain.RpcUnavailable, ModelError)
OWN_STORE_DOWN = (StoreUnavailable, DaemonError)  # our own IPFS node failing: no verdict on anyone by itself
MAX_FETCH_THREADS = 16  # submissions fetched at once (each is I/O bound; its deadline bounds it)
PUBLISH_TIMEOUT_S = 5.0  # one evidence put may take this long per tick (then it waits for the next)
OWN_FAILURE_STRIKES = 2  # own-daemon failures on one submission's content (daemon healthy after) -> missing

States = dict[int, dict[str, torch.Tensor]]  # inner step k -> state tensors (client.content.submission.fetch_states)


class ValidatorError(RuntimeError):
    """A validator cannot go on for a reason its operator must fix (the message says which)."""


class PlanMismatch(ValidatorError):
    def __init__(self, task_id: int, round_: int, on_chain: Digest, planned: Digest, path: Path) -> None:
        super().__init__(
            f"task {task_id} round {round_}: committed {on_chain} on chain but the plan at {path} "
            f"commits to {planned}; cannot reveal (state dir from another run?)"
        )
        self.task_id, self.round, self.on_chain, self.planned, self.path = task_id, round_, on_chain, planned, path


class LostPlan(ValidatorError):
    def __init__(self, task_id: int, round_: int, path: Path) -> None:
        super().__init__(
            f"task {task_id} round {round_}: committed on chain but no plan at {path}; "
            "the reveal is lost (this validator will be slashed for the round)"
        )
        self.task_id, self.round, self.path = task_id, round_, path


# ----------------------------------------------------------------------------- config and records


@dataclass(frozen=True)
class ValidatorConfig:
    """A node config plus what only a validator decides."""

    node: NodeConfig
    rounds: int | None = None  # stop once the task has settled this many rounds
    withdraw: bool = False  # withdraw the credited balance before exiting
    stake: TokenAmount | None = None  # stake to register with (default: the task's minValidatorStake)
    finalize_page: int = 64  # finalize steps per transaction
    device: str = "cpu"  # where an LM task's model runs (cpu | cuda | cuda:N)

    def __post_init__(self) -> None:
        check_device(self.device)


@dataclass(frozen=True)
class SubmissionVerdict:
    """This validator's verdict on submission ``index`` of a round (persisted, so never re-checked)."""

    round: int
    index: int
    trainer: str
    bundle_digest: Digest
    accepted: bool
    failed_check: str  # "" when accepted
    evidence_digest: Digest | None  # None when accepted; sha256 of the evidence document (its CID derives)
    flags: tuple[int, ...] = ()  # flag items (validator.flags.FlagItem words) of what failed in this one's sample

    def to_json(self) -> dict[str, Any]:
        """Digests in their one text form ("0x" + 64 hex); no evidence is ""; flag words as strings (uint256)."""
        return {
            **self.__dict__,
            "bundle_digest": str(self.bundle_digest),
            "evidence_digest": "" if self.evidence_digest is None else str(self.evidence_digest),
            "flags": [str(w) for w in self.flags],
        }

    @staticmethod
    def from_json(obj: dict[str, Any]) -> SubmissionVerdict:
        """Reads files written with or without the 0x prefix (and those written before flags existed)."""
        evidence = obj["evidence_digest"]
        return SubmissionVerdict(
            **{
                **obj,
                "bundle_digest": Digest.parse(obj["bundle_digest"], "verdict.bundle_digest"),
                "evidence_digest": Digest.parse(evidence, "verdict.evidence_digest") if evidence else None,
                "flags": tuple(int(w) for w in obj.get("flags", ())),
            }
        )


@dataclass(frozen=True)
class RevealPlan:
    """What a commitment hides; on disk before the commit transaction is sent."""

    task_id: int
    round: int
    validator: str
    reject_words: tuple[int, ...]
    next_model_digest: Digest
    salt: str  # hex, 32 bytes (a secret, not a digest)
    commitment: Digest  # keccak of the above (IConcord.commitHash)
    rejected: tuple[int, ...]  # submission indexes, for people reading the file

    def to_json(self) -> dict[str, Any]:
        # reject words are uint256: strings, so every JSON reader keeps them exact
        return {
            "task_id": self.task_id,
            "round": self.round,
            "validator": self.validator,
            "reject_words": [str(w) for w in self.reject_words],
            "next_model_digest": str(self.next_model_digest),
            "salt": self.salt,
            "commitment": str(self.commitment),
            "rejected": list(self.rejected),
        }

    @staticmethod
    def from_json(obj: dict[str, Any]) -> RevealPlan:
        """Reads plans written with or without the 0x prefix."""
        return RevealPlan(
            obj["task_id"],
            obj["round"],
            obj["validator"],
            tuple(int(w) for w in obj["reject_words"]),
            Digest.parse(obj["next_model_digest"], "plan.next_model_digest"),
            obj["salt"],
            Digest.parse(obj["commitment"], "plan.commitment"),
            tuple(obj["rejected"]),
        )


class ValidatorHooks:
    """The protocol steps (DESIGN.md section 6) where a validator could act otherwise, called by `step`
    and `commit_round` with the validator's live state ``v``.

    Each default is what an honest node does; `run_validator` runs them unless given others. The lab
    subclasses this to play adversaries.
    """

    def verify(self, v: Validator, round_: int) -> None:
        """Submit phase (steps 1-6): an honest validator fetches and judges each submission as it is seen."""
        verify_round(v, round_)

    def sample(self, v: Validator, sub: Submitted) -> CheckSample:
        """Sampled mode: what this validator checks expensively in ``sub``; an honest one draws its own
        sample from the round's seed (`own_sample`)."""
        return own_sample(v, sub)

    def share(self, v: Validator, round_: int) -> None:
        """Submit phase: an honest validator commits a secret seed share (validator.shares)."""
        if not share_committed(v.concord, v.task_id, v.me, round_):
            ensure_enrolled(v)  # a slash since start-up leaves the stake below the minimum: top it up
            commit_share(v.concord, v.signer, v.task_dir, v.task_id, round_)

    def reveal_share(self, v: Validator, round_: int) -> None:
        """Commit phase, first: an honest validator reveals the share it committed."""
        reveal_share(v.concord, v.signer, v.task_dir, v.task_id, round_)

    def flags(self, v: Validator, round_: int, found: Sequence[FlagItem]) -> Sequence[FlagItem]:
        """Commit phase, after its own sample: an honest validator flags exactly what failed in it."""
        return found

    def votes(
        self, v: Validator, round_: int, found: Sequence[SubmissionVerdict]
    ) -> tuple[Sequence[SubmissionVerdict], Sequence[SubmissionVerdict]]:
        """Commit phase, the vote (step 8): (the verdicts voted, the verdicts the next model is built
        from). An honest validator votes what verification found and builds the model from the same."""
        return found, found

    def next_model(self, v: Validator, round_: int, digest: Digest) -> Digest:
        """Commit phase, the next model (step 7): an honest validator votes the digest of model
        round+1 it computed and stored, ``digest``."""
        return digest

    def commit(self, v: Validator, round_: int, submissions: int) -> bool:
        """Commit phase: an honest validator verifies every submission, builds model round+1, plans and
        commits (`commit_round`). False while not ready (asked again on the next tick)."""
        return commit_round(v, round_, submissions)

    def reveal(self, v: Validator, round_: int) -> None:
        """Reveal phase: an honest validator reveals exactly what it committed (`reveal_round`)."""
        reveal_round(v, round_)


HONEST = ValidatorHooks()


@dataclass
class Validator:
    """One validator's live state: the node's connections, the task, what it has seen and verified."""

    cfg: ValidatorConfig
    node: Node
    task: TaskContext
    hooks: ValidatorHooks = HONEST  # its protocol steps
    submissions: dict[int, dict[int, Submitted]] = field(default_factory=dict)  # round -> index -> event
    verdicts: dict[tuple[int, int], SubmissionVerdict] = field(default_factory=dict)
    deltas: dict[tuple[int, int], dict[str, torch.Tensor]] = field(default_factory=dict)
    unpublished: set[Digest] = field(default_factory=set)  # evidence digests on disk, not yet in IPFS
    strikes: dict[tuple[int, int], int] = field(default_factory=dict)  # own-daemon failures per submission
    fetch_slots: threading.BoundedSemaphore = field(
        default_factory=lambda: threading.BoundedSemaphore(MAX_FETCH_THREADS)
    )  # fetches running at once
    fetching: dict[tuple[int, int], Future[Fetched]] = field(default_factory=dict)  # (round, index) -> its fetch
    seeds: dict[int, bytes] = field(default_factory=dict)  # round -> its fixed check seed
    seed_watch: dict[int, SeedWatch] = field(default_factory=dict)  # round -> blocks seen while waiting
    states: dict[tuple[int, int], Future[States]] = field(default_factory=dict)  # (round, index) -> its states' fetch
    flagged: dict[int, dict[str, tuple[int, ...]]] = field(default_factory=dict)  # round -> validator -> flag words
    rechecked: set[tuple[int, int, int]] = field(default_factory=set)  # (round, index, word) re-checked and passed
    commit_by: dict[int, float] = field(default_factory=dict)  # round -> monotonic time its content waits end
    bundles: dict[tuple[int, int], Bundle] = field(default_factory=dict)  # sampled, accepted: until the commit

    @property
    def client(self) -> ChainClient:
        return self.node.client

    @property
    def concord(self) -> Concord:
        return self.node.client.concord

    @property
    def signer(self) -> Signer:
        return self.node.signer

    @property
    def store(self) -> Store:
        return self.node.store

    @property
    def me(self) -> str:
        return self.node.address

    @property
    def task_id(self) -> int:
        return self.task.task_id

    @property
    def task_dir(self) -> Path:
        return task_dir(self.node.state_dir, self.task_id)


# ----------------------------------------------------------------------------- files


def task_dir(state_dir: Path, task_id: int) -> Path:
    return Path(state_dir) / f"task-{task_id}"


def plan_path(folder: Path, round_: int) -> Path:
    return folder / "plans" / f"r{round_:06d}.json"


def verdict_path(folder: Path, round_: int, index: int) -> Path:
    return folder / "verdicts" / f"r{round_:06d}-i{index:05d}.json"


def evidence_path(folder: Path, digest: Digest | str) -> Path:
    return folder / "evidence" / f"{Digest.parse(digest, 'evidence digest').hex()}.json"


def load_plan(folder: Path, round_: int) -> RevealPlan | None:
    path = plan_path(folder, round_)
    return RevealPlan.from_json(json.loads(path.read_text())) if path.exists() else None


def load_verdicts(folder: Path) -> list[SubmissionVerdict]:
    """Every verdict a validator stored for a task (``folder`` = its task dir; `concord status` reads these)."""
    return [
        SubmissionVerdict.from_json(json.loads(p.read_text())) for p in sorted((folder / "verdicts").glob("r*-i*.json"))
    ]


# ----------------------------------------------------------------------------- start-up


def connect_validator(cfg: ValidatorConfig, hooks: ValidatorHooks = HONEST) -> Validator:
    """Connections, key, the task (spec from IPFS by its on-chain digest) and the verdicts already on disk."""
    node = connect_node(cfg.node)
    v = Validator(cfg, node, load_task_context(node, cfg.node.task_id, cfg.device), hooks)
    for verdict in load_verdicts(v.task_dir):
        v.verdicts[(verdict.round, verdict.index)] = verdict
        if verdict.evidence_digest:  # published before a restart or not: putting it again is idempotent
            v.unpublished.add(verdict.evidence_digest)
    return v


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


def model_digest(v: Validator, model: int) -> Digest | None:
    """Digest of model ``model`` if final, else None."""
    md = v.concord.model_digest(v.task_id, model)
    return Digest.parse(md.digest, f"model {model} digest") if md.is_final else None


# ----------------------------------------------------------------------------- 1-6: watch and verify


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


class ClaimMismatch(ValueError):
    """The fetched manifest disagrees with what its submitter put on chain."""

    def __init__(self, field: str, on_chain: Any, in_manifest: Any) -> None:
        super().__init__(f"{field}: chain has {on_chain!r}, the manifest {in_manifest!r}")
        self.field, self.on_chain, self.in_manifest = field, on_chain, in_manifest


def check_claims(sub: Submitted, bundle: Bundle | LMSubmission) -> None:
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


def _json_number(value: Any) -> Any:
    """An evidence number as a canonical JSON value (inf/nan are not JSON: written as strings)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    value = float(value)
    if not math.isfinite(value):
        return str(value)
    return 0.0 if value == 0 else value


def _check_list(verdict: Verdict) -> list[dict[str, Any]]:
    return [
        {"name": r.name, "ok": r.ok, "evidence": {k: _json_number(x) for k, x in r.evidence.items()}}
        for r in verdict.results
    ]


def evidence_document(
    v: Validator,
    sub: Submitted,
    failed_check: str,
    detail: str,
    evidence: Mapping[str, Any],
    checks: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    """The rejection record: which submission, which check failed, the numbers (or field and reason)."""
    return {
        "kind": EVIDENCE_KIND,
        "task_id": sub.task_id,
        "round": sub.round,
        "index": sub.index,
        "trainer": sub.trainer.lower(),
        "bundle_digest": str(Digest.parse(sub.bundle_digest)),
        "base_round": sub.base_round,
        "validator": v.me.lower(),
        "failed_check": failed_check,
        "detail": detail,
        "evidence": {k: _json_number(x) for k, x in evidence.items()},
        "checks": list(checks),
    }


def store_evidence(v: Validator, doc: dict[str, Any]) -> Digest:
    """Evidence as a canonical JSON manifest in the state dir (durable); returns its digest (= its CID's).
    Publishing it to IPFS is `publish_pending`'s job, never a condition of the verdict."""
    data = canonical_bytes(doc)
    digest = digest_of(data)
    write_atomic(evidence_path(v.task_dir, digest), data)
    v.unpublished.add(digest)
    return digest


def _quick_store(v: Validator) -> Store:
    """The validator's own IPFS node with a short timeout and no retries: for work that must never
    hold a tick up (publishing evidence, probing whether the node answers)."""
    return Store(v.store.api, None, timeout=min(PUBLISH_TIMEOUT_S, v.store.timeout), retries=1)


def publish_pending(v: Validator) -> None:
    """Best effort: put every stored, unpublished evidence document in IPFS (pinned). An IPFS failure
    is logged and retried on the next tick; it never blocks a verdict, a commit or a reveal."""
    if not v.unpublished:
        return
    quick = _quick_store(v)
    for digest in sorted(v.unpublished):
        path = evidence_path(v.task_dir, digest)
        try:
            quick.put_manifest(path.read_bytes())
        except (StoreError, OSError) as e:
            log.warning(
                "evidence %s not published yet (%s); retrying next tick",
                digest,
                e,
                extra=fields(event="evidence_unpublished", evidence=digest),
            )
            return
        v.unpublished.discard(digest)


@dataclass(frozen=True)
class Fetched:
    """One submission's download: the bundle, or the error that makes it unusable (the trainer's fault:
    SubmissionError, ClaimMismatch), or an own-store failure to retry; ``seconds`` of wall time."""

    sub: Submitted
    bundle: Bundle | LMSubmission | None  # an LMSubmission on an LM task
    error: SubmissionError | ClaimMismatch | None
    down: StoreError | None  # OWN_STORE_DOWN raised during the fetch
    seconds: float


def fetch_one(v: Validator, sub: Submitted, shapes: dict[str, tuple[int, ...]]) -> Fetched:
    """Fetch and claim-check one submission under its own deadline (safe to run in a thread)."""
    started = time.perf_counter()
    deadline = time.monotonic() + submission_deadline_s(v.task.spec.limits, v.store.timeout)
    bundle: Bundle | LMSubmission | None = None
    error, down = None, None
    try:
        with timing.span("ipfs"):
            if isinstance(v.task.spec, LMTaskSpec):
                bundle = fetch_lm_submission(v.store, sub.bundle_digest, v.task.spec, shapes, deadline)
            else:
                layout = inner_state_layout(shapes, v.task.task.grpo)  # every listed state's size checked
                bundle = fetch_submission(
                    v.store, sub.bundle_digest, v.task.spec.limits, shapes, deadline, state_layout=layout
                )
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
    if v.task.lm is not None:  # every round's delta is over the same adapters
        return {r: v.task.lm.adapter_shapes() for r in base_rounds}
    for base_round in sorted(base_rounds):
        with timing.span("ipfs"):
            policy = model_for_round(v.task, v.store, base_round)  # final: the chain checked at submit
        shapes[base_round] = {n: tuple(t.shape) for n, t in policy_state(policy).items()}
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
    deadline, however many there are). LM submissions carry their states in the bundle."""
    if v.task.spec.validation.mode != "sampled" or v.task.lm is not None or round_ not in v.seeds:
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


def own_store_answers(v: Validator) -> bool:
    """Whether this validator's IPFS node answers for other content right now (a block it puts and reads)."""
    try:  # one quick try (no retries): a daemon that is down must not hold the tick up
        _quick_store(v).probe()
    except StoreError as e:
        log.warning("own IPFS node does not answer (%s)", e, extra=fields(event="ipfs_probe_failed"))
        return False
    return True


def judge(v: Validator, got: Fetched) -> SubmissionVerdict:
    """Checks 1-6 on a fetched submission under model(baseRound); the verdict is on disk before this
    returns, a rejection's evidence with it (published by `publish_pending`, best effort)."""
    sub = got.sub
    key = (sub.round, sub.index)
    started = time.perf_counter()
    doc: dict[str, Any] | None = None
    flags: tuple[int, ...] = ()
    if isinstance(got.error, SubmissionError):  # unavailable, oversize, malformed: the trainer's fault
        bad = got.error
        doc = evidence_document(v, sub, "fetch", str(bad), {"field": bad.field, "cid": bad.cid, "reason": bad.reason})
    elif isinstance(got.error, ClaimMismatch):  # copied digest, wrong base round, claims that differ
        mismatch = got.error
        doc = evidence_document(
            v,
            sub,
            f"claim.{mismatch.field}",
            str(mismatch),
            {"field": mismatch.field, "on_chain": str(mismatch.on_chain), "in_manifest": str(mismatch.in_manifest)},
        )
    elif isinstance(got.bundle, LMSubmission):
        doc = judge_lm(v, sub, got.bundle)
    else:
        bundle = got.bundle
        if bundle is None:  # fetch_one yields a bundle or an error; settle_fetches judges no own-store failure
            raise ValueError(f"round {sub.round} #{sub.index}: fetched with neither a bundle nor an error")
        base_policy = model_for_round(v.task, v.store, sub.base_round)
        sample, states = None, None
        vcfg = v.task.spec.validation
        if vcfg.mode == "sampled":  # this validator's sample, from the round's seed (commit_round fixed it)
            sample = v.hooks.sample(v, sub)
            try:
                with timing.span("ipfs"):
                    states = sample_states(v, sub)
            except SubmissionError as bad:  # missing, forged or malformed state: the trainer's fault
                doc = evidence_document(
                    v, sub, "fetch", str(bad), {"field": bad.field, "cid": bad.cid, "reason": bad.reason}
                )
        if doc is None:
            with timing.span("verification"):
                verdict = verify_bundle(base_policy, bundle, v.task.env, v.task.task, vcfg, sample, states)
            if verdict.accepted:
                v.deltas[key] = bundle.delta
                if sample is not None:  # kept until the commit: a flag on it is re-checked without a refetch
                    v.bundles[key] = bundle
            else:
                doc, flags = rejection(v, sub, verdict)
    seconds = round(got.seconds + time.perf_counter() - started, 3)
    return record_verdict(v, sub, doc, seconds, flags)


def rejection(
    v: Validator, sub: Submitted, verdict: Verdict, where: str = ""
) -> tuple[dict[str, Any], tuple[int, ...]]:
    """A rejecting verdict's evidence document and the flag words of what failed in the sample."""
    doc = evidence_document(
        v,
        sub,
        verdict.failed_check,
        f"check {verdict.failed_check} failed{where}",
        verdict.result(verdict.failed_check).evidence,
        _check_list(verdict),
    )
    return doc, tuple(item.to_word() for item in flags_from_verdict(sub.index, verdict))


def record_verdict(
    v: Validator, sub: Submitted, doc: dict[str, Any] | None, seconds: float, flags: tuple[int, ...] = ()
) -> SubmissionVerdict:
    """Accept (``doc`` None) or reject with evidence ``doc``: logged, on disk, in memory."""
    digest = Digest.parse(sub.bundle_digest, "bundleDigest")
    key = (sub.round, sub.index)
    where = {"round": sub.round, "index": sub.index, "trainer": sub.trainer, "bundle": digest, "seconds": seconds}
    if doc is None:
        result = SubmissionVerdict(sub.round, sub.index, sub.trainer.lower(), digest, True, "", None)
        log.info(
            "accepted round %d #%d from %s (%.2fs)",
            sub.round,
            sub.index,
            sub.trainer,
            seconds,
            extra=fields(event="accepted", **where),
        )
    else:
        ev = store_evidence(v, doc)
        result = SubmissionVerdict(
            sub.round, sub.index, sub.trainer.lower(), digest, False, doc["failed_check"], ev, flags
        )
        v.deltas.pop(key, None)
        log.warning(
            "rejected round %d #%d from %s: %s failed; evidence %s (cid %s)",
            sub.round,
            sub.index,
            sub.trainer,
            doc["failed_check"],
            ev,
            cid_for_digest(ev),
            extra=fields(
                event="rejected", check=doc["failed_check"], evidence=ev, evidence_cid=cid_for_digest(ev), **where
            ),
        )
    write_atomic(verdict_path(v.task_dir, sub.round, sub.index), canonical_bytes(result.to_json()))
    v.verdicts[key] = result
    return result


def judge_lm(v: Validator, sub: Submitted, lm_sub: LMSubmission) -> dict[str, Any] | None:
    """The LM checks (validator.lm_checks: prompts, TOPLOC, sampling, rewards, work, proof root, training
    replay) on a fetched submission under model(baseRound)'s adapters; the evidence document of a
    rejection, None when accepted (the delta is kept for the outer step)."""
    work = v.task.lm
    assert work is not None
    grpo, vcfg = v.task.task.grpo, v.task.task.validation
    sample = None
    if vcfg.mode == "sampled":  # this validator's rows from the round's seed; rows of step k = its A x G rows
        digest = Digest.parse(sub.bundle_digest, "bundleDigest")
        rows = grpo.prompts_per_step * grpo.group_size
        sample = draw_sample(v.seeds[sub.round], v.me, digest, grpo.inner_steps, rows, vcfg)
    with timing.span("ipfs"):
        base = round_adapters(v.task, v.store, sub.base_round).state
    with timing.span("verification"), work.lock:
        verdict = verify_lm(work.rollouts, base, lm_sub, grpo, vcfg, bf16=work.bf16, sample=sample)
    if verdict.accepted:
        v.deltas[(sub.round, sub.index)] = lm_sub.delta
        return None
    return evidence_document(
        v,
        sub,
        verdict.failed_check,
        f"check {verdict.failed_check} failed",
        verdict.result(verdict.failed_check).evidence,
        _check_list(verdict),
    )


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
    ready = _finished(futures, v.commit_by.get(round_)) if wait else [f for f in futures if f.done()]
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


def _finished(futures: Mapping[Future[Fetched], Any], until: float | None) -> Iterator[Future[Fetched]]:
    """The futures as each ends (judged at once: a slow one holds back no other), up to monotonic time
    ``until`` (without it, all of them: each ends by its own deadline)."""
    try:
        yield from as_completed(futures, timeout=None if until is None else max(0.0, until - time.monotonic()))
    except TimeoutError:
        return


# ----------------------------------------------------------------------------- 7: aggregate


def accepted_delta(v: Validator, verdict: SubmissionVerdict) -> dict[str, torch.Tensor]:
    """An accepted submission's delta: in memory since verification, or fetched again (local cache)."""
    key = (verdict.round, verdict.index)
    if key not in v.deltas:
        if isinstance(v.task.spec, LMTaskSpec) and v.task.lm is not None:
            shapes = v.task.lm.adapter_shapes()
            v.deltas[key] = fetch_lm_submission(v.store, verdict.bundle_digest, v.task.spec, shapes).delta
        else:
            v.deltas[key] = fetch_submission(v.store, verdict.bundle_digest, v.task.spec.limits).delta
    return v.deltas[key]


def compute_next_model(v: Validator, round_: int, base_digest: Digest, verdicts: Sequence[SubmissionVerdict]) -> Digest:
    """Model round+1 from model round (``base_digest``) and the accepted deltas, uploaded; returns its digest."""
    accepted = [x for x in verdicts if x.accepted]
    if not accepted:
        return base_digest
    with timing.span("ipfs"):
        if v.task.lm is not None:  # an LM task's model: the base file plus adapters (outer step on the adapters)
            base = fetch_adapters(v.task.lm, v.store, base_digest)
        else:
            base, _ = v.task.models.get(v.store, base_digest)
        deltas = {str(x.bundle_digest): accepted_delta(v, x) for x in accepted}  # summed in digest order
    started = time.perf_counter()
    with timing.span("aggregation"):
        state, momentum = outer_step(base.state, deltas, base.outer_state or {}, v.task.task.outer)
    with timing.span("ipfs"):
        digest = put_model(v.store, state, base.config, momentum, parent_digest=base_digest)
    seconds = round(time.perf_counter() - started, 3)
    log.info(
        "model %d = %s from %d accepted of %d (%.2fs)",
        round_ + 1,
        digest,
        len(accepted),
        len(verdicts),
        seconds,
        extra=fields(
            event="next_model",
            round=round_,
            model=digest,
            accepted=len(accepted),
            submissions=len(verdicts),
            seconds=seconds,
        ),
    )
    for x in accepted:
        v.deltas.pop((x.round, x.index), None)
    return digest


# ----------------------------------------------------------------------------- commit, reveal, finalize


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


def chain_now(v: Validator) -> float:
    """Now on the chain's clock as a deadline sees it: the timestamp its next block will carry
    (client.runtime.seed.chain_now), never this machine's clock."""
    return float(seed_chain_now(v.client.rpc))


def set_commit_bound(v: Validator, round_: int) -> None:
    """Bound the commit phase's waits for content (each submission also has its own fetch deadline): in
    sampled mode until shortly before the flag window ends (so what failed can still be flagged), else
    until the last quarter of the commit phase (kept for rechecks, the outer step and the commit itself).
    Content not fetched by then is a reject (the trainer's fault: it had its deadline)."""
    if round_ in v.commit_by:
        return
    info = v.concord.round_info(v.task_id, round_)
    commit_s = v.task.params.commit_seconds
    if v.task.spec.validation.mode == "sampled":
        bound = v.concord.seed_info(v.task_id, round_).flag_end - max(1.0, commit_s / 16)
    else:
        bound = info.commit_end - commit_s / 4
    v.commit_by[round_] = time.monotonic() + max(0.0, bound - chain_now(v))


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
    """The checks of ``sub`` on exactly the flagged items ``todo`` (word -> flagger)."""
    items = [FlagItem.from_word(w) for w in sorted(todo)]
    grpo, vcfg = v.task.task.grpo, v.task.spec.validation
    extra = flagged_sample(items, grpo.inner_steps, grpo.rollouts_per_step)
    started = time.perf_counter()
    shapes = base_shapes(v, {sub.base_round})[sub.base_round]
    bundle = v.bundles.get((sub.round, sub.index))
    if bundle is None:  # a restart since the judge: fetched again (from the local cache, usually)
        got = fetch_one(v, sub, shapes)
        if got.down is not None:
            raise got.down
        if got.error is not None or not isinstance(got.bundle, Bundle):
            return  # fetched and accepted before: a refetch failing now is not evidence against the trainer
        bundle = v.bundles[(sub.round, sub.index)] = got.bundle
    doc: dict[str, Any] | None = None
    base_policy = model_for_round(v.task, v.store, sub.base_round)
    digest = Digest.parse(sub.bundle_digest, "bundleDigest")
    try:
        with timing.span("ipfs"):
            layout = inner_state_layout(shapes, grpo)
            states = fetch_states(v.store, digest, extra.states_needed(), v.task.spec.limits, shapes, layout=layout)
    except SubmissionError as bad:
        doc = evidence_document(v, sub, "fetch", str(bad), {"field": bad.field, "cid": bad.cid, "reason": bad.reason})
        states = None
    flags: tuple[int, ...] = ()
    if doc is None:
        with timing.span("verification"):
            verdict = verify_bundle(base_policy, bundle, v.task.env, v.task.task, vcfg, extra, states)
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


def commit_round(v: Validator, round_: int, submissions: int) -> bool:
    """Commit phase: reveal the seed share, wait for the check seed, verify every submission on this
    validator's own sample (states fetched concurrently from the seed on, every wait bounded so the commit
    always lands), flag what failed, wait for the other validators' flags and re-check them, build model
    r+1, plan, commit. False while not ready (asked again next tick)."""
    v.hooks.reveal_share(v, round_)
    if round_seed(v, round_, submissions) is None:
        return False
    sampled = submissions > 0 and v.task.spec.validation.mode == "sampled" and v.task.lm is None
    plan = load_plan(v.task_dir, round_)
    if plan is None:
        set_commit_bound(v, round_)
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


# ----------------------------------------------------------------------------- the loop


def step(v: Validator, display: Display | None = None) -> None:
    """One pass over the task's live rounds, doing whatever protocol step is due for each."""
    c = v.concord
    first = c.task_state(v.task_id).finalized_rounds
    for round_ in range(first, c.current_round(v.task_id) + 1):
        info = c.round_info(v.task_id, round_)
        if display is not None:
            verdicts = [x for (r, _), x in v.verdicts.items() if r == round_]
            display.update(
                round=round_,
                phase=info.phase.name,
                submissions=info.submissions,
                accepted=sum(x.accepted for x in verdicts),
                rejected=sum(not x.accepted for x in verdicts),
            )
        if info.phase == Phase.SUBMIT:
            v.hooks.share(v, round_)
            v.hooks.verify(v, round_)
        elif info.phase == Phase.COMMIT:
            if not c.commit_status(v.task_id, round_, v.me).committed:
                v.hooks.commit(v, round_, info.submissions)
        elif info.phase == Phase.REVEAL:
            status = c.commit_status(v.task_id, round_, v.me)
            if status.committed and not status.revealed:
                v.hooks.reveal(v, round_)
    finalize_due(v)
    publish_pending(v)  # last: evidence waits for nothing above, and nothing above waits for it


def finished(v: Validator) -> bool:
    """--rounds N reached (N rounds settled), or every one of the task's maxRounds settled."""
    settled = v.concord.task_state(v.task_id).finalized_rounds
    cap = v.task.params.max_rounds
    return (v.cfg.rounds is not None and settled >= v.cfg.rounds) or (cap > 0 and settled >= cap)


def withdraw_earnings(client: ChainClient, signer: Signer) -> int:
    """Withdraw the whole credited balance; returns the amount (0: nothing to withdraw)."""
    amount = client.concord.balance_of(signer.address)
    if amount > 0:
        client.concord.withdraw(signer, amount)
        shown = lifecycle.token_info(client).fmt(amount)
        log.info("withdrew %s to %s", shown, signer.address, extra=fields(event="withdrawn", amount=amount))
    return amount


def follow_task(v: Validator, follower: EventFollower, stop_event: threading.Event, display: Display) -> None:
    """One `step` per tick until stopped or ``finished``; transient failures (our IPFS or RPC) retried."""
    failures = 0
    ticks = follower.follow(stop_event)
    while not stop_event.is_set():
        try:
            step(v, display)
            failures = 0
        except TRANSIENT as e:  # our IPFS or RPC is down: not a verdict on anyone; try next tick
            failures += 1
            if failures >= MAX_TRANSIENT_FAILURES:
                raise
            log.warning("step failed (%s); retry %d/%d on the next block", e, failures, MAX_TRANSIENT_FAILURES)
        if finished(v):
            return
        tick = next(ticks, None)
        if tick is None:
            return
        record_submissions(v, tick.events)


def run_validator(cfg: ValidatorConfig, stop_event: threading.Event, hooks: ValidatorHooks = HONEST) -> Validator:
    """Validate until ``stop_event`` is set or ``finished``, each protocol step through ``hooks`` (default:
    the honest ones); the demo runs this in a process of its own."""
    v = connect_validator(cfg, hooks)
    ensure_enrolled(v)
    backfill_submissions(v)
    follower = EventFollower(v.node, v.task_id, cfg.node.poll_interval, cfg.node.heartbeat)
    log.info(
        "validating task %d as %s (state %s)",
        v.task_id,
        v.me,
        v.task_dir,
        extra=fields(event="start", task=v.task_id, validator=v.me),
    )
    try:
        with Display(f"validator {v.me[:10]} task {v.task_id}", cfg.node.json_logs) as display:
            follow_task(v, follower, stop_event, display)
    finally:
        stop_fetches(v)
    if cfg.withdraw:
        withdraw_earnings(v.client, v.signer)
    return v


# ----------------------------------------------------------------------------- CLI


add_run_args = parsers.add_validator_run_args  # the flags of `concord validator run` (the lab adds its own)


def run_command(args: argparse.Namespace, hooks: ValidatorHooks = HONEST) -> int:
    """Run what a parsed `run` command line describes, with ``hooks``; the exit status (an error: one
    line naming what is wrong and the fix, no traceback, 1)."""
    setup_logging(args.json_logs)
    try:
        node_cfg = node_config(args, "validator")
        pin_determinism(1)
        cfg = ValidatorConfig(
            node_cfg, rounds=args.rounds, withdraw=args.withdraw, stake=args.stake, device=args.device
        )
        serve_metrics(args, "validator")
        run_validator(cfg, shutdown_event(), hooks)
    except (
        NodeConfigError,
        UnknownTask,
        keys.KeyLoadError,
        ValidatorError,
        chain.ChainError,
        StoreError,
        TaskSpecError,
        ModelError,
        ModelSourceError,
        AmountError,
    ) as e:
        log.error("%s", explain(e))
        return 1
    except StepAbandoned as e:  # stopping: the step in progress is dropped (restart-safe), exit as stopped
        log.info("stopped: %s; the step in progress was abandoned", e, extra=fields(event="stopped", abandoned=True))
    finally:
        disarm_stop_timer()
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The parser of `concord validator` (run + the lifecycle commands); tests and main share it."""
    return parsers.validator_parser()


def main(argv: Sequence[str] | None = None) -> int:
    """`concord validator run --task ID [--config node.toml] [...]`, `concord validator leave|unbond|withdraw`
    (client.runtime.lifecycle)."""
    p = build_parser()
    args = parse_layered(p, argv)
    if args.action in lifecycle.COMMANDS:
        return lifecycle.run(args, "validator")
    return run_command(args)


if __name__ == "__main__":
    sys.exit(main())

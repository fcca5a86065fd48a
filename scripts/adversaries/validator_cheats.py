"""Cheating validators for the attack bench (`python -m scripts.adversaries.validator run --cheat MODE`).

Each mode breaks one validator rule of docs/PROTOCOL.md; the contract's rules, not this code,
punish it, and `expected_loss` says what they take:

    reject_honest  votes reject on every submission it found honest; its model leaves them out
    accept_cheat   votes accept on every submission it found bad; its model adds what it can fetch of them
    copy_reveal    verifies nothing: commits a copy of the first other validator's commitment, then
                   replays that validator's reveal (another's, if it withholds its own past
                   COPY_GRACE_S), which the chain refuses: the commitment binds the sender
    no_reveal      verifies and commits honestly, never reveals
    wrong_model    votes the honest bitmap with a next-model digest of no model it computed
    lazy           samples nothing expensive (cheap checks only) and votes on that, re-checking only flags
    withhold_share commits a seed share and never reveals it (to bias the check seed)
    false_flags    flags MAX_FLAGS made-up items of submissions it found honest

A `ValidatorCheat` says what a mode changes; `CheatingValidator(cheat)` plays it as the honest
node's hooks (validator.node.ValidatorHooks): `votes` and `next_model` before plan_commit,
`commit_copy` in place of verify + commit, nothing or `reveal_copy` in place of the reveal; every
step a mode leaves alone is the honest one. Copy records live in
`<state>/task-<id>/cheat/r<round>.json`, so a restarted copier neither copies twice nor replays a
refused reveal.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from eth_abi import decode as abi_decode
from eth_utils import keccak

from concord.client.chain import Committed, ContractError, Revealed, Submitted
from concord.client.content.submission import SubmissionError, fetch_submission
from concord.client.digest import Digest
from concord.client.engine.model import policy_state
from concord.client.runtime.display import fields
from concord.client.runtime.task import model_for_round
from concord.validator.consensus import ensure_enrolled, round_seed
from concord.validator.context import SubmissionVerdict, Validator
from concord.validator.flags import CHECK_CODES, MAX_FLAGS, ROW, FlagItem
from concord.validator.node import ValidatorHooks
from concord.validator.sampling import CheckSample

log = logging.getLogger("concord.validator.cheat")

COPY_GRACE_S = 5.0  # how long copy_reveal waits for the copied validator's reveal before replaying another's


# ----------------------------------------------------------------------------- the registry


def _as_found(found_ok: bool) -> bool:
    return found_ok


def _as_computed(digest: Digest) -> Digest:
    return digest


def _junk_digest(digest: Digest) -> Digest:
    """keccak of a tag and the honest digest: the digest of no model anyone stored (never zero)."""
    return Digest(bytes(keccak(b"concord/validator-cheat/wrong_model" + digest.bytes)))


@dataclass(frozen=True)
class ValidatorCheat:
    """One way to break the validator rules: what it changes (defaults: the honest behaviour)."""

    name: str
    doc: str  # one line: what it does
    expected_loss: str  # one line: what the rules make it lose
    vote: Callable[[bool], bool] = _as_found  # votes accept? given what verification found
    next_model: Callable[[Digest], Digest] = _as_computed  # digest voted, given the next model it computed
    copies_commit: bool = False  # commit another's commitment instead of verifying
    skip_reveal: bool = False  # never reveal
    lazy: bool = False  # sample no rows and no steps (cheap checks only)
    withhold_share: bool = False  # commit a seed share, never reveal it
    false_flags: bool = False  # flag made-up items of honest submissions

    @property
    def honest_vote(self) -> bool:
        """Its reveal is the honest validators' own (it votes what it found, the digest it computed, and
        reveals it): its digest wins and it is paid the fee (lazy, withhold_share, false_flags)."""
        as_found = self.vote is _as_found and self.next_model is _as_computed
        return as_found and not (self.copies_commit or self.skip_reveal)


VALIDATOR_CHEATS: dict[str, ValidatorCheat] = {
    c.name: c
    for c in [
        ValidatorCheat(
            "reject_honest",
            "votes reject on every submission it found honest (its model leaves them out)",
            "its share of the validator fee (its next-model digest loses the vote)",
            vote=lambda found_ok: False,
        ),
        ValidatorCheat(
            "accept_cheat",
            "votes accept on every submission it found bad (its model adds their deltas)",
            "its bounty share on every rejected trainer, and its fee share when its model differs",
            vote=lambda found_ok: True,
        ),
        ValidatorCheat(
            "copy_reveal",
            "commits a copy of another validator's commitment and replays its reveal",
            "slashAmount (committed, never revealed: the copied reveal reverts RevealDoesNotMatchCommit)",
            copies_commit=True,
        ),
        ValidatorCheat(
            "no_reveal",
            "verifies and commits honestly, never reveals",
            "slashAmount (committed, never revealed)",
            skip_reveal=True,
        ),
        ValidatorCheat(
            "wrong_model",
            "votes the honest bitmap with a junk next-model digest",
            "its share of the validator fee (its next-model digest loses the vote)",
            next_model=_junk_digest,
        ),
        ValidatorCheat(
            "lazy",
            "checks no sampled row or step (cheap checks only), re-checks only what others flag",
            "nothing when an honest validator flags the fault (it re-checks the flag and votes with them)",
            lazy=True,
        ),
        ValidatorCheat(
            "withhold_share",
            "commits a seed share and never reveals it",
            "slashAmount (a committed seed share not revealed)",
            withhold_share=True,
        ),
        ValidatorCheat(
            "false_flags",
            "flags MAX_FLAGS made-up rows of submissions it found honest",
            "the gas of its flag; every re-check finds nothing, so no verdict changes",
            false_flags=True,
        ),
    ]
}


# ----------------------------------------------------------------------------- on a validator node


class CheatingValidator(ValidatorHooks):
    """The validator node's hooks playing ``cheat``; each step it leaves alone is the honest one.
    Every step it changes logs a `cheat_*` line naming the mode (a withheld reveal once per round)."""

    def __init__(self, cheat: ValidatorCheat) -> None:
        self.cheat = cheat
        self._withheld: set[tuple[int, int]] = set()  # (task, round) whose withheld reveal was logged

    def verify(self, v: Validator, round_: int) -> None:
        if not self.cheat.copies_commit:  # copy_reveal verifies nothing
            super().verify(v, round_)

    def sample(self, v: Validator, sub: Submitted) -> CheckSample:
        if not self.cheat.lazy:
            return super().sample(v, sub)
        grpo = v.task.task.grpo
        return CheckSample(tuple(() for _ in range(grpo.inner_steps)), (), False)

    def reveal_share(self, v: Validator, round_: int) -> None:
        if not self.cheat.withhold_share:
            super().reveal_share(v, round_)
        elif (v.task_id, -1 - round_) not in self._withheld:
            self._withheld.add((v.task_id, -1 - round_))
            log.warning(
                "cheat withhold_share: round %d seed share withheld",
                round_,
                extra=fields(event="cheat_share_withheld", cheat=self.cheat.name, round=round_),
            )

    def flags(self, v: Validator, round_: int, found: Sequence[FlagItem]) -> Sequence[FlagItem]:
        if not self.cheat.false_flags:
            return super().flags(v, round_, found)
        honest = sorted(i for (r, i), x in v.verdicts.items() if r == round_ and x.accepted)
        grpo = v.task.task.grpo
        made_up = [
            FlagItem(
                honest[n % len(honest)], ROW, n % grpo.inner_steps, n % grpo.rollouts_per_step, CHECK_CODES["toploc"]
            )
            for n in range(MAX_FLAGS if honest else 0)
        ]
        log.warning(
            "cheat false_flags: round %d flags %d made-up items",
            round_,
            len(made_up),
            extra=fields(event="cheat_false_flags", cheat=self.cheat.name, round=round_, items=len(made_up)),
        )
        return made_up

    def votes(
        self, v: Validator, round_: int, found: Sequence[SubmissionVerdict]
    ) -> tuple[list[SubmissionVerdict], list[SubmissionVerdict]]:
        """The vote ``cheat.vote`` makes of each finding. A submission voted accepted against the finding
        goes into the model only if its delta can be fetched and has the model's shapes (it is put in
        ``v.deltas``); otherwise it is left out of the model but still voted accepted."""
        voted = [
            x if self.cheat.vote(x.accepted) == x.accepted else dataclasses.replace(x, accepted=not x.accepted)
            for x in found
        ]
        flipped = [x.index for x, f in zip(voted, found, strict=True) if x.accepted != f.accepted]
        if flipped:
            log.warning(
                "cheat %s: round %d votes %s against what it found",
                self.cheat.name,
                round_,
                flipped,
                extra=fields(event="cheat_votes", cheat=self.cheat.name, round=round_, flipped=flipped),
            )
        flipped_in = [x for x, f in zip(voted, found, strict=True) if x.accepted and not f.accepted]
        unusable = {(x.round, x.index) for x in flipped_in if not _fetch_delta(v, x, self.cheat.name)}
        model_from = [dataclasses.replace(x, accepted=False) if (x.round, x.index) in unusable else x for x in voted]
        return voted, model_from

    def next_model(self, v: Validator, round_: int, digest: Digest) -> Digest:
        voted = self.cheat.next_model(digest)
        if voted != digest:
            log.warning(
                "cheat %s: round %d votes model %s, not the computed %s",
                self.cheat.name,
                round_,
                voted,
                digest,
                extra=fields(
                    event="cheat_next_model", cheat=self.cheat.name, round=round_, model=voted, computed=digest
                ),
            )
        return voted

    def commit(self, v: Validator, round_: int, submissions: int) -> bool:
        if not self.cheat.copies_commit:
            return super().commit(v, round_, submissions)
        ensure_enrolled(v)  # as the honest commit does: a slash may have left it short
        self.reveal_share(v, round_)
        if round_seed(v, round_, submissions) is None:
            return False
        if submissions:  # an empty flag, as if its sample had passed (so nobody waits for it)
            try:
                v.concord.flag(v.signer, v.task_id, round_, [])
            except ContractError as e:
                if e.name not in ("AlreadyFlagged", "FlagWindowClosed"):
                    raise
        return commit_copy(v, round_)

    def reveal(self, v: Validator, round_: int) -> None:
        if self.cheat.skip_reveal:
            if (v.task_id, round_) not in self._withheld:
                self._withheld.add((v.task_id, round_))
                log.warning(
                    "cheat %s: round %d committed, reveal withheld",
                    self.cheat.name,
                    round_,
                    extra=fields(event="cheat_no_reveal", cheat=self.cheat.name, round=round_),
                )
            return
        if self.cheat.copies_commit:
            reveal_copy(v, round_)
            return
        super().reveal(v, round_)


# ----------------------------------------------------------------------------- accept_cheat: bad deltas


def _fetch_delta(v: Validator, verdict: SubmissionVerdict, cheat: str) -> bool:
    """Put a submission's delta in ``v.deltas`` if it can be fetched and fits model baseRound's shapes."""
    key = (verdict.round, verdict.index)
    if key in v.deltas:
        return True
    base_round = v.concord.submission_of(v.task_id, verdict.round, verdict.index).base_round
    shapes = {n: tuple(t.shape) for n, t in policy_state(model_for_round(v.task, v.store, base_round)).items()}
    try:
        v.deltas[key] = fetch_submission(v.store, verdict.bundle_digest, v.task.spec.limits, shapes).delta
    except SubmissionError as e:
        log.warning(
            "cheat %s: round %d #%d has no usable delta (%s); left out of the model",
            cheat,
            verdict.round,
            verdict.index,
            e,
            extra=fields(event="cheat_delta_left_out", round=verdict.round, index=verdict.index),
        )
        return False
    return True


# ----------------------------------------------------------------------------- copy_reveal


def _record_path(v: Validator, round_: int) -> Path:
    return v.task_dir / "cheat" / f"r{round_:06d}.json"


def _load_record(v: Validator, round_: int) -> dict:
    path = _record_path(v, round_)
    return json.loads(path.read_text()) if path.exists() else {}


def _save_record(v: Validator, round_: int, record: dict) -> None:
    path = _record_path(v, round_)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1, sort_keys=True))


def _round_events(v: Validator, cls: type, round_: int) -> list:
    return [
        e
        for e in v.concord.events(v.client.deployment.block_number, "latest", [cls.__name__])
        if isinstance(e, cls) and e.task_id == v.task_id and e.round == round_
    ]


def commit_copy(v: Validator, round_: int) -> bool:
    """copy_reveal, commit phase: commit the first other validator's commitment. False while none is posted."""
    others = [e for e in _round_events(v, Committed, round_) if e.validator.lower() != v.me.lower()]
    if not others:
        return False
    source = others[0]
    try:
        v.concord.commit(v.signer, v.task_id, round_, source.commitment)
        error = ""
    except ContractError as e:  # our own cheat's revert: log it and carry on
        error = e.name
    _save_record(
        v, round_, {"copied_from": source.validator, "commitment": source.commitment.hex(), "commit_error": error}
    )
    log.warning(
        "cheat copy_reveal: round %d committed %s copied from %s%s",
        round_,
        source.commitment.hex(),
        source.validator,
        f" (refused: {error})" if error else "",
        extra=fields(
            event="cheat_copied_commit",
            round=round_,
            copied_from=source.validator,
            commitment=source.commitment.hex(),
            error=error,
        ),
    )
    return True


def copied_reveal_args(v: Validator, revealed: Revealed) -> tuple[list[int], bytes, bytes]:
    """(rejectWords, nextModelDigest, salt) of another validator's reveal, read from its transaction's input."""
    tx = v.client.rpc.call("eth_getTransactionByHash", revealed.meta.tx_hash)
    data = bytes.fromhex(tx["input"][2:])
    fn = v.concord.contract.function("reveal")
    if data[:4] != fn.selector:
        raise ValueError(f"transaction {revealed.meta.tx_hash} is not a direct reveal call")
    _task, _round, words, digest, salt = abi_decode(list(fn.inputs), data[4:])
    return list(words), digest, salt


def reveal_copy(v: Validator, round_: int) -> None:
    """copy_reveal, reveal phase: once the copied validator has revealed, send its reveal as our own, once.

    A copied validator that withholds its reveal (it may be a cheat too) leaves nothing to replay:
    after COPY_GRACE_S the first other reveal of the round is replayed instead. The chain recomputes
    the commitment with our address, so it reverts RevealDoesNotMatchCommit; the error's name is
    logged and kept in the record, and the node carries on (it will be slashed).
    """
    record = _load_record(v, round_)
    if "reveal_error" in record:
        return
    source = record.get("copied_from")
    if source is None:  # record lost: find whose commitment equals ours on chain
        commits = _round_events(v, Committed, round_)
        mine = {e.commitment for e in commits if e.validator.lower() == v.me.lower()}
        source = next(
            (e.validator for e in commits if e.commitment in mine and e.validator.lower() != v.me.lower()), None
        )
        if source is None:
            return
    reveals = [e for e in _round_events(v, Revealed, round_) if e.validator.lower() != v.me.lower()]
    theirs = [e for e in reveals if e.validator.lower() == source.lower()]
    if not theirs:  # not revealed yet: try again next tick ...
        waiting_since = record.setdefault("waiting_since", time.time())
        _save_record(v, round_, {**record, "copied_from": source})
        if not reveals or time.time() - waiting_since < COPY_GRACE_S:
            return
        theirs = reveals  # ... or, when the copied one withholds its own, replay another's
    words, digest, salt = copied_reveal_args(v, theirs[0])
    try:
        v.concord.reveal(v.signer, v.task_id, round_, words, digest, salt)
        error = ""
    except ContractError as e:  # the expected outcome: our own cheat's revert
        error = e.name
    replayed = theirs[0].validator
    _save_record(v, round_, {**record, "copied_from": source, "replayed": replayed, "reveal_error": error})
    log.warning(
        "cheat copy_reveal: round %d replayed %s's reveal: %s",
        round_,
        replayed,
        error or "accepted (!)",
        extra=fields(event="cheat_copied_reveal", round=round_, copied_from=source, replayed=replayed, error=error),
    )

"""What a validator keeps: verdicts, reveal plans and rejection evidence, on disk first, then in IPFS.

State dir (one per validator key; client.runtime adds its event cursor), files written atomically:

    <state>/task-<id>/verdicts/r<round>-i<index>.json   one per submission (canonical JSON)
    <state>/task-<id>/evidence/<digest>.json             rejection evidence, also in IPFS
    <state>/task-<id>/plans/r<round>.json                salt, bitmap, next model, commitment
    <state>/task-<id>/shares/r<round>.hex                the round's secret seed share (before its commitment)
    <state>/models/  <state>/ipfs-cache/                 content caches (by digest)

A verdict is durable before its evidence is published: the evidence document and the verdict are written
to the state dir first, the evidence is put in IPFS best effort (retried every tick until it is in;
`publish_pending`), so no IPFS failure can hold a verdict back.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from concord.client.chain import Submitted
from concord.client.content.manifest import canonical_bytes, cid_for_digest, digest_of
from concord.client.content.store import Store, StoreError
from concord.client.digest import Digest
from concord.client.runtime.display import fields
from concord.validator.context import RevealPlan, SubmissionVerdict, Validator
from concord.validator.files import write_atomic
from concord.validator.verdict import Verdict

log = logging.getLogger("concord.validator")

EVIDENCE_KIND = "rejection_evidence"
PUBLISH_TIMEOUT_S = 5.0  # one evidence put may take this long per tick (then it waits for the next)


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


def check_list(verdict: Verdict) -> list[dict[str, Any]]:
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


def own_store_answers(v: Validator) -> bool:
    """Whether this validator's IPFS node answers for other content right now (a block it puts and reads)."""
    try:  # one quick try (no retries): a daemon that is down must not hold the tick up
        _quick_store(v).probe()
    except StoreError as e:
        log.warning("own IPFS node does not answer (%s)", e, extra=fields(event="ipfs_probe_failed"))
        return False
    return True

"""The dashboard's one JSON document: what `concord status` says, plus what a page needs to draw.

Built from three sources, each read the cheapest way:
  * events: one ChainIndex (client.runtime.index), refreshed incrementally; never a rescan;
  * views: the task's terms, escrow, live rounds' deadlines, nodes' stakes and balances (per new head);
  * IPFS by digest: the task spec (its specDigest), each submission's manifest (its claimed mean
    reward: the reward curve) and each rejection's evidence document (named by local validators'
    verdict files, as `concord status --validator-state` finds them). Content is immutable, so each
    digest is read once and cached; one that cannot be read yet is retried after RETRY_S.

On top of the status document (client.status.status) each task gets:
  spec        the task spec JSON from IPFS (or "spec_error")
  timeline    per round: opened, submit/commit/reveal closed, finalized (unix seconds; None = not yet)
  rewards     per round: mean claimed reward of accepted submissions, and what rejected ones claimed
and each submission gets "claimed_reward" and, when rejected, "evidence_docs" (the validators'
evidence documents: which check failed, the numbers).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from concord.client import chain
from concord.client.chain import ChainClient, Phase
from concord.client.content.manifest import cid_for_digest, parse_canonical
from concord.client.content.store import Store, StoreError, StoreUnavailable
from concord.client.digest import Digest
from concord.client.runtime.connect import deployment_id
from concord.client.runtime.index import ChainIndex
from concord.client.runtime.paths import DeploymentId
from concord.client.status import status

log = logging.getLogger(__name__)

RETRY_S = 15.0  # a digest that could not be read is asked for again after this long
IPFS_TIMEOUT_S = 3.0  # per read: a withheld submission must not stall the page
MAX_DOC_BYTES = 1 << 20  # one IPFS block


@dataclass(frozen=True)
class Source:
    """Where the dashboard reads from (validated once at the edge, by the CLI)."""

    rpc_url: str
    deployment: chain.Deployment
    ipfs_api: str | None  # None: no content reads (spec, rewards and evidence from IPFS are left out)
    task_id: int | None  # None: every task
    validator_dirs: tuple[Path, ...]  # validators' state dirs, for rejection evidence
    validator_root: Path | None = None  # also every validator-* dir under it, looked up on each refresh

    def evidence_dirs(self, ident: DeploymentId) -> tuple[Path, ...]:
        """The validator state dirs to read verdicts from now (nodes started after the dashboard too): the
        given ones, and under validator_root every validator-* dir and those of this deployment's key
        (client.runtime.paths); client.status keeps only those whose marker names this deployment."""
        found: list[Path] = []
        if self.validator_root is not None:
            for root in (self.validator_root, self.validator_root / ident.key()):
                found += sorted(p for p in root.glob("validator-*") if p.is_dir())
        return tuple(dict.fromkeys([*self.validator_dirs, *found]))


class ContentCache:
    """Documents by digest from IPFS (canonical JSON, sha256-checked by the store), each read once;
    failures remembered for RETRY_S so a missing block costs one timeout per RETRY_S, not per refresh."""

    def __init__(self, store: Store | None) -> None:
        self.store = store
        self._docs: dict[str, dict[str, Any]] = {}
        self._failed: dict[str, tuple[float, str]] = {}
        self._down: tuple[float, str] | None = None  # the IPFS API itself did not answer: (when, why)

    def get(self, digest: str) -> tuple[dict[str, Any] | None, str | None]:
        """(document, None) or (None, why it is not there)."""
        if digest in self._docs:
            return self._docs[digest], None
        if self.store is None:
            return None, "no IPFS API given"
        failed = self._failed.get(digest)
        if failed is not None and time.monotonic() - failed[0] < RETRY_S:
            return None, failed[1]
        if self._down is not None and time.monotonic() - self._down[0] < RETRY_S:
            return None, self._down[1]  # one unreachable daemon costs one timeout per RETRY_S, not one per digest
        try:
            data = self.store.get_manifest(digest, MAX_DOC_BYTES, time.monotonic() + IPFS_TIMEOUT_S)
            doc = parse_canonical(data)
        except StoreUnavailable as e:
            self._down = (time.monotonic(), f"IPFS API unreachable: {e}")
            return None, self._down[1]
        except (StoreError, ValueError) as e:
            why = f"{cid_for_digest(digest)}: {e}"
            self._failed[digest] = (time.monotonic(), why)
            return None, why
        self._docs[digest] = doc
        return doc, None


def _claimed_reward(doc: dict[str, Any] | None) -> float | None:
    stats = (doc or {}).get("stats")
    value = stats.get("mean_reward") if isinstance(stats, dict) else None
    return float(value) if isinstance(value, (int, float)) else None


def _local_evidence(state_dir: str, task_id: int, digest: str) -> dict[str, Any] | None:
    """The validator's own copy (<state>/task-<id>/evidence/<hex>.json), when IPFS does not have it (yet)."""
    path = Path(state_dir) / f"task-{task_id}" / "evidence" / f"{Digest.parse(digest).hex()}.json"
    try:
        obj = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


# Keys whose integer values are token base units: JSON numbers are doubles in the page (exact only below
# 2^53, i.e. 0.009 tokens of an 18-decimal token), so the document carries them as decimal strings of
# base units, which the page formats with BigInt into whole tokens and the symbol.
AMOUNT_KEYS = frozenset(
    {
        "escrow",
        "staked",
        "credited",
        "token_balance",
        "budget",
        "held",
        "reserved",
        "trainer_reward_per_round",
        "validator_fee_per_round",
        "slash_amount",
        "min_trainer_stake",
        "min_validator_stake",
        "returned",
        "amount",
        "reward",
        "slashed",
        "bounty",
        "stake",
        "balance",
    }
)


def amounts_as_strings(node: Any, key: str = "") -> Any:
    """``node`` with every integer under an AMOUNT_KEYS key as its decimal string (exact in any JSON reader)."""
    if isinstance(node, dict):
        return {k: amounts_as_strings(v, k) for k, v in node.items()}
    if isinstance(node, list):
        return [amounts_as_strings(v, key) for v in node]
    if key in AMOUNT_KEYS and isinstance(node, int) and not isinstance(node, bool):
        return str(node)
    return node


def evidence_mismatch(doc: dict[str, Any], task_id: int, round_: int, sub: dict[str, Any]) -> str | None:
    """Why an evidence document is not about submission ``sub`` (round ``round_`` of ``task_id``, as the chain
    has it), or None when its task, round, index, trainer and bundle digest all match."""
    want = {
        "task_id": task_id,
        "round": round_,
        "index": sub["index"],
        "trainer": str(sub["trainer"]).lower(),
        "bundle_digest": sub["bundle_digest"],
    }
    for key, value in want.items():
        got = doc.get(key)
        if isinstance(got, str):
            got = got.lower()
        if got != value:
            return f"its {key} is {doc.get(key)!r}, the chain's submission has {value!r}"
    return None


def round_timeline(
    task: dict[str, Any], events: Sequence[chain.ConcordEvent], times: dict[int, int], live: dict[int, chain.RoundInfo]
) -> list[dict[str, Any]]:
    """Each round's phase boundaries in unix seconds. Rules (contracts/Pipeline.sol): submit ends at
    openAt + submitSeconds unless it closed early (PhaseClosedEarly), commit ends commitSeconds later
    unless it closed early, reveal likewise; a live round's ends come from roundInfo itself. A boundary
    still in the future (after the head block's time) is None."""
    params = task["params_full"]
    opened: dict[int, int] = {}
    early: dict[tuple[int, int], int] = {}
    finalized: dict[int, int] = {}
    for e in events:
        if isinstance(e, chain.RoundOpened):
            opened[e.round] = e.open_at
        elif isinstance(e, chain.PhaseClosedEarly) and e.meta.block_number in times:
            early[(e.round, int(e.phase))] = times[e.meta.block_number]
        elif isinstance(e, chain.RoundFinalized) and e.meta.block_number in times:
            finalized[e.round] = times[e.meta.block_number]
    now = task["head_time"]
    out = []
    for r in task["rounds"]:
        n = r["round"]
        info = live.get(n)
        if info is not None and info.open_at:
            open_at, submit, commit, reveal = info.open_at, info.submit_end, info.commit_end, info.reveal_end
        else:
            open_at = opened.get(n, 0)
            submit = early.get((n, Phase.SUBMIT), open_at + params["submit_seconds"])
            commit = early.get((n, Phase.COMMIT), submit + params["commit_seconds"])
            reveal = early.get((n, Phase.REVEAL), commit + params["reveal_seconds"])
        if open_at == 0:  # not opened yet
            submit = commit = reveal = 0
        out.append(
            {
                "round": n,
                "phase": r["phase"],
                "opened": open_at or None,
                "submit_closed": submit if 0 < submit <= now else None,
                "commit_closed": commit if 0 < commit <= now else None,
                "reveal_closed": reveal if 0 < reveal <= now else None,
                "finalized": finalized.get(n),
                "deadlines": {"submit": submit or None, "commit": commit or None, "reveal": reveal or None},
            }
        )
    return out


class Dashboard:
    """The live document: refreshed by one thread (``refresh``), read by any (``document``)."""

    def __init__(self, client: ChainClient, source: Source, store: Store | None) -> None:
        self.client = client
        self.source = source
        self.index = ChainIndex(client)
        self.content = ContentCache(store)
        self._ident: DeploymentId | None = None  # read once, on the first build
        self._ignored: set[str] = set()  # evidence digests found not to be their submission's
        self._doc: dict[str, Any] = {}
        self._json = b"{}"
        self._lock = threading.Lock()
        self.refreshes = 0  # documents built (one per new head)
        self.error: str | None = None  # the last refresh's failure (the page shows it; the old document stays)
        self.refreshed_at = 0.0  # unix time the chain last answered a refresh (0: never)

    def document(self) -> dict[str, Any]:
        with self._lock:
            return self._doc

    def document_json(self) -> bytes:
        """The document as served: with ``refreshed_at`` (the last time the chain answered a refresh) and
        ``served_at`` (now), both server clock, so the page can show a document that stopped refreshing as stale."""
        with self._lock:
            if not self._doc:
                return self._json
            return json.dumps({**self._doc, "refreshed_at": self.refreshed_at, "served_at": time.time()}).encode()

    def refresh(self) -> bool:
        """Index the new blocks; rebuild the document when the head moved. True when it changed."""
        try:
            head = self.client.rpc.block_number()
            if self._doc and head == self._doc["head_block"]:
                self.refreshed_at = time.time()  # the chain answered: the document is current
                if self._doc.get("error") is not None:
                    self.error = None
                    with self._lock:
                        self._doc = {**self._doc, "error": None}
                        self._json = json.dumps(self._doc).encode()
                return False
            doc = self.build()
        except (chain.ChainError, OSError) as e:
            self.error = f"{type(e).__name__}: {e}"
            log.warning("refresh failed: %s", self.error)
            with self._lock:
                if self._doc:
                    self._doc = {**self._doc, "error": self.error}
                    self._json = json.dumps(self._doc).encode()
            return False
        self.error = None
        with self._lock:
            self._doc, self._json = doc, json.dumps(doc).encode()
            self.refreshes += 1
            self.refreshed_at = time.time()
        return True

    def task_ids(self) -> list[int]:
        if self.source.task_id is not None:
            return [self.source.task_id]
        return list(range(1, self.client.concord.task_count() + 1))

    def build(self) -> dict[str, Any]:
        """One document from the index (refreshed inside `status`), the views and IPFS."""
        c = self.client.concord
        if self._ident is None:
            self._ident = deployment_id(self.client)
        doc = status(self.client, self.task_ids(), self.source.evidence_dirs(self._ident), self.index, self._ident)
        head = self.index.last_block
        head_time = self.index.block_times([head]).get(head, 0)
        t = doc["totals"]  # exact here (Python ints); the page gets amounts as strings (amounts_as_strings)
        t["holds"] = t["token_balance"] == t["escrow"] + t["staked"] + t["credited"]
        doc.update(
            {
                "head_block": head,
                "head_time": head_time,
                "rpc_url": self.source.rpc_url,
                "index": {
                    "from_block": self.index.start_block,
                    "last_block": head,
                    "events": len(self.index.events),
                    "log_requests": len(self.index.ranges),
                    "resets": self.index.resets,
                },
                "error": None,
            }
        )
        for task in doc["tasks"]:
            events = self.index.of_task(task["task_id"])
            params = c.task_params(task["task_id"])
            task["params_full"] = {
                "submit_seconds": params.submit_seconds,
                "commit_seconds": params.commit_seconds,
                "reveal_seconds": params.reveal_seconds,
                "min_trainer_stake": params.min_trainer_stake,
                "min_validator_stake": params.min_validator_stake,
                "initial_model_digest": str(Digest.parse(params.initial_model_digest)),
            }
            task["head_time"] = head_time
            spec, why = self.content.get(task["params"]["spec_digest"])
            task["spec"], task["spec_error"] = spec, why
            live = {
                r["round"]: c.round_info(task["task_id"], r["round"])
                for r in task["rounds"]
                if r["phase"] not in ("finalized", "void")
            }
            blocks = {
                e.meta.block_number for e in events if isinstance(e, (chain.PhaseClosedEarly, chain.RoundFinalized))
            }
            task["timeline"] = round_timeline(task, events, self.index.block_times(blocks), live)
            task["rewards"] = self._rewards(task)
        out: dict[str, Any] = amounts_as_strings(doc)
        return out

    def _rewards(self, task: dict[str, Any]) -> list[dict[str, Any]]:
        """Per round: the mean of accepted submissions' claimed mean rewards (validators recomputed them),
        and the claims of rejected ones; each submission gets its claim and its evidence documents."""
        out = []
        for r in task["rounds"]:
            accepted: list[float] = []
            rejected: list[float] = []
            for s in r["submissions"]:
                manifest, _ = self.content.get(s["bundle_digest"])
                s["claimed_reward"] = claim = _claimed_reward(manifest)
                if claim is not None and s["verdict"] == "accepted":
                    accepted.append(claim)
                elif claim is not None and s["verdict"] == "rejected":
                    rejected.append(claim)
                docs = []
                for ev in s.get("evidence", []):
                    if ev["evidence"] is None:
                        continue
                    got, why = self.content.get(ev["evidence"])
                    source = "ipfs"
                    if got is None:
                        got, source = _local_evidence(ev["state_dir"], task["task_id"], ev["evidence"]), "local"
                    wrong = None if got is None else evidence_mismatch(got, task["task_id"], r["round"], s)
                    if wrong is not None:
                        if ev["evidence"] not in self._ignored:  # said once, not on every rebuild
                            self._ignored.add(ev["evidence"])
                            log.warning("ignoring evidence %s: %s", ev["evidence"], wrong)
                        got, why = None, f"not this submission's evidence: {wrong}"
                    docs.append(
                        {
                            "digest": ev["evidence"],
                            "cid": cid_for_digest(ev["evidence"]),
                            "source": source if got is not None else None,
                            "unavailable": why if got is None else None,
                            "validator": (got or {}).get("validator"),
                            "failed_check": (got or {}).get("failed_check", ev["failed_check"]),
                            "detail": (got or {}).get("detail"),
                            "numbers": (got or {}).get("evidence", {}),
                            "checks": (got or {}).get("checks", []),
                        }
                    )
                if docs:
                    s["evidence_docs"] = docs
            out.append(
                {
                    "round": r["round"],
                    "mean": sum(accepted) / len(accepted) if accepted else None,
                    "accepted": accepted,
                    "rejected": rejected,
                }
            )
        return out

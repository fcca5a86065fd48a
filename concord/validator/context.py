"""The validator's shared state (the bottom room of validator/): its config, the records it keeps (verdicts,
reveal plans, fetch results), the errors an operator must act on, and `Validator`, one node's live state.

Rooms above, each importing only those below it (docs/ARCHITECTURE.md):

    context  <- store (verdicts, plans, evidence on disk and in IPFS)
             <- fetch (submissions and their inner states, each under its own deadline)
             <- judge (the checks of each submission -> a verdict)
             <- recheck (flags: post what failed, wait for the others', re-check them)
             <- aggregate (the DiLoCo outer step -> the next model)
             <- consensus (stake and join, the check seed, commit, reveal, finalize)
             <- node (the honest hooks, the loop, the CLI)

`Hooks` is what the rooms call on ``v.hooks`` where a validator could act otherwise; validator.node's
`ValidatorHooks` is the honest implementation, the lab's adversaries are others.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from concord.client.chain import ChainClient, Concord, Signer, Submitted
from concord.client.content.store import DaemonError, Store, StoreError, StoreUnavailable
from concord.client.content.submission import SubmissionError
from concord.client.digest import Digest
from concord.client.runtime.config import NodeConfig, check_device
from concord.client.runtime.connect import Node
from concord.client.runtime.seed import SeedWatch
from concord.client.runtime.seed import chain_now as seed_chain_now
from concord.client.runtime.task import TaskContext
from concord.client.runtime.workload import Submission
from concord.client.units import TokenAmount
from concord.validator.flags import FlagItem
from concord.validator.sampling import CheckSample

MAX_FETCH_THREADS = 16  # submissions fetched at once (each is I/O bound; its deadline bounds it)
OWN_STORE_DOWN = (StoreUnavailable, DaemonError)  # our own IPFS node failing: no verdict on anyone by itself
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


class ClaimMismatch(ValueError):
    """The fetched manifest disagrees with what its submitter put on chain."""

    def __init__(self, field: str, on_chain: Any, in_manifest: Any) -> None:
        super().__init__(f"{field}: chain has {on_chain!r}, the manifest {in_manifest!r}")
        self.field, self.on_chain, self.in_manifest = field, on_chain, in_manifest


@dataclass(frozen=True)
class Fetched:
    """One submission's download: the bundle, or the error that makes it unusable (the trainer's fault:
    SubmissionError, ClaimMismatch), or an own-store failure to retry; ``seconds`` of wall time."""

    sub: Submitted
    bundle: Submission | None  # the task's workload's submission (Workload.fetch)
    error: SubmissionError | ClaimMismatch | None
    down: StoreError | None  # OWN_STORE_DOWN raised during the fetch
    seconds: float


class Hooks(Protocol):
    """The protocol steps where a validator could act otherwise, called on ``v.hooks`` by the rooms above
    (validator.node.ValidatorHooks: the honest ones; each method is documented there)."""

    def verify(self, v: Validator, round_: int) -> None: ...
    def sample(self, v: Validator, sub: Submitted) -> CheckSample: ...
    def share(self, v: Validator, round_: int) -> None: ...
    def reveal_share(self, v: Validator, round_: int) -> None: ...
    def flags(self, v: Validator, round_: int, found: Sequence[FlagItem]) -> Sequence[FlagItem]: ...
    def votes(
        self, v: Validator, round_: int, found: Sequence[SubmissionVerdict]
    ) -> tuple[Sequence[SubmissionVerdict], Sequence[SubmissionVerdict]]: ...
    def next_model(self, v: Validator, round_: int, digest: Digest) -> Digest: ...
    def commit(self, v: Validator, round_: int, submissions: int) -> bool: ...
    def reveal(self, v: Validator, round_: int) -> None: ...


@dataclass
class Validator:
    """One validator's live state: the node's connections, the task, what it has seen and verified."""

    cfg: ValidatorConfig
    node: Node
    task: TaskContext
    hooks: Hooks  # its protocol steps (validator.node.HONEST: the honest ones)
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
    flag_by: dict[int, float] = field(default_factory=dict)  # sampled: round -> monotonic time its flags go out
    bundles: dict[tuple[int, int], Submission] = field(default_factory=dict)  # sampled, accepted: until the commit

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


def task_dir(state_dir: Path, task_id: int) -> Path:
    return Path(state_dir) / f"task-{task_id}"


def chain_now(v: Validator) -> float:
    """Now on the chain's clock as a deadline sees it: the timestamp its next block will carry
    (client.runtime.seed.chain_now), never this machine's clock."""
    return float(seed_chain_now(v.client.rpc))


def model_digest(v: Validator, model: int) -> Digest | None:
    """Digest of model ``model`` if final, else None."""
    md = v.concord.model_digest(v.task_id, model)
    return Digest.parse(md.digest, f"model {model} digest") if md.is_final else None

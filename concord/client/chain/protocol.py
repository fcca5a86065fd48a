"""Typed Python bindings for the Concord contract (contracts/interfaces/IConcord.sol) and the token.

One method per contract function; structs and multi-value returns are frozen dataclasses;
one dataclass per event. Every transaction method takes the sending ``Signer`` first,
waits for the receipt and returns it; a revert raises ``ContractError(name, params)``.
For fan-out without waiting, use ``Concord.contract.send(signer, fn_name, *args)``.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, cast

from eth_abi.abi import encode as abi_encode
from eth_typing import ABI, ChecksumAddress
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak
from web3.types import EventData, LogReceipt

from concord.client.chain.contract import Contract
from concord.client.chain.rpc import ErrorDecoder, Receipt, Rpc, Signer

WORD_BITS = 256


# ----------------------------------------------------------------------------- enums and structs


class Role(IntEnum):
    NONE = 0
    TRAINER = 1
    VALIDATOR = 2


class Phase(IntEnum):
    PENDING = 0
    SUBMIT = 1
    COMMIT = 2
    REVEAL = 3
    FINALIZE = 4
    FINALIZED = 5
    VOID = 6


@dataclass(frozen=True)
class TaskParams:
    """Every parameter of a task (IConcord.TaskParams); field order is the ABI tuple order."""

    spec_digest: bytes
    initial_model_digest: bytes
    trainer_reward_per_round: int
    validator_fee_per_round: int
    min_trainer_stake: int
    min_validator_stake: int
    slash_amount: int
    submit_seconds: int
    commit_seconds: int
    reveal_seconds: int
    max_rounds: int
    bounty_bps: int
    async_level: int
    min_validators: int
    max_work_units: int  # the largest workUnits one submission may claim (rollouts x max new tokens)

    def to_abi(self) -> tuple[bytes | int, ...]:
        return dataclasses.astuple(self)

    @property
    def per_round(self) -> int:
        return self.trainer_reward_per_round + self.validator_fee_per_round


@dataclass(frozen=True)
class TaskState:
    initiator: str
    budget: int
    head_round: int
    finalized_rounds: int
    trainers: int
    validators: int
    validator_slots: int
    resume_at: int
    closed: bool


@dataclass(frozen=True)
class TaskEscrow:
    """What the contract holds for one task: held == budget + reserved (pools of open rounds)."""

    held: int
    budget: int
    reserved: int


@dataclass(frozen=True)
class NodeInfo:
    role: Role
    stake: int
    unbonding: int
    unbond_at: int
    joined_tasks: int


@dataclass(frozen=True)
class MemberInfo:
    joined: bool
    role: Role
    validator_index: int
    has_submitted: bool
    last_submit_round: int
    joined_round: int
    rejoin_round: int  # removed for not committing: may join again once the head reaches it (0: never)


@dataclass(frozen=True)
class RoundInfo:
    phase: Phase
    open_at: int
    submit_end: int
    commit_end: int
    reveal_end: int
    submissions: int
    commits: int
    reveals: int
    finalize_cursor: int
    accepted_work: int
    finalized_at: int
    next_model_digest: bytes


@dataclass(frozen=True)
class SeedInfo:
    """A live round's seed shares and flags (IConcord.seedInfo); bit i of a mask = validator slot i."""

    shares_committed: int
    shares_revealed: int
    flagged: int
    anchor_block: int  # 0: the submit phase has not been seen closed yet
    share_end: int  # share reveals end; fixSeed fixes the seed from what was revealed after
    flag_end: int
    seed: bytes  # 32 zero bytes until fixed

    @property
    def is_fixed(self) -> bool:
        return self.seed != bytes(32)


@dataclass(frozen=True)
class SubmissionRecord:
    trainer: str
    base_round: int
    work_units: int


@dataclass(frozen=True)
class CommitStatus:
    committed: bool
    revealed: bool


@dataclass(frozen=True)
class ModelDigest:
    digest: bytes
    is_final: bool


@dataclass(frozen=True)
class LatestModel:
    model: int
    digest: bytes


@dataclass(frozen=True)
class FinalizeCursor:
    cursor: int
    total: int


@dataclass(frozen=True)
class Totals:
    escrow: int
    staked: int
    credited: int

    @property
    def liabilities(self) -> int:
        return self.escrow + self.staked + self.credited


# ----------------------------------------------------------------------------- events


@dataclass(frozen=True)
class EventMeta:
    """Where an event was emitted: lets clients order and de-duplicate what they index."""

    block_number: int
    tx_hash: str
    log_index: int


@dataclass(frozen=True)
class NodeRegistered:
    meta: EventMeta
    node: str
    role: Role
    stake: int


@dataclass(frozen=True)
class StakeAdded:
    meta: EventMeta
    node: str
    amount: int
    stake: int


@dataclass(frozen=True)
class UnbondRequested:
    meta: EventMeta
    node: str
    amount: int
    unbonding: int
    unbond_at: int


@dataclass(frozen=True)
class UnbondCompleted:
    meta: EventMeta
    node: str
    amount: int


@dataclass(frozen=True)
class TaskCreated:
    meta: EventMeta
    task_id: int
    initiator: str
    params: TaskParams
    budget: int


@dataclass(frozen=True)
class TaskClosing:
    meta: EventMeta
    task_id: int
    head_round: int


@dataclass(frozen=True)
class TaskToppedUp:
    meta: EventMeta
    task_id: int
    from_: str
    amount: int
    budget: int


@dataclass(frozen=True)
class BudgetReclaimed:
    meta: EventMeta
    task_id: int
    initiator: str
    amount: int


@dataclass(frozen=True)
class Joined:
    meta: EventMeta
    task_id: int
    node: str
    role: Role
    validator_index: int


@dataclass(frozen=True)
class Left:
    meta: EventMeta
    task_id: int
    node: str
    role: Role


@dataclass(frozen=True)
class RoundOpened:
    meta: EventMeta
    task_id: int
    round: int
    open_at: int
    reserved: int


@dataclass(frozen=True)
class PhaseClosedEarly:
    meta: EventMeta
    task_id: int
    round: int
    phase: Phase


@dataclass(frozen=True)
class SeedAnchored:
    meta: EventMeta
    task_id: int
    round: int
    anchor_block: int


@dataclass(frozen=True)
class CheckSeedFixed:
    meta: EventMeta
    task_id: int
    round: int
    seed: bytes
    anchor_block: int
    shares_revealed: int  # mask of the validator slots whose shares are in the seed


@dataclass(frozen=True)
class SeedShareCommitted:
    meta: EventMeta
    task_id: int
    round: int
    validator: str


@dataclass(frozen=True)
class SeedShareRevealed:
    meta: EventMeta
    task_id: int
    round: int
    validator: str
    share: bytes


@dataclass(frozen=True)
class Flagged:
    meta: EventMeta
    task_id: int
    round: int
    validator: str
    items: tuple[int, ...]  # packed FlagItem words (layout: IConcord.flag)


@dataclass(frozen=True)
class Submitted:
    meta: EventMeta
    task_id: int
    round: int
    trainer: str
    index: int
    base_round: int
    bundle_digest: bytes
    proof_root: bytes
    work_units: int


@dataclass(frozen=True)
class Committed:
    meta: EventMeta
    task_id: int
    round: int
    validator: str
    commitment: bytes


@dataclass(frozen=True)
class Revealed:
    meta: EventMeta
    task_id: int
    round: int
    validator: str
    reject_words: tuple[int, ...]
    next_model_digest: bytes


@dataclass(frozen=True)
class FinalizeProgressed:
    meta: EventMeta
    task_id: int
    round: int
    cursor: int
    total: int


@dataclass(frozen=True)
class SubmissionRejected:
    meta: EventMeta
    task_id: int
    round: int
    trainer: str
    index: int
    slashed: int
    bounty: int


@dataclass(frozen=True)
class SubmissionUndecided:
    meta: EventMeta
    task_id: int
    round: int
    trainer: str
    index: int
    rejects: int


@dataclass(frozen=True)
class SubmissionRewarded:
    meta: EventMeta
    task_id: int
    round: int
    trainer: str
    index: int
    reward: int


@dataclass(frozen=True)
class BountyPaid:
    meta: EventMeta
    task_id: int
    round: int
    validator: str
    amount: int


@dataclass(frozen=True)
class ValidatorPaid:
    meta: EventMeta
    task_id: int
    round: int
    validator: str
    fee: int


@dataclass(frozen=True)
class ValidatorSlashed:
    meta: EventMeta
    task_id: int
    round: int
    validator: str
    amount: int


@dataclass(frozen=True)
class ValidatorRemoved:
    meta: EventMeta
    task_id: int
    round: int
    validator: str


@dataclass(frozen=True)
class RoundFinalized:
    meta: EventMeta
    task_id: int
    round: int
    next_model_digest: bytes
    is_void: bool
    accepted_work: int
    returned: int


@dataclass(frozen=True)
class StakeBurned:
    meta: EventMeta
    task_id: int
    round: int
    amount: int


@dataclass(frozen=True)
class Withdrawn:
    meta: EventMeta
    account: str
    amount: int


EVENT_TYPES: dict[str, type[ConcordEvent]] = {
    cls.__name__: cls
    for cls in [
        NodeRegistered,
        StakeAdded,
        UnbondRequested,
        UnbondCompleted,
        TaskCreated,
        TaskClosing,
        TaskToppedUp,
        BudgetReclaimed,
        Joined,
        Left,
        RoundOpened,
        PhaseClosedEarly,
        SeedShareCommitted,
        SeedShareRevealed,
        SeedAnchored,
        CheckSeedFixed,
        Flagged,
        Submitted,
        Committed,
        Revealed,
        FinalizeProgressed,
        SubmissionRejected,
        SubmissionUndecided,
        SubmissionRewarded,
        BountyPaid,
        ValidatorPaid,
        ValidatorSlashed,
        ValidatorRemoved,
        RoundFinalized,
        StakeBurned,
        Withdrawn,
    ]
}
ConcordEvent = (
    NodeRegistered
    | StakeAdded
    | UnbondRequested
    | UnbondCompleted
    | TaskCreated
    | TaskClosing
    | TaskToppedUp
    | BudgetReclaimed
    | Joined
    | Left
    | RoundOpened
    | PhaseClosedEarly
    | SeedShareCommitted
    | SeedShareRevealed
    | SeedAnchored
    | CheckSeedFixed
    | Flagged
    | Submitted
    | Committed
    | Revealed
    | FinalizeProgressed
    | SubmissionRejected
    | SubmissionUndecided
    | SubmissionRewarded
    | BountyPaid
    | ValidatorPaid
    | ValidatorSlashed
    | ValidatorRemoved
    | RoundFinalized
    | StakeBurned
    | Withdrawn
)


def _snake(name: str) -> str:
    snake = re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()
    return snake + "_" if snake in {"from"} else snake


def _typed_value(cls: type[ConcordEvent], field_name: str, value: Any) -> Any:
    """A decoded event argument (web3 decodes to Any) as the type of ``cls``'s field."""
    hint = cls.__dataclass_fields__[field_name].type
    if hint == "Role":
        return Role(value)
    if hint == "Phase":
        return Phase(value)
    if hint == "TaskParams":  # web3 decodes a struct to a dict in field order
        return TaskParams(*value.values())
    if isinstance(value, list):
        return tuple(value)
    return value


def event_from_web3(data: EventData) -> ConcordEvent:
    """The dataclass of one event as web3 decoded it (``process_log``)."""
    cls = EVENT_TYPES[data["event"]]
    kwargs = {_snake(k): v for k, v in data["args"].items()}
    meta = EventMeta(data["blockNumber"], data["transactionHash"].to_0x_hex(), data["logIndex"])
    return cls(meta=meta, **{k: _typed_value(cls, k, v) for k, v in kwargs.items()})


# ----------------------------------------------------------------------------- encodings


def commit_hash(
    task_id: int, round_: int, reject_words: Sequence[int], next_model_digest: bytes, salt: bytes, validator: str
) -> bytes:
    """keccak256(abi.encode(taskId, round, rejectWords, nextModelDigest, salt, validator)), as in IConcord."""
    return keccak(
        abi_encode(
            ["uint256", "uint256", "uint256[]", "bytes32", "bytes32", "address"],
            [task_id, round_, list(reject_words), next_model_digest, salt, to_checksum_address(validator)],
        )
    )


def share_hash(share: bytes, validator: str, task_id: int, round_: int) -> bytes:
    """keccak256(abi.encode(share, validator, taskId, round)), the commitment of IConcord.commitSeedShare."""
    return keccak(
        abi_encode(
            ["bytes32", "address", "uint256", "uint256"], [share, to_checksum_address(validator), task_id, round_]
        )
    )


class BitmapIndexOutOfRange(ValueError):
    def __init__(self, index: int, submissions: int) -> None:
        super().__init__(f"reject index {index} outside [0, {submissions})")
        self.index, self.submissions = index, submissions


def reject_words(rejected: Iterable[int], submissions: int) -> list[int]:
    """The reject bitmap: submission i is bit (i % 256) of word (i // 256), LSB first."""
    words = [0] * ((submissions + WORD_BITS - 1) // WORD_BITS)
    for i in rejected:
        if not 0 <= i < submissions:
            raise BitmapIndexOutOfRange(i, submissions)
        words[i // WORD_BITS] |= 1 << (i % WORD_BITS)
    return words


def rejected_indexes(words: Sequence[int], submissions: int) -> list[int]:
    """Inverse of ``reject_words``."""
    return [i for i in range(submissions) if words[i // WORD_BITS] >> (i % WORD_BITS) & 1]


# ----------------------------------------------------------------------------- contracts


# A view's single output, as the Python type its ABI type decodes to: the codec's values are Any.
def _int(values: tuple[Any, ...]) -> int:  # uint*
    return cast(int, values[0])


def _bytes(values: tuple[Any, ...]) -> bytes:  # bytes32
    return cast(bytes, values[0])


def _str(values: tuple[Any, ...]) -> str:  # string
    return cast(str, values[0])


def _address(values: tuple[Any, ...]) -> ChecksumAddress:  # address (Contract.call checksums them)
    return cast(ChecksumAddress, values[0])


# Fixed gas limits for the calls whose path depends on what lands before them in the same block (an
# estimate made on the cheap path runs out of gas on the dear one): fixSeed and flag may anchor the
# round and fix the seed; a share reveal fixes it when it turns out to be the last; a share commit
# closes the submit phase (and anchors it) when it is the last one.
FIX_SEED_GAS = 200_000  # dearest path (anchor + seed write + events, via delegatecall) under 90k
REVEAL_SHARE_GAS = 200_000  # the last reveal (mix, mask, seed write, two events) is about 80k
COMMIT_SHARE_GAS = 200_000  # the closing share commit is about 75k
FLAG_GAS = 300_000  # MAX_FLAGS items plus a seed fix: under 110k


class Concord:
    """The deployed Concord protocol contract."""

    NAME = "Concord"

    def __init__(self, rpc: Rpc, address: str, abi: ABI, decoder: ErrorDecoder) -> None:
        self.contract = Contract(self.NAME, address, abi, rpc, decoder)
        self.address = self.contract.address
        self.rpc = rpc

    def _tx(self, signer: Signer, name: str, *args: object) -> Receipt:
        return self.contract.transact(signer, name, *args)

    def _view(self, name: str, *args: object) -> tuple[Any, ...]:
        return self.contract.call(name, *args)

    # -- node registry
    def register(self, signer: Signer, role: Role, amount: int) -> Receipt:
        return self._tx(signer, "register", int(role), amount)

    def add_stake(self, signer: Signer, amount: int) -> Receipt:
        return self._tx(signer, "addStake", amount)

    def request_unbond(self, signer: Signer, amount: int) -> Receipt:
        return self._tx(signer, "requestUnbond", amount)

    def complete_unbond(self, signer: Signer) -> Receipt:
        return self._tx(signer, "completeUnbond")

    # -- task book
    def create_task(self, signer: Signer, params: TaskParams, budget: int) -> tuple[int, Receipt]:
        """Create a task; returns (taskId, receipt), the id read from the TaskCreated event."""
        receipt = self._tx(signer, "createTask", params.to_abi(), budget)
        created = [e for e in self.receipt_events(receipt) if isinstance(e, TaskCreated)]
        return created[0].task_id, receipt

    def top_up(self, signer: Signer, task_id: int, amount: int) -> Receipt:
        return self._tx(signer, "topUp", task_id, amount)

    def reclaim_budget(self, signer: Signer, task_id: int) -> Receipt:
        return self._tx(signer, "reclaimBudget", task_id)

    def close_task(self, signer: Signer, task_id: int) -> Receipt:
        return self._tx(signer, "closeTask", task_id)

    # -- rounds
    def join(self, signer: Signer, task_id: int) -> Receipt:
        return self._tx(signer, "join", task_id)

    def leave(self, signer: Signer, task_id: int) -> Receipt:
        return self._tx(signer, "leave", task_id)

    def advance(self, signer: Signer, task_id: int) -> Receipt:
        return self._tx(signer, "advance", task_id)

    def submit(
        self,
        signer: Signer,
        task_id: int,
        round_: int,
        base_round: int,
        bundle_digest: bytes,
        proof_root: bytes,
        work_units: int,
    ) -> Receipt:
        return self._tx(signer, "submit", task_id, round_, base_round, bundle_digest, proof_root, work_units)

    def commit_seed_share(self, signer: Signer, task_id: int, round_: int, share_hash: bytes) -> Receipt:
        """Commit a seed share during the round's submit phase (IConcord.commitSeedShare);
        ``share_hash`` is ``share_hash(share, signer.address, task_id, round_)``."""
        return self.contract.transact(signer, "commitSeedShare", task_id, round_, share_hash, gas=COMMIT_SHARE_GAS)

    def reveal_seed_share(self, signer: Signer, task_id: int, round_: int, share: bytes) -> Receipt:
        """Reveal the committed share once the submit phase closed, before shareEnd
        (IConcord.revealSeedShare); the reveal that completes the committed set fixes the seed."""
        return self.contract.transact(signer, "revealSeedShare", task_id, round_, share, gas=REVEAL_SHARE_GAS)

    def fix_seed(self, signer: Signer, task_id: int, round_: int) -> Receipt:
        """Anchor the round if its submit phase ran to the deadline, and fix the seed when every
        committed share is revealed or shareEnd passed (IConcord.fixSeed); see ``seed_info``."""
        return self.contract.transact(signer, "fixSeed", task_id, round_, gas=FIX_SEED_GAS)

    def flag(self, signer: Signer, task_id: int, round_: int, items: Sequence[int]) -> Receipt:
        """Publish the failed items of the signer's sample (packed words, at most MAX_FLAGS; empty:
        nothing failed) in the commit phase before flagEnd, once per round (IConcord.flag)."""
        return self.contract.transact(signer, "flag", task_id, round_, list(items), gas=FLAG_GAS)

    def commit(self, signer: Signer, task_id: int, round_: int, commitment: bytes) -> Receipt:
        return self._tx(signer, "commit", task_id, round_, commitment)

    def reveal(
        self,
        signer: Signer,
        task_id: int,
        round_: int,
        reject_words: Sequence[int],
        next_model_digest: bytes,
        salt: bytes,
    ) -> Receipt:
        return self._tx(signer, "reveal", task_id, round_, list(reject_words), next_model_digest, salt)

    def finalize(self, signer: Signer, task_id: int, round_: int, max_items: int) -> Receipt:
        """One finalize page; see ``finalize_all`` to repeat until settled."""
        return self._tx(signer, "finalize", task_id, round_, max_items)

    def finalize_all(self, signer: Signer, task_id: int, round_: int, max_items: int = 64) -> list[Receipt]:
        """Call finalize page by page until the round is settled."""
        receipts = []
        while True:
            receipts.append(self.finalize(signer, task_id, round_, max_items))
            if self.round_info(task_id, round_).phase in (Phase.FINALIZED, Phase.VOID):
                return receipts

    # -- balances
    def withdraw(self, signer: Signer, amount: int) -> Receipt:
        return self._tx(signer, "withdraw", amount)

    # -- views
    def token(self) -> ChecksumAddress:
        return _address(self._view("token"))

    def unbond_delay(self) -> int:
        return _int(self._view("unbondDelay"))

    def max_validators(self) -> int:
        return _int(self._view("MAX_VALIDATORS"))

    def max_async_level(self) -> int:
        return _int(self._view("MAX_ASYNC_LEVEL"))

    def max_flags(self) -> int:
        return _int(self._view("MAX_FLAGS"))

    def min_commit_seconds(self) -> int:
        return _int(self._view("MIN_COMMIT_SECONDS"))

    def rejoin_cooldown_rounds(self) -> int:
        return _int(self._view("REJOIN_COOLDOWN_ROUNDS"))

    def burned(self) -> int:
        """Slashed stake burned so far (all tasks), less the bounties paid from it."""
        return _int(self._view("burned"))

    def node_info(self, node: str) -> NodeInfo:
        role, *rest = self._view("nodeInfo", node)[0]
        return NodeInfo(Role(role), *rest)

    def balance_of(self, account: str) -> int:
        return _int(self._view("balanceOf", account))

    def task_count(self) -> int:
        return _int(self._view("taskCount"))

    def task_params(self, task_id: int) -> TaskParams:
        return TaskParams(*self._view("taskParams", task_id)[0])

    def task_state(self, task_id: int) -> TaskState:
        return TaskState(*self._view("taskState", task_id)[0])

    def task_escrow(self, task_id: int) -> TaskEscrow:
        return TaskEscrow(*self._view("taskEscrow", task_id))

    def member_info(self, task_id: int, node: str) -> MemberInfo:
        joined, role, *rest = self._view("memberInfo", task_id, node)[0]
        return MemberInfo(joined, Role(role), *rest)

    def validator_at(self, task_id: int, index: int) -> ChecksumAddress:
        return _address(self._view("validatorAt", task_id, index))

    def current_round(self, task_id: int) -> int:
        return _int(self._view("currentRound", task_id))

    def phase_of(self, task_id: int, round_: int) -> Phase:
        return Phase(self._view("phaseOf", task_id, round_)[0])

    def round_info(self, task_id: int, round_: int) -> RoundInfo:
        phase, *rest = self._view("roundInfo", task_id, round_)[0]
        return RoundInfo(Phase(phase), *rest)

    def check_seed(self, task_id: int, round_: int, block: str | int = "latest") -> bytes:
        """The round's fixed check seed; ``ContractError("SeedNotReady", {..., "shareEnd"})`` before
        (shareEnd: from then on ``fix_seed`` fixes it from the shares revealed; 0: round not live)."""
        return _bytes(self.contract.call("checkSeed", task_id, round_, block=block))

    def seed_info(self, task_id: int, round_: int, block: str | int = "latest") -> SeedInfo:
        """Shares committed/revealed, flaggers, anchor, shareEnd, flagEnd and the seed of a live round."""
        return SeedInfo(*self.contract.call("seedInfo", task_id, round_, block=block)[0])

    def submission_of(self, task_id: int, round_: int, index: int) -> SubmissionRecord:
        return SubmissionRecord(*self._view("submissionOf", task_id, round_, index))

    def commit_status(self, task_id: int, round_: int, validator: str) -> CommitStatus:
        return CommitStatus(*self._view("commitStatus", task_id, round_, validator))

    def model_digest(self, task_id: int, model: int) -> ModelDigest:
        return ModelDigest(*self._view("modelDigest", task_id, model))

    def latest_model(self, task_id: int) -> LatestModel:
        return LatestModel(*self._view("latestModel", task_id))

    def finalize_cursor(self, task_id: int, round_: int) -> FinalizeCursor:
        return FinalizeCursor(*self._view("finalizeCursor", task_id, round_))

    def totals(self) -> Totals:
        return Totals(*self._view("totals"))

    def total_liabilities(self) -> int:
        return _int(self._view("totalLiabilities"))

    def commit_hash(
        self,
        task_id: int,
        round_: int,
        reject_words: Sequence[int],
        next_model_digest: bytes,
        salt: bytes,
        validator: str,
    ) -> bytes:
        """The contract's own pure commitHash (the local ``commit_hash`` must agree with it)."""
        return _bytes(self._view("commitHash", task_id, round_, list(reject_words), next_model_digest, salt, validator))

    # -- events
    def decode(self, logs: Iterable[LogReceipt]) -> list[ConcordEvent]:
        """This contract's events among web3-formatted logs, as dataclasses."""
        return [event_from_web3(d) for d in self.contract.decode_logs(logs) if d["event"] in EVENT_TYPES]

    def events(
        self, from_block: int, to_block: int | str = "latest", names: Sequence[str] = (), max_range: int = 10_000
    ) -> list[ConcordEvent]:
        """Decoded events of this contract in [from_block, to_block], in chain order."""
        return self.decode(self.contract.get_logs(from_block, to_block, names, max_range))

    def receipt_events(self, receipt: Receipt) -> list[ConcordEvent]:
        return self.decode(receipt.logs)


class Token:
    """The protocol's ERC-20 (the DevToken on a devnet, which adds owner-only ``mint``)."""

    def __init__(self, rpc: Rpc, address: str, abi: ABI, decoder: ErrorDecoder, name: str = "DevToken") -> None:
        self.contract = Contract(name, address, abi, rpc, decoder)
        self.address = self.contract.address

    def name(self) -> str:
        return _str(self.contract.call("name"))

    def symbol(self) -> str:
        return _str(self.contract.call("symbol"))

    def decimals(self) -> int:
        return _int(self.contract.call("decimals"))

    def total_supply(self) -> int:
        return _int(self.contract.call("totalSupply"))

    def balance_of(self, account: str) -> int:
        return _int(self.contract.call("balanceOf", account))

    def allowance(self, owner: str, spender: str) -> int:
        return _int(self.contract.call("allowance", owner, spender))

    def approve(self, signer: Signer, spender: str, amount: int) -> Receipt:
        return self.contract.transact(signer, "approve", spender, amount)

    def transfer(self, signer: Signer, to: str, amount: int) -> Receipt:
        return self.contract.transact(signer, "transfer", to, amount)

    def transfer_from(self, signer: Signer, owner: str, to: str, amount: int) -> Receipt:
        return self.contract.transact(signer, "transferFrom", owner, to, amount)

    def mint(self, signer: Signer, to: str, amount: int) -> Receipt:
        return self.contract.transact(signer, "mint", to, amount)

"""Concord's chain SDK: typed calls and events for the protocol contract, one signer per process.

from concord.client import chain
dep = chain.Deployment.load(".devnet/deployment.json")
c = chain.connect(rpc_url, dep)
me = c.signer(keys.load_key())
c.concord.submit(me, task_id, round_, base_round, digest, proof_root, work_units)
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from eth_account.signers.local import LocalAccount
from eth_typing import ChecksumAddress
from eth_utils.address import to_checksum_address

from concord.client.chain import artifacts as packaged
from concord.client.chain.artifacts import Artifact
from concord.client.chain.contract import AbiMismatch, Contract, NoCode
from concord.client.chain.protocol import (
    EVENT_TYPES,
    BountyPaid,
    BudgetReclaimed,
    CheckSeedFixed,
    CommitStatus,
    Committed,
    Concord,
    ConcordEvent,
    EventMeta,
    FinalizeCursor,
    FinalizeProgressed,
    Flagged,
    Joined,
    LatestModel,
    Left,
    MemberInfo,
    ModelDigest,
    NodeInfo,
    NodeRegistered,
    Phase,
    PhaseClosedEarly,
    Revealed,
    Role,
    RoundFinalized,
    RoundInfo,
    RoundOpened,
    SeedAnchored,
    SeedInfo,
    SeedShareCommitted,
    SeedShareRevealed,
    StakeAdded,
    StakeBurned,
    SubmissionRecord,
    SubmissionRejected,
    SubmissionRewarded,
    SubmissionUndecided,
    Submitted,
    TaskClosing,
    TaskCreated,
    TaskEscrow,
    TaskParams,
    TaskState,
    TaskToppedUp,
    Token,
    Totals,
    UnbondCompleted,
    UnbondRequested,
    ValidatorPaid,
    ValidatorRemoved,
    ValidatorSlashed,
    Withdrawn,
    commit_hash,
    reject_words,
    rejected_indexes,
    share_hash,
)
from concord.client.chain.rpc import (
    BadRpcUrl,
    BroadcastUnknown,
    ChainError,
    ContractError,
    ErrorDecoder,
    NonceConflict,
    PendingTx,
    Receipt,
    ReceiptTimeout,
    RetryPolicy,
    Rpc,
    RpcError,
    RpcUnavailable,
    Signer,
    TxReverted,
)

CONCORD = "Concord"
SETTLEMENT = "ConcordSettlement"  # Concord's modules, deployed before it and named to its constructor
SEED = "ConcordSeed"
DEV_TOKEN = "DevToken"


class WrongChain(ChainError):
    def __init__(self, expected: int, actual: int, rpc_url: str) -> None:
        super().__init__(f"deployment is for chain {expected} but {rpc_url} is chain {actual}")
        self.expected, self.actual = expected, actual


@dataclass(frozen=True)
class Deployment:
    """Where the protocol lives on one chain (the deployment JSON file)."""

    chain_id: int
    concord: str
    token: str
    block_number: int  # block of the Concord deployment: where event indexing starts
    deployer: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_json(obj: Mapping[str, Any]) -> Deployment:
        return Deployment(
            int(obj["chain_id"]),
            to_checksum_address(obj["concord"]),
            to_checksum_address(obj["token"]),
            int(obj["block_number"]),
            to_checksum_address(obj["deployer"]),
        )

    @staticmethod
    def load(path: Path | str) -> Deployment:
        return Deployment.from_json(json.loads(Path(path).read_text()))

    def save(self, path: Path | str) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        return path


def error_decoder(artifacts: dict[str, Artifact]) -> ErrorDecoder:
    """Every custom error of every compiled contract (ours and OpenZeppelin's)."""
    return ErrorDecoder(
        (a.abi for a in artifacts.values()), enums={"enum IConcordTypes.Phase": Phase, "enum IConcordTypes.Role": Role}
    )


@dataclass(frozen=True)
class ChainClient:
    """An RPC connection with the protocol contracts bound; make one Signer per key from it."""

    rpc: Rpc
    deployment: Deployment
    concord: Concord
    token: Token
    decoder: ErrorDecoder

    def signer(self, account: LocalAccount) -> Signer:
        return Signer(self.rpc, account, self.decoder)


def connect(
    rpc_url: str,
    deployment: Deployment,
    artifacts: dict[str, Artifact] | None = None,
    check_chain: bool = True,
    timeout: float = 30.0,
) -> ChainClient:
    """Bind the deployed contracts on ``rpc_url`` (ABIs from the packaged artifacts.json)."""
    artifacts = packaged.load() if artifacts is None else artifacts
    rpc = Rpc(rpc_url, timeout=timeout)
    if check_chain:
        actual = rpc.chain_id()
        if actual != deployment.chain_id:
            raise WrongChain(deployment.chain_id, actual, rpc_url)
    decoder = error_decoder(artifacts)
    concord = Concord(rpc, deployment.concord, artifacts[CONCORD].abi, decoder)
    token = Token(rpc, deployment.token, artifacts[DEV_TOKEN].abi, decoder)
    return ChainClient(rpc, deployment, concord, token, decoder)


def deploy_contract(signer: Signer, art: Artifact, *args: object) -> tuple[ChecksumAddress, Receipt]:
    """Deploy ``art`` with constructor ``args``; returns (address, receipt)."""
    factory = signer.w3.eth.contract(abi=list(art.abi), bytecode=art.bytecode)
    data = factory.constructor(*args).data_in_transaction
    receipt = signer.transact(None, bytes.fromhex(data[2:]))
    if receipt.contract_address is None:  # a mined creation has one: a node that left it out
        raise ChainError(f"deployment {receipt.tx_hash} has no contract address in its receipt")
    return to_checksum_address(receipt.contract_address), receipt


__all__ = [
    "AbiMismatch",
    "BadRpcUrl",
    "BroadcastUnknown",
    "BountyPaid",
    "BudgetReclaimed",
    "ChainClient",
    "ChainError",
    "CommitStatus",
    "Committed",
    "Concord",
    "ConcordEvent",
    "Contract",
    "ContractError",
    "Deployment",
    "EVENT_TYPES",
    "ErrorDecoder",
    "EventMeta",
    "FinalizeCursor",
    "FinalizeProgressed",
    "Joined",
    "LatestModel",
    "Left",
    "MemberInfo",
    "ModelDigest",
    "NodeInfo",
    "NodeRegistered",
    "NoCode",
    "NonceConflict",
    "PendingTx",
    "Phase",
    "PhaseClosedEarly",
    "Receipt",
    "ReceiptTimeout",
    "RetryPolicy",
    "Revealed",
    "Role",
    "RoundFinalized",
    "RoundInfo",
    "RoundOpened",
    "Rpc",
    "RpcError",
    "RpcUnavailable",
    "Signer",
    "StakeAdded",
    "SubmissionRecord",
    "SubmissionRejected",
    "SubmissionRewarded",
    "SubmissionUndecided",
    "SeedAnchored",
    "CheckSeedFixed",
    "SeedShareCommitted",
    "SeedShareRevealed",
    "Flagged",
    "StakeBurned",
    "SeedInfo",
    "share_hash",
    "Submitted",
    "TaskClosing",
    "TaskCreated",
    "TaskEscrow",
    "TaskParams",
    "TaskState",
    "TaskToppedUp",
    "Token",
    "Totals",
    "TxReverted",
    "UnbondCompleted",
    "UnbondRequested",
    "ValidatorPaid",
    "ValidatorRemoved",
    "ValidatorSlashed",
    "WrongChain",
    "Withdrawn",
    "commit_hash",
    "connect",
    "deploy_contract",
    "error_decoder",
    "reject_words",
    "rejected_indexes",
]

"""One line per failure an operator can fix: what is wrong, then what to do about it.

    explain(exc) -> str    the error's own message (it names the flag, URL, file or value) plus the fix
    render_contract_error  a contract's custom error with its amounts in whole tokens and its times in ISO
    quiet_retries()        a one-shot command's log handlers drop the RPC's "retry n" warnings (its one
                           error line says it all); a node keeps them, they show a flaky endpoint

Every CLI entry point prints `error: <explain(e)>` and exits 1 (2 for a bad flag or file, which
argparse and the config loader report). The messages of the library's exceptions already carry
their values; this adds the operator's next step. Every custom error the deployed contracts can
raise (ours and OpenZeppelin's: CONTRACT_FIXES, checked against the packaged ABIs by
tests/test_operator_cli.py) has its fix line; an error missing from the table still gets a generic one.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from enum import IntEnum

from concord.client.chain import ContractError, RpcUnavailable, WrongChain
from concord.client.chain.keys import BadKeystore, BadPrivateKey
from concord.client.chain.rpc import RpcError, root_cause
from concord.client.units import TokenInfo, current_token

# custom error -> the fix (the error's values are in its own text). New contract errors get a line here.
CONTRACT_FIXES: dict[str, str] = {
    # registration, stake, unbonding
    "NotRegistered": "this key never registered: `concord trainer run` / `concord validator run` register it",
    "AlreadyRegistered": "already registered: nothing to do (`... run` joins with the stake it has)",
    "InvalidRole": "register as a trainer or a validator (`concord trainer run` / `concord validator run`)",
    "WrongRole": "this key is registered in the other role: use another key",
    "InsufficientStake": "stake more (`--stake TOKENS`, at least the task's minimum: `concord task show --task N`)",
    "PendingWork": "leave every task first (`concord trainer leave --task N` / `concord validator leave --task N`)",
    "WorkNotFinalized": "wait until that round is finalized (`concord status TASK`), then leave",
    "NothingUnbonding": "request an unbond first (`... unbond --amount TOKENS`)",
    "UnbondNotReady": "the unbond delay has not passed: run `... unbond --complete` again after unbondAt",
    "UnbondExceedsStake": "ask for at most the available stake (`... unbond` without --amount takes all of it)",
    "InsufficientBalance": "the credited balance is smaller: `... withdraw` without --amount takes all of it",
    "RejoinCooldown": "this validator was removed for not committing: it may join again once the head round "
    "reaches untilRound",
    # tasks
    "NotInitiator": "only the task's initiator may do this: use the key that published the task",
    "TaskIsClosed": "the task is closed: no top-up or close any more; `concord task reclaim` once it is over",
    "TaskNotOver": "rounds are still in flight: close the task and wait until they settle, then reclaim",
    "UnknownTask": "no task with that id on this deployment (`concord status` lists them)",
    "ZeroAmount": "the amount is zero (or nothing is left to move)",
    "ZeroDigest": "a digest is zero: the spec or model was not uploaded (publish with `concord task publish`)",
    "ZeroPhaseLength": "every phase needs at least 1 second: fix submit/commit/reveal_seconds in [chain]",
    "CommitPhaseTooShort": "make commit_seconds in the task file's [chain] table longer",
    "AsyncLevelTooHigh": "lower async_level in the task file's [chain] table to at most max",
    "BountyTooHigh": "bounty_bps in [chain] is at most 10000 (100%)",
    "MinValidatorsOutOfRange": "min_validators in [chain] must be between 1 and max",
    "BudgetBelowOneRound": "raise the budget (`--budget TOKENS`) to at least one round's reward + fee",
    "PerRoundTooHigh": "lower trainer_reward_per_round + validator_fee_per_round in [chain]",
    "LiabilitiesCapExceeded": "the protocol holds its maximum: publish a smaller budget, or later",
    "WorkUnitsAboveMax": "the submission claims more work than the task allows: a trainer bug, report it",
    "NoFurtherRounds": "the task opens no further round (closed, out of budget or at max_rounds)",
    # rounds (what a node meets; the node loop handles them, a person rarely does)
    "RoundNotOpened": "that round has not opened yet: wait for it (`concord status TASK`)",
    "RoundAlreadySettled": "that round is settled already: nothing to do",
    "AlreadyJoined": "already a member: nothing to do",
    "NotJoined": "this key is not a member of that task (`concord task show --task N` lists the task)",
    "TooManyValidators": "the task has its maximum of validators: join another task",
    "WrongRound": "the chain moved on to another round: the node retries on the current one",
    "WrongPhase": "the round is in another phase: the node acts in the right one on its next tick",
    "AlreadySubmitted": "this trainer submitted to that round already: nothing to do",
    "BaseRoundOutOfWindow": "train on a model within asyncLevel rounds of the round submitted to",
    "ModelNotFinal": "that model is not final yet: wait for its round to finalize",
    "ZeroWorkUnits": "a submission must claim some work: a trainer bug, report it",
    "AlreadyCommitted": "this validator committed to that round already: nothing to do",
    "NotCommitted": "commit before revealing (the validator node does both)",
    "AlreadyRevealed": "this validator revealed in that round already: nothing to do",
    "RevealDoesNotMatchCommit": "the reveal differs from the commitment: the validator's plan file was lost or edited",
    "BitmapLengthMismatch": "the vote's bitmap has the wrong length: a validator bug, report it",
    "BitmapBitOutOfRange": "the vote rejects a submission that does not exist: a validator bug, report it",
    "ZeroMaxItems": "ask for at least one item",
    "NoSuchSubmission": "no submission with that index in that round (`concord status TASK`)",
    "SeedNotReady": "the round's seed is fixed once the seed shares close (shareEnd): wait until then",
    "ShareDoesNotMatch": "the revealed seed share differs from the committed one: the validator's state was lost",
    "ShareAlreadyCommitted": "this validator committed its seed share to that round already: nothing to do",
    "ShareNotCommitted": "commit a seed share before revealing it (the validator node does both)",
    "ShareAlreadyRevealed": "this validator revealed its seed share in that round already: nothing to do",
    "ShareWindowClosed": "seed shares for that round closed at shareEnd: the validator waits for the next round",
    "FlagWindowClosed": "flags for that round closed at flagEnd: the validator waits for the next round",
    "AlreadyFlagged": "this validator flagged in that round already: nothing to do",
    "TooManyFlags": "flag at most max items per round: a validator bug, report it",
    "NotDelegated": "call the Concord contract itself, not its implementation",
    # OpenZeppelin (the token, SafeERC20, SafeCast, Ownable, ReentrancyGuard)
    "ERC20InsufficientBalance": "the wallet holds less than needed: ask for less, or fund the wallet "
    "(on a devnet: `concord devnet fund ADDRESS --tokens N`)",
    "ERC20InsufficientAllowance": "the protocol may not move that much of the wallet's tokens: approve first "
    "(the CLI approves before it sends: report it)",
    "ERC20InvalidReceiver": "tokens cannot go to the zero address: check the address",
    "ERC20InvalidSender": "tokens cannot come from the zero address: check the address",
    "ERC20InvalidApprover": "the approver is the zero address: check the key",
    "ERC20InvalidSpender": "the spender is the zero address: check the deployment JSON",
    "SafeERC20FailedOperation": "the token refused the transfer: check the token address in the deployment JSON",
    "SafeERC20FailedDecreaseAllowance": "the allowance is smaller than the decrease asked for",
    "SafeCastOverflowedUintDowncast": "the amount is larger than the contract stores (at most 2^bits - 1 base units): "
    "ask for less",
    "SafeCastOverflowedIntDowncast": "a value is larger than the contract stores: ask for less",
    "SafeCastOverflowedIntToUint": "a value is negative where the contract needs a positive one",
    "SafeCastOverflowedUintToInt": "a value is larger than the contract stores: ask for less",
    "OwnableUnauthorizedAccount": "only the contract's owner may do this: use the deployer's key",
    "OwnableInvalidOwner": "the new owner is the zero address: check the address",
    "ReentrancyGuardReentrantCall": "a call re-entered the contract: a contract bug, report it",
}
GENERIC_FIX = "an error this CLI has no fix for: check the values above, and report it with the command that raised it"

# parameter names that carry token base units, and those that carry unix seconds
AMOUNT_PARAMS = frozenset(
    {
        "stake",
        "required",
        "available",
        "requested",
        "balance",
        "budget",
        "perRound",
        "liabilities",
        "cap",
        "amount",
        "needed",
        "allowance",
        "currentAllowance",
        "requestedDecrease",
    }
)
TIME_PARAMS = frozenset({"unbondAt", "nowTs", "shareEnd", "flagEnd", "deadline"})
# errors whose parameters above are not token amounts (SafeCast's `value` is raw; ERC1155 ids are not ours)
NOT_TOKEN_ERRORS = frozenset({"SafeCastOverflowedIntDowncast", "SafeCastOverflowedIntToUint"})


def iso_time(seconds: int) -> str:
    """Unix seconds as an ISO 8601 UTC time: 2026-12-07T05:44:36+00:00."""
    return dt.datetime.fromtimestamp(seconds, dt.UTC).isoformat(timespec="seconds")


def _value(err: str, name: str, value: object, tok: TokenInfo) -> str:
    if isinstance(value, IntEnum):
        return value.name
    if isinstance(value, int) and not isinstance(value, bool) and err not in NOT_TOKEN_ERRORS:
        if name in AMOUNT_PARAMS:
            return tok.fmt(value) if tok.symbol else f"{tok.fmt(value)} tokens"
        if name in TIME_PARAMS:
            return iso_time(value)
    return repr(value)


def render_contract_error(exc: ContractError, tok: TokenInfo | None = None) -> str:
    """``Name(k=v, ...)`` with amounts as whole tokens with the symbol and times as ISO UTC; SafeCast's
    overflowing value in tokens too (the contract casts amounts: stakes, budgets)."""
    tok = current_token() if tok is None else tok
    shown = [f"{k}={_value(exc.name, k, v, tok)}" for k, v in exc.params.items()]
    if exc.name == "SafeCastOverflowedUintDowncast":
        bits, value = exc.params.get("bits"), exc.params.get("value")
        if isinstance(bits, int) and isinstance(value, int):
            most = tok.fmt(2**bits - 1)
            shown = [f"bits={bits}", f"value={tok.fmt(value)}", f"most={most}"]
    return f"{exc.name}({', '.join(shown)})"


def _rpc_flag() -> str:
    """The RPC setting to check: the flag, and the env var that is set (the one that would be used)."""
    var = next((v for v in ("CONCORD_RPC_URL", "ETH_RPC_URL") if os.environ.get(v)), "ETH_RPC_URL")
    return f"--rpc-url / ${var}"


def explain(exc: BaseException) -> str:
    """``exc`` as one line with the fix (no traceback, no nested transport chain)."""
    if isinstance(exc, RpcUnavailable):
        return (
            f"cannot reach the chain RPC at {exc.url} ({root_cause(exc.last)}): is the node running? "
            f"check {_rpc_flag()} (a local devnet: `concord devnet up`)"
        )
    if isinstance(exc, WrongChain):
        return (
            f"{exc}: point --rpc-url at a chain-{exc.expected} node, "
            f"or pass the deployment JSON made on chain {exc.actual}"
        )
    if isinstance(exc, BadKeystore):
        return f"{exc}: check the --keystore path and its password (--password-file, $CONCORD_KEYSTORE_PASSWORD)"
    if isinstance(exc, BadPrivateKey):
        return f"{exc}: set it to 0x + 64 hex digits, or use --keystore"
    if isinstance(exc, ContractError):
        return f"the contract refused: {render_contract_error(exc)}: {CONTRACT_FIXES.get(exc.name, GENERIC_FIX)}"
    if isinstance(exc, RpcError) and "insufficient funds" in str(exc).lower():
        return (
            f"{exc}: the key has no ETH to pay for gas: fund its address "
            "(on a devnet: `concord devnet fund ADDRESS --eth 10`)"
        )
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


RETRY_LOGGER = "concord.client.chain.rpc"


def _not_a_retry(record: logging.LogRecord) -> bool:
    return not (record.name == RETRY_LOGGER and record.levelno < logging.ERROR)


def quiet_retries() -> None:
    """Filter the RPC's retry warnings out of the current root handlers (set up by setup_logging; the
    next setup_logging replaces them, so nothing outlives the command)."""
    for handler in logging.getLogger().handlers:
        handler.addFilter(_not_a_retry)

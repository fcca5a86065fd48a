"""One line per failure an operator can fix: what is wrong, then what to do about it.

    explain(exc) -> str    the error's own message (it names the flag, URL, file or value) plus the fix
    quiet_retries()        a one-shot command's log handlers drop the RPC's "retry n" warnings (its one
                           error line says it all); a node keeps them, they show a flaky endpoint

Every CLI entry point prints `error: <explain(e)>` and exits 1 (2 for a bad flag or file, which
argparse and the config loader report). The messages of the library's exceptions already carry
their values; this adds the operator's next step for the ones a person meets first.
"""

from __future__ import annotations

import logging

from client.chain import ContractError, RpcUnavailable, WrongChain
from client.chain.keys import BadKeystore, BadPrivateKey
from client.chain.rpc import root_cause

# custom error -> the fix (the error's values are in its own text)
CONTRACT_FIXES: dict[str, str] = {
    "NotRegistered": "this key never registered: `concord trainer run` / `concord validator run` register it",
    "NotJoined": "this key is not a member of that task (`concord task show --task N` lists the task)",
    "AlreadyJoined": "already a member: nothing to do",
    "PendingWork": "leave every task first (`concord trainer leave --task N` / `concord validator leave --task N`)",
    "WorkNotFinalized": "wait until that round is finalized (`concord status TASK`), then leave",
    "NothingUnbonding": "request an unbond first (`... unbond --amount TOKENS`)",
    "UnbondNotReady": "the unbond delay has not passed: try again after unbondAt (a unix time)",
    "UnbondExceedsStake": "ask for at most the available stake (`... unbond` without --amount takes all of it)",
    "InsufficientBalance": "the credited balance is smaller: `... withdraw` without --amount takes all of it",
    "NotInitiator": "only the task's initiator may do this: use the key that published the task",
    "TaskIsClosed": "the task is closed: no top-up or close any more; `concord task reclaim` once it is over",
    "TaskNotOver": "rounds are still in flight: close the task and wait until they settle, then reclaim",
    "UnknownTask": "no task with that id on this deployment (`concord status` lists them)",
    "ZeroAmount": "the amount is zero (or nothing is left to move)",
    "InsufficientStake": "stake more (`--stake TOKENS`) to meet the task's minimum",
    "WrongRole": "this key is registered in the other role: use another key",
}


def explain(exc: BaseException) -> str:
    """``exc`` as one line with the fix (no traceback, no nested transport chain)."""
    if isinstance(exc, RpcUnavailable):
        return (
            f"cannot reach the chain RPC at {exc.url} ({root_cause(exc.last)}): is the node running? "
            "check --rpc-url / $ETH_RPC_URL (a local devnet: `concord devnet up`)"
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
    if isinstance(exc, ContractError) and exc.name in CONTRACT_FIXES:
        return f"the contract refused: {exc}: {CONTRACT_FIXES[exc.name]}"
    if isinstance(exc, ContractError):
        return f"the contract refused: {exc}"
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


RETRY_LOGGER = "client.chain.rpc"


def _not_a_retry(record: logging.LogRecord) -> bool:
    return not (record.name == RETRY_LOGGER and record.levelno < logging.ERROR)


def quiet_retries() -> None:
    """Filter the RPC's retry warnings out of the current root handlers (set up by setup_logging; the
    next setup_logging replaces them, so nothing outlives the command)."""
    for handler in logging.getLogger().handlers:
        handler.addFilter(_not_a_retry)

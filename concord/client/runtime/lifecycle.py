"""A node's way out: `concord trainer|validator unbond | leave | withdraw` (PROTOCOL.md "Stake").

    leave --task N            leave a task (the contract refuses while this node has unfinalized work in it)
    unbond [--amount TOKENS]  start unbonding stake (all that is free by default); refused while joined to a task
    unbond --complete         once the unbond delay passed: the unbonded stake is credited to the balance
    withdraw [--amount T]     move credited tokens (rewards, fees, bounties, unbonded stake, a reclaimed budget)
                              to the wallet: all of it by default

Each reads what it needs from the chain first and sends at most one transaction; a refusal is the
contract's own custom error (with its values) and the fix, on one line, exit 1, nothing sent. Amounts
go through client.units (whole tokens, or "1000base") and print as whole tokens with the symbol.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import sys
from collections.abc import Sequence
from typing import Any

from concord.client.chain import ChainClient, ChainError, Role, Signer
from concord.client.chain.keys import KeyLoadError
from concord.client.runtime import parsers
from concord.client.runtime.config import NodeConfigError, node_config, parse_layered
from concord.client.runtime.connect import connect_chain
from concord.client.runtime.display import setup_logging
from concord.client.runtime.errors import explain, quiet_retries
from concord.client.runtime.parsers import add_lifecycle_commands
from concord.client.units import AmountError, TokenAmount, TokenInfo, format_amount, remember_token

COMMANDS = ("unbond", "leave", "withdraw")


class LifecycleError(RuntimeError):
    """What the node's on-chain state says before any transaction: wrong role, nothing to move."""


_TOKENS: dict[tuple[str, int, str], TokenInfo] = {}  # (rpc url, chain id, token address) -> its symbol, decimals


def token_info(client: ChainClient) -> TokenInfo:
    """The token's symbol and decimals, read once per token (neither ever changes); the cache holds no client."""
    key = (client.rpc.url, client.deployment.chain_id, client.deployment.token)
    if key not in _TOKENS:
        _TOKENS[key] = TokenInfo(client.token.symbol(), client.token.decimals())
    remember_token(_TOKENS[key])  # contract errors with amounts render in this token
    return _TOKENS[key]


# ----------------------------------------------------------------------------- staking (trainer and validator run)

STAKE_CAP = 2**96 - 1  # the contract keeps a node's stake in a uint96 (SafeCast refuses more)


class StakeRefused(NodeConfigError):
    """A --stake (or the task minimum it defaults to) that the contract or the wallet would refuse,
    found before any transaction; names the flag and both numbers."""


def stake_to_send(client: ChainClient, me: str, minimum: int, stake: TokenAmount | None, what: str) -> int:
    """Base units this node must still stake to serve a task whose minimum is ``minimum`` (0: enough
    already), checked before any transaction: a ``--stake`` below the minimum, above the contract's
    cap or above the wallet is refused (StakeRefused naming --stake and the numbers), and so is a key
    without ETH for gas. ``what`` names the minimum ("the task's minimum trainer stake")."""
    tok = token_info(client)
    asked = None if stake is None else tok.units(stake)
    if asked is not None and asked < minimum:
        raise StakeRefused(
            "--stake",
            f"{tok.fmt(asked)} is below {what} of {tok.fmt(minimum)}: pass --stake "
            f"{format_amount(minimum, tok.decimals)} or more, or leave --stake out (it defaults to the minimum)",
        )
    info = client.concord.node_info(me)
    if info.role == Role.NONE:
        send = max(minimum, asked or 0)
    else:
        send = max(0, minimum - (info.stake - info.unbonding))
    if send == 0:
        return 0
    if info.stake + send > STAKE_CAP:
        raise StakeRefused(
            "--stake",
            f"{tok.fmt(send)} would make a stake of {tok.fmt(info.stake + send)}, above the most the "
            f"contract holds ({tok.fmt(STAKE_CAP)}): stake less",
        )
    wallet = client.token.balance_of(me)
    if wallet < send:
        raise StakeRefused(
            "--stake",
            f"staking {tok.fmt(send)} but {me} holds {tok.fmt(wallet)} in its wallet: stake less, or "
            f"fund the wallet (on a devnet: `concord devnet fund {me} --tokens "
            f"{format_amount(send - wallet, tok.decimals)}`)",
        )
    if int(client.rpc.call("eth_getBalance", me, "latest"), 16) == 0:
        raise StakeRefused(
            "key", f"{me} holds no ETH to pay for gas: fund it (on a devnet: `concord devnet fund {me} --eth 10`)"
        )
    return send


# ----------------------------------------------------------------------------- the operations


def _check_role(client: ChainClient, me: str, role: Role) -> None:
    actual = client.concord.node_info(me).role
    if actual == Role.NONE:
        raise LifecycleError(f"{me} is not registered: nothing staked (a node registers when it first runs)")
    if actual != role:
        other = actual.name.lower()
        raise LifecycleError(
            f"{me} is registered as a {other}, not a {role.name.lower()}: use `concord {other} ...` for this key"
        )


def leave(client: ChainClient, signer: Signer, role: Role, task_id: int) -> dict[str, Any]:
    """Leave ``task_id``: no further rounds are expected of this node (its stake may then unbond)."""
    _check_role(client, signer.address, role)
    receipt = client.concord.leave(signer, task_id)
    info = client.concord.node_info(signer.address)
    return {"task_id": task_id, "left": True, "joined_tasks": info.joined_tasks, "block": receipt.block_number}


def request_unbond(client: ChainClient, signer: Signer, role: Role, amount: int | None) -> dict[str, Any]:
    """Start unbonding ``amount`` base units (None: all the stake not yet unbonding)."""
    _check_role(client, signer.address, role)
    info = client.concord.node_info(signer.address)
    free = info.stake - info.unbonding
    if amount is None:
        if free == 0:
            raise LifecycleError(f"{signer.address}: all of its stake is unbonding already; `unbond --complete`")
        amount = free
    client.concord.request_unbond(signer, amount)
    info = client.concord.node_info(signer.address)
    return {"requested": amount, "unbonding": info.unbonding, "stake": info.stake, "unbond_at": info.unbond_at}


def complete_unbond(client: ChainClient, signer: Signer, role: Role) -> dict[str, Any]:
    """Credit the unbonded stake to the balance (the contract checks the delay)."""
    _check_role(client, signer.address, role)
    unbonding = client.concord.node_info(signer.address).unbonding
    client.concord.complete_unbond(signer)
    return {
        "completed": unbonding,
        "stake": client.concord.node_info(signer.address).stake,
        "balance": client.concord.balance_of(signer.address),
    }


def withdraw(client: ChainClient, signer: Signer, amount: int | None) -> dict[str, Any]:
    """Move ``amount`` (None: the whole credited balance) to the wallet; 0 when there is nothing."""
    balance = client.concord.balance_of(signer.address)
    amount = balance if amount is None else amount
    if amount > 0:
        client.concord.withdraw(signer, amount)
    return {
        "withdrawn": amount,
        "balance": client.concord.balance_of(signer.address),
        "wallet": client.token.balance_of(signer.address),
    }


# ----------------------------------------------------------------------------- CLI


add_commands = add_lifecycle_commands  # `unbond`, `leave`, `withdraw` under `concord ROLE` (client.runtime.parsers)


def _text(action: str, out: dict[str, Any], who: str, role: str, tok: TokenInfo) -> str:
    if action == "leave":
        return f"{who} left task {out['task_id']} (member of {out['joined_tasks']} task(s) now)"
    if action == "unbond" and "completed" in out:
        return (
            f"{who}: {tok.fmt(out['completed'])} unbonded and credited (stake {tok.fmt(out['stake'])}, "
            f"balance {tok.fmt(out['balance'])}); `concord {role} withdraw` moves it to the wallet"
        )
    if action == "unbond":
        at = dt.datetime.fromtimestamp(out["unbond_at"], dt.UTC).isoformat(timespec="seconds")
        return (
            f"{who}: unbonding {tok.fmt(out['requested'])} (in all {tok.fmt(out['unbonding'])} of "
            f"{tok.fmt(out['stake'])}); after {at} run `concord {role} unbond --complete`"
        )
    if out["withdrawn"] == 0:
        return f"{who}: nothing to withdraw (balance 0 {tok.symbol})"
    return f"{who}: withdrew {tok.fmt(out['withdrawn'])} to the wallet (wallet {tok.fmt(out['wallet'])})"


def run(args: argparse.Namespace, role: str) -> int:
    """Run a parsed `concord ROLE unbond|leave|withdraw` (role: "trainer", "validator" or "task" for the
    initiator's withdraw); the exit status (an error: one line with the fix, 1)."""
    setup_logging(args.json_logs, logging.WARNING)
    quiet_retries()  # retry chatter: the error line says it all
    node_role = {"trainer": Role.TRAINER, "validator": Role.VALIDATOR}.get(role)
    try:
        client, signer = connect_chain(node_config(args, role))
        tok = token_info(client)
        amount = None if getattr(args, "amount", None) is None else tok.units(args.amount)
        if args.action == "withdraw":
            out = withdraw(client, signer, amount)
        elif node_role is None:
            raise LifecycleError(f"`{args.action}` is for trainers and validators")
        elif args.action == "leave":
            out = leave(client, signer, node_role, args.task)
        elif args.complete:
            if amount is not None:
                raise NodeConfigError("--amount", "not with --complete (it completes the whole unbonding amount)")
            out = complete_unbond(client, signer, node_role)
        else:
            out = request_unbond(client, signer, node_role, amount)
    except (NodeConfigError, KeyLoadError, ChainError, AmountError, LifecycleError) as e:
        print(f"error: {explain(e)}", file=sys.stderr)
        return 1
    out = {"action": args.action, "address": signer.address, "symbol": tok.symbol, **out}
    print(json.dumps(out) if args.json else _text(args.action, out, signer.address, role, tok))
    return 0


def trainer_main(argv: Sequence[str]) -> int:
    """`concord trainer leave|unbond|withdraw` without the trainer's module (no torch: client/cli.py calls this)."""
    return run(parse_layered(parsers.trainer_parser(), argv), "trainer")


def validator_main(argv: Sequence[str]) -> int:
    """`concord validator leave|unbond|withdraw` without the validator's module (no torch)."""
    return run(parse_layered(parsers.validator_parser(), argv), "validator")

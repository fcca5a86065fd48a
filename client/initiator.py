"""`concord task publish TASK.toml`: a task initiator puts a task on chain (DESIGN.md section 3).

A task file is the off-chain spec (client.content.task_spec: [model] [env] [sampler] [grpo] [outer]
[validation] [limits]) plus one `[chain]` table with every on-chain parameter:

    [chain]
    trainer_reward_per_round = 300     # tokens (whole units of the protocol token; "0.5" strings allowed)
    validator_fee_per_round = 60
    min_trainer_stake = 100
    min_validator_stake = 100
    slash_amount = 80
    bounty_bps = 5000                  # share of a slash paid to the rejecting validators
    submit_seconds = 60                # phase lengths (a phase closes early once everyone acted)
    commit_seconds = 60
    reveal_seconds = 30
    max_rounds = 20                    # 0 = until the budget runs out
    async_level = 0
    min_validators = 1
    budget = 7200                      # escrow; default (reward + fee) * max_rounds; --budget overrides

A parsed file is a TaskFile: the spec, the chain's own form TaskParams (every [chain] term, in
token base units) and the budget. Three TaskParams fields are not [chain] keys: max_work_units
comes from the spec, and the two digests are UNPUBLISHED (zero) until publish_task sets them
from what it uploads (model 0's digest needs the model built, and a caller may still change
the spec or the terms in between); publish_task also takes max_work_units from the spec it uploads.

Publishing validates everything first (every bad field is named in one TaskSpecError; the
chain and IPFS are not touched), then uploads the initial model (built from [model] seed)
and the spec manifest, approves and escrows the budget and creates the task.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from client import chain
from client.chain import ChainClient, ChainError, Signer, TaskParams
from client.chain.keys import KeyLoadError
from client.content.model_store import put_model
from client.content.store import Store, StoreError
from client.content.task_spec import (
    TaskSpecError,
    TaskSpecManifest,
    parse_task_spec,
    put_task_spec,
    read_toml,
)
from client.digest import Digest
from client.engine.config import ConfigError
from client.engine.model import build_policy, policy_state
from client.units import BASE_SUFFIX, AmountError, parse_amount

log = logging.getLogger(__name__)

CHAIN = "chain"
UINT96 = 2**96 - 1
UINT32 = 2**32 - 1
BPS = 10_000
TOKEN_FIELDS = (
    "trainer_reward_per_round",
    "validator_fee_per_round",
    "min_trainer_stake",
    "min_validator_stake",
    "slash_amount",
)
INT_FIELDS = {
    "submit_seconds": (1, UINT32),
    "commit_seconds": (1, UINT32),
    "reveal_seconds": (1, UINT32),
    "max_rounds": (0, UINT32),
    "bounty_bps": (0, BPS),
    "async_level": (0, 255),
    "min_validators": (1, 255),
}
REQUIRED = TOKEN_FIELDS + tuple(INT_FIELDS)


UNPUBLISHED = bytes(32)  # the digests of a TaskFile's params until publish_task fills them


@dataclass(frozen=True)
class TaskFile:
    """A parsed task file: the spec, the on-chain TaskParams (digests UNPUBLISHED) and the escrow."""

    spec: TaskSpecManifest
    params: TaskParams
    budget: int


@dataclass(frozen=True)
class Published:
    task_id: int
    spec_digest: Digest
    initial_model_digest: Digest
    budget: int
    initiator: str
    block: int

    def to_json(self) -> dict[str, Any]:
        """Digests in their one text form ("0x" + 64 hex)."""
        return {
            **dataclasses.asdict(self),
            "spec_digest": str(self.spec_digest),
            "initial_model_digest": str(self.initial_model_digest),
        }


# ----------------------------------------------------------------------------- validation (touches nothing)


def _tokens(key: str, value: Any, decimals: int) -> int:
    """Whole tokens (an int, or a string: "2.5", "1000base") -> base units (client.units, the one parser
    of amounts); ConfigError names a bad value."""
    try:
        return parse_amount(value, key, allow_zero=True).units(decimals, UINT96)
    except AmountError as e:
        raise ConfigError(
            CHAIN, key, f"{e.problem}, got {e.text!r} (whole tokens, or base units as 1000{BASE_SUFFIX})"
        ) from None


def _parse_chain(table: Any, decimals: int, budget_override: int | None) -> tuple[dict[str, int], int]:
    """The [chain] table -> (its TaskParams terms in base units, the budget); TaskSpecError lists every bad field."""
    if not isinstance(table, dict):
        raise TaskSpecError(
            "[chain]",
            [ConfigError(CHAIN, "*", "missing table" if table is None else f"expected a table, got {table!r}")],
        )
    errors: list[ConfigError] = []
    known = set(REQUIRED) | {"budget"}
    errors += [ConfigError(CHAIN, k, f"unknown key (known: {sorted(known)})") for k in table if k not in known]
    errors += [ConfigError(CHAIN, k, "missing") for k in REQUIRED if k not in table]
    values: dict[str, int] = {}
    for key in TOKEN_FIELDS + ("budget",):
        if key in table:
            try:
                values[key] = _tokens(key, table[key], decimals)
            except ConfigError as err:
                errors.append(err)
    for key, (lo, hi) in INT_FIELDS.items():
        if key not in table:
            continue
        value = table[key]
        if type(value) is not int:
            errors.append(ConfigError(CHAIN, key, f"expected int, got {value!r}"))
        elif not lo <= value <= hi:
            errors.append(ConfigError(CHAIN, key, f"must be in [{lo}, {hi}], got {value}"))
        else:
            values[key] = value
    if budget_override is not None:
        values["budget"] = budget_override
    if not errors:
        per_round = values["trainer_reward_per_round"] + values["validator_fee_per_round"]
        if "budget" not in values:
            if values["max_rounds"] == 0:
                errors.append(ConfigError(CHAIN, "budget", "required when max_rounds = 0 (or pass --budget)"))
            else:
                values["budget"] = per_round * values["max_rounds"]
        if values.get("budget", per_round) < per_round:
            errors.append(
                ConfigError(
                    CHAIN,
                    "budget",
                    f"{values['budget']} base units does not cover one round "
                    f"(trainer_reward_per_round + validator_fee_per_round = "
                    f"{per_round})",
                )
            )
        if values["slash_amount"] > values["min_trainer_stake"]:
            errors.append(
                ConfigError(
                    CHAIN, "slash_amount", "larger than min_trainer_stake: a slash would be capped at the stake"
                )
            )
    if errors:
        raise TaskSpecError("[chain]", errors)
    budget = values.pop("budget")
    return values, budget


def load_task_file(path: str | Path, decimals: int = 18, budget_override: int | None = None) -> TaskFile:
    """Parse and validate a task file; one TaskSpecError names every bad field of the spec and [chain]."""
    path = Path(path)
    data = read_toml(path)
    table = data.pop(CHAIN, None)
    errors: list[ConfigError] = []
    spec: TaskSpecManifest | None = None
    chain_terms: tuple[dict[str, int], int] | None = None
    try:
        spec = parse_task_spec(data, str(path))
    except TaskSpecError as e:
        errors += e.errors
    try:
        chain_terms = _parse_chain(table, decimals, budget_override)
    except TaskSpecError as e:
        errors += e.errors
    if errors or spec is None or chain_terms is None:  # each one is None only when it added errors
        raise TaskSpecError(str(path), errors)
    terms, budget = chain_terms
    params = TaskParams(
        spec_digest=UNPUBLISHED,
        initial_model_digest=UNPUBLISHED,
        max_work_units=spec.task.max_work_units,
        **terms,
    )
    return TaskFile(spec, params, budget)


def check_against_chain(client: ChainClient, initiator: str, task_file: TaskFile, source: str) -> None:
    """What only the deployed contract and the initiator's wallet can say; read-only."""
    params, budget = task_file.params, task_file.budget
    errors = []
    max_async, max_validators = client.concord.max_async_level(), client.concord.max_validators()
    if params.async_level > max_async:
        errors.append(
            ConfigError(CHAIN, "async_level", f"the contract allows at most {max_async}, got {params.async_level}")
        )
    if params.min_validators > max_validators:
        errors.append(
            ConfigError(
                CHAIN, "min_validators", f"the contract allows at most {max_validators}, got {params.min_validators}"
            )
        )
    balance = client.token.balance_of(initiator)
    if balance < budget:
        errors.append(ConfigError(CHAIN, "budget", f"{budget} base units, but {initiator} holds {balance}"))
    if errors:
        raise TaskSpecError(source, errors)


# ----------------------------------------------------------------------------- publishing


def put_initial_model(store: Store, spec: TaskSpecManifest) -> Digest:
    """Model 0: the [model] architecture at its seed, no outer state, no parent."""
    policy = build_policy(spec.task.model)
    return put_model(store, policy_state(policy), spec.task.model, None, None)


def publish_task(
    client: ChainClient, initiator: Signer, store: Store, task_file: TaskFile, source: str = "<task>"
) -> Published:
    """Check against the chain, upload model 0 and the spec, approve + escrow the budget, create the task.
    The params go on chain with the digests of what was uploaded and the spec's max_work_units."""
    spec, budget = task_file.spec, task_file.budget
    check_against_chain(client, initiator.address, task_file, source)
    model_digest = put_initial_model(store, spec)
    spec_digest = put_task_spec(store, spec)
    log.info("uploaded model 0 %s and spec %s", model_digest, spec_digest)
    params = dataclasses.replace(
        task_file.params,
        spec_digest=spec_digest.bytes,
        initial_model_digest=model_digest.bytes,
        max_work_units=spec.task.max_work_units,
    )
    client.token.approve(initiator, client.concord.address, budget)
    task_id, receipt = client.concord.create_task(initiator, params, budget)
    return Published(task_id, spec_digest, model_digest, budget, initiator.address, receipt.block_number)


# ----------------------------------------------------------------------------- CLI


def _close_or_reclaim(args: argparse.Namespace) -> int:
    """`concord task close|reclaim --task N`: the exit every task has (PROTOCOL.md "A task")."""
    from client.runtime.config import NodeConfigError, node_config
    from client.runtime.connect import connect_chain

    try:
        client, signer = connect_chain(node_config(args, "initiator"))
        c = client.concord
        if args.action == "close":
            c.close_task(signer, args.task)
            out = {"task_id": args.task, "closed": True, "head_round": c.task_state(args.task).head_round}
            text = (
                f"task {args.task} closed: rounds up to {out['head_round']} still settle, none opens after; "
                f"then `concord task reclaim --task {args.task}`"
            )
        else:
            receipt = c.reclaim_budget(signer, args.task)
            amount = sum(e.amount for e in c.receipt_events(receipt) if isinstance(e, chain.BudgetReclaimed))
            out = {"task_id": args.task, "reclaimed": amount, "balance": c.balance_of(signer.address)}
            text = (
                f"task {args.task}: {amount} credited to {signer.address} (balance {out['balance']}; "
                f"withdraw() moves it to the wallet)"
            )
    except (NodeConfigError, KeyLoadError, ChainError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(json.dumps(out) if args.json else text)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """`concord task publish TASK.toml [--budget TOKENS] [--json]`, `concord task close|reclaim --task N`
    (connection and key flags as for nodes)."""
    from client.runtime.config import NodeConfigError, add_node_args, node_config
    from client.runtime.connect import connect_chain, open_node
    from client.runtime.display import setup_logging

    p = argparse.ArgumentParser(prog="concord task", description="publish, close and reclaim an RL task")
    sub = p.add_subparsers(dest="action", required=True)
    pub = sub.add_parser("publish", help="validate, upload model 0 and the spec, escrow the budget, create the task")
    pub.add_argument("task_file", type=Path)
    pub.add_argument("--budget", default=None, help="escrow in tokens (overrides [chain] budget)")
    pub.add_argument("--json", action="store_true", help="print the result as one JSON object")
    pub.add_argument("--check", action="store_true", help="validate the file only (no chain, no IPFS)")
    add_node_args(pub, with_task=False)
    close = sub.add_parser("close", help="initiator: open no further round; the rounds in flight still settle")
    reclaim = sub.add_parser(
        "reclaim", help="initiator: credit what is left of an ended task's budget to the initiator's balance"
    )
    for q in (close, reclaim):
        q.add_argument("--json", action="store_true", help="print the result as one JSON object")
        add_node_args(q, with_task=True)
    args = p.parse_args(argv)
    setup_logging(args.json_logs, logging.WARNING)
    if args.action in ("close", "reclaim"):
        return _close_or_reclaim(args)
    try:
        budget = None
        if args.budget is not None:
            try:
                budget = _tokens("budget", args.budget, 18)
            except ConfigError as err:
                raise TaskSpecError("--budget", [err]) from None
        if args.check:
            load_task_file(args.task_file, 18, budget)
            print(f"{args.task_file}: ok")
            return 0
        cfg = node_config(args, "initiator")
        task_file = load_task_file(args.task_file, 18, budget)  # every bad field named before any connection
        client, signer = connect_chain(cfg)
        decimals = client.token.decimals()
        if decimals != 18:  # token amounts in this token's base units
            if budget is not None:
                try:
                    budget = _tokens("budget", args.budget, decimals)
                except ConfigError as err:
                    raise TaskSpecError("--budget", [err]) from None
            task_file = load_task_file(args.task_file, decimals, budget)
        check_against_chain(client, signer.address, task_file, str(args.task_file))  # before the state dir
        node = open_node(cfg, client, signer)
        result = publish_task(node.client, node.signer, node.store, task_file, str(args.task_file))
    except TaskSpecError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (NodeConfigError, KeyLoadError, ChainError, StoreError, chain.AbiMismatch) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result.to_json()))
    else:
        print(
            f"task {result.task_id} created: spec {result.spec_digest}, model 0 {result.initial_model_digest}, "
            f"budget {result.budget}, block {result.block}"
        )
    return 0

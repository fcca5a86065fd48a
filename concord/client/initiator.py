"""`concord task publish TASK.toml`: a task initiator puts a task on chain (DESIGN.md section 3).

A task file is the off-chain spec (client.content.task_spec: [model] [env] [sampler] [grpo] [outer]
[validation] [limits]) plus one `[chain]` table with every on-chain parameter:

    [chain]
    trainer_reward_per_round = 300     # whole tokens (client.units: "2.5" strings allowed, "1000base" = base units)
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

An LM task file (a [source] table: client.engine.lm_task, e.g. configs/lm_task.toml) is published
the same way: its spec is a TaskSpecManifest[LMTaskConfig] (client.content.task_spec, limits derived from the
adapters), the base model's file goes to IPFS once, and model 0 is the adapters at their seed
naming that file.

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

from concord.client import chain
from concord.client.chain import ChainClient, ChainError, Signer, TaskParams
from concord.client.chain.keys import KeyLoadError
from concord.client.content.store import MIN_RATE, Store, StoreError
from concord.client.content.submission import (
    FETCH_LATENCY_S,
    FETCH_MARGIN_S,
    content_window_s,
    min_commit_seconds,
    submission_bytes_bound,
)
from concord.client.content.task_spec import TaskSpecError, TaskSpecManifest, read_toml
from concord.client.digest import Digest
from concord.client.engine.config import ConfigError
from concord.client.runtime.workload import fetches_states_apart, parse_task_file, put_initial_model
from concord.client.units import BASE_SUFFIX, AmountError, format_amount, parse_amount

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

    spec: TaskSpecManifest[Any]
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
                    f"{format_amount(values['budget'], decimals)} tokens do not cover one round "
                    f"(trainer_reward_per_round + validator_fee_per_round = "
                    f"{format_amount(per_round, decimals)})",
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
    spec: TaskSpecManifest[Any] | None = None
    chain_terms: tuple[dict[str, int], int] | None = None
    try:
        spec = parse_task_file(data, str(path))
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
    if errors := phase_room(spec, params):
        raise TaskSpecError(str(path), errors)
    return TaskFile(spec, params, budget)


def rule_min_commit_seconds(spec: TaskSpecManifest[Any]) -> int:
    """The shortest commit phase that holds ``spec``'s late-fetch rule (client.content.submission)."""
    return min_commit_seconds(spec.limits, fetches_states_apart(spec))


def phase_room(spec: TaskSpecManifest[Any], params: TaskParams) -> list[ConfigError]:
    """The late-fetch rule needs room in the commit phase: a submission's content is missing only once its
    fetch deadline passed (from submitEnd, or from shareEnd for inner states fetched after the check seed),
    and that must come before the last quarter of the phase (re-checks, the outer step, the commit)."""
    need = rule_min_commit_seconds(spec)
    if params.commit_seconds >= need:
        return []
    window = content_window_s(spec.limits)
    start = "shareEnd = submitEnd + commit_seconds / 4" if fetches_states_apart(spec) else "submitEnd"
    return [
        ConfigError(
            CHAIN,
            "commit_seconds",
            f"{params.commit_seconds} s leaves no room for a submission's fetch: its content may take "
            f"{window:.1f} s ({FETCH_LATENCY_S:g} s latency + {submission_bytes_bound(spec.limits)} bytes "
            f"of [limits] at {MIN_RATE} B/s) from {start}, + {FETCH_MARGIN_S:g} s, before the commit "
            f"phase's last quarter: at least {need} (docs/PROTOCOL.md \"A submission's fetch time\")",
        )
    ]


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
        decimals, symbol = client.token.decimals(), client.token.symbol()
        errors.append(
            ConfigError(
                CHAIN,
                "budget",
                f"{format_amount(budget, decimals, symbol)}, but {initiator} holds "
                f"{format_amount(balance, decimals, symbol)}",
            )
        )
    if errors:
        raise TaskSpecError(source, errors)


# ----------------------------------------------------------------------------- publishing


def publish_task(
    client: ChainClient, initiator: Signer, store: Store, task_file: TaskFile, source: str = "<task>"
) -> Published:
    """Check against the chain, upload model 0 and the spec, approve + escrow the budget, create the task.
    The params go on chain with the digests of what was uploaded and the spec's max_work_units."""
    spec, budget = task_file.spec, task_file.budget
    if errors := phase_room(spec, task_file.params):  # a caller may have changed the terms since the parse
        raise TaskSpecError(source, errors)
    check_against_chain(client, initiator.address, task_file, source)
    model_digest = put_initial_model(store, spec)
    spec_digest = store.put_manifest(spec.to_bytes())  # either kind's spec: one canonical raw block
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


def task_summary(client: ChainClient, task_id: int) -> dict[str, Any]:
    """`concord task show`: the task's terms, budget and state from chain views (amounts in base units)."""
    c = client.concord
    params, state, escrow = c.task_params(task_id), c.task_state(task_id), c.task_escrow(task_id)
    latest = c.latest_model(task_id)
    terms = {k: v for k, v in dataclasses.asdict(params).items() if not isinstance(v, bytes)}
    return {
        "task_id": task_id,
        "initiator": state.initiator,
        "closed": state.closed,
        **terms,
        "spec_digest": "0x" + params.spec_digest.hex(),
        "initial_model_digest": "0x" + params.initial_model_digest.hex(),
        "budget": state.budget,
        "held": escrow.held,
        "reserved": escrow.reserved,
        "head_round": state.head_round,
        "finalized_rounds": state.finalized_rounds,
        "trainers": state.trainers,
        "validators": state.validators,
        "latest_model": latest.model,
        "latest_model_digest": "0x" + latest.digest.hex(),
        "symbol": client.token.symbol(),
        "decimals": client.token.decimals(),
    }


def _show_text(s: dict[str, Any]) -> str:
    def t(key: str) -> str:
        return format_amount(s[key], s["decimals"], s["symbol"])

    rounds = "until the budget runs out" if s["max_rounds"] == 0 else f"at most {s['max_rounds']}"
    return "\n".join(
        [
            f"task {s['task_id']} ({'closed' if s['closed'] else 'open'}), initiator {s['initiator']}",
            f"  budget     {t('budget')} left; {t('held')} held ({t('reserved')} reserved for open rounds)",
            f"  per round  {t('trainer_reward_per_round')} to trainers, {t('validator_fee_per_round')} to validators; "
            f"rounds: {rounds}",
            f"  stakes     trainer {t('min_trainer_stake')}, validator {t('min_validator_stake')}; slash "
            f"{t('slash_amount')} ({s['bounty_bps'] / 100:g}% bounty)",
            f"  phases     submit {s['submit_seconds']} s, commit {s['commit_seconds']} s, "
            f"reveal {s['reveal_seconds']} s; async level {s['async_level']}; min validators {s['min_validators']}",
            f"  rounds     head {s['head_round']}, {s['finalized_rounds']} finalized; members: {s['trainers']} "
            f"trainer(s), {s['validators']} validator(s)",
            f"  model      latest final {s['latest_model']} {s['latest_model_digest']}",
            f"  spec       {s['spec_digest']}",
        ]
    )


def _task_action(args: argparse.Namespace) -> int:
    """`concord task show|top-up|close|reclaim|withdraw`: a task's view and its initiator's way out
    (PROTOCOL.md "A task"); one line with the fix on error, exit 1, nothing sent."""
    from concord.client.runtime import lifecycle
    from concord.client.runtime.config import NodeConfigError, node_config
    from concord.client.runtime.connect import connect_chain
    from concord.client.runtime.errors import explain, quiet_retries

    if args.action == "withdraw":
        return lifecycle.run(args, "task")
    quiet_retries()  # retry chatter: the error line says it all
    try:
        cfg = node_config(args, "initiator")
        if args.action == "show":
            client = chain.connect(cfg.rpc_url, cfg.deployment)
            if not 1 <= args.task <= client.concord.task_count():
                raise chain.ContractError("UnknownTask", {"taskId": args.task})
            summary = task_summary(client, args.task)
            print(json.dumps(summary) if args.json else _show_text(summary))
            return 0
        client, signer = connect_chain(cfg)
        c, tok = client.concord, lifecycle.token_info(client)
        if args.action == "close":
            c.close_task(signer, args.task)
            out: dict[str, Any] = {
                "task_id": args.task,
                "closed": True,
                "head_round": c.task_state(args.task).head_round,
            }
            text = (
                f"task {args.task} closed: rounds up to {out['head_round']} still settle, none opens after; "
                f"then `concord task reclaim --task {args.task}`"
            )
        elif args.action == "top-up":
            amount = tok.units(args.amount)
            wallet = client.token.balance_of(signer.address)
            if wallet < amount:
                raise lifecycle.LifecycleError(
                    f"--amount: top-up of {tok.fmt(amount)} but {signer.address} holds {tok.fmt(wallet)}"
                )
            client.token.approve(signer, c.address, amount)
            c.top_up(signer, args.task, amount)
            budget = c.task_state(args.task).budget
            out = {"task_id": args.task, "topped_up": amount, "budget": budget}
            text = f"task {args.task}: budget topped up by {tok.fmt(amount)} to {tok.fmt(budget)}"
        else:
            state, escrow = c.task_state(args.task), c.task_escrow(args.task)
            if state.initiator.lower() == signer.address.lower() and state.budget == 0 and escrow.reserved == 0:
                # every round paid out the whole budget (e.g. 20 x (300 + 60)): nothing to send, not an error
                out = {"task_id": args.task, "reclaimed": 0, "balance": c.balance_of(signer.address)}
                print(
                    json.dumps({**out, "symbol": tok.symbol})
                    if args.json
                    else f"task {args.task}: nothing to reclaim (budget left 0 {tok.symbol})"
                )
                return 0
            receipt = c.reclaim_budget(signer, args.task)
            amount = sum(e.amount for e in c.receipt_events(receipt) if isinstance(e, chain.BudgetReclaimed))
            out = {"task_id": args.task, "reclaimed": amount, "balance": c.balance_of(signer.address)}
            text = (
                f"task {args.task}: {tok.fmt(amount)} credited to {signer.address} (balance "
                f"{tok.fmt(out['balance'])}; `concord task withdraw` moves it to the wallet)"
            )
    except (NodeConfigError, KeyLoadError, ChainError, AmountError, lifecycle.LifecycleError) as e:
        print(f"error: {explain(e)}", file=sys.stderr)
        return 1
    print(json.dumps({**out, "symbol": tok.symbol}) if args.json else text)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """`concord task publish TASK.toml [--budget TOKENS] [--json]`, `concord task show|top-up|close|reclaim
    --task N`, `concord task withdraw` (connection and key flags as for nodes, --config included)."""
    from concord.client.runtime import lifecycle, parsers
    from concord.client.runtime.config import NodeConfigError, node_config, parse_layered
    from concord.client.runtime.connect import connect_chain, open_node
    from concord.client.runtime.display import setup_logging
    from concord.client.runtime.errors import explain

    p = parsers.task_parser()
    args = parse_layered(p, argv)
    setup_logging(args.json_logs, logging.WARNING)
    if args.action in ("close", "reclaim", "show", "top-up", "withdraw"):
        return _task_action(args)
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
        print(f"error: {explain(e)}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result.to_json()))
    else:
        print(
            f"task {result.task_id} created: spec {result.spec_digest}, model 0 {result.initial_model_digest}, "
            f"budget {lifecycle.token_info(node.client).fmt(result.budget)}, block {result.block}"
        )
    return 0

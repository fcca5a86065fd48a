"""`concord status [TASK]`: what the chain says about a task, plus local validators' rejection evidence.

Everything comes from views and events of the Concord contract: rounds and phases
(`roundInfo`), submissions (Submitted events) with their verdicts (SubmissionRejected /
SubmissionRewarded / SubmissionUndecided, "void" for a void round, "pending" before finalize), slashes, bounties,
fees, the joined nodes' stakes and credited balances, the current model digest. Given
validator state dirs (default: every `.concord/validator-*`), each rejected submission
also lists the evidence digests those validators published (`concord.validator.store`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypedDict

from concord.client import chain
from concord.client.chain import ChainClient, Phase
from concord.client.digest import Digest
from concord.client.runtime import parsers, paths
from concord.client.runtime.config import (
    NodeConfigError,
    checked_rpc_url,
    load_deployment,
    load_devnet_json,
    parse_layered,
    setting_name,
)
from concord.client.runtime.connect import deployment_id
from concord.client.runtime.display import setup_logging
from concord.client.runtime.errors import explain, quiet_retries
from concord.client.runtime.index import ChainIndex
from concord.client.runtime.task import UnknownTask
from concord.client.units import format_amount

VERDICT_ACCEPTED, VERDICT_REJECTED, VERDICT_VOID, VERDICT_PENDING = "accepted", "rejected", "void", "pending"
VERDICT_UNDECIDED = "undecided"

log = logging.getLogger(__name__)


class Evidence(TypedDict):
    """One local validator's rejection of a submission, as `concord status` lists it."""

    state_dir: str
    failed_check: str
    evidence: str | None  # the evidence digest ("0x" + 64 hex), None when the validator published none


def _hex(b: bytes) -> str:
    """A digest (bytes32) in its one text form: "0x" + 64 lowercase hex."""
    return str(Digest.parse(b))


class Submission(TypedDict):
    """What the chain says of one submission, that a local verdict must match to be shown beside it."""

    trainer: str
    bundle_digest: str  # "0x" + 64 hex


_warned: set[str] = set()  # what was ignored already: the dashboard rebuilds per block, a warning is said once


def _ignore(message: str, *args: object) -> None:
    text = message % args
    if text not in _warned:
        _warned.add(text)
        log.warning("%s", text)


def bound_validator_dirs(validator_dirs: Sequence[Path], ident: paths.DeploymentId) -> list[Path]:
    """The validator state dirs that belong to deployment ``ident`` (their marker says so); every other one
    is ignored with a warning (another chain, an earlier devnet at the same address, no marker)."""
    out = []
    for d in validator_dirs:
        theirs = paths.read_deployment_marker(d)
        if theirs is None:
            _ignore("ignoring validator state %s: no %s names its deployment", d, paths.DEPLOYMENT_MARKER)
        elif not theirs.same(ident):
            _ignore("ignoring validator state %s: it is for %s, not %s", d, theirs.describe(), ident.describe())
        else:
            out.append(Path(d))
    return out


def evidence_index(
    validator_dirs: Sequence[Path],
    task_id: int,
    ident: paths.DeploymentId,
    submissions: Mapping[tuple[int, int], Submission],
) -> dict[tuple[int, int], list[Evidence]]:
    """(round, index) -> [{validator dir, check, evidence digest}] from local validator state dirs.

    Reads the validator's verdict files as documents (<state>/task-<id>/verdicts/r*-i*.json, written
    by validator/node.py) rather than importing the validator: `client` never imports `validator`. A verdict
    is shown only when it is bound to this submission: its state dir belongs to this deployment (chain id,
    Concord, deployment block), the file is the task's, and its round, index, trainer and bundle digest are
    those of a submission on chain; anything else is ignored with a warning."""
    out: dict[tuple[int, int], list[Evidence]] = defaultdict(list)
    for d in bound_validator_dirs(validator_dirs, ident):
        for path in sorted((d / f"task-{task_id}" / "verdicts").glob("r*-i*.json")):
            try:
                v = json.loads(path.read_text())
                key = (int(v["round"]), int(v["index"]))
                sub = submissions.get(key)
                if sub is None:
                    raise ValueError(f"no submission {key[1]} in round {key[0]} of task {task_id} on chain")
                if str(v["trainer"]).lower() != sub["trainer"].lower():
                    raise ValueError(f"trainer {v['trainer']}, the chain says {sub['trainer']}")
                digest = str(Digest.parse(v["bundle_digest"], "verdict.bundle_digest"))
                if digest != sub["bundle_digest"]:
                    raise ValueError(f"bundle digest {digest}, the chain says {sub['bundle_digest']}")
                if v["accepted"]:
                    continue
                evidence = v.get("evidence_digest")
                entry: Evidence = {
                    "state_dir": str(d),
                    "failed_check": str(v["failed_check"]),
                    "evidence": str(Digest.parse(evidence, "verdict.evidence_digest")) if evidence else None,
                }
            except (OSError, ValueError, KeyError, TypeError) as e:
                _ignore("ignoring verdict %s: not bound to a submission of this task: %s", path, e)
                continue
            out[key].append(entry)
    return out


def _round_money() -> dict[str, Any]:
    """A round's slashes, bounties, fees and returned budget before any event adds to them."""
    return {"slashes": [], "bounties": [], "fees": [], "returned": 0}


def task_status(
    client: ChainClient,
    task_id: int,
    validator_dirs: Sequence[Path] = (),
    index: ChainIndex | None = None,
    ident: paths.DeploymentId | None = None,
) -> dict[str, Any]:
    """One task as a JSON-ready document (numbers in token base units, digests 0x-hex). Events come from
    ``index`` (refreshed here: only the blocks since its last refresh are fetched), else a fresh one."""
    c = client.concord
    if index is None:
        index = ChainIndex(client)
    index.refresh()
    params, state = c.task_params(task_id), c.task_state(task_id)
    events = index.of_task(task_id)
    on_chain: dict[tuple[int, int], Submission] = {
        (e.round, e.index): {"trainer": e.trainer, "bundle_digest": _hex(e.bundle_digest)}
        for e in events
        if isinstance(e, chain.Submitted)
    }
    if validator_dirs and ident is None:
        ident = deployment_id(client)
    evidence = evidence_index(validator_dirs, task_id, ident, on_chain) if ident is not None else {}
    verdict: dict[tuple[int, int], dict[str, Any]] = {}
    subs: dict[int, list[dict[str, Any]]] = defaultdict(list)
    per_round: dict[int, dict[str, Any]] = defaultdict(_round_money)
    committed: dict[int, list[str]] = defaultdict(list)
    revealed: dict[int, list[dict[str, Any]]] = defaultdict(list)
    members: dict[str, str] = {}
    settled: dict[int, chain.RoundFinalized] = {}
    for e in events:
        if isinstance(e, chain.Submitted):
            subs[e.round].append(
                {
                    "index": e.index,
                    "trainer": e.trainer,
                    "base_round": e.base_round,
                    "bundle_digest": _hex(e.bundle_digest),
                    "work_units": e.work_units,
                }
            )
        elif isinstance(e, chain.SubmissionRejected):
            verdict[(e.round, e.index)] = {"verdict": VERDICT_REJECTED, "slashed": e.slashed, "bounty": e.bounty}
            per_round[e.round]["slashes"].append({"node": e.trainer, "amount": e.slashed, "why": "rejected"})
        elif isinstance(e, chain.SubmissionRewarded):
            verdict[(e.round, e.index)] = {"verdict": VERDICT_ACCEPTED, "reward": e.reward}
        elif isinstance(e, chain.SubmissionUndecided):  # rejected by exactly half: neither paid nor slashed
            verdict[(e.round, e.index)] = {"verdict": VERDICT_UNDECIDED, "rejects": e.rejects}
        elif isinstance(e, chain.BountyPaid):
            per_round[e.round]["bounties"].append({"validator": e.validator, "amount": e.amount})
        elif isinstance(e, chain.ValidatorPaid):
            per_round[e.round]["fees"].append({"validator": e.validator, "amount": e.fee})
        elif isinstance(e, chain.ValidatorSlashed):
            per_round[e.round]["slashes"].append({"node": e.validator, "amount": e.amount, "why": "no reveal"})
        elif isinstance(e, chain.RoundFinalized):
            per_round[e.round]["returned"] = e.returned
            settled[e.round] = e
        elif isinstance(e, chain.Committed):
            committed[e.round].append(e.validator)
        elif isinstance(e, chain.Revealed):
            revealed[e.round].append(
                {
                    "validator": e.validator,
                    "next_model": _hex(e.next_model_digest),
                    "rejected": chain.rejected_indexes(e.reject_words, len(subs[e.round])),
                }
            )
        elif isinstance(e, chain.Joined):
            members[e.node] = e.role.name.lower()
    rounds = []
    for r in range(c.current_round(task_id) + 1):
        # a settled round's phase and next model are in its RoundFinalized event (the same values
        # roundInfo returns): views only for the live rounds, so a refresh costs no call per old round
        fin = settled.get(r) if r < state.finalized_rounds else None
        if fin is not None:
            phase = Phase.VOID if fin.is_void else Phase.FINALIZED
            next_model = fin.next_model_digest
        else:
            info = c.round_info(task_id, r)
            phase, next_model = info.phase, info.next_model_digest
        entries = []
        for s in sorted(subs.get(r, []), key=lambda s: s["index"]):
            v = verdict.get((r, s["index"]))
            if v is None:
                v = {"verdict": VERDICT_VOID if phase == Phase.VOID else VERDICT_PENDING}
            ev = evidence.get((r, s["index"]), [])
            entries.append({**s, **v, **({"evidence": ev} if ev else {})})
        rounds.append(
            {
                # settled rounds' live slots are reused (roundInfo keeps only phase and model): counts from events
                "round": r,
                "phase": phase.name.lower(),
                "submissions": entries,
                "commits": len(committed[r]),
                "reveals": len(revealed[r]),
                "votes": revealed[r],
                "next_model": _hex(next_model) if any(next_model) else None,
                **per_round.get(r, _round_money()),
            }
        )
    latest = c.latest_model(task_id)
    nodes_out = []
    for addr, role in sorted(members.items()):
        node = c.node_info(addr)
        m = c.member_info(task_id, addr)
        nodes_out.append(
            {"address": addr, "role": role, "joined": m.joined, "stake": node.stake, "balance": c.balance_of(addr)}
        )
    return {
        "task_id": task_id,
        "initiator": state.initiator,
        "budget": state.budget,
        "closed": state.closed,
        "escrow": dataclasses.asdict(c.task_escrow(task_id)),
        "head_round": c.current_round(task_id),
        "finalized_rounds": state.finalized_rounds,
        "model": {"index": latest.model, "digest": _hex(latest.digest)},
        "params": {
            "trainer_reward_per_round": params.trainer_reward_per_round,
            "validator_fee_per_round": params.validator_fee_per_round,
            "slash_amount": params.slash_amount,
            "bounty_bps": params.bounty_bps,
            "max_rounds": params.max_rounds,
            "async_level": params.async_level,
            "min_validators": params.min_validators,
            "max_work_units": params.max_work_units,
            "spec_digest": _hex(params.spec_digest),
        },
        "rounds": rounds,
        "nodes": nodes_out,
    }


def status(
    client: ChainClient,
    task_ids: Sequence[int],
    validator_dirs: Sequence[Path] = (),
    index: ChainIndex | None = None,
    ident: paths.DeploymentId | None = None,
) -> dict[str, Any]:
    """Every task of ``task_ids`` from one event index (one incremental log fetch for them all); local
    verdicts only from ``validator_dirs`` of deployment ``ident`` (read from the chain when None)."""
    index = ChainIndex(client) if index is None else index
    if validator_dirs and ident is None:
        ident = deployment_id(client)
    totals = client.concord.totals()
    return {
        "chain_id": client.deployment.chain_id,
        "concord": client.deployment.concord,
        "token_decimals": client.token.decimals(),
        "token_symbol": client.token.symbol(),
        "totals": {
            "escrow": totals.escrow,
            "staked": totals.staked,
            "credited": totals.credited,
            "token_balance": client.token.balance_of(client.concord.address),
        },
        "tasks": [task_status(client, t, validator_dirs, index, ident) for t in task_ids],
    }


def _short(h: str | None) -> str:
    return "-" if not h else h[:10] + ".." + h[-4:]


def print_tables(doc: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console() if sys.stdout.isatty() else Console(width=160)  # pipes get whole rows

    def tok(x: int | str) -> str:  # whole tokens with the symbol, exact (client.units)
        return x if isinstance(x, str) else format_amount(x, doc["token_decimals"], doc["token_symbol"])

    t = doc["totals"]
    ok = t["token_balance"] == t["escrow"] + t["staked"] + t["credited"]
    console.print(
        f"chain {doc['chain_id']}  concord {doc['concord']}  escrow {tok(t['escrow'])}  "
        f"staked {tok(t['staked'])}  credited {tok(t['credited'])}  "
        f"conservation {'ok' if ok else 'BROKEN'}"
    )
    for task in doc["tasks"]:
        console.print(
            f"\n[bold]task {task['task_id']}[/]  rounds settled {task['finalized_rounds']}  "
            f"head {task['head_round']}  model {task['model']['index']} {_short(task['model']['digest'])}  "
            f"budget {tok(task['budget'])}"
        )
        rt = Table(title="rounds")
        for col in ("round", "phase", "#", "index", "trainer", "verdict", "reward/slash", "evidence", "next model"):
            rt.add_column(col)
        for r in task["rounds"]:
            if not r["submissions"]:
                rt.add_row(str(r["round"]), r["phase"], "0", "", "", "", "", "", _short(r["next_model"]))
            for s in r["submissions"]:
                amount = tok(s["reward"]) if "reward" in s else f"-{tok(s['slashed'])}" if "slashed" in s else ""
                ev = ", ".join(_short(e["evidence"]) for e in s.get("evidence", []))
                rt.add_row(
                    str(r["round"]),
                    r["phase"],
                    str(len(r["submissions"])),
                    str(s["index"]),
                    _short(s["trainer"]),
                    s["verdict"],
                    str(amount),
                    ev,
                    _short(r["next_model"]),
                )
        console.print(rt)
        nt = Table(title="nodes")
        for col in ("address", "role", "joined", "stake", "balance"):
            nt.add_column(col)
        for n in task["nodes"]:
            nt.add_row(n["address"], n["role"], str(n["joined"]), tok(n["stake"]), tok(n["balance"]))
        console.print(nt)


def default_validator_dirs(ident: paths.DeploymentId) -> list[Path]:
    """The validators' default state dirs of this deployment (<home>/nodes/<deployment key>/validator-*)."""
    return sorted(p for p in (paths.nodes_dir() / ident.key()).glob("validator-*") if p.is_dir())


def main(argv: Sequence[str] | None = None) -> int:
    """`concord status [TASK] [--devnet FILE | --rpc-url URL --deployment FILE] [--validator-state DIR]... [--json]`."""
    p = parsers.status_parser()
    args = parse_layered(p, argv)  # $ETH_RPC_URL, $CONCORD_DEPLOYMENT and the TOML as for nodes (docs/OPERATORS.md)
    setup_logging(False, logging.WARNING)
    quiet_retries()  # an unreachable RPC: the one error line below, not a warning per retry
    try:
        rpc_url, deployment = _connection(args)
        client = chain.connect(rpc_url, deployment)
        count = client.concord.task_count()
        if args.task is not None and not 1 <= args.task <= count:
            raise UnknownTask(args.task, count)
        tasks = [args.task] if args.task is not None else list(range(1, count + 1))
        dirs = args.validator_state
        if dirs is None:
            dirs = default_validator_dirs(deployment_id(client))
        doc = status(client, tasks, dirs)
    except (NodeConfigError, UnknownTask, chain.ChainError) as e:
        print(f"error: {explain(e)}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(doc))
    else:
        print_tables(doc)
    return 0


def _connection(args: argparse.Namespace) -> tuple[str, chain.Deployment]:
    if args.rpc_url is not None:
        if args.deployment is None:
            raise NodeConfigError("--deployment", f"needed with {setting_name(args, 'rpc_url', '--rpc-url')}")
        deployment = load_deployment(args.deployment, setting_name(args, "deployment", "--deployment"))
        return checked_rpc_url(args), deployment
    net = load_devnet_json(args.devnet or paths.default_network_file())
    return net.rpc_url, chain.Deployment.from_json(net.deployment)


if __name__ == "__main__":
    sys.exit(main())

"""The command lines of every node command, built without the heavy libraries.

    trainer_parser()    `concord trainer run | leave | unbond | withdraw`
    validator_parser()  `concord validator run | leave | unbond | withdraw`
    task_parser()       `concord task publish | show | top-up | close | reclaim | withdraw`
    model_parser()      `concord model export | verify`
    status_parser()     `concord status`
    dashboard_parser()  `concord dashboard`
    doctor_parser()     `concord doctor`

Each command's module parses with these, and `concord SUB --help` builds them alone (client/cli.py,
HELP_PARSERS): this module and what it imports (argparse, client.units, client.runtime.config) load no
torch, web3 or IPFS client, so every `--help` answers at once.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from concord.client.runtime import paths
from concord.client.runtime.config import (
    CONFIG_FLAG,
    PASSWORD_ENV,
    PRIVATE_KEY_ENV,
    add_device_arg,
    add_node_args,
    layered,
    non_negative_int,
)
from concord.client.units import amount_arg

METRICS_HOST = "127.0.0.1"  # --metrics-host default (client.runtime.metrics serves there)
LIFECYCLE = ("unbond", "leave", "withdraw")  # = client.runtime.lifecycle.COMMANDS

DASHBOARD_HOST = "127.0.0.1"
DASHBOARD_PORT = 8750
DASHBOARD_POLL_S = 1.0


# ----------------------------------------------------------------------------- argparse types


def tcp_port_or_any(text: str) -> int:
    """A TCP port, 0 for any free one."""
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a TCP port, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be in 0..65535 (0: any free port), got {value}")
    return value


def poll_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not 0.05 <= value <= 3600:  # NaN fails too
        raise argparse.ArgumentTypeError(f"must be in [0.05, 3600] seconds, got {text}")
    return value


def task_id(text: str) -> int:
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a task id, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"task ids start at 1, got {value}")
    return value


# ----------------------------------------------------------------------------- pieces


def add_metrics_args(p: argparse.ArgumentParser) -> None:
    """--metrics-port / --metrics-host on a node's `run` command."""
    layered(p, "metrics_port", "metrics_host")
    p.add_argument(
        "--metrics-port",
        type=tcp_port_or_any,
        default=None,
        help="serve Prometheus metrics on this port (default: none)",
    )
    p.add_argument("--metrics-host", default=METRICS_HOST, help=f"address for --metrics-port (default {METRICS_HOST})")


def add_lifecycle_commands(sub: Any, role: str) -> None:
    """`unbond`, `leave`, `withdraw` under `concord ROLE` (``sub``: the role parser's subparsers)."""
    who = f"this {role}"
    leave_p = sub.add_parser("leave", help=f"leave a task ({who} must have no unfinalized work in it)")
    add_node_args(leave_p, with_task=True)
    unbond_p = sub.add_parser("unbond", help=f"unbond {who}'s stake after the delay (leave every task first)")
    unbond_p.add_argument(
        "--amount", type=amount_arg("--amount"), default=None, help="tokens to unbond (default: all the free stake)"
    )
    unbond_p.add_argument("--complete", action="store_true", help="credit the unbonded stake once the delay passed")
    add_node_args(unbond_p, with_task=False)
    withdraw_p = sub.add_parser("withdraw", help=f"move {who}'s credited balance to its wallet")
    withdraw_p.add_argument(
        "--amount", type=amount_arg("--amount"), default=None, help="tokens to withdraw (default: the whole balance)"
    )
    add_node_args(withdraw_p, with_task=False)
    for q in (leave_p, unbond_p, withdraw_p):
        q.add_argument("--json", action="store_true", help="print the result as one JSON object")


# ----------------------------------------------------------------------------- nodes


def add_trainer_run_args(p: argparse.ArgumentParser) -> None:
    """The flags of `concord trainer run` (the lab's entry points add theirs to the same parser)."""
    add_node_args(p)
    p.add_argument("--rounds", type=int, default=None, help="stop after N submissions")
    p.add_argument(
        "--stake",
        type=amount_arg("--stake"),
        default=None,
        help="stake to register with, in tokens (or 1000base): at least the task's minimum, which is the default",
    )
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    layered(p, "rounds", "stake", "threads")
    add_device_arg(p)
    add_metrics_args(p)


def trainer_parser() -> argparse.ArgumentParser:
    """The parser of `concord trainer` (run + the lifecycle commands)."""
    p = argparse.ArgumentParser(prog="concord trainer", description="run a trainer node, or leave, unbond, withdraw")
    sub = p.add_subparsers(dest="action", required=True)
    add_trainer_run_args(sub.add_parser("run", help="register, join and train on a task's rounds"))
    add_lifecycle_commands(sub, "trainer")
    return p


def add_validator_run_args(p: argparse.ArgumentParser) -> None:
    """The flags of `concord validator run` (the lab's entry points add theirs to the same parser)."""
    add_node_args(p)
    p.add_argument("--rounds", type=int, default=None, help="exit once the task has settled N rounds")
    p.add_argument("--withdraw", action="store_true", help="withdraw the credited balance before exiting")
    p.add_argument(
        "--stake",
        type=amount_arg("--stake"),
        default=None,
        help="stake to register with, in tokens (or 1000base): at least the task's minValidatorStake, the default",
    )
    layered(p, "rounds", "withdraw", "stake")
    add_device_arg(p)
    add_metrics_args(p)


def validator_parser() -> argparse.ArgumentParser:
    """The parser of `concord validator` (run + the lifecycle commands)."""
    p = argparse.ArgumentParser(prog="concord validator", description="verify, vote on and aggregate a task's rounds")
    sub = p.add_subparsers(dest="action", required=True)
    run = sub.add_parser("run", help="validate a task's rounds (registers, stakes and joins if needed)")
    add_validator_run_args(run)
    add_lifecycle_commands(sub, "validator")
    return p


# ----------------------------------------------------------------------------- tasks, models


def task_parser() -> argparse.ArgumentParser:
    """`concord task publish TASK.toml [--budget TOKENS] [--json]`, `show|top-up|close|reclaim --task N`, `withdraw`."""
    p = argparse.ArgumentParser(prog="concord task", description="publish, show, top up, close and reclaim an RL task")
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
    show = sub.add_parser("show", help="a task's terms, budget, rounds and latest model (read-only, no key)")
    top_up = sub.add_parser("top-up", help="add tokens to a task's budget (anyone may)")
    top_up.add_argument("--amount", type=amount_arg("--amount"), required=True, help="tokens to add (or 1000base)")
    withdraw = sub.add_parser("withdraw", help="move this key's credited balance (a reclaimed budget) to its wallet")
    withdraw.add_argument(
        "--amount", type=amount_arg("--amount"), default=None, help="tokens to withdraw (default: all)"
    )
    for q in (close, reclaim, show, top_up, withdraw):
        q.add_argument("--json", action="store_true", help="print the result as one JSON object")
        add_node_args(q, with_task=q is not withdraw)
    return p


def model_parser() -> argparse.ArgumentParser:
    """`concord model export ROUND DIR --task N [connection flags]`, `concord model verify DIR`."""
    p = argparse.ArgumentParser(prog="concord model", description="export a task's model, or verify an export")
    sub = p.add_subparsers(dest="action", required=True)
    ex = sub.add_parser("export", help="write model ROUND of a task as a loadable directory and check its digest")
    ex.add_argument("round", type=non_negative_int, metavar="ROUND", help="model number: 0 initial, r+1 after round r")
    ex.add_argument("dir", type=Path, metavar="DIR", help="output directory (must not exist, or be empty)")
    ex.add_argument("--json", action="store_true", help="print the result as one JSON object")
    add_node_args(ex, with_task=True)
    ver = sub.add_parser("verify", help="re-digest an exported directory (no chain, no IPFS)")
    ver.add_argument("dir", type=Path, metavar="DIR")
    return p


# ----------------------------------------------------------------------------- watching


def status_parser() -> argparse.ArgumentParser:
    """`concord status [TASK] [--devnet FILE | --rpc-url URL --deployment FILE] [--validator-state DIR]... [--json]`."""
    p = argparse.ArgumentParser(
        prog="concord status", description="what the chain says about a task, plus local validators' evidence"
    )
    p.add_argument("task", type=int, nargs="?", default=None, help="task id (default: every task)")
    p.add_argument("--devnet", type=Path, default=None, help=f"devnet JSON (default {paths.default_network_file()})")
    p.add_argument("--rpc-url", default=None)
    p.add_argument("--deployment", type=Path, default=None)
    p.add_argument(
        "--validator-state",
        type=Path,
        action="append",
        default=None,
        help=f"a validator's --state-dir, for rejection evidence (default: every {paths.nodes_dir()}/*/validator-*)",
    )
    p.add_argument("--json", action="store_true", help="one JSON document on stdout")
    p.add_argument(CONFIG_FLAG, type=Path, default=None, metavar="NODE.toml", help="a node TOML (rpc_url, deployment)")
    layered(p, "devnet", "rpc_url", "deployment", "config")
    return p


def dashboard_parser() -> argparse.ArgumentParser:
    """`concord dashboard [--task ID] [--devnet FILE | --rpc-url URL --deployment FILE --ipfs-api ADDR] ...`."""
    p = argparse.ArgumentParser(
        prog="concord dashboard", description="serve the live page of a task and its JSON on a local port"
    )
    p.add_argument(
        "--task", type=task_id, default=None, help="one task id (default: every task, new ones as they come)"
    )
    p.add_argument("--devnet", type=Path, default=None, help=f"devnet JSON (default {paths.default_network_file()})")
    p.add_argument("--rpc-url", default=None, help="any EVM JSON-RPC endpoint (with --deployment)")
    p.add_argument("--deployment", type=Path, default=None, help="deployment JSON (with --rpc-url)")
    p.add_argument("--ipfs-api", default=None, help="Kubo RPC API for the spec, rewards and evidence")
    p.add_argument(
        "--host",
        default=DASHBOARD_HOST,
        help=f"address to serve on (default {DASHBOARD_HOST}); requests must name it (or localhost) as their Host",
    )
    p.add_argument(
        "--port", type=tcp_port_or_any, default=DASHBOARD_PORT, help=f"port (default {DASHBOARD_PORT}; 0: any free)"
    )
    p.add_argument(
        "--validator-state",
        type=Path,
        action="append",
        default=None,
        help=f"a validator's --state-dir, for rejection evidence (default: every {paths.nodes_dir()}/*/validator-*)",
    )
    p.add_argument(
        "--poll-interval",
        type=poll_seconds,
        default=DASHBOARD_POLL_S,
        help="seconds between new-block polls (default 1)",
    )
    return p


def doctor_parser() -> argparse.ArgumentParser:
    """`concord doctor [node flags | --config node.toml] [--json]`."""
    p = argparse.ArgumentParser(
        prog="concord doctor", description="can this machine run a node on this network? one line per check"
    )
    add_node_args(p, with_task=False)
    p.add_argument("--json", action="store_true", help="print the checks as one JSON object")
    return p


def deploy_parser() -> argparse.ArgumentParser:
    """`concord deploy` (client.deploy): env vars are the defaults, read when the parser is built."""
    p = argparse.ArgumentParser(
        prog="concord deploy", description="Deploy the protocol to any RPC URL and write the deployment JSON."
    )
    env = {k: v for k, v in os.environ.items() if v}  # the node commands' env vars (docs/OPERATORS.md)
    rpc_url = env.get("CONCORD_RPC_URL", env.get("ETH_RPC_URL"))
    keystore = env.get("CONCORD_KEYSTORE", env.get("ETH_KEYSTORE"))
    password_file = env.get("CONCORD_PASSWORD_FILE", env.get("ETH_PASSWORD"))
    p.add_argument("--rpc-url", required=rpc_url is None, default=rpc_url, help="[env: CONCORD_RPC_URL, ETH_RPC_URL]")
    p.add_argument(
        "--keystore",
        type=Path,
        default=keystore,
        help=f"eth-account keystore [env: CONCORD_KEYSTORE, ETH_KEYSTORE]; else ${PRIVATE_KEY_ENV}",
    )
    p.add_argument(
        "--password-file",
        type=Path,
        default=password_file,
        help=f"the keystore's password [env: CONCORD_PASSWORD_FILE, ETH_PASSWORD]; else ${PASSWORD_ENV}, a prompt",
    )
    p.add_argument("--out", type=Path, required=True, help="deployment JSON to write")
    p.add_argument("--token", default=None, help="existing ERC-20 to use (default: deploy a DevToken)")
    p.add_argument("--unbond-delay", type=int, default=None, help="seconds (default: a week)")
    return p

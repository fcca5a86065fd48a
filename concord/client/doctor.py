"""`concord doctor`: can this machine run a node on this network? One line per check, the fix on a red one.

    python      3.11 or newer
    torch       imports; its version and the device a node would use (CUDA when available)
    toploc      imports and builds a proof (its C++ extension is built against this torch)
    config      the node flags, env vars and --config TOML resolve (client.runtime.config)
    rpc         the RPC answers eth_chainId
    chain id    the RPC's chain is the deployment's
    deployment  there is code at the Concord and token addresses, and Concord's token() is that token
    ipfs        the IPFS API stores a block and serves it back
    key         the keystore is readable and its password decrypts it (or the env key / devnet account)

Exit 0 when every line is green, 1 otherwise. Reads only (the IPFS probe block is not pinned).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

MIN_PYTHON = (3, 11)
RPC_TIMEOUT = 5.0  # seconds per RPC attempt in the checks


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str  # what was found (green) or what is wrong (red)
    fix: str = ""  # red only: what to do


def check_python() -> Check:
    v = sys.version_info
    ok = (v.major, v.minor) >= MIN_PYTHON
    fix = "" if ok else f"use Python {MIN_PYTHON[0]}.{MIN_PYTHON[1]} or newer (make deps builds .venv with it)"
    return Check("python", ok, f"{v.major}.{v.minor}.{v.micro} ({sys.executable})", fix)


def check_torch() -> Check:
    try:
        import torch
    except ImportError as e:
        return Check("torch", False, f"does not import: {e}", "install the pinned torch (make deps)")
    if torch.cuda.is_available():
        device = f"cuda ({torch.cuda.get_device_name(0)}, {torch.cuda.device_count()} device(s))"
    else:
        device = "cpu (no CUDA device)"
    return Check("torch", True, f"{torch.__version__}, device {device}, {torch.get_num_threads()} threads")


def check_toploc() -> Check:
    fix = "rebuild toploc against this torch: pip install --no-binary toploc --no-build-isolation toploc==0.1.6"
    try:
        import toploc  # noqa: F401  (the import is the check: the wheel's extension must load with this torch)
        import torch

        from concord.client.engine.proofs import build_rollout_proofs
    except ImportError as e:
        return Check("toploc", False, f"does not import: {e}", fix)
    gen = torch.Generator().manual_seed(0)
    proofs = build_rollout_proofs(torch.randn(8, 16, generator=gen), torch.randn(8, 16, generator=gen))
    if not proofs or not all(proofs):
        return Check("toploc", False, "built an empty proof", fix)
    from importlib.metadata import version

    return Check("toploc", True, f"{version('toploc')}, a {len(proofs[0])}-byte proof built")


def _network_checks(args: argparse.Namespace) -> list[Check]:
    """config, rpc, chain id, deployment, ipfs, key: each needs the one before it (a red one skips the rest of
    its line of dependence, reported red as not checked)."""
    from eth_utils.address import to_checksum_address

    from concord.client import chain
    from concord.client.chain import ChainError, RetryPolicy, Rpc, RpcUnavailable
    from concord.client.chain.keys import KeyLoadError
    from concord.client.chain.rpc import root_cause
    from concord.client.content.store import Store, StoreError
    from concord.client.runtime.config import ANVIL_CHAIN_ID, NodeConfigError, node_config
    from concord.client.runtime.connect import load_account
    from concord.client.units import format_amount

    out: list[Check] = []
    try:
        cfg = node_config(args, "doctor")
    except NodeConfigError as e:
        skipped = "not checked (no configuration)"
        fix = f"fix {e.flag}" if not e.flag.startswith("--") else f"fix {e.flag} (or its env var / --config key)"
        return [Check("config", False, str(e), fix)] + [
            Check(n, False, skipped, "fix the configuration first")
            for n in ("rpc", "chain id", "deployment", "ipfs", "key")
        ]
    where = f"rpc {cfg.rpc_url}, ipfs {cfg.ipfs_api}" + (f", --config {args.config}" if args.config else "")
    out.append(Check("config", True, where))

    client = None  # bound once the chain id matches and the deployment answers
    actual: int | None = None
    try:
        actual = Rpc(cfg.rpc_url, timeout=RPC_TIMEOUT, retry=RetryPolicy(attempts=2)).chain_id()
        out.append(Check("rpc", True, f"{cfg.rpc_url} answers, chain {actual}"))
    except RpcUnavailable as e:
        why = f"{cfg.rpc_url} does not answer ({root_cause(e.last)})"
        out.append(Check("rpc", False, why, "start the node, or point --rpc-url / $ETH_RPC_URL at one"))
    except ChainError as e:
        out.append(Check("rpc", False, str(e), "point --rpc-url / $ETH_RPC_URL at an EVM JSON-RPC endpoint"))
    if actual is None:
        out.append(Check("chain id", False, "not checked (no RPC)", "fix the RPC first"))
        out.append(Check("deployment", False, "not checked (no RPC)", "fix the RPC first"))
    elif actual != cfg.deployment.chain_id:
        out.append(
            Check(
                "chain id",
                False,
                f"the deployment is for chain {cfg.deployment.chain_id}, the RPC is chain {actual}",
                "use the RPC URL of the deployment's chain, or that chain's deployment JSON (--deployment)",
            )
        )
        out.append(Check("deployment", False, "not checked (wrong chain)", "fix the chain id first"))
    else:
        out.append(Check("chain id", True, f"{actual} = the deployment's"))
        bound = chain.connect(cfg.rpc_url, cfg.deployment, check_chain=False, timeout=RPC_TIMEOUT)
        out.append(_deployment(bound, to_checksum_address))
        client = bound if out[-1].ok else None

    try:
        Store(cfg.ipfs_api, None, timeout=RPC_TIMEOUT, retries=1).probe()
        out.append(Check("ipfs", True, f"{cfg.ipfs_api} stores and serves a block"))
    except StoreError as e:
        out.append(
            Check("ipfs", False, str(e), "start the IPFS daemon, or point --ipfs-api / $CONCORD_IPFS_API at one")
        )

    try:
        account = load_account(cfg, actual if actual is not None else cfg.deployment.chain_id)
        source = (
            f"devnet account {cfg.devnet_account}"
            if cfg.devnet_account is not None
            else (f"keystore {cfg.keystore}" if cfg.keystore else "$CONCORD_PRIVATE_KEY")
        )
        detail = f"{account.address} ({source})"
        ok, fix = True, ""
        if client is not None:  # the deployment answers: show what this key holds there
            dec, sym = client.token.decimals(), client.token.symbol()
            info = client.concord.node_info(account.address)
            wallet = client.token.balance_of(account.address)
            eth = int(client.rpc.call("eth_getBalance", account.address, "latest"), 16)
            detail += (
                f", {format_amount(eth, 18, 'ETH')} for gas, wallet {format_amount(wallet, dec, sym)}, "
                f"{info.role.name.lower()} with stake {format_amount(info.stake, dec, sym)}"
            )
            missing = [
                what for what, none in (("no ETH for gas", eth == 0), (f"no {sym}", wallet + info.stake == 0)) if none
            ]
            if missing:
                ok = False
                detail += f": {' and '.join(missing)}"
                fix = (
                    f"concord devnet fund {account.address}"
                    if client.deployment.chain_id == ANVIL_CHAIN_ID
                    else f"send ETH (gas) and {sym} (stake) to {account.address}"
                )
        out.append(Check("key", ok, detail, fix))
    except (KeyLoadError, NodeConfigError) as e:
        out.append(Check("key", False, str(e), _key_fix(e)))
    return out


def _key_fix(e: Exception) -> str:
    from concord.client.chain.keys import BadKeystore, BadPasswordFile, MissingKey, MissingPassword

    if isinstance(e, BadKeystore):
        return "check the keystore file and its password (--password-file, $CONCORD_KEYSTORE_PASSWORD)"
    if isinstance(e, (MissingPassword, BadPasswordFile)):
        return "pass --password-file FILE or set $CONCORD_KEYSTORE_PASSWORD"
    if isinstance(e, MissingKey):
        return "create one: `concord keys new --out KEY.json`, then --keystore KEY.json (or $ETH_KEYSTORE)"
    return "fix the key flags"


def _deployment(client: Any, checksum: Callable[[str], str]) -> Check:
    from concord.client.chain import ChainError

    dep = client.deployment
    fix = "use the deployment JSON written when the contracts were deployed on this chain (--deployment / --devnet)"
    code = {
        name: client.rpc.call("eth_getCode", addr, "latest")
        for name, addr in (("Concord", dep.concord), ("token", dep.token))
    }
    empty = [
        f"{name} at {addr}"
        for (name, addr) in (("Concord", dep.concord), ("token", dep.token))
        if code[name] in ("0x", "")
    ]
    if empty:
        return Check("deployment", False, f"no contract code for {' and '.join(empty)}", fix)
    try:
        token = checksum(client.concord.token())
        symbol, tasks = client.token.symbol(), client.concord.task_count()
    except ChainError as e:
        return Check("deployment", False, f"Concord at {dep.concord} does not answer as Concord: {e}", fix)
    if token != checksum(dep.token):
        return Check("deployment", False, f"Concord's token is {token}, the deployment JSON says {dep.token}", fix)
    size = (len(code["Concord"]) - 2) // 2
    return Check(
        "deployment", True, f"Concord at {dep.concord} ({size} bytes of code, {tasks} task(s)), token {symbol}"
    )


def run_checks(args: argparse.Namespace) -> list[Check]:
    return [check_python(), check_torch(), check_toploc(), *_network_checks(args)]


def render(checks: Sequence[Check]) -> None:
    from rich.console import Console
    from rich.markup import escape

    console = Console(highlight=False, soft_wrap=True)
    width = max(len(c.name) for c in checks)
    for c in checks:
        mark = "[bold green]ok  [/]" if c.ok else "[bold red]FAIL[/]"
        fix = "" if c.ok or not c.fix else f" [red]-> fix: {escape(c.fix)}[/]"
        console.print(f"{mark} {c.name:<{width}}  {escape(c.detail)}{fix}")
    bad = sum(not c.ok for c in checks)
    console.print("[bold green]all green[/]" if not bad else f"[bold red]{bad} check(s) failed[/]")


def main(argv: Sequence[str] | None = None) -> int:
    """`concord doctor [node flags | --config node.toml] [--json]`."""
    from concord.client.runtime import parsers
    from concord.client.runtime.config import parse_layered
    from concord.client.runtime.display import setup_logging

    p = parsers.doctor_parser()
    args = parse_layered(p, argv)
    setup_logging(args.json_logs, logging.ERROR)  # retries and daemon chatter: the check lines say it
    checks = run_checks(args)
    ok = all(c.ok for c in checks)
    if args.json:
        print(json.dumps({"ok": ok, "checks": [asdict(c) for c in checks]}))
    else:
        render(checks)
    return 0 if ok else 1

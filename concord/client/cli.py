"""`concord`: one command line for every role.

Each subcommand parses its own flags and calls a library function; scripts/ calls the
same functions, so no logic lives twice. Heavy modules (torch, web3) are imported only
by the subcommand that needs them, which keeps `concord --help` instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable

# subcommand -> (module, function taking the remaining argv, one-line help)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "devnet": ("scripts.devnet", "main", "start/stop a local devnet: Anvil + contracts, IPFS peers (--netns)"),
    "deploy": ("concord.client.deploy", "main", "deploy the contracts to any RPC URL (key from a keystore)"),
    "task": ("concord.client.initiator", "main", "publish, show, top up, close and reclaim a task (initiator)"),
    "model": ("concord.client.model_export", "main", "export a task's model at a round as a Hugging Face directory"),
    "doctor": (
        "concord.client.doctor",
        "main",
        "check Python, torch, toploc, the RPC, IPFS, the key and the deployment",
    ),
    "trainer": ("concord.client.trainer", "main", "run a trainer node, or leave, unbond, withdraw"),
    "validator": ("concord.validator.node", "main", "run a validator node, or leave, unbond, withdraw"),
    "status": ("concord.client.status", "main", "rounds, submissions with verdicts, slashes, balances of a task"),
    "dashboard": (
        "concord.client.dashboard.server",
        "main",
        "a live web page of a task: rounds, rewards, verdicts, evidence",
    ),
    "demo": (
        "scripts.demo",
        "main",
        "devnet up, 4 trainers (1 cheating) + 2 validators for N rounds, settlement, reward curve",
    ),
    "keys": (
        "concord.client.runtime.keys_cli",
        "main",
        "create an encrypted keystore or show its address (password from the environment)",
    ),
}
# subcommand -> (module, function) building its parser without the command's heavy imports (torch, web3):
# `concord SUB ... --help` parses with it alone, so help answers at once whatever the command loads to run.
HELP_PARSERS: dict[str, tuple[str, str]] = {
    "devnet": ("scripts.devnet", "parser"),
    "deploy": ("concord.client.runtime.parsers", "deploy_parser"),
    "task": ("concord.client.runtime.parsers", "task_parser"),
    "model": ("concord.client.runtime.parsers", "model_parser"),
    "doctor": ("concord.client.runtime.parsers", "doctor_parser"),
    "trainer": ("concord.client.runtime.parsers", "trainer_parser"),
    "validator": ("concord.client.runtime.parsers", "validator_parser"),
    "status": ("concord.client.runtime.parsers", "status_parser"),
    "dashboard": ("concord.client.runtime.parsers", "dashboard_parser"),
    "keys": ("concord.client.runtime.keys_cli", "parser"),
    "demo": ("scripts.demo_args", "parser"),
}
HELP_FLAGS = ("-h", "--help")
LIFECYCLE = ("leave", "unbond", "withdraw")  # = client.runtime.lifecycle.COMMANDS
BENCHES: dict[str, tuple[str, str, str]] = {
    "gas": ("scripts.bench.gas", "main", "gas per protocol call at 1, 16 and 256 submissions"),
    "learn": ("scripts.bench.learn", "main", "reward curves: centralized GRPO vs K trainers + DiLoCo"),
    "proofs": ("scripts.bench.proofs", "main", "TOPLOC proof cost, verification cost, proof size"),
    "ipfs": ("scripts.bench.ipfs", "main", "put and get of a 50 MB file through the content store"),
    "round": (
        "scripts.bench.round",
        "main",
        "devnet rounds, 4 trainers + 2 validators: wall-time split, reward vs simulation",
    ),
    "lm": (
        "scripts.bench.lm",
        "main",
        "GRPO + LoRA on SmolLM2-135M, K trainers + validator + DiLoCo: held-out accuracy, costs",
    ),
    "lm_sampled": (
        "scripts.bench.lm_sampled",
        "main",
        "sampled checks on the LM: per-cheat detection predicted vs measured, validator cost, EV",
    ),
    "attacks": (
        "scripts.bench.attacks",
        "main",
        "every trainer and validator cheat on a real devnet: detected, slashed, paid",
    ),
    "verify": (
        "scripts.bench.verify",
        "main",
        "sampled vs full verification: validator CPU per round, detection per cheat, honest rejects",
    ),
    "network": (
        "scripts.bench.network",
        "main",
        "model distribution over rate-limited namespaces: 3 validators + N trainers, one Helia each",
    ),
}


LOG_LEVEL_ENV = "CONCORD_LOG_LEVEL"  # = client.runtime.display.LOG_LEVEL_ENV (not imported here: stdlib only)
LOG_LEVELS = ("debug", "info", "warning", "error")  # = client.runtime.display.LOG_LEVELS

LAB_ENV = "CONCORD_LAB"  # a repository checkout whose scripts/ holds the lab (default: next to this package)


class LabNotFound(RuntimeError):
    def __init__(self, module: str, looked: list[str]) -> None:
        super().__init__(
            f"`{module}` is part of the lab (demo, benchmarks, devnet), which runs from a repository "
            f"checkout; none found at {', '.join(looked)}: set ${LAB_ENV} to a checkout"
        )


def _find_lab(module: str) -> None:
    """Put the checkout holding scripts/ on sys.path for a lab command. The library never imports the
    lab; only this dispatcher loads it, by name, and only for the lab's own subcommands."""
    import os
    from importlib.util import find_spec
    from pathlib import Path

    if find_spec("scripts") is not None:
        return
    roots = [os.environ[LAB_ENV]] if os.environ.get(LAB_ENV) else []
    roots.append(str(Path(__file__).resolve().parents[2]))  # an editable install: the checkout (concord/client/..)
    for root in roots:
        if (Path(root) / "scripts" / "__init__.py").is_file():
            sys.path.insert(0, root)
            return
    raise LabNotFound(module, roots)


def wants_help(argv: list[str]) -> bool:
    """True when argparse would print help for ``argv`` (a -h/--help before any `--`)."""
    words = argv[: argv.index("--")] if "--" in argv else argv
    return any(w in HELP_FLAGS for w in words)


def _help(target: tuple[str, str], argv: list[str]) -> int:
    """Parse ``argv`` with the light parser ``target`` names: argparse prints the help and exits."""
    module, function = target
    if module.startswith("scripts."):
        try:
            _find_lab(module)
        except LabNotFound as e:
            print(f"concord: {e}", file=sys.stderr)
            return 2
    build: Callable[[], argparse.ArgumentParser] = getattr(importlib.import_module(module), function)
    try:
        build().parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0) if not isinstance(e.code, str) else 2
    return 0


def _call(target: tuple[str, str, str], argv: list[str]) -> int:
    """Run one subcommand; SIGTERM and SIGHUP stop it as Ctrl-C does, and whatever processes it
    started (anvil, IPFS peers, nodes) are stopped before `concord` exits, however it ends
    (`concord devnet up` hands its complete devnet over to `concord devnet down`)."""
    from concord.client.runtime import procs  # stdlib only: keeps `concord --help` instant

    module, function, _ = target
    if module.startswith("scripts."):
        try:
            _find_lab(module)
        except LabNotFound as e:
            print(f"concord: {e}", file=sys.stderr)
            return 2
    try:
        with procs.no_orphans():
            entry: Callable[[list[str]], int | None] = getattr(importlib.import_module(module), function)
            return int(entry(argv) or 0)
    except KeyboardInterrupt as e:  # Ctrl-C, or procs.Terminated (SIGTERM/SIGHUP)
        print(f"concord: interrupted ({str(e) or 'SIGINT'}); everything it started is stopped", file=sys.stderr)
        return 130


def _version() -> str:
    """The installed distribution's version (stdlib only, so `--version` stays instant)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("concord-rl")
    except PackageNotFoundError:
        return "unknown (not installed)"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="concord", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"concord {_version()}")
    parser.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        default=None,
        help="log level of every command (sets $CONCORD_LOG_LEVEL, which node processes inherit)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (_, _, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    bench = sub.add_parser("bench", help="benchmarks: each prints a table and ends with one JSON line")
    bench.add_argument("name", choices=sorted(BENCHES), help="; ".join(f"{k}: {v[2]}" for k, v in BENCHES.items()))

    import os

    def check_log_level() -> None:  # a typo in the env var would otherwise leave the level as it was
        chosen = os.environ.get(LOG_LEVEL_ENV, "")
        if chosen and chosen.lower() not in LOG_LEVELS:
            parser.error(f"${LOG_LEVEL_ENV}: unknown log level {chosen!r} (expected one of {', '.join(LOG_LEVELS)})")

    # `concord bench NAME --help` must reach the bench's own parser, not this one.
    if len(argv) >= 2 and argv[0] == "bench" and argv[1] in BENCHES:
        check_log_level()
        return _call(BENCHES[argv[1]], argv[2:])
    args, rest = parser.parse_known_args(argv)
    if args.log_level is not None:
        os.environ[LOG_LEVEL_ENV] = args.log_level  # the flag wins over the env var
    check_log_level()
    if args.command == "bench":
        return _call(BENCHES[args.name], rest)
    if args.command in HELP_PARSERS and wants_help(rest):
        return _help(HELP_PARSERS[args.command], rest)
    if args.command in ("trainer", "validator") and rest and rest[0] in LIFECYCLE:
        # leave / unbond / withdraw need the chain SDK only: not the node's module (torch, the engine)
        return _call(("concord.client.runtime.lifecycle", f"{args.command}_main", ""), rest)
    return _call(COMMANDS[args.command], rest)


if __name__ == "__main__":
    sys.exit(main())

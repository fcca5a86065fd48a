"""`concord`: one command line for every role.

Each subcommand parses its own flags and calls a library function; scripts/ calls the
same functions, so no logic lives twice. Heavy modules (torch, web3) are imported only
by the subcommand that needs them, which keeps `concord --help` instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Callable

# subcommand -> (module, function, one-line help). The function takes the remaining argv.
BENCHES: dict[str, tuple[str, str, str]] = {
    "gas": ("client.bench_gas", "main", "gas per protocol call at 1, 16 and 256 submissions"),
    "learn": ("client.bench_learn", "main", "reward curves: centralized GRPO vs K trainers + DiLoCo"),
    "proofs": ("validator.bench_proofs", "main", "TOPLOC proof cost, verification cost, proof size"),
}


def _call(module: str, function: str, argv: list[str]) -> int:
    entry: Callable[[list[str]], int | None] = getattr(importlib.import_module(module), function)
    return int(entry(argv) or 0)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="concord", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("devnet", help="start/stop a local Anvil + js-ipfs devnet with the contracts deployed", add_help=False)
    sub.add_parser("deploy", help="deploy the contracts to any RPC URL", add_help=False)
    sub.add_parser("demo", help="devnet up, play a round, print the settlement table, devnet down", add_help=False)
    sub.add_parser("keys", help="create an encrypted keystore or show its address (password from the environment)", add_help=False)
    bench = sub.add_parser("bench", help="benchmarks: each prints a table and ends with one JSON line")
    bench.add_argument("name", choices=sorted(BENCHES), help="; ".join(f"{k}: {v[2]}" for k, v in BENCHES.items()))

    args, rest = parser.parse_known_args(argv)
    if args.command == "bench":
        module, function, _ = BENCHES[args.name]
        return _call(module, function, rest)
    if args.command == "devnet":
        return _call("client.devnet", "main", rest)
    if args.command == "deploy":
        return _call("client.deploy", "main", rest)
    if args.command == "demo":
        return _call("client.settle_demo", "main", rest)
    if args.command == "keys":
        return _call("client.keys", "main", rest)
    parser.error(f"unknown command {args.command!r}")
    return 2


if __name__ == "__main__":
    sys.exit(main())

"""`concord demo`'s command line, apart from the demo (which loads torch and the cheats), so that
`concord demo --help` answers at once (client/cli.py, HELP_PARSERS)."""

from __future__ import annotations

import argparse
from argparse import SUPPRESS
from pathlib import Path

from concord.client.runtime.parsers import DASHBOARD_PORT
from scripts import REPO_ROOT, devnet

DEFAULT_TASK_FILE = REPO_ROOT / "configs" / "default_task.toml"
SECONDS_PER_ROUND = 90.0
DEFAULT_ROUNDS = 15  # ~5-6 minutes in all on a 2-core box
DEFAULT_CHEAT = "inflated_rewards"


def parser() -> argparse.ArgumentParser:
    """`concord demo [--rounds N] [--cheat MODE] [--state-dir D] [ports]`; --cheat is checked against the
    cheats by the demo itself (scripts.adversaries.trainer_cheats.CHEATS, which loads torch)."""
    p = argparse.ArgumentParser(
        prog="concord demo",
        description="devnet up, 4 trainers (1 cheating) + 2 validators for N rounds, settlement, reward curve",
    )
    p.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS, help=f"rounds to run (default {DEFAULT_ROUNDS})")
    p.add_argument(
        "--cheat",
        default=DEFAULT_CHEAT,
        metavar="MODE",
        help=f"the cheating trainer's cheat (default {DEFAULT_CHEAT}; "
        "`python -m scripts.adversaries.trainer run --help` lists them)",
    )
    p.add_argument("--task-file", type=Path, default=DEFAULT_TASK_FILE, help="task TOML (max_rounds := --rounds)")
    p.add_argument(
        "--timeout",
        type=float,
        default=0.0,
        help=f"seconds to wait for the rounds (default {SECONDS_PER_ROUND:.0f} per round, at least 540)",
    )
    p.add_argument("--no-live", action="store_true", help="one line per settled round instead of a live table")
    p.add_argument(
        "--dashboard-port",
        type=devnet.tcp_port,
        default=DASHBOARD_PORT,
        help=f"serve `concord dashboard` while the demo runs (default {DASHBOARD_PORT})",
    )
    p.add_argument("--no-dashboard", action="store_true", help="do not serve the dashboard")
    p.add_argument("--state-dir", type=Path, default=devnet.DEFAULT_STATE_DIR)
    p.add_argument("--anvil-port", type=devnet.tcp_port, default=devnet.Ports.anvil)
    p.add_argument(
        "--ipfs-port", type=devnet.tcp_port, default=devnet.Ports.ipfs_api, help="the initiator's IPFS API port"
    )
    p.add_argument("--ipfs-gateway-port", type=devnet.tcp_port, default=devnet.Ports.ipfs_gateway, help=SUPPRESS)
    p.add_argument("--ipfs-grpc-port", type=devnet.tcp_port, default=devnet.Ports.ipfs_grpc, help=SUPPRESS)
    p.add_argument(
        "--shared-ipfs",
        action="store_true",
        help="every node uses the initiator's IPFS peer (default: each node its own peer, in a mesh)",
    )
    p.add_argument(
        "--netns",
        action="store_true",
        help="each node and its IPFS peer in its own network namespace, links rate-limited "
        "(`concord devnet up --netns`; needs root)",
    )
    p.add_argument(
        "--block-time",
        type=devnet.block_seconds,
        default=devnet.DEFAULT_BLOCK_TIME,
        help=f"the devnet's seconds per block (default {devnet.DEFAULT_BLOCK_TIME:g}; 0: mine per transaction only)",
    )
    return p

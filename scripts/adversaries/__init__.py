"""The lab's cheating nodes (trainer_cheats, validator_cheats) and their command lines (trainer, validator)."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from concord.client.runtime.display import fields, setup_logging
from scripts.lab_node import run_lab_node


def run_cheater(
    argv: Sequence[str] | None,
    role: str,
    add_run_args: Callable[[argparse.ArgumentParser], None],
    cheats: Mapping[str, Any],
    cheat_help: str,
    facts: Callable[[Any], dict[str, Any]],
    run: Callable[[argparse.Namespace, Any], int],
) -> int:
    """`python -m scripts.adversaries.ROLE run --cheat MODE <concord ROLE run flags>`: the mode named in
    the log at start (logger concord.ROLE.cheat, event `cheat_mode` with the cheat's ``facts``), then
    ``run(args, cheat)``, the node's run_command with the cheat's hooks; its exit status."""

    def start(args: argparse.Namespace) -> int:
        cheat = cheats[args.cheat]
        setup_logging(args.json_logs)
        logging.getLogger(f"concord.{role}.cheat").warning(
            "cheating %s: %s (%s)",
            role,
            cheat.name,
            cheat.doc,
            extra=fields(event="cheat_mode", cheat=cheat.name, **facts(cheat)),
        )
        return run(args, cheat)

    return run_lab_node(
        argv,
        f"python -m scripts.adversaries.{role}",
        f"run a cheating {role} node",
        f"a {role} node (the flags of `concord {role} run`) playing one cheat",
        add_run_args,
        "--cheat",
        start,
        choices=sorted(cheats),
        help=cheat_help,
    )

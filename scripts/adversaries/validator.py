"""A cheating validator node (the lab): `python -m scripts.adversaries.validator run --cheat MODE <flags>`.

The flags are `concord validator run`'s (validator.node.add_run_args) plus `--cheat MODE`, one of
scripts.adversaries.validator_cheats.VALIDATOR_CHEATS; the node is the library's own
`run_validator` with the mode's hooks (CheatingValidator), so every step the mode leaves alone
is the honest one. Its log names the mode at start and each step the mode changes.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from client.runtime.display import fields, setup_logging
from scripts.adversaries.validator_cheats import VALIDATOR_CHEATS, CheatingValidator
from validator import node

log = logging.getLogger("concord.validator.cheat")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m scripts.adversaries.validator", description="run a cheating validator node"
    )
    sub = p.add_subparsers(dest="action", required=True)
    run = sub.add_parser("run", help="a validator node (the flags of `concord validator run`) playing one cheat")
    node.add_run_args(run)
    run.add_argument(
        "--cheat",
        choices=sorted(VALIDATOR_CHEATS),
        required=True,
        help="the validator rule to break (scripts/adversaries/validator_cheats.py)",
    )
    args = p.parse_args(argv)
    cheat = VALIDATOR_CHEATS[args.cheat]
    setup_logging(args.json_logs)
    log.warning(
        "cheating validator: %s (%s)",
        cheat.name,
        cheat.doc,
        extra=fields(event="cheat_mode", cheat=cheat.name, expected_loss=cheat.expected_loss),
    )
    return node.run_command(args, CheatingValidator(cheat))


if __name__ == "__main__":
    sys.exit(main())

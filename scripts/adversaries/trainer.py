"""A cheating trainer node (the lab): `python -m scripts.adversaries.trainer run --cheat MODE <flags>`.

The flags are `concord trainer run`'s (client.trainer.add_run_args) plus `--cheat MODE`, one of
scripts.adversaries.trainer_cheats.CHEATS; the node is the library's own `run_trainer` with the
mode's hooks (CheatingTrainer), so it is honest in every step the mode leaves alone and before
the mode's first round. Its log names the mode at start and says `cheated` per round.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from client import trainer
from client.runtime.display import fields, setup_logging
from scripts.adversaries.trainer_cheats import CHEATS, CheatingTrainer

log = logging.getLogger("concord.trainer.cheat")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m scripts.adversaries.trainer", description="run a cheating trainer node")
    sub = p.add_subparsers(dest="action", required=True)
    run = sub.add_parser("run", help="a trainer node (the flags of `concord trainer run`) playing one cheat")
    trainer.add_run_args(run)
    run.add_argument(
        "--cheat",
        choices=sorted(CHEATS),
        required=True,
        help="the cheat to play (scripts/adversaries/trainer_cheats.py; honest before its first round)",
    )
    args = p.parse_args(argv)
    cheat = CHEATS[args.cheat]
    setup_logging(args.json_logs)
    log.warning(
        "cheating trainer: %s (%s)",
        cheat.name,
        cheat.doc,
        extra=fields(event="cheat_mode", cheat=cheat.name, caught_by=cheat.caught_by),
    )
    return trainer.run_command(args, CheatingTrainer(cheat))


if __name__ == "__main__":
    sys.exit(main())

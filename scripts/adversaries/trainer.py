"""A cheating trainer node (the lab): `python -m scripts.adversaries.trainer run --cheat MODE <flags>`.

The flags are `concord trainer run`'s (client.trainer.add_run_args) plus `--cheat MODE`, one of
scripts.adversaries.trainer_cheats.CHEATS; the node is the library's own `run_trainer` with the
mode's hooks (CheatingTrainer), so it is honest in every step the mode leaves alone and before
the mode's first round. Its log names the mode at start and says `cheated` per round.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from concord.client import trainer
from scripts.adversaries import run_cheater
from scripts.adversaries.trainer_cheats import CHEATS, CheatingTrainer


def main(argv: Sequence[str] | None = None) -> int:
    return run_cheater(
        argv,
        "trainer",
        trainer.add_run_args,
        CHEATS,
        "the cheat to play (scripts/adversaries/trainer_cheats.py; honest before its first round)",
        lambda cheat: {"caught_by": cheat.caught_by},
        lambda args, cheat: trainer.run_command(args, CheatingTrainer(cheat)),
    )


if __name__ == "__main__":
    sys.exit(main())

"""A cheating validator node (the lab): `python -m scripts.adversaries.validator run --cheat MODE <flags>`.

The flags are `concord validator run`'s (validator.node.add_run_args) plus `--cheat MODE`, one of
scripts.adversaries.validator_cheats.VALIDATOR_CHEATS; the node is the library's own
`run_validator` with the mode's hooks (CheatingValidator), so every step the mode leaves alone
is the honest one. Its log names the mode at start and each step the mode changes.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from concord.validator import node
from scripts.adversaries import run_cheater
from scripts.adversaries.validator_cheats import VALIDATOR_CHEATS, CheatingValidator


def main(argv: Sequence[str] | None = None) -> int:
    return run_cheater(
        argv,
        "validator",
        node.add_run_args,
        VALIDATOR_CHEATS,
        "the validator rule to break (scripts/adversaries/validator_cheats.py)",
        lambda cheat: {"expected_loss": cheat.expected_loss},
        lambda args, cheat: node.run_command(args, CheatingValidator(cheat)),
    )


if __name__ == "__main__":
    sys.exit(main())

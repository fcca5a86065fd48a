"""A lab node's command line: the library's `concord trainer|validator run` with one more flag
that picks the lab's hooks (the adversaries' `--cheat MODE`, the drills' `--pause-before-manifest`)."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import Any


def run_lab_node(
    argv: Sequence[str] | None,
    prog: str,
    description: str,
    run_help: str,
    add_run_args: Callable[[argparse.ArgumentParser], None],
    flag: str,
    start: Callable[[argparse.Namespace], int],
    **flag_options: Any,
) -> int:
    """Parse `PROG run <the node's run flags> FLAG VALUE` (``add_run_args``: the node's flags; FLAG is
    required, ``flag_options`` as for ``add_argument``) and return ``start(args)``, the exit status:
    the node's ``run_command`` with the hooks FLAG chooses."""
    p = argparse.ArgumentParser(prog=prog, description=description)
    sub = p.add_subparsers(dest="action", required=True)
    run = sub.add_parser("run", help=run_help)
    add_run_args(run)
    run.add_argument(flag, required=True, **flag_options)
    return start(p.parse_args(argv))

"""The `concord` entry point answers at once: --version and --help import nothing heavy."""

from __future__ import annotations

import subprocess
import sys
import time

from scripts import REPO_ROOT

CONCORD = [sys.executable, "-c", "import sys; from concord.client.cli import main; sys.exit(main())"]


def _run(*args: str) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.monotonic()
    done = subprocess.run([*CONCORD, *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    return done, time.monotonic() - t0


def test_version_and_help_answer_in_under_a_second() -> None:
    done, seconds = _run("--version")
    assert done.returncode == 0 and done.stdout.strip() == "concord 0.1.0", done
    assert seconds < 1.0, f"--version took {seconds:.2f}s"
    done, seconds = _run("--help")
    assert done.returncode == 0 and "bench" in done.stdout and "validator" in done.stdout
    assert seconds < 1.0, f"--help took {seconds:.2f}s"


def test_help_imports_no_heavy_module() -> None:
    code = (
        "import sys; from concord.client import cli\n"
        "try:\n    cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = sorted(m for m in ('torch', 'web3', 'transformers', 'toploc', 'numpy') if m in sys.modules)\n"
        "print('HEAVY=' + ','.join(heavy))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "HEAVY=", done.stdout.strip().splitlines()[-1]

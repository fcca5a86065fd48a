"""Every ```bash block of README.md and docs/*.md runs as written on a fresh devnet (issue 25).

Each block runs in a scratch directory (with `configs/` linked in) under a fresh $HOME, so
`concord devnet up` starts a fresh devnet on the default ports and `~/.local/state/concord/...` is the
block's own. Its lines run one by one through bash, exactly as printed; what a line's comment says is
the only instruction the test takes from the docs:

- "in a terminal of its own": the command runs in the background (a terminal of its own). It is ready
  once it printed its first line, and must still be running then;
- "# stop the nodes" / "# stop the trainer" / "# stop the validator" / "# stop the dashboards" (a
  comment line): those background commands get Ctrl-C (SIGINT) and must exit 0 or 130 (interrupted);
- "once ...": the command waits for something on chain (rounds settling, a round finalized); it is run
  again every 2 s while it fails, for at most ONCE_S;
- every other line must exit 0.

At the end of a block, background commands still running get Ctrl-C too, and a devnet still up is
brought down. A block that cannot run here is marked by the line before its fence, with its reason:
`<!-- docs-test: not run: REASON -->` (README's `make demo` / `make test`, which run this very suite,
and the benchmarks, which take minutes each); the test checks the reason is there.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from concord.client.runtime import procs
from concord.client.runtime.config import ENV_VARS

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REPO = Path(__file__).resolve().parent.parent
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
NOT_RUN = re.compile(r"<!--\s*docs-test:\s*not run:\s*(?P<reason>.+?)\s*-->")
BACKGROUND = "in a terminal of its own"
STOP = re.compile(r"^#\s*stop the (?P<what>\w+)")
STOPS = {"nodes": (" trainer run", " validator run"), "trainer": (" trainer run",), "validator": (" validator run",)}
STOPS["dashboards"] = (" dashboard",)
DEVNET_PORTS = (8545, 5001, 8081, 5003, 8750, 8751, 8752)  # devnet defaults, and the docs' dashboards
COMMAND_S = 300.0  # a foreground command
READY_S = 120.0  # a background command's first line (a node imports torch, registers and joins first)
ONCE_S = 300.0  # a "once ..." command waits for rounds to settle
STOP_S = 90.0  # a node finishes its step after Ctrl-C


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # of the fence
    lines: tuple[str, ...]  # logical lines (continuations joined)
    not_run: str | None  # the reason, when marked

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}"


def bash_blocks(path: Path) -> Iterator[Block]:
    text = path.read_text().splitlines()
    i = 0
    while i < len(text):
        if text[i].strip() == "```bash":
            before = next((t for t in reversed(text[:i]) if t.strip()), "")
            marked = NOT_RUN.search(before)
            body: list[str] = []
            j = i + 1
            while text[j].strip() != "```":
                body.append(text[j])
                j += 1
            logical: list[str] = []
            pending = ""
            for raw in body:
                if raw.rstrip().endswith("\\"):
                    pending += raw.rstrip()[:-1] + " "
                    continue
                logical.append((pending + raw).strip())
                pending = ""
            yield Block(path, i + 1, tuple(x for x in logical if x), marked.group("reason") if marked else None)
            i = j
        i += 1


BLOCKS = [b for doc in DOCS for b in bash_blocks(doc)]


def comment_of(line: str) -> str:
    """The comment of a command line (what follows the first ` #`), lowercased; "" when none."""
    found = re.search(r"\s#\s", line)
    return line[found.end() :].lower() if found else ""


@dataclass
class Background:
    line: str
    proc: subprocess.Popen[bytes]
    log: Path


@dataclass
class Session:
    """One block's shell: its directory, environment and background commands."""

    work: Path
    env: dict[str, str]
    logs: Path
    background: list[Background] = field(default_factory=list)
    count: int = 0

    def log(self) -> Path:
        self.count += 1
        return self.logs / f"{self.count:02d}.log"

    def run(self, line: str, timeout: float = COMMAND_S) -> tuple[int, str]:
        log = self.log()
        with open(log, "wb") as out:
            try:
                rc = subprocess.run(
                    ["bash", "-c", line], cwd=self.work, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                    timeout=timeout, start_new_session=True,
                ).returncode  # fmt: skip
            except subprocess.TimeoutExpired:
                rc = -1
        return rc, log.read_text(errors="replace")

    def start(self, line: str) -> Background:
        log = self.log()
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                ["bash", "-c", f"exec {line}"], cwd=self.work, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        bg = Background(line, proc, log)
        self.background.append(bg)
        deadline = time.monotonic() + READY_S
        while time.monotonic() < deadline and proc.poll() is None and not log.read_text(errors="replace").strip():
            time.sleep(0.2)
        text = log.read_text(errors="replace")
        assert proc.poll() is None, f"`{line}` exited with {proc.returncode} at start: {text[-2000:]}"
        assert text.strip(), f"`{line}` printed nothing in {READY_S:.0f} s"
        return bg

    def stop(self, which: tuple[str, ...] | None = None) -> list[str]:
        """Ctrl-C the background commands matching ``which`` (all when None); their problems, if any."""
        chosen = [b for b in self.background if which is None or any(w in " " + b.line for w in which)]
        for b in chosen:
            if b.proc.poll() is None:
                os.killpg(b.proc.pid, signal.SIGINT)
        problems = []
        for b in chosen:
            try:
                rc = b.proc.wait(timeout=STOP_S)
            except subprocess.TimeoutExpired:
                os.killpg(b.proc.pid, signal.SIGKILL)
                rc = b.proc.wait()
                problems.append(f"`{b.line}` ignored Ctrl-C for {STOP_S:.0f} s")
            if rc not in (0, 130):
                problems.append(f"`{b.line}` exited {rc}: {b.log.read_text(errors='replace')[-2000:]}")
            self.background.remove(b)
        return problems


def run_block(block: Block, tmp: Path) -> None:
    busy = [p for p in DEVNET_PORTS if procs.port_busy(p)]
    assert not busy, f"{block.name} needs the default devnet ports; busy: {busy}"
    home, work, logs = tmp / "home", tmp / "work", tmp / "logs"
    for d in (home, work, logs):
        d.mkdir()
    (work / "configs").symlink_to(REPO / "configs")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONCORD_", "ETH_", "XDG_STATE_HOME"))}
    for names in ENV_VARS.values():
        for name in names:
            env.pop(name, None)
    env.update(HOME=str(home), PATH=f"{REPO / '.venv' / 'bin'}:{env.get('PATH', '')}")
    shell = Session(work, env, logs)
    try:
        for line in block.lines:
            if line.startswith("#"):
                stop = STOP.match(line)
                if stop:
                    assert stop["what"] in STOPS, f"{block.name}: `{line}`: stop what?"
                    problems = shell.stop(STOPS[stop["what"]])
                    assert not problems, f"{block.name}: {problems}"
                continue
            comment = comment_of(line)
            if BACKGROUND in comment:
                shell.start(line)
                continue
            deadline = time.monotonic() + (ONCE_S if re.search(r"\bonce\b", comment) else 0)
            while True:
                rc, out = shell.run(line)
                if rc == 0 or time.monotonic() >= deadline:
                    break
                time.sleep(2.0)
            assert rc == 0, f"{block.name}: `{line}` exited {rc}:\n{out[-3000:]}"
        problems = shell.stop()
        assert not problems, f"{block.name}: at the end of the block: {problems}"
    finally:
        shell.stop()
        if (home / ".local" / "state" / "concord" / "devnet" / "devnet.json").exists():
            shell.run("concord devnet down", timeout=60)


def test_the_docs_have_command_blocks_and_each_unrun_one_says_why() -> None:
    assert len(BLOCKS) >= 5, [b.name for b in BLOCKS]
    assert all(b.not_run is None or len(b.not_run) > 20 for b in BLOCKS)
    ran = [b for b in BLOCKS if b.not_run is None]
    assert {b.path.name for b in ran} >= {"README.md", "OPERATORS.md", "DASHBOARD.md"}


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.not_run is None], ids=lambda b: b.name)
def test_a_command_block_runs_as_written(block: Block, tmp_path: Path) -> None:
    run_block(block, tmp_path)

"""The package works without the repository: a wheel built from the checkout, installed into a fresh
virtual environment beside an unrelated distribution that ships its own top-level `client` module, installs
one top-level package (`concord`, with py.typed), answers `concord --version` and `concord status --help`,
binds a real deployment over RPC (ABIs from the packaged concord/client/chain/artifacts.json: no solc, no
Node.js) and passes `concord doctor`; the other distribution's `client` is untouched.

The fresh environment borrows the test interpreter's site-packages (torch, web3, ...) through
PYTHONPATH; `.pth` files are not read from PYTHONPATH entries, so the checkout's editable install
stays invisible and `concord` can only come from the wheel."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from scripts import REPO_ROOT


def _run(argv: list[str | Path], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    done = subprocess.run([str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{argv}: {done.stderr[-2000:]}"
    return done


@pytest.mark.slow
@pytest.mark.e2e
def test_wheel_runs_outside_the_repository(chain_env, ipfs, tmp_path: Path) -> None:
    wheels, venv, outside = tmp_path / "wheels", tmp_path / "venv", tmp_path / "elsewhere"
    outside.mkdir()
    # Build from a copy of the tracked files: setuptools writes build/ and *.egg-info into its source.
    source = tmp_path / "source"
    tracked = _run(["git", "ls-files"], cwd=REPO_ROOT).stdout.split()
    for rel in tracked:
        if (REPO_ROOT / rel).is_file():
            (source / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO_ROOT / rel, source / rel)
    _run(
        [sys.executable, "-m", "pip", "wheel", source, "--no-deps", "--no-build-isolation", "-q", "-w", wheels],
        cwd=outside,
    )
    (wheel,) = wheels.glob("concord_rl-*.whl")
    import zipfile

    shipped = set(zipfile.ZipFile(wheel).namelist())  # the dashboard's page ships in the wheel (no CDN)
    assert {f"concord/client/dashboard/static/{n}" for n in ("index.html", "app.js", "style.css")} <= shipped
    assert "concord/py.typed" in shipped
    assert {n.split("/")[0] for n in shipped if not n.split("/")[0].endswith(".dist-info")} == {"concord"}

    # an unrelated distribution with a top-level module named `client`, installed first
    other = tmp_path / "other"
    other.mkdir()
    (other / "client.py").write_text("WHO = 'other-client'\n")
    (other / "pyproject.toml").write_text(
        '[project]\nname = "other-client"\nversion = "1.0"\n[tool.setuptools]\npy-modules = ["client"]\n'
    )
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", wheels]
    _run([*build, other], outside)
    (other_wheel,) = wheels.glob("other_client-*.whl")

    _run([sys.executable, "-m", "venv", venv], cwd=outside)
    _run([venv / "bin" / "pip", "install", "-q", "--no-deps", other_wheel, wheel], cwd=outside)
    env = {**os.environ, "PYTHONPATH": sysconfig.get_paths()["purelib"]}

    probe = "import client, concord; print(client.WHO, concord.__file__)"
    who, where = _run([venv / "bin" / "python", "-c", probe], outside, env).stdout.split()
    assert who == "other-client" and where.startswith(str(venv)), (who, where)
    assert _run([venv / "bin" / "concord", "--version"], outside, env).stdout.strip() == "concord 0.1.0"
    assert "--rpc-url" in _run([venv / "bin" / "concord", "status", "--help"], outside, env).stdout
    assert "--port" in _run([venv / "bin" / "concord", "dashboard", "--help"], outside, env).stdout

    dep = chain_env.client.deployment.save(outside / "deployment.json")
    out = _run(
        [venv / "bin" / "concord", "status", "--rpc-url", chain_env.anvil.url, "--deployment", dep, "--json"],
        outside,
        env,
    ).stdout
    status = json.loads(out.strip().splitlines()[-1])
    assert status["chain_id"] == chain_env.client.deployment.chain_id
    assert status["concord"] == chain_env.client.deployment.concord

    # an operator's first command on a new machine: everything green from the installed package
    conn = ["--rpc-url", chain_env.anvil.url, "--deployment", dep, "--ipfs-api", ipfs.api, "--devnet-account", "1"]
    doctor = _run([venv / "bin" / "concord", "doctor", *conn], outside, env).stdout
    assert doctor.strip().splitlines()[-1] == "all green", doctor

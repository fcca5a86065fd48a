"""scripts/gpu_check (issue 24 item 7) up to the point where a GPU is needed: the files cut into pieces
that travel one per device call, each piece and the whole checked against the manifest's sha256 when
they are joined (a corrupted or missing piece is named, and nothing partial is left), the GGUF installed
as the distribution the default LM task names, and the shell script's dry run: the same steps on this
machine with the CPU standing in for the GPU, ending in a CPU trainer's round verified by a CPU validator."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from concord.client.engine import lm
from scripts import gpu_check

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent


def _files(tmp_path: Path) -> list[Path]:
    a, b = tmp_path / "model.gguf", tmp_path / "tool-1.0-py3-none-any.whl"
    a.write_bytes(os.urandom((2 << 20) + 12345))  # more than two 1-MiB pieces
    b.write_bytes(b"wheel bytes")
    return [a, b]


def test_pieces_are_joined_and_checked_against_the_manifest(tmp_path: Path) -> None:
    files = _files(tmp_path)
    manifest = gpu_check.split(files, tmp_path / "parts", piece_mib=1)
    assert len(manifest["pieces"]) == 3 and all(p["bytes"] <= 1 << 20 for p in manifest["pieces"])
    for k in range(3):  # each part travels alone: its piece and the manifest
        assert sorted(p.name for p in (tmp_path / "parts" / f"part{k}").iterdir()) == ["manifest.json", f"piece{k}"]
        gpu_check.stage(tmp_path / "parts", k, tmp_path / "staged")
    got = gpu_check.assemble(tmp_path / "staged" / "manifest.json", tmp_path / "staged", tmp_path / "files")
    for f in files:
        assert got[f.name].read_bytes() == f.read_bytes()
    assert manifest["members"]["model.gguf"]["sha256"] == gpu_check.sha256_file(files[0])
    again = gpu_check.split(files, tmp_path / "again", piece_mib=1)  # the same bytes every run
    assert again == manifest


def test_a_corrupted_or_missing_piece_is_named_and_leaves_nothing(tmp_path: Path) -> None:
    gpu_check.split(_files(tmp_path), tmp_path / "parts", piece_mib=1)
    piece = tmp_path / "parts" / "part1" / "piece1"
    good = piece.read_bytes()
    piece.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    with pytest.raises(gpu_check.CarryError, match="piece1"):
        gpu_check.stage(tmp_path / "parts", 1, tmp_path / "staged")
    for k in (0, 2):
        gpu_check.stage(tmp_path / "parts", k, tmp_path / "staged")
    with pytest.raises(gpu_check.CarryError, match="piece1: expected a staged file"):
        gpu_check.assemble(tmp_path / "staged" / "manifest.json", tmp_path / "staged", tmp_path / "files")
    (tmp_path / "staged" / "piece1").write_bytes(piece.read_bytes())  # corrupted after staging
    with pytest.raises(gpu_check.CarryError, match="piece1: expected"):
        gpu_check.assemble(tmp_path / "staged" / "manifest.json", tmp_path / "staged", tmp_path / "files")
    assert not (tmp_path / "files").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".files")] == []


def test_the_gguf_is_found_as_the_distribution_the_task_names(tmp_path: Path, monkeypatch) -> None:
    gguf = tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf"
    gguf.write_bytes(b"GGUF stand-in")
    site = tmp_path / "site"
    gpu_check.install_gguf(gguf, site, "concord-carried-gguf", "0.1.2")
    monkeypatch.syspath_prepend(str(site))
    source = lm.ModelSource(
        kind="gguf-package",
        location="concord-carried-gguf",
        file=gguf.name,
        weights_sha256=lm.SMOLLM2_135M.weights_sha256,
        tokenizer_sha256=lm.SMOLLM2_135M.tokenizer_sha256,
    )
    found = lm.gguf_path(source)
    assert found == site / "concord_carried_gguf" / gguf.name and found.read_bytes() == b"GGUF stand-in"


@pytest.mark.slow
def test_the_dry_run_joins_the_real_gguf_and_cross_checks_on_the_cpu(tmp_path: Path) -> None:
    """The shell script's every step with the real GGUF (98 MB: three pieces) and the real model: the
    joined file's sha256 and the model's pins are checked, and a CPU trainer's round passes a CPU
    validator in float32 and in this machine's chosen precision (0 honest rejects)."""
    env = os.environ | {
        "PYTHONPATH": str(ROOT),
        "OUT": str(tmp_path / "out"),
        "CROSSCHECK_ARGS": "--prompts 1 --group 2",
        "CONCORD_HOME": str(tmp_path / "home"),
    }
    out = subprocess.run(
        [str(ROOT / "scripts" / "gpu_check.sh"), "dry-run"], capture_output=True, text=True, env=env, timeout=1500
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert out.stdout.count("(sha256 checked)") == 1 and "piece2" in out.stdout
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["honest_rejects"] == 0 and result["trainer_device"] == "cpu"
    assert all(v["accepted"] for v in result["verdicts"].values()) and len(result["verdicts"]) == 2
    assert (tmp_path / "out" / "crosscheck.txt").read_text().strip().splitlines()[-1] == json.dumps(result)

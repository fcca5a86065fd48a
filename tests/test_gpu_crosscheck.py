"""scripts/gpu_crosscheck.py end to end with the CPU standing in for the GPU (its prefill step
falls back to the CPU when no CUDA device is there): the pipeline a GPU run uses, and on one
machine every direction must verify with no rejects."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "gpu_crosscheck.py"


@pytest.mark.slow
def test_crosscheck_pipeline_on_one_machine(tmp_path: Path):
    def run(*args: str) -> str:
        out = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stderr[-2000:]
        return out.stdout

    run("export", str(tmp_path / "in"))
    run("prefill", str(tmp_path / "in"), str(tmp_path / "out"))
    result = json.loads(
        run("verify", str(tmp_path / "in"), str(tmp_path / "out" / "gpu_states.pt")).strip().splitlines()[-1]
    )
    assert result.pop("gpu") == "cpu"
    toploc = {k: v for k, v in result.items() if "sampling" not in k}
    sampling = {k: v for k, v in result.items() if "sampling" in k}
    assert len(toploc) == 12 and len(sampling) == 4
    assert all(v["rejected"] == 0 and v["worst_exp_mismatches"] <= 8 for v in toploc.values())
    # same device, same precision: the proofs are exact
    assert all(v["worst_exp_mismatches"] == 0 for k, v in toploc.items() if k.endswith("fp32 -> CPU fp32"))
    assert all(v["rejected_tokens"] == 0 and v["tokens"] > 0 for v in sampling.values())

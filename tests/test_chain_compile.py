"""py-solc-x (the path nodes deploy with) and forge (the path the contract tests use) must
produce the same runtime bytecode, so what is tested is what is deployed.

foundry.toml sets `bytecode_hash = "none"` and `cbor_metadata = false`, and scripts/build_artifacts.py
copies both into the standard-JSON settings: no metadata tail is appended at all, so the
comparison is exact, byte for byte, with nothing stripped."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from concord.client.chain import artifacts as packaged
from concord.client.runtime.procs import find_binary
from scripts import REPO_ROOT
from scripts import build_artifacts as solc

FORGE_NATIVE = REPO_ROOT / "node_modules" / "@foundry-rs" / "forge-linux-amd64" / "bin" / "forge"
DEPLOYED = ["Concord", "ConcordSettlement", "ConcordSeed", "DevToken"]


def _ours_with_code() -> dict[str, solc.Artifact]:
    """Every contract under contracts/ that has runtime code (Concord and its modules are deployed apart)."""
    return {n: a for n, a in solc.compile_contracts().items() if a.source.startswith("contracts/") and a.runtime}


def test_settings_mirror_foundry_toml() -> None:
    s = solc.foundry_settings()
    assert s["optimizer"] == {"enabled": True, "runs": 200}
    assert s["evmVersion"] == "cancun"
    assert s["metadata"] == {"bytecodeHash": "none", "appendCBOR": False}
    assert "@openzeppelin/=node_modules/@openzeppelin/" in s["remappings"]


def test_compile_is_cached_by_source_hash(tmp_path: Path) -> None:
    first = solc.compile_contracts()
    cached = list(solc.CACHE_DIR.glob("*.json"))
    assert cached, "compile output is cached under .cache/solc"
    again = solc.compile_contracts()
    assert {k: v.runtime for k, v in first.items()} == {k: v.runtime for k, v in again.items()}
    for name in DEPLOYED:
        assert len(first[name].runtime) > 100 and first[name].source.startswith("contracts/")
    for name, art in _ours_with_code().items():
        assert len(art.runtime) <= 24_576, f"{name} exceeds the EIP-170 code size limit"
        assert len(art.bytecode) <= 49_152, f"{name} exceeds the EIP-3860 init code size limit"


@pytest.mark.slow
def test_py_solc_x_and_forge_produce_the_same_runtime_bytecode(tmp_path: Path) -> None:
    forge = find_binary("forge", [FORGE_NATIVE])
    out, cache = tmp_path / "out", tmp_path / "cache"
    subprocess.run(
        [str(forge), "build", "--skip", "test", "--skip", "script", "--out", str(out), "--cache-path", str(cache)],
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
        timeout=600,
    )
    ours = _ours_with_code()
    assert set(DEPLOYED) <= set(ours)
    for name in ours:
        art = json.loads((out / f"{name}.sol" / f"{name}.json").read_text())
        forge_runtime = bytes.fromhex(art["deployedBytecode"]["object"].removeprefix("0x"))
        assert forge_runtime == ours[name].runtime, f"{name}: forge and py-solc-x runtime bytecode differ"


def test_packaged_artifacts_match_the_sources() -> None:
    """concord/client/chain/artifacts.json (what nodes load, no solc needed) is today's compile of contracts/:
    after a contract change, `make artifacts` rewrites it."""
    shipped = json.loads(packaged.PATH.read_text())
    fresh = packaged.to_json(solc.compile_contracts(), solc._compiler_version(), solc.sources_sha256())
    assert shipped["sources_sha256"] == fresh["sources_sha256"], "contracts changed: run `make artifacts`"
    assert shipped == json.loads(json.dumps(fresh)), "artifacts.json differs from a fresh compile: run `make artifacts`"
    loaded = packaged.load()
    for name in DEPLOYED:
        assert loaded[name].runtime == _ours_with_code()[name].runtime
    errors = {e["name"] for e in loaded[packaged.ERRORS].abi}
    assert {"RoundNotOpened", "WorkUnitsAboveMax", "SafeCastOverflowedUintDowncast"} <= errors

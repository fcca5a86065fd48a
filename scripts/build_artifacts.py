"""Compile the protocol contracts with py-solc-x through scripts/solc, cached by source hash.

This is the build step, not the run time: `make artifacts` (`python -m scripts.build_artifacts`) writes
the deployed contracts' ABIs and bytecode into client/chain/artifacts.json, which nodes load.

Deploying must not need forge: nodes compile the same sources with the same settings as
foundry.toml (read from it, so the two cannot drift) and get the same runtime bytecode
(tests/test_chain_compile.py checks that against forge's out/). The standard-JSON output
is cached under .cache/solc/<hash>.json, keyed by the sources, settings and compiler
version, so several node processes on one machine compile once.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import tempfile
import tomllib
from pathlib import Path

import solcx
import solcx.wrapper
from solcx.exceptions import SolcError

from concord.client.chain.artifacts import PATH as PACKAGED
from concord.client.chain.artifacts import Artifact
from concord.client.chain.artifacts import to_json as packaged_json
from scripts import REPO_ROOT

log = logging.getLogger(__name__)

SOLC_WRAPPER = REPO_ROOT / "scripts" / "solc"
CACHE_DIR = REPO_ROOT / ".cache" / "solc"
OUTPUT_SELECTION = ["abi", "evm.bytecode.object", "evm.deployedBytecode.object", "evm.methodIdentifiers"]


class CompileError(Exception):
    """solc reported errors; carries the formatted messages."""

    def __init__(self, messages: list[str]) -> None:
        super().__init__("solc failed:\n" + "\n".join(messages))
        self.messages = messages


class MissingContract(Exception):
    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(f"no compiled contract named {name!r}; have {sorted(known)}")
        self.name = name


def foundry_settings(root: Path = REPO_ROOT) -> dict:
    """solc standard-JSON ``settings`` mirroring foundry.toml's default profile."""
    profile = tomllib.loads((root / "foundry.toml").read_text())["profile"]["default"]
    metadata: dict = {}
    if profile.get("bytecode_hash") is not None:
        metadata["bytecodeHash"] = profile["bytecode_hash"]
    if profile.get("cbor_metadata") is not None:
        metadata["appendCBOR"] = bool(profile["cbor_metadata"])
    settings = {
        "optimizer": {
            "enabled": bool(profile.get("optimizer", False)),
            "runs": int(profile.get("optimizer_runs", 200)),
        },
        "evmVersion": profile.get("evm_version", "cancun"),
        "remappings": sorted(profile.get("remappings", [])),
        "metadata": metadata,
        "outputSelection": {"*": {"*": OUTPUT_SELECTION}},
    }
    if profile.get("via_ir"):
        settings["viaIR"] = True
    return settings


def source_files(root: Path = REPO_ROOT) -> list[Path]:
    """Every contract source forge treats as `src` (tests and scripts excluded), sorted."""
    src = root / "contracts"
    files = []
    for path in sorted(src.rglob("*.sol")):
        rel = path.relative_to(src)
        if rel.parts[0] in {"test", "script"} or path.name.endswith((".t.sol", ".s.sol")):
            continue
        files.append(path)
    return files


@functools.cache
def _compiler_version() -> str:
    """Asked once per process: each ask starts node (~0.3 s)."""
    return str(solcx.wrapper.get_solc_version(SOLC_WRAPPER, with_commit_hash=True))


def _cache_key(job: dict, version: str, root: Path) -> str:
    """Hash of the job (sources + settings), the compiler and the pinned library version."""
    h = hashlib.sha256()
    h.update(json.dumps(job, sort_keys=True).encode())
    h.update(version.encode())
    oz = root / "node_modules" / "@openzeppelin" / "contracts" / "package.json"
    if oz.exists():
        h.update(oz.read_bytes())
    return h.hexdigest()


def standard_json_input(root: Path = REPO_ROOT) -> dict:
    sources = {str(p.relative_to(root)): {"content": p.read_text()} for p in source_files(root)}
    return {"language": "Solidity", "sources": sources, "settings": foundry_settings(root)}


def compile_output(root: Path = REPO_ROOT, cache_dir: Path = CACHE_DIR) -> dict:
    """The solc standard-JSON output for the contracts, from the cache when sources are unchanged."""
    job = standard_json_input(root)
    version = _compiler_version()
    key = _cache_key(job, version, root)
    cached = cache_dir / f"{key}.json"
    if cached.exists():
        return json.loads(cached.read_text())
    log.info("compiling %d sources with solc %s", len(job["sources"]), version)
    try:
        out = solcx.compile_standard(job, base_path=str(root), allow_paths=[str(root)], solc_binary=SOLC_WRAPPER)
    except SolcError as exc:
        raise CompileError(_solc_messages(exc)) from None
    errors = [
        e.get("formattedMessage", e.get("message", "")) for e in out.get("errors", []) if e.get("severity") == "error"
    ]
    if errors:
        raise CompileError(errors)
    cache_dir.mkdir(parents=True, exist_ok=True)
    # Write-then-rename: a concurrent reader sees either nothing or the whole file.
    fd, tmp = tempfile.mkstemp(dir=cache_dir, suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        json.dump(out, fh)
    os.replace(tmp, cached)
    return out


def _solc_messages(exc: SolcError) -> list[str]:
    """The formatted compiler errors from a failed run (not the whole JSON output)."""
    try:
        out = json.loads(exc.stdout_data or "{}")
    except json.JSONDecodeError:
        return [exc.message, (exc.stderr_data or "").strip()]
    errors = [
        e.get("formattedMessage", e.get("message", "")) for e in out.get("errors", []) if e.get("severity") == "error"
    ]
    return errors or [exc.message, (exc.stderr_data or "").strip()]


def compile_contracts(root: Path = REPO_ROOT, cache_dir: Path = CACHE_DIR) -> dict[str, Artifact]:
    """Compiled contracts by name. Interfaces and abstract contracts come with empty bytecode."""
    out = compile_output(root, cache_dir)
    artifacts: dict[str, Artifact] = {}
    for source, by_name in out.get("contracts", {}).items():
        for name, c in by_name.items():
            evm = c.get("evm", {})
            if name in artifacts and artifacts[name].source.startswith("contracts/"):
                continue  # our contract wins over a library's of the same name
            artifacts[name] = Artifact(
                name=name,
                source=source,
                abi=tuple(c.get("abi", [])),
                bytecode=bytes.fromhex(evm.get("bytecode", {}).get("object", "")),
                runtime=bytes.fromhex(evm.get("deployedBytecode", {}).get("object", "")),
            )
    return artifacts


def artifact(name: str, artifacts: dict[str, Artifact] | None = None) -> Artifact:
    artifacts = compile_contracts() if artifacts is None else artifacts
    if name not in artifacts:
        raise MissingContract(name, list(artifacts))
    return artifacts[name]


def sources_sha256(root: Path = REPO_ROOT) -> str:
    """One hash over the contract sources and the compile settings (what artifacts.json records)."""
    return hashlib.sha256(json.dumps(standard_json_input(root), sort_keys=True).encode()).hexdigest()


def write_artifacts(path: Path = PACKAGED, root: Path = REPO_ROOT) -> Path:
    """Compile and write the packaged artifacts (client/chain/artifacts.json)."""
    obj = packaged_json(compile_contracts(root), _compiler_version(), sources_sha256(root))
    path.write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n")
    return path


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    print(write_artifacts())

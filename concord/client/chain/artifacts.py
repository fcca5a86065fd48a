"""The deployed contracts' ABIs and bytecode, shipped inside the package (DESIGN.md section 1).

A node, `concord status` and the initiator bind a deployment from `artifacts.json` next to
this file: no solc, no Node.js, no repository checkout. The file is a build artefact:
`make artifacts` (scripts.build_artifacts.write_artifacts) compiles contracts/ with the settings of
foundry.toml and rewrites it; tests/test_chain_compile.py fails when it no longer matches
the sources. Besides the deployed contracts (Concord, its two modules, DevToken) it carries
every custom error any compiled contract can raise (ours and OpenZeppelin's), so reverts
decode to named errors.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard

from eth_typing import ABIConstructor, ABIElement, ABIError

PATH = Path(__file__).with_name("artifacts.json")
DEPLOYED = ("Concord", "ConcordSettlement", "ConcordSeed", "DevToken")  # the modules are deployed first
ERRORS = "errors"  # pseudo-contract whose ABI holds every custom error


@dataclass(frozen=True)
class Artifact:
    """One compiled contract: what deploy and the typed SDK need."""

    name: str
    source: str  # source unit name, e.g. "contracts/Concord.sol"
    abi: tuple[ABIElement, ...]  # the ABI as parsed JSON (tuple of dicts)
    bytecode: bytes  # creation code
    runtime: bytes  # deployed (runtime) code


def is_error(entry: ABIElement) -> TypeGuard[ABIError]:
    """A custom error's ABI entry (an entry without "type" is a function, as the ABI spec has it)."""
    return entry.get("type") == "error"


def is_constructor(entry: ABIElement) -> TypeGuard[ABIConstructor]:
    return entry.get("type") == "constructor"


class ArtifactsMissing(FileNotFoundError):
    def __init__(self, path: Path) -> None:
        super().__init__(f"{path} is missing: run `make artifacts` in a checkout (or reinstall the package)")
        self.path = path


def to_json(artifacts: dict[str, Artifact], compiler: str, sources_sha256: str) -> dict[str, Any]:
    """The packaged form of a compile: the deployed contracts plus the union of custom errors."""
    errors: dict[str, ABIError] = {}
    for art in artifacts.values():
        for entry in art.abi:
            if is_error(entry):
                sig = entry["name"] + "(" + ",".join(i["type"] for i in entry["inputs"]) + ")"
                errors.setdefault(sig, entry)
    return {
        "compiler": compiler,
        "sources_sha256": sources_sha256,
        "contracts": {
            name: {
                "source": artifacts[name].source,
                "abi": list(artifacts[name].abi),
                "bytecode": artifacts[name].bytecode.hex(),
                "runtime": artifacts[name].runtime.hex(),
            }
            for name in DEPLOYED
        },
        ERRORS: [errors[k] for k in sorted(errors)],
    }


def load(path: Path = PATH) -> dict[str, Artifact]:
    """The packaged artifacts by name (the deployed contracts, and ERRORS with every custom error)."""
    if not path.exists():
        raise ArtifactsMissing(path)
    obj = json.loads(path.read_text())
    out = {
        name: Artifact(name, c["source"], tuple(c["abi"]), bytes.fromhex(c["bytecode"]), bytes.fromhex(c["runtime"]))
        for name, c in obj["contracts"].items()
    }
    out[ERRORS] = Artifact(ERRORS, "", tuple(obj[ERRORS]), b"", b"")
    return out

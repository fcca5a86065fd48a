"""The typed SDK covers the contract: a method per function, a dataclass per event, fields in
ABI order, and the Python enums equal to the Solidity ones."""

from __future__ import annotations

import dataclasses
import re

from concord.client import chain
from scripts import REPO_ROOT
from scripts import build_artifacts as solc


def _snake(name: str) -> str:
    if name.isupper() or "_" in name:
        return name.lower()
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _abi(name: str) -> list[dict]:
    return list(solc.compile_contracts()[name].abi)


def test_every_contract_function_has_a_typed_method() -> None:
    functions = sorted({e["name"] for e in _abi("Concord") if e["type"] == "function"})
    missing = [f for f in functions if not callable(getattr(chain.Concord, _snake(f), None))]
    assert not missing, f"no typed method for {missing}"
    assert len(functions) >= 37


def test_every_event_has_a_dataclass_with_the_abi_fields_in_order() -> None:
    events = {e["name"]: e for e in _abi("Concord") if e["type"] == "event"}
    assert set(events) == set(chain.EVENT_TYPES)
    for name, entry in events.items():
        fields = [f.name for f in dataclasses.fields(chain.EVENT_TYPES[name])][1:]  # after `meta`
        expected = [_snake(p["name"]) + ("_" if p["name"] == "from" else "") for p in entry["inputs"]]
        assert fields == expected, name


def test_struct_dataclasses_follow_the_abi_tuples() -> None:
    outputs = {e["name"]: e["outputs"][0] for e in _abi("Concord") if e["type"] == "function" and e.get("outputs")}
    for fn, cls in [
        ("taskParams", chain.TaskParams),
        ("taskState", chain.TaskState),
        ("nodeInfo", chain.NodeInfo),
        ("memberInfo", chain.MemberInfo),
        ("roundInfo", chain.RoundInfo),
    ]:
        abi_fields = [_snake(c["name"]) for c in outputs[fn]["components"]]
        assert [f.name for f in dataclasses.fields(cls)] == abi_fields, fn


def test_enums_match_the_interface_order() -> None:
    src = (REPO_ROOT / "contracts" / "interfaces" / "IConcordTypes.sol").read_text()
    for enum, py in [("Role", chain.Role), ("Phase", chain.Phase)]:
        body = re.search(rf"enum {enum} \{{([^}}]*)\}}", src).group(1)
        names = [n.strip().upper() for n in body.split(",") if n.strip()]
        assert [m.name for m in py] == names


def test_error_decoder_handles_standard_reverts_and_unknown_selectors() -> None:
    from eth_abi import encode
    from eth_utils import to_checksum_address

    decoder = chain.error_decoder(solc.compile_contracts())
    assert decoder.decode(bytes.fromhex("08c379a0") + encode(["string"], ["boom"])).params == {"reason": "boom"}
    panic = decoder.decode(bytes.fromhex("4e487b71") + encode(["uint256"], [0x11]))
    assert (panic.name, panic.params) == ("Panic", {"code": 0x11})
    assert decoder.decode(b"").name == "EmptyRevert"
    unknown = decoder.decode(bytes.fromhex("deadbeef"))
    assert (unknown.name, unknown.params) == ("UnknownError", {"selector": "0xdeadbeef"})
    wrong = decoder.decode(
        bytes.fromhex(_selector("WrongRole(address,uint8,uint8)"))
        + encode(["address", "uint8", "uint8"], ["0x" + "ab" * 20, 1, 2])
    )
    assert wrong.params == {
        "account": to_checksum_address("0x" + "ab" * 20),
        "expected": chain.Role.TRAINER,
        "actual": chain.Role.VALIDATOR,
    }
    assert isinstance(wrong.params["expected"], chain.Role)


def _selector(sig: str) -> str:
    from eth_utils import keccak

    return keccak(text=sig)[:4].hex()

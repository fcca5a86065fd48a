"""concord.client.digest: one 32-byte digest type, one text form ("0x" + 64 lowercase hex), strict parsing."""

from __future__ import annotations

import copy
import hashlib
import pickle

import pytest

from concord.client.digest import Digest, InvalidDigest

RAW = hashlib.sha256(b"").digest()
HEX = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


@pytest.mark.parametrize(
    "value",
    [RAW, bytearray(RAW), HEX, "0x" + HEX, HEX.upper(), "0X" + HEX.upper()],
    ids=["bytes32", "bytearray", "bare-hex", "0x-hex", "upper-hex", "0X-upper-hex"],
)
def test_parse_accepts_32_bytes_or_64_hex_chars_with_or_without_0x(value) -> None:
    d = Digest.parse(value)
    assert d.bytes == RAW and bytes(d) == RAW
    assert str(d) == "0x" + HEX and f"{d}" == "0x" + HEX  # the one text form: 0x + lowercase
    assert d.hex() == HEX  # the bare form of pinned wire formats
    assert Digest.parse(d) is d and Digest.parse(str(d)) == d


@pytest.mark.parametrize(
    "value",
    [
        RAW[:31],
        RAW + b"\x00",
        b"",
        HEX[:63],
        HEX + "0",
        "0x" + HEX[:62],
        "0x0x" + HEX[:62],
        " " + HEX,
        HEX[:63] + "g",
        "0x",
        "",
        32,
        None,
        list(RAW),
        HEX.encode(),
    ],
    ids=[
        "31-bytes",
        "33-bytes",
        "no-bytes",
        "63-hex",
        "65-hex",
        "0x-62-hex",
        "double-prefix",
        "space",
        "non-hex",
        "prefix-only",
        "empty",
        "int",
        "none",
        "list",
        "hex-as-bytes",
    ],
)
def test_parse_refuses_anything_else_naming_the_field(value) -> None:
    with pytest.raises(InvalidDigest) as info:
        Digest.parse(value, field="plan.next_model_digest")
    assert isinstance(info.value, ValueError)
    assert info.value.field == "plan.next_model_digest" and "plan.next_model_digest" in str(info.value)
    assert info.value.value is value


def test_constructor_takes_exactly_32_bytes() -> None:
    assert Digest(RAW).bytes == RAW
    for bad in (RAW[:31], bytearray(RAW), HEX):
        with pytest.raises(InvalidDigest):
            Digest(bad)  # type: ignore[arg-type]


def test_immutable_hashable_comparable() -> None:
    a, b = Digest(b"\x00" * 32), Digest(b"\x00" * 31 + b"\x01")
    assert a == Digest.parse("00" * 32) and hash(a) == hash(Digest.parse("0x" + "00" * 32))
    assert a != b and a < b and sorted([b, a]) == [a, b] and max(a, b) is b
    assert len({a, b, Digest(b"\x00" * 32)}) == 2
    assert a != a.bytes and a != str(a) and a != a.hex()  # one type: no silent text/bytes equality
    with pytest.raises(TypeError):
        _ = a < str(b)
    with pytest.raises(AttributeError):
        a._raw = RAW  # type: ignore[misc]
    with pytest.raises(AttributeError):
        a.anything = 1  # type: ignore[attr-defined]
    assert copy.copy(a) is a and copy.deepcopy(a) is a and pickle.loads(pickle.dumps(a)) == a
    assert repr(a) == f"Digest('0x{'00' * 32}')"

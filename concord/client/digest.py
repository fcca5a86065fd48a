"""One type for a 32-byte digest: a manifest's sha256, the bytes32 the chain stores, an IPFS address.

Inside, a digest is its 32 bytes. At the edges it has one text form, **"0x" followed by 64
lowercase hex chars** (what ``str(d)`` gives, what status output, plan and verdict files, log
lines and CLI help show). ``Digest.parse`` is the way in from anywhere else: it accepts exactly
32 bytes (a chain ``bytes32``), or 64 hex chars with or without "0x" (either case), and raises
``InvalidDigest`` naming the field otherwise.

``d.hex()`` is the bare 64-char form of wire formats that pinned it before this type existed
(manifest fields such as a model's ``parent`` and a shard's ``sha256``; cache file names); it
is not a second text form to print.

No imports from the rest of ``client``: content, chain, the nodes and the validator all sit above it.
"""

from __future__ import annotations

import builtins
import re
from functools import total_ordering
from typing import Any

_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
PREFIX = "0x"


class InvalidDigest(ValueError):
    """A value that is not a 32-byte digest; ``field`` names where it came from."""

    def __init__(self, field: str, value: Any) -> None:
        shown = repr(value)
        shown = shown if len(shown) <= 90 else shown[:87] + "..."
        super().__init__(
            f"{field}: expected a 32-byte digest (32 bytes, or 64 hex chars with or without 0x), got {shown}"
        )
        self.field = field
        self.value = value


@total_ordering
class Digest:
    """A 32-byte digest: immutable, hashable, ordered by its bytes; ``str()`` is "0x" + 64 lowercase hex."""

    __slots__ = ("_raw",)
    _raw: builtins.bytes

    def __init__(self, raw: builtins.bytes) -> None:
        if type(raw) is not bytes or len(raw) != 32:
            raise InvalidDigest("digest", raw)
        object.__setattr__(self, "_raw", raw)

    @classmethod
    def parse(cls, value: Digest | builtins.bytes | bytearray | str, field: str = "digest") -> Digest:
        """``value`` as a Digest: a Digest, exactly 32 bytes, or 64 hex chars with or without "0x"."""
        if isinstance(value, Digest):
            return value
        if isinstance(value, (bytes, bytearray)):
            if len(value) == 32:
                return cls(bytes(value))
        elif isinstance(value, str):
            body = value[2:] if value[:2] in ("0x", "0X") else value
            if _HEX64.fullmatch(body):
                return cls(bytes.fromhex(body))
        raise InvalidDigest(field, value)

    @property
    def bytes(self) -> builtins.bytes:
        """The 32 bytes (a chain ``bytes32``)."""
        return self._raw

    def hex(self) -> str:
        """64 lowercase hex chars without "0x": only for wire formats that pinned that form."""
        return self._raw.hex()

    def __bytes__(self) -> builtins.bytes:
        return self._raw

    def __str__(self) -> str:
        return PREFIX + self._raw.hex()

    def __repr__(self) -> str:
        return f"Digest({str(self)!r})"

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Digest) and other._raw == self._raw

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Digest):
            return NotImplemented
        return self._raw < other._raw

    def __hash__(self) -> int:
        return hash((Digest, self._raw))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Digest is immutable (tried to set {name})")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"Digest is immutable (tried to delete {name})")

    def __reduce__(self) -> tuple[type[Digest], tuple[builtins.bytes]]:
        return (Digest, (self._raw,))

    def __copy__(self) -> Digest:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> Digest:
        return self

"""Canonical manifests: the small JSON documents whose sha256 the chain stores (DESIGN §4).

A manifest is stored as one raw IPFS block (CIDv1, raw codec 0x55, sha2-256), so the
digest on chain *is* the IPFS address: ``cid_for_digest(sha256(bytes))``. Two honest nodes
must produce the same bytes for the same manifest, and a node must refuse bytes that some
other encoding of the same content would give, or one document would have many digests.

Canonical encoding (the one rule, checked by re-encoding on every decode):
  * JSON with object keys sorted by code point, no whitespace (``,`` and ``:``
    separators), UTF-8 without escaping non-ASCII (``ensure_ascii=False``); a string may
    not hold a lone surrogate. This is Python's
    ``json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)``.
  * Integers are JSON integers with ``|x| < 2**63`` (so a 64-bit reader loses nothing);
    ``true``/``false`` are never accepted where a number is expected.
  * Floats are finite, not ``-0.0``, and written in their shortest round-trip form
    (Python ``repr``: ``0.1``, ``2.0``, ``1e+16``); NaN and ±Infinity are refused. A
    float-valued field always carries a fraction or exponent, so ``2`` and ``2.0`` are
    different documents and only the one the encoder writes is accepted.
  * Duplicate keys, unknown fields, missing fields and wrong types are refused, each with
    a ``ManifestError`` naming the field (``shards[3].sha256``).
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Self

from multiformats import CID

from concord.client.digest import Digest

MAX_MANIFEST_BYTES = 1 << 20  # one IPFS block: Kubo refuses bigger blocks by default
MAX_SHARDS = 4096  # shards per list (model weights, delta, optimizer state)
MAX_FILE_BYTES = 1 << 40  # a single referenced file
MAX_STATS = 64  # claimed numbers in a submission
MAX_CONFIG_ENTRIES = 256  # model config keys, counted over all nesting levels
MAX_CONFIG_DEPTH = 4
MAX_STRING = 1024
MAX_INT = 1 << 63
MAX_DEPTH = 64  # JSON nesting of any document

DTYPES = ("float32", "bfloat16", "float16")
CID_CODECS = ("raw", "dag-pb")  # a one-chunk file is a raw leaf, a bigger one a dag-pb root

_HEX64 = re.compile(r"[0-9a-f]{64}")
_ADDRESS = re.compile(r"0x[0-9a-f]{40}")
_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")  # safe as a file name: no '/', no leading '.'
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")


class ManifestError(ValueError):
    """Bytes or values that are not a valid canonical manifest; ``field`` says where."""

    def __init__(self, field: str, reason: str, value: Any = None) -> None:
        shown = "" if value is None else f" (got {short_repr(value)})"
        super().__init__(f"manifest field {field!r}: {reason}{shown}")
        self.field = field
        self.reason = reason
        self.value = value


def short_repr(value: Any) -> str:
    """repr(value), cut to 80 characters (for error messages)."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


# ----------------------------------------------------------------------------- encoding


def canonical_bytes(obj: Any) -> bytes:
    """The one encoding of a JSON value (rules in the module docstring)."""
    _check_json_value(obj, "", depth=0)
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def _check_json_value(value: Any, field: str, depth: int) -> None:
    """Refuse values whose JSON form would not round-trip to the same value."""
    if depth > MAX_DEPTH:
        raise ManifestError(field or "<document>", "nested too deeply")
    if value is None or isinstance(value, (bool, str)):
        if isinstance(value, str):
            _check_string(value, field)
        return
    if isinstance(value, int):
        if not -MAX_INT < value < MAX_INT:
            raise ManifestError(field, "integer out of range (|x| < 2**63)", value)
        return
    if isinstance(value, float):
        _check_float(value, field)
        return
    if isinstance(value, list):
        for i, item in enumerate(value):
            _check_json_value(item, f"{field}[{i}]", depth + 1)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ManifestError(field or "<document>", "object keys must be strings", key)
            _check_string(key, _join(field, "<key>"))
            _check_json_value(item, _join(field, key), depth + 1)
        return
    raise ManifestError(field, f"not a JSON value: {type(value).__name__}", value)


def _check_string(value: str, field: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ManifestError(field, "string is not valid Unicode (lone surrogate)", value) from None


def _check_float(value: float, field: str) -> None:
    if not math.isfinite(value):
        raise ManifestError(field, "NaN and Infinity are not allowed", value)
    if value == 0.0 and math.copysign(1.0, value) < 0:
        raise ManifestError(field, "-0.0 is not allowed (write 0.0)", value)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ManifestError(key, "duplicate key")
        out[key] = value
    return out


_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def _nesting(data: bytes) -> int:
    """Deepest [ / { nesting outside strings (an upper bound for malformed input)."""
    brackets = _JSON_STRING.sub(b"", data).translate(None, _NOT_BRACKETS)
    return max(itertools.accumulate(1 if b in b"[{" else -1 for b in brackets), default=0)


def parse_canonical(data: bytes) -> dict[str, Any]:
    """Bytes -> JSON object, refusing anything but the canonical encoding of an object."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ManifestError("<document>", f"expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) > MAX_MANIFEST_BYTES:
        raise ManifestError("<document>", f"{len(data)} bytes is over the {MAX_MANIFEST_BYTES}-byte limit")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ManifestError("<document>", f"not UTF-8 at byte {e.start}") from None
    if _nesting(data) > MAX_DEPTH:  # before json.loads: its C scanner can overflow the C stack first
        raise ManifestError("<document>", f"nested deeper than {MAX_DEPTH}")
    try:
        # NaN/Infinity parse here and are refused by canonical_bytes, which names their field.
        obj = json.loads(text, object_pairs_hook=_no_duplicates)
    except json.JSONDecodeError as e:
        raise ManifestError("<document>", f"not JSON: {e.msg} at char {e.pos}") from None
    except ManifestError:
        raise
    except ValueError as e:  # e.g. an integer literal longer than Python's digit limit
        raise ManifestError("<document>", f"not JSON: {e}") from None
    except RecursionError:
        raise ManifestError("<document>", "nested too deeply") from None
    if not isinstance(obj, dict):
        raise ManifestError("<document>", "top level must be a JSON object", type(obj).__name__)
    if canonical_bytes(obj) != data:
        raise ManifestError(
            "<document>", "not in canonical form (sorted keys, no whitespace, UTF-8 unescaped, shortest floats)"
        )
    return obj


# ----------------------------------------------------------------------------- digests and CIDs


def digest_of(data: bytes) -> Digest:
    """sha256 of the bytes: what the chain stores (as bytes32) and what a manifest's CID derives from."""
    return Digest(hashlib.sha256(data).digest())


# The one CID form a manifest or shard reference carries, spelled out (tests/test_manifest.py pins it to
# multiformats): "b" + base32 (RFC 4648, lowercase, unpadded) of the binary CID, version 1 | codec
# varint | sha2-256 multihash (0x12, 32 bytes). Raw (0x55) and dag-pb (0x70) are one-byte varints.
_CID_PREFIX = {"raw": b"\x01\x55\x12\x20", "dag-pb": b"\x01\x70\x12\x20"}
_CID_BYTES = 36  # 4 prefix bytes + the 32-byte digest
_BASE32_CID = re.compile(r"b[a-z2-7]{58}")  # 36 bytes = 288 bits in 58 characters of 5 bits


def _base32(raw: bytes) -> str:
    return "b" + base64.b32encode(raw).decode("ascii").rstrip("=").lower()


def cid_for_digest(digest: Digest | bytes | str) -> str:
    """The IPFS address of a manifest: CIDv1, raw codec, sha2-256 multihash, base32 ('b...').
    ``digest``: anything ``Digest.parse`` takes (InvalidDigest otherwise)."""
    return _base32(_CID_PREFIX["raw"] + Digest.parse(digest).bytes)


def digest_for_cid(cid: str) -> Digest:
    """Inverse of ``cid_for_digest``; refuses CIDs that are not raw sha2-256 (any base)."""
    parsed = _parse_cid(cid, "cid")
    if parsed.codec.name != "raw":
        raise ManifestError("cid", f"codec is {parsed.codec.name}, a manifest is raw", cid)
    return Digest(bytes(parsed.raw_digest))


def _parse_cid(cid: Any, field: str) -> CID:
    if not isinstance(cid, str):
        raise ManifestError(field, "expected a CID string", cid)
    try:
        parsed = CID.decode(cid)
    except (ValueError, KeyError) as e:
        raise ManifestError(field, f"not a CID: {e}", cid) from None
    if parsed.version != 1 or parsed.hashfun.name != "sha2-256" or len(parsed.raw_digest) != 32:
        raise ManifestError(field, "expected CIDv1 with a sha2-256 multihash", cid)
    return parsed


def canonical_cid(cid: str, field: str = "cid") -> str:
    """The base32 form of a CIDv1 sha2-256 raw/dag-pb CID (daemons may answer in base58).

    A CID already in that form (every shard reference of a valid manifest) is recognised by
    decoding its base32 and re-encoding it to the same string, without a multiformats parse;
    anything else goes through multiformats, which refuses or converts it."""
    if isinstance(cid, str) and _BASE32_CID.fullmatch(cid):
        raw = base64.b32decode(cid[1:].upper() + "======")  # 7 whole 8-character groups, then 2 + 6 pads
        if len(raw) == _CID_BYTES and raw[:4] in _CID_PREFIX.values() and _base32(raw) == cid:
            return cid
    parsed = _parse_cid(cid, field)
    if parsed.codec.name not in CID_CODECS:
        raise ManifestError(field, f"codec {parsed.codec.name} is not one of {CID_CODECS}", cid)
    return str(parsed.set(base="base32"))


# ----------------------------------------------------------------------------- field checks


def _fields(obj: Mapping[str, Any], where: str, expected: tuple[str, ...]) -> None:
    if not isinstance(obj, Mapping):
        raise ManifestError(where or "<document>", "expected an object", obj)
    for key in obj:
        if key not in expected:
            raise ManifestError(_join(where, key), "unknown field")
    for key in expected:
        if key not in obj:
            raise ManifestError(_join(where, key), "missing field")


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _int(value: Any, field: str, lo: int = 0, hi: int = MAX_INT - 1) -> int:
    if type(value) is not int:
        raise ManifestError(field, "expected an integer", value)
    if not lo <= value <= hi:
        raise ManifestError(field, f"expected {lo} <= x <= {hi}", value)
    return value


def _str(value: Any, field: str, pattern: re.Pattern[str] | None = None, what: str = "") -> str:
    if type(value) is not str:
        raise ManifestError(field, "expected a string", value)
    if len(value) > MAX_STRING:
        raise ManifestError(field, f"string longer than {MAX_STRING} chars", value)
    if pattern is not None and not pattern.fullmatch(value):
        raise ManifestError(field, f"expected {what or pattern.pattern}", value)
    _check_string(value, field)
    return value


def _hex64(value: Any, field: str) -> str:
    return _str(value, field, _HEX64, "64 lowercase hex chars (sha256)")


def _list(value: Any, field: str, max_len: int, min_len: int = 0) -> list[Any]:
    if type(value) is not list:
        raise ManifestError(field, "expected a list", value)
    if len(value) > max_len:
        raise ManifestError(field, f"{len(value)} items is over the limit of {max_len}")
    if len(value) < min_len:
        raise ManifestError(field, f"expected at least {min_len} item(s)")
    return value


def _config(value: Any, field: str) -> dict[str, Any]:
    """A model config: a JSON object of scalars, lists and objects, bounded in size and depth."""
    if type(value) is not dict:
        raise ManifestError(field, "expected an object", value)
    count = 0

    def walk(v: Any, f: str, depth: int) -> None:
        nonlocal count
        if depth > MAX_CONFIG_DEPTH:
            raise ManifestError(f, f"nested deeper than {MAX_CONFIG_DEPTH}")
        if isinstance(v, dict):
            for k, item in v.items():
                count += 1
                if count > MAX_CONFIG_ENTRIES:
                    raise ManifestError(field, f"more than {MAX_CONFIG_ENTRIES} entries")
                _str(k, f"{f}.<key>", _KEY, "a key like [A-Za-z_][A-Za-z0-9_.-]*")
                walk(item, f"{f}.{k}", depth + 1)
        elif isinstance(v, list):
            _list(v, f, MAX_CONFIG_ENTRIES)
            for i, item in enumerate(v):
                walk(item, f"{f}[{i}]", depth + 1)
        elif isinstance(v, str):
            _str(v, f)
        elif isinstance(v, float):
            _check_float(v, f)
        elif isinstance(v, int) and not isinstance(v, bool):
            _int(v, f, -MAX_INT + 1)
        elif v is not None and not isinstance(v, bool):
            raise ManifestError(f, f"not a JSON value: {type(v).__name__}", v)

    walk(value, field, 0)
    return value


def _stats(value: Any, field: str) -> dict[str, Any]:
    if type(value) is not dict:
        raise ManifestError(field, "expected an object of numbers", value)
    if len(value) > MAX_STATS:
        raise ManifestError(field, f"{len(value)} entries is over the limit of {MAX_STATS}")
    for k, v in value.items():
        _str(k, f"{field}.<key>", _KEY, "a key like [A-Za-z_][A-Za-z0-9_.-]*")
        if type(v) is float:
            _check_float(v, f"{field}.{k}")
        elif type(v) is int:
            _int(v, f"{field}.{k}", -MAX_INT + 1)
        else:
            raise ManifestError(f"{field}.{k}", "expected a number", v)
    return value


# ----------------------------------------------------------------------------- wire formats


@dataclass(frozen=True)
class ShardRef:
    """One file in IPFS: where it is (CID), what it must hash to, and how big it may be."""

    name: str  # a plain file name: safe to join under a download directory
    cid: str  # CIDv1 base32, raw leaves (raw codec for one chunk, dag-pb root above)
    sha256: str  # 64 lowercase hex chars of the file's bytes
    size: int  # bytes

    FIELDS = ("name", "cid", "sha256", "size")

    def __post_init__(self) -> None:
        _check_shard(self.name, self.cid, self.sha256, self.size, "")

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "cid": self.cid, "sha256": self.sha256, "size": self.size}

    @staticmethod
    def from_json(obj: Any, where: str) -> ShardRef:
        _fields(obj, where, ShardRef.FIELDS)
        _check_shard(obj["name"], obj["cid"], obj["sha256"], obj["size"], where)
        return ShardRef(obj["name"], obj["cid"], obj["sha256"], obj["size"])


def _check_shard(name: Any, cid: Any, sha256: Any, size: Any, where: str) -> None:
    _str(name, _join(where, "name"), _NAME, "a file name [A-Za-z0-9._-], no leading '.', <= 128 chars")
    _str(cid, _join(where, "cid"))
    if canonical_cid(cid, _join(where, "cid")) != cid:
        raise ManifestError(_join(where, "cid"), "expected the base32 CIDv1 form", cid)
    _hex64(sha256, _join(where, "sha256"))
    _int(size, _join(where, "size"), 0, MAX_FILE_BYTES)


def _shard_list(value: Any, field: str, min_len: int = 1) -> list[ShardRef]:
    refs = [
        ShardRef.from_json(item, f"{field}[{i}]") for i, item in enumerate(_list(value, field, MAX_SHARDS, min_len))
    ]
    _unique_names(refs, field)
    return refs


def _unique_names(refs: list[ShardRef] | tuple[ShardRef, ...], field: str) -> None:
    seen: set[str] = set()
    for i, ref in enumerate(refs):
        if ref.name in seen:
            raise ManifestError(f"{field}[{i}].name", "duplicate shard name", ref.name)
        seen.add(ref.name)


def _check_refs(refs: Any, field: str, min_len: int = 1) -> None:
    if not isinstance(refs, tuple):
        raise ManifestError(field, "expected a tuple of ShardRef", refs)
    if not min_len <= len(refs) <= MAX_SHARDS:
        raise ManifestError(field, f"expected {min_len}..{MAX_SHARDS} shards, got {len(refs)}")
    for i, ref in enumerate(refs):
        if not isinstance(ref, ShardRef):
            raise ManifestError(f"{field}[{i}]", "expected a ShardRef", ref)
    _unique_names(refs, field)


def _to_bytes(obj: dict[str, Any]) -> bytes:
    data = canonical_bytes(obj)
    if len(data) > MAX_MANIFEST_BYTES:
        raise ManifestError("<document>", f"{len(data)} bytes is over the {MAX_MANIFEST_BYTES}-byte limit")
    return data


def _kind(obj: dict[str, Any], expected: str) -> None:
    if not isinstance(obj, Mapping):
        raise ManifestError("<document>", "expected an object", obj)
    kind = obj.get("kind")
    if kind != expected:
        raise ManifestError("kind", f"expected {expected!r}", kind)


class _Document:
    """What a manifest class shares: its canonical bytes (size-capped), their digest, and back from bytes."""

    def to_json(self) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Self:
        raise NotImplementedError

    def to_bytes(self) -> bytes:
        return _to_bytes(self.to_json())

    def digest(self) -> Digest:
        return digest_of(self.to_bytes())

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        return cls.from_json(parse_canonical(data))


@dataclass(frozen=True)
class ModelManifest(_Document):
    """A policy: its architecture, dtype, weight shards, outer-optimizer state and parent."""

    config: dict[str, Any]  # architecture hyper-parameters (JSON object)
    dtype: str  # one of DTYPES
    shards: tuple[ShardRef, ...]  # safetensors shards, in load order
    outer_state: tuple[ShardRef, ...] | None  # DiLoCo momentum etc.; None for an initial model
    parent: Digest | None  # model r-1 (wire: 64 hex chars, no 0x); None for model 0
    kind: str = "model"

    FIELDS = ("kind", "config", "dtype", "shards", "outer_state", "parent")

    def __post_init__(self) -> None:
        # Lists are accepted for convenience and frozen to tuples, so the object is immutable.
        if isinstance(self.shards, list):
            object.__setattr__(self, "shards", tuple(self.shards))
        if isinstance(self.outer_state, list):
            object.__setattr__(self, "outer_state", tuple(self.outer_state))
        if self.kind != "model":
            raise ManifestError("kind", "expected 'model'", self.kind)
        _config(self.config, "config")
        if self.dtype not in DTYPES:
            raise ManifestError("dtype", f"expected one of {DTYPES}", self.dtype)
        _check_refs(self.shards, "shards")
        if self.outer_state is not None:
            _check_refs(self.outer_state, "outer_state")
        if self.parent is not None and not isinstance(self.parent, Digest):
            raise ManifestError("parent", "expected a Digest", self.parent)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "config": self.config,
            "dtype": self.dtype,
            "shards": [s.to_json() for s in self.shards],
            "outer_state": None if self.outer_state is None else [s.to_json() for s in self.outer_state],
            "parent": None if self.parent is None else self.parent.hex(),
        }

    @staticmethod
    def from_json(obj: dict[str, Any]) -> ModelManifest:
        _kind(obj, "model")  # first: another kind of manifest is named as such, not by its fields
        _fields(obj, "", ModelManifest.FIELDS)
        outer = obj["outer_state"]
        parent = obj["parent"]
        return ModelManifest(
            config=_config(obj["config"], "config"),
            dtype=_str(obj["dtype"], "dtype"),
            shards=tuple(_shard_list(obj["shards"], "shards")),
            outer_state=None if outer is None else tuple(_shard_list(outer, "outer_state")),
            parent=None if parent is None else Digest.parse(_hex64(parent, "parent")),
        )


@dataclass(frozen=True)
class SubmissionManifest(_Document):
    """A trainer's round-r work (DESIGN §3.1, §5): what a validator fetches and re-checks."""

    task_id: int
    round: int
    base_round: int
    trainer: str  # 0x-address, lowercase (other cases are lowered on construction)
    rollouts: ShardRef  # tokens, rewards, seeds
    proofs: ShardRef  # TOPLOC proofs
    delta: tuple[ShardRef, ...]  # theta_H - theta_base, safetensors shards
    stats: dict[str, Any]  # claimed numbers (mean reward, work units, ...), re-computed by validators
    states: tuple[ShardRef, ...] = ()  # inner states 1..H (theta_k + optimizer state), one file each
    kind: str = "submission"

    FIELDS = ("kind", "task_id", "round", "base_round", "trainer", "rollouts", "proofs", "delta", "stats", "states")

    def __post_init__(self) -> None:
        if isinstance(self.delta, list):
            object.__setattr__(self, "delta", tuple(self.delta))
        if isinstance(self.states, list):
            object.__setattr__(self, "states", tuple(self.states))
        if isinstance(self.trainer, str):
            object.__setattr__(self, "trainer", self.trainer.lower())
        if self.kind != "submission":
            raise ManifestError("kind", "expected 'submission'", self.kind)
        _int(self.task_id, "task_id")
        _int(self.round, "round")
        _int(self.base_round, "base_round", 0, self.round if type(self.round) is int else 0)
        _str(self.trainer, "trainer", _ADDRESS, "a 0x-prefixed 20-byte hex address")
        for name in ("rollouts", "proofs"):
            if not isinstance(getattr(self, name), ShardRef):
                raise ManifestError(name, "expected a ShardRef", getattr(self, name))
        _check_refs(self.delta, "delta")
        _check_refs(self.states, "states", min_len=0)
        _stats(self.stats, "stats")

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "task_id": self.task_id,
            "round": self.round,
            "base_round": self.base_round,
            "trainer": self.trainer,
            "rollouts": self.rollouts.to_json(),
            "proofs": self.proofs.to_json(),
            "delta": [s.to_json() for s in self.delta],
            "stats": self.stats,
            "states": [s.to_json() for s in self.states],
        }

    @staticmethod
    def from_json(obj: dict[str, Any]) -> SubmissionManifest:
        _kind(obj, "submission")  # first: another kind of manifest is named as such, not by its fields
        _fields(obj, "", SubmissionManifest.FIELDS)
        round_ = _int(obj["round"], "round")
        return SubmissionManifest(
            task_id=_int(obj["task_id"], "task_id"),
            round=round_,
            base_round=_int(obj["base_round"], "base_round", 0, round_),
            trainer=_str(obj["trainer"], "trainer", _ADDRESS, "a lowercase 0x-prefixed 20-byte hex address"),
            rollouts=ShardRef.from_json(obj["rollouts"], "rollouts"),
            proofs=ShardRef.from_json(obj["proofs"], "proofs"),
            delta=tuple(_shard_list(obj["delta"], "delta")),
            stats=_stats(obj["stats"], "stats"),
            states=tuple(_shard_list(obj["states"], "states", min_len=0)),
        )


def decode_manifest(data: bytes) -> ModelManifest | SubmissionManifest:
    """Bytes of any known manifest kind -> its dataclass (dispatch on ``kind``)."""
    obj = parse_canonical(data)
    kind = obj.get("kind")
    if kind == "model":
        return ModelManifest.from_json(obj)
    if kind == "submission":
        return SubmissionManifest.from_json(obj)
    raise ManifestError("kind", "expected 'model' or 'submission'", kind)

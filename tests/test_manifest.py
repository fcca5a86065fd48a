"""Manifests: one canonical encoding, strict decoding with the failing field named (DESIGN §4)."""

from __future__ import annotations

import hashlib
import json

import pytest
from multiformats import CID

from concord.client.content.manifest import (
    MAX_MANIFEST_BYTES,
    MAX_SHARDS,
    ManifestError,
    ModelManifest,
    ShardRef,
    SubmissionManifest,
    canonical_bytes,
    canonical_cid,
    cid_for_digest,
    decode_manifest,
    digest_for_cid,
    digest_of,
)
from concord.client.digest import Digest, InvalidDigest


def ref(name: str, payload: bytes) -> ShardRef:
    sha = hashlib.sha256(payload).hexdigest()
    return ShardRef(name, cid_for_digest(sha), sha, len(payload))


def model() -> ModelManifest:
    return ModelManifest(
        config={
            "d_model": 64,
            "n_layers": 2,
            "rope_theta": 10000.0,
            "tie": True,
            "vocab": {"size": 512, "bos": 1},
            "name": "tiny-ünïcode",
        },
        dtype="float32",
        shards=[ref("model-00001.safetensors", b"w1"), ref("model-00002.safetensors", b"w2")],
        outer_state=[ref("momentum.safetensors", b"m")],
        parent=Digest.parse("ab" * 32),
    )


def submission() -> SubmissionManifest:
    return SubmissionManifest(
        task_id=7,
        round=5,
        base_round=4,
        trainer="0x" + "Ab" * 20,
        rollouts=ref("rollouts.bin", b"r"),
        proofs=ref("proofs.bin", b"p"),
        delta=[ref("delta.safetensors", b"d")],
        stats={"mean_reward": 0.625, "work_units": 96, "kl": 1e-05},
    )


def as_json(m: ModelManifest | SubmissionManifest) -> dict:
    return json.loads(m.to_bytes())


def encode(obj: dict) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def refused(data: bytes, cls: type = ModelManifest) -> ManifestError:
    with pytest.raises(ManifestError) as info:
        cls.from_bytes(data)
    return info.value


# ----------------------------------------------------------------------------- round trips and digests


def test_round_trip_is_identity_and_bytes_are_canonical() -> None:
    for m in (model(), submission()):
        data = m.to_bytes()
        assert type(m).from_bytes(data) == m
        assert decode_manifest(data) == m
        assert canonical_bytes(json.loads(data)) == data
        assert m.digest() == Digest(hashlib.sha256(data).digest())
    # Sorted keys, no whitespace, raw UTF-8: exactly one byte string per document.
    data = model().to_bytes()
    assert data.startswith(b'{"config":{"d_model":64,"n_layers":2,"name":"tiny-\xc3\xbcn\xc3\xafcode"')
    assert b" " not in data and b"\\u" not in data


def test_same_content_in_any_insertion_order_has_one_digest() -> None:
    a = submission()
    b = SubmissionManifest(
        task_id=7,
        round=5,
        base_round=4,
        trainer="0x" + "ab" * 20,
        rollouts=a.rollouts,
        proofs=a.proofs,
        delta=list(a.delta),
        stats={"kl": 1e-05, "work_units": 96, "mean_reward": 0.625},
    )
    assert a.to_bytes() == b.to_bytes()
    assert a.trainer == "0x" + "ab" * 20  # checksummed input is lowered on construction


def test_cid_for_digest_matches_known_ipfs_address_and_inverts() -> None:
    # The address js-ipfs gives `block/put --format=raw` of b"hello" (checked against the daemon in test_store).
    digest = hashlib.sha256(b"hello").hexdigest()
    cid = cid_for_digest(digest)
    assert cid == "bafkreibm6jg3ux5qumhcn2b3flc3tyu6dmlb4xa7u5bf44yegnrjhc4yeq"
    assert cid_for_digest(bytes.fromhex(digest)) == cid
    assert digest_for_cid(cid) == Digest.parse(digest)
    assert digest_for_cid("zb2rhZfjRh2FHHB2RkHVEvL2vJnCTcu7kwRqgVsf9gpkLgteo") == Digest.parse(digest)  # base58 form
    with pytest.raises(ManifestError) as info:
        digest_for_cid("bafybeicrs3cje52ypcckw6sjorz2jouaw74wkxzttopfkpmiwae6pmqzt4")  # dag-pb, not raw
    assert "dag-pb" in str(info.value)
    with pytest.raises(InvalidDigest):
        cid_for_digest("ab" * 31)


def test_cid_strings_are_exactly_what_multiformats_writes_and_accepts() -> None:
    """cid_for_digest and canonical_cid spell the base32 CIDv1 out by hand (no multiformats parse on
    the hot path): pinned to multiformats for many digests and both codecs; anything not already in
    that form (another base, upper case, non-zero trailing bits, another codec or hash) is converted
    or refused exactly as multiformats decides."""
    for i in range(200):
        digest = hashlib.sha256(i.to_bytes(4, "big")).digest()
        for codec in ("raw", "dag-pb"):
            want = str(CID("base32", 1, codec, ("sha2-256", digest)))
            assert canonical_cid(want) == want
            assert canonical_cid(str(CID("base58btc", 1, codec, ("sha2-256", digest)))) == want
            assert canonical_cid(want.upper()) == want  # multibase 'B': upper-case base32, converted
        assert cid_for_digest(digest) == str(CID("base32", 1, "raw", ("sha2-256", digest)))
    cid = cid_for_digest(hashlib.sha256(b"hello").digest())
    last = "abcdefghijklmnopqrstuvwxyz234567".index(cid[-1])
    assert last % 4 == 0  # 290 bits written for 288: the last character's two low bits are zero
    with pytest.raises(ManifestError):
        canonical_cid(cid[:-1] + "abcdefghijklmnopqrstuvwxyz234567"[last + 1])  # same bytes, other spelling
    for bad in (
        str(CID("base32", 1, "dag-cbor", ("sha2-256", bytes(32)))),
        str(CID("base32", 1, "raw", ("sha2-512", bytes(64)))),
        "b" + "a" * 58,
        cid[:-1],
        cid + "a",
    ):
        with pytest.raises(ManifestError):
            canonical_cid(bad)


# ----------------------------------------------------------------------------- non-canonical bytes


@pytest.mark.parametrize(
    "mutate",
    [
        lambda b: b.replace(b'"dtype":', b'"dtype": '),  # whitespace
        lambda b: b + b"\n",  # trailing newline
        lambda b: b.replace("ü".encode(), b"\\u00fc"),  # escaped non-ASCII
        lambda b: b.replace(b"10000.0", b"1e4"),  # float not in shortest form
        lambda b: b.replace(b"10000.0", b"10000.00"),
        lambda b: b'{"dtype":"float32",' + b[1:].replace(b',"dtype":"float32"', b""),  # keys out of order
    ],
    ids=["space", "newline", "escaped", "exponent", "trailing-zero", "unsorted"],
)
def test_non_canonical_bytes_are_refused(mutate) -> None:
    data = model().to_bytes()
    bad = mutate(data)
    assert bad != data
    err = refused(bad)
    assert err.field == "<document>" and "canonical" in err.reason


def test_duplicate_keys_are_refused_with_the_key_named() -> None:
    data = model().to_bytes().replace(b'"dtype":"float32"', b'"dtype":"float32","dtype":"float32"')
    assert refused(data).field == "dtype"


def test_non_utf8_and_lone_surrogates_are_refused() -> None:
    data = model().to_bytes().replace("ü".encode(), b"\xfc")
    err = refused(data)
    assert err.field == "<document>" and "UTF-8" in err.reason
    data = model().to_bytes().replace("ü".encode(), b"\\ud800")
    assert refused(data).field == "config.name"


def test_nan_and_infinity_are_refused_with_the_field_named() -> None:
    data = model().to_bytes().replace(b"10000.0", b"NaN")
    assert refused(data).field == "config.rope_theta"
    data = model().to_bytes().replace(b"10000.0", b"1e999")  # parses to inf
    assert refused(data).field == "config.rope_theta"
    with pytest.raises(ManifestError) as info:
        SubmissionManifest(**{**submission().__dict__, "stats": {"mean_reward": float("inf")}})
    assert info.value.field == "stats.mean_reward"


def test_oversize_document_is_refused_before_parsing() -> None:
    err = refused(b"{" + b" " * MAX_MANIFEST_BYTES + b"}")
    assert err.field == "<document>" and "limit" in err.reason


# ----------------------------------------------------------------------------- schema


def test_unknown_and_missing_fields_are_named() -> None:
    obj = as_json(model())
    assert refused(encode({**obj, "extra": 1})).field == "extra"
    obj2 = as_json(model())
    obj2["shards"][1]["mode"] = "0644"
    assert refused(encode(obj2)).field == "shards[1].mode"
    obj3 = as_json(submission())
    del obj3["proofs"]
    assert refused(encode(obj3), SubmissionManifest).field == "proofs"


@pytest.mark.parametrize(
    "path,value,field",
    [
        (("shards", 0, "size"), "2", "shards[0].size"),
        (("shards", 0, "size"), True, "shards[0].size"),
        (("shards", 0, "size"), 2.0, "shards[0].size"),
        (("shards", 0, "size"), -1, "shards[0].size"),
        (("shards", 0, "sha256"), "AB" * 32, "shards[0].sha256"),
        (("shards", 0, "name"), "../../etc/passwd", "shards[0].name"),
        (("shards", 0, "cid"), "zb2rhZfjRh2FHHB2RkHVEvL2vJnCTcu7kwRqgVsf9gpkLgteo", "shards[0].cid"),  # base58
        (("shards", 0, "cid"), "QmRaaUwTNfwgFZpeUy8qrZwrp2dY4kCKmmB5xEqvH3vtD1", "shards[0].cid"),  # CIDv0
        (("dtype",), "float64", "dtype"),
        (("parent",), "xyz", "parent"),
        (("outer_state",), [], "outer_state"),
        (("config",), [1, 2], "config"),
        (("kind",), "submission", "kind"),
    ],
    ids=lambda v: str(v)[:30],
)
def test_wrong_types_in_model_manifest_are_named(path, value, field) -> None:
    obj = as_json(model())
    target = obj
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    assert refused(encode(obj)).field == field


@pytest.mark.parametrize(
    "key,value,field",
    [
        ("round", -1, "round"),
        ("round", 2**63, "round"),
        ("base_round", 6, "base_round"),  # base_round > round
        ("task_id", "7", "task_id"),
        ("trainer", "0x1234", "trainer"),
        ("trainer", "0x" + "AB" * 20, "trainer"),  # the canonical form is lowercase
        ("stats", {"mean_reward": True}, "stats.mean_reward"),
        ("stats", {"mean reward": 1}, "stats.<key>"),
        ("delta", [], "delta"),
        ("rollouts", "bafkrei", "rollouts"),
    ],
    ids=lambda v: str(v)[:20],
)
def test_wrong_types_in_submission_manifest_are_named(key, value, field) -> None:
    obj = as_json(submission())
    obj[key] = value
    assert refused(encode(obj), SubmissionManifest).field == field


def test_huge_arrays_are_refused_with_the_field_named() -> None:
    one = as_json(model())["shards"][0]
    obj = as_json(model())
    obj["shards"] = [{**one, "name": f"s{i}"} for i in range(MAX_SHARDS + 1)]
    data = encode(obj)
    assert len(data) < MAX_MANIFEST_BYTES  # small enough to reach the schema check
    err = refused(data)
    assert err.field == "shards" and str(MAX_SHARDS) in err.reason
    obj = as_json(model())
    obj["config"]["layers"] = list(range(10_000))
    assert refused(encode(obj)).field == "config.layers"


def test_duplicate_shard_names_are_refused() -> None:
    obj = as_json(model())
    obj["shards"][1]["name"] = obj["shards"][0]["name"]
    assert refused(encode(obj)).field == "shards[1].name"


def test_invalid_objects_cannot_be_constructed() -> None:
    good = ref("a.bin", b"a")
    with pytest.raises(ManifestError) as info:
        ShardRef("a.bin", good.cid, good.sha256, -5)
    assert info.value.field == "size"
    with pytest.raises(ManifestError) as info:
        ModelManifest({}, "float32", [], None, None)
    assert info.value.field == "shards"
    with pytest.raises(ManifestError) as info:
        SubmissionManifest(1, 1, 2, "0x" + "00" * 20, good, good, [good], {})
    assert info.value.field == "base_round"


def test_digest_of_is_sha256() -> None:
    assert str(digest_of(b"")) == "0xe3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

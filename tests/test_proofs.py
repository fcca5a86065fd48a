"""TOPLOC proofs against the real toploc 0.1.6 build: sizes, honest tolerance, malformed
proofs (never a crash), the library pitfalls we guard, wire encoding and the Merkle rule."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import pytest
import torch
import toploc

from client.proofs import (
    CHUNK,
    PROOF_BYTES,
    TOPK,
    MalformedProof,
    ToplocThresholds,
    build_rollout_proofs,
    chunk_rows,
    decode_proofs,
    encode_proofs,
    leaf_hash,
    merkle_root,
    verify_rollout_proofs,
)


@pytest.fixture(scope="module")
def acts() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return torch.randn(12, 128, generator=gen), torch.randn(70, 128, generator=gen)  # prompt [P, D], decode [C, D]


def test_chunking_and_proof_size(acts):
    prompt, decode = acts
    proofs = build_rollout_proofs(prompt, decode)
    assert chunk_rows(12, 70) == [12, 32, 32, 6]
    assert [len(p) for p in proofs] == [PROOF_BYTES] * 4 == [258] * 4  # 258 bytes per 32 tokens
    assert TOPK == 128 and CHUNK == 32
    assert chunk_rows(5, 0) == [5]


def test_fp32_input_is_cast_not_zeroed(acts):
    """toploc's own builder silently returns all-zero proofs for fp32; ours casts to bf16."""
    prompt, decode = acts
    lib = toploc.build_proofs_bytes([prompt, *decode[:32]], decode_batching_size=32, topk=128)
    assert all(p == bytes(258) for p in lib)
    ours = build_rollout_proofs(prompt, decode)
    assert ours == build_rollout_proofs(prompt.bfloat16(), decode.bfloat16())
    assert all(int.from_bytes(p[:2], "big") > 0 for p in ours)


def test_honest_states_verify_exactly(acts):
    prompt, decode = acts
    res = verify_rollout_proofs(prompt, decode, build_rollout_proofs(prompt, decode))
    assert res.ok and len(res.chunks) == 4
    assert [(c.exp_mismatches, c.mant_err_mean, c.mant_err_median) for c in res.chunks] == [(0, 0.0, 0.0)] * 4
    assert [c.k for c in res.chunks] == [128, 128, 128, 128]


def test_small_chunks_use_all_values():
    """Hidden size 4: a last chunk of 1 token has 4 values, so k = 4 and the mismatch bound scales."""
    gen = torch.Generator().manual_seed(1)
    prompt, decode = torch.randn(3, 4, generator=gen), torch.randn(33, 4, generator=gen)
    proofs = build_rollout_proofs(prompt, decode)
    assert [len(p) for p in proofs] == [2 + 2 * 12, 258, 2 + 2 * 4]
    assert verify_rollout_proofs(prompt, decode, proofs).ok


def test_noise_within_thresholds_passes_and_other_states_fail(acts):
    prompt, decode = acts
    proofs = build_rollout_proofs(prompt, decode)
    jitter = verify_rollout_proofs(prompt * 1.01, decode * 1.01, proofs)  # ~1% activation noise
    assert jitter.ok and jitter.worst_mant_err_mean <= 2
    gen = torch.Generator().manual_seed(9)
    other = verify_rollout_proofs(torch.randn(12, 128, generator=gen), decode, proofs)
    assert not other.ok and other.chunks[0].exp_mismatches > 38 and other.reason.startswith("chunk 0")
    strict = verify_rollout_proofs(prompt * 1.01, decode * 1.01, proofs, ToplocThresholds(0, 0.0, 0.0))
    assert not strict.ok


@pytest.mark.parametrize("rows_changed,expect_ok,mismatches", [(1, True, 8), (8, True, 32), (16, False, 62)])
def test_altered_decode_rows(acts, rows_changed, expect_ok, mismatches):
    """Re-drawn positions in a 32-position chunk of i.i.d. states: TOPLOC bounds a *fraction*
    of the chunk (measured: 1 -> 8, 8 -> 32, 16 -> 62 exponent mismatches of 128)."""
    prompt, decode = acts
    proofs = build_rollout_proofs(prompt, decode)
    gen = torch.Generator().manual_seed(3)
    bad = decode.clone()
    bad[:rows_changed] = torch.randn(rows_changed, 128, generator=gen)
    res = verify_rollout_proofs(prompt, bad, proofs)
    assert res.ok is expect_ok
    assert res.chunks[1].exp_mismatches == mismatches
    assert res.chunks[0].exp_mismatches == res.chunks[2].exp_mismatches == 0


@pytest.mark.parametrize(
    "mutate,reason",
    [
        (lambda ps: [bytes(258)] + ps[1:], "modulus must be"),
        (lambda ps: [ps[0][:100]] + ps[1:], "proof length"),
        (lambda ps: [ps[0] + b"\x00"] + ps[1:], "proof length"),
        (lambda ps: ps[:-1], "expected 4 proofs"),
        (lambda ps: ps + ps[-1:], "expected 4 proofs"),
        (lambda ps: [], "expected 4 proofs"),
        (lambda ps: [b"\xff\xff" + ps[0][2:]] + ps[1:], "modulus must be"),
        (lambda ps: [ps[0][:2] + bytes(256)] + ps[1:], "all coefficients are zero"),
        (lambda ps: ["not bytes"] + ps[1:], "not bytes"),
        (lambda ps: b"".join(ps), "expected 4 proofs"),
    ],
)
def test_malformed_proofs_rejected_without_crash(acts, mutate, reason):
    prompt, decode = acts
    res = verify_rollout_proofs(prompt, decode, mutate(build_rollout_proofs(prompt, decode)))
    assert not res.ok and reason in res.reason and res.chunks == ()


def test_modulus_one_is_evaluated_and_rejected(acts):
    """A tiny modulus is well-formed enough to evaluate (no crash) and fails on its numbers."""
    prompt, decode = acts
    proofs = build_rollout_proofs(prompt, decode)
    res = verify_rollout_proofs(prompt, decode, [b"\x00\x01" + proofs[0][2:]] + proofs[1:])
    assert not res.ok and res.chunks[0].exp_mismatches > 38


def test_unguarded_library_dies_on_zero_proof():
    """Why the guard exists: toploc's C++ verify of a zero-modulus proof kills the process (SIGFPE)."""
    code = (
        "import torch, toploc.poly as p; a = torch.randn(32, 128).bfloat16();"
        "p.c_verify_proofs_bytes(a, [bytes(258)], 32, 128); print('survived')"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -8 and "survived" not in proc.stdout  # -SIGFPE


def test_encoding_roundtrip_and_truncation(acts):
    proofs = build_rollout_proofs(*acts)
    data = encode_proofs(proofs)
    assert len(data) == 2 + 4 * (2 + 258)
    assert decode_proofs(data) == proofs
    assert decode_proofs(encode_proofs([])) == []
    for cut in (1, 3, 100, len(data) - 1):
        with pytest.raises(MalformedProof):
            decode_proofs(data[:cut])
    with pytest.raises(MalformedProof):
        decode_proofs(data + b"\x00")


def test_merkle_rule():
    a, b, c = (leaf_hash(x) for x in (b"a", b"b", b"c"))
    node = lambda l, r: hashlib.sha256(b"\x01" + l + r).digest()  # noqa: E731
    assert a == hashlib.sha256(b"\x00a").digest()
    assert merkle_root([]) == hashlib.sha256(b"").digest()
    assert merkle_root([a]) == a
    assert merkle_root([a, b]) == node(a, b)
    assert merkle_root([a, b, c]) == node(node(a, b), c)  # odd node promoted, not duplicated
    assert merkle_root([a, b, c]) != merkle_root([a, b, c, c])
    assert merkle_root([a, b]) != merkle_root([b, a])
    assert merkle_root([a, b, c, a, b]) == node(node(node(a, b), node(c, a)), b)
    with pytest.raises(ValueError):
        merkle_root([b"short"])

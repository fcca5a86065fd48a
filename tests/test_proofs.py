"""TOPLOC proofs against the real toploc 0.1.6 build: sizes, honest tolerance, malformed
proofs (never a crash), the library pitfalls we guard, wire encoding and the Merkle rule."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import numpy as np
import pytest
import toploc
import toploc.poly
import torch

from concord.client.engine.proofs import (
    CHUNK,
    FIELD,
    PROOF_BYTES,
    TOPK,
    MalformedProof,
    ToplocThresholds,
    build_chunk_proofs,
    build_many_rollout_proofs,
    build_rollout_proofs,
    chunk_rows,
    decode_proofs,
    encode_proofs,
    interpolate_mod_field,
    leaf_hash,
    merkle_root,
    verify_many_rollout_proofs,
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

    def node(left: bytes, right: bytes) -> bytes:
        return hashlib.sha256(b"\x01" + left + right).digest()

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


def _library_proof(flat: torch.Tensor, topk: int = TOPK) -> bytes:
    """toploc's own builder on one flat bf16 chunk, as its build_proofs calls it."""
    idx = flat.abs().topk(min(topk, flat.numel())).indices
    return toploc.poly.ProofPoly.from_points_tensor(idx, flat[idx]).to_bytes()


def test_batched_builder_gives_the_library_bytes():
    """build_chunk_proofs interpolates in numpy, many chunks at once; its bytes must be toploc's
    for every size (k < 128, the prefill, full and short decode chunks, above FIELD values where
    toploc may pick a smaller modulus), ties, all-zero chunks and indices colliding mod FIELD."""
    gen = torch.Generator().manual_seed(7)
    chunks = [
        (torch.randn(n, generator=gen) * 4).bfloat16()
        for n in (1, 2, 3, 64, 127, 128, 129, 12 * 256, 32 * 256, 6 * 256, 70_000, 200_000)
        for _ in range(3)
    ]
    chunks.append(torch.randint(-3, 4, (8192,), generator=gen).bfloat16())  # many ties among the top-k
    chunks.append(torch.zeros(8192, dtype=torch.bfloat16))
    colliding = torch.zeros(70_000)
    colliding[5], colliding[5 + FIELD] = 100.0, 90.0  # the top two indices are equal mod FIELD
    chunks.append(colliding.bfloat16())
    ours = build_chunk_proofs(chunks)
    assert ours == [_library_proof(c) for c in chunks]
    assert int.from_bytes(ours[-1][:2], "big") < FIELD  # the library's smaller modulus, via its path


def test_batched_builder_matches_per_rollout_building(acts):
    prompt, decode = acts
    rollouts = [(prompt, decode), (prompt[:5] * 2, decode[:40]), (prompt, decode[:0])]
    assert build_many_rollout_proofs(rollouts) == [build_rollout_proofs(p, d) for p, d in rollouts]
    assert build_rollout_proofs(prompt, decode) == [
        _library_proof(prompt.bfloat16().reshape(-1)),
        *[_library_proof(c.bfloat16().reshape(-1)) for c in decode.split(CHUNK)],
    ]


def test_interpolation_passes_through_its_points():
    rng = np.random.default_rng(3)
    x = np.stack([rng.permutation(FIELD)[:TOPK] for _ in range(5)], axis=1)  # [k, 5] distinct per column
    y = rng.integers(0, 2**16, size=x.shape)
    coeffs = interpolate_mod_field(x, y)  # [k, 5]
    for col in range(5):
        c = [int(v) for v in coeffs[:, col]]
        for xi, yi in zip(x[:, col], y[:, col], strict=True):
            value = 0
            for a in reversed(c):
                value = (value * int(xi) + a) % FIELD
            assert value == int(yi) % FIELD


def test_batched_verification_equals_toplocs_cpp_path() -> None:
    """verify_many_rollout_proofs (toploc's arithmetic over all chunks of a size at once) gives every
    rollout exactly the ProofCheck of verify_rollout_proofs (toploc's C++ path): honest, noisy and
    foreign activations, tied magnitudes, short chunks (k < TOPK), coefficients >= FIELD, malformed
    proofs and proof counts."""
    gen = torch.Generator().manual_seed(3)
    cases = []
    for n in range(60):
        p_len, c_len, dim = [(8, 8, 64), (12, 70, 128), (3, 1, 16), (1, 0, 2), (5, 33, 64)][n % 5]
        prompt, decode = torch.randn(p_len, dim, generator=gen), torch.randn(c_len, dim, generator=gen)
        if n % 7 == 0:  # many tied magnitudes: the top-k must pick the same indices among equals
            prompt, decode = prompt.round(), decode.round()
        proofs = build_rollout_proofs(prompt, decode)
        kind = n % 6
        if kind == 1:
            prompt, decode = prompt * 1.01, decode * 1.01  # ~1% noise: passes
        elif kind == 2:
            prompt, decode = prompt * 1.5, decode + torch.randn(decode.shape, generator=gen)  # fails
        elif kind == 3:
            proofs = [p[:2] + bytes([0xFF, 0xF0]) + p[4:] for p in proofs]  # a coefficient >= FIELD
        elif kind == 4:
            proofs = proofs[:-1] if n % 4 else [b"\x00\x00" + proofs[0][2:]] + proofs[1:]  # short, zero modulus
        cases.append((prompt, decode, proofs))
    thresholds = ToplocThresholds()
    assert verify_many_rollout_proofs(cases, thresholds) == [verify_rollout_proofs(*c, thresholds) for c in cases]
    verdicts = {r.ok for r in verify_many_rollout_proofs(cases, thresholds)}
    assert verdicts == {True, False}

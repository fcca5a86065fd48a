"""TOPLOC activation proofs for rollouts, their wire encoding and their Merkle root.

A rollout's proofs commit to the final (post-norm) hidden states that produced it:
one proof for the prompt (the prefill, as one chunk) and one per chunk of 32 decode
positions. Each proof is a polynomial through the top-128 bf16 activations of its chunk
(index -> bf16 bits), 258 bytes on the wire. A validator recomputes the hidden states in
one prefill pass and compares exponents and mantissas at its own top-k (DESIGN.md 6.3).

Building: the proofs of a whole batch are interpolated at once in numpy (build_chunk_proofs),
with toploc's arithmetic and toploc's bytes (pinned by tests/test_proofs.py against
`ProofPoly.from_points_tensor`). Verifying: toploc's C++ path per rollout
(verify_rollout_proofs), or its arithmetic over all chunks of a batch at once
(verify_many_rollout_proofs, what validators run; pinned equal to the C++ path by
tests/test_proofs.py).

Pitfalls of toploc 0.1.6 handled here (DESIGN.md 7):
- fp32 activations make `toploc.build_proofs` silently return all-zero proofs: we cast
  to bf16 ourselves and raise on any failure instead of emitting null proofs.
- verifying a proof with modulus 0 (or no coefficients) in the C++ path kills the
  process (SIGFPE / out-of-range read), and an exception inside its worker threads
  aborts it: every proof and every chunk is checked in Python before the call.
- the Python list-of-tensors verify path does not reduce indices mod the modulus:
  we only use the single-tensor C++ path (`toploc.poly.c_verify_proofs_bytes`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from toploc.poly import ProofPoly, c_verify_proofs_bytes

TOPK = 128  # activations committed per chunk
CHUNK = 32  # decode positions per proof
PROOF_BYTES = 2 + 2 * TOPK  # u16 modulus + TOPK u16 coefficients = 258
# toploc interpolates mod this prime (MOD_N in its ndd.cpp); it is also the first, largest
# modulus it tries for a proof's indices.
FIELD = 65497
MAX_MODULUS = FIELD


class MalformedProof(ValueError):
    """A proof that cannot be verified: wrong size, zero modulus, wrong chunk count."""

    def __init__(self, reason: str, value: object) -> None:
        super().__init__(f"{reason}: {value!r}")
        self.reason = reason
        self.value = value


class ProofBuildError(RuntimeError):
    """Raised instead of emitting a null proof when toploc cannot build one."""


@dataclass(frozen=True)
class ToplocThresholds:
    """Acceptance thresholds per chunk; defaults from the TOPLOC reference.

    `max_exp_mismatches` is out of TOPK; for a chunk with fewer than TOPK activations
    it is scaled down proportionally (rounded down).
    """

    max_exp_mismatches: int = 38
    max_mant_err_mean: float = 10.0
    max_mant_err_median: float = 8.0


@dataclass(frozen=True)
class ChunkResult:
    """toploc's error measures for one proof chunk (larger = further from the proof)."""

    exp_mismatches: int
    mant_err_mean: float
    mant_err_median: float
    k: int  # activations compared


@dataclass(frozen=True)
class ProofCheck:
    """Outcome of verifying one rollout's proofs; never raised, always returned."""

    ok: bool
    reason: str  # "" when ok
    chunks: tuple[ChunkResult, ...]

    @property
    def worst_exp_mismatches(self) -> int:
        return max((c.exp_mismatches for c in self.chunks), default=0)

    @property
    def worst_mant_err_mean(self) -> float:
        return max((c.mant_err_mean for c in self.chunks), default=0.0)

    @property
    def worst_mant_err_median(self) -> float:
        return max((c.mant_err_median for c in self.chunks), default=0.0)


def chunk_rows(n_prompt: int, n_decode: int, chunk: int = CHUNK) -> list[int]:
    """Rows (positions) covered by each proof: the prompt as one chunk, then decode chunks."""
    if n_prompt < 1 or n_decode < 0:
        raise ValueError(f"need n_prompt >= 1 and n_decode >= 0, got {n_prompt}, {n_decode}")
    return [n_prompt] + [min(chunk, n_decode - s) for s in range(0, n_decode, chunk)]


def _chunk_k(rows: int, dim: int, topk: int) -> int:
    return min(topk, rows * dim)


def _as_bf16(hidden: torch.Tensor) -> torch.Tensor:
    """[T, D] any float dtype -> contiguous CPU bf16 (fp32 would give zero proofs)."""
    if hidden.dim() != 2:
        raise ValueError(f"hidden states must be [T, D], got shape {tuple(hidden.shape)}")
    return hidden.detach().to(device="cpu", dtype=torch.bfloat16).contiguous()


def build_rollout_proofs(
    prompt_hidden: torch.Tensor,  # [P, D] hidden states of the prompt positions
    decode_hidden: torch.Tensor,  # [C, D] hidden states of the decode positions
    topk: int = TOPK,
    chunk: int = CHUNK,
) -> list[bytes]:
    """One proof per chunk of `chunk_rows(P, C)`; raises ProofBuildError, never nulls."""
    return build_many_rollout_proofs([(prompt_hidden, decode_hidden)], topk, chunk)[0]


def build_many_rollout_proofs(
    rollouts: list[tuple[torch.Tensor, torch.Tensor]],  # per rollout: prompt [P, D], decode [C, D]
    topk: int = TOPK,
    chunk: int = CHUNK,
) -> list[list[bytes]]:
    """Proofs of many rollouts at once: every chunk of every rollout goes through one
    batched top-k and one batched interpolation (build_chunk_proofs)."""
    parts: list[torch.Tensor] = []  # flat bf16 chunks, rollout by rollout
    counts = []
    for prompt_hidden, decode_hidden in rollouts:
        prompt_bf, decode_bf = _as_bf16(prompt_hidden), _as_bf16(decode_hidden)
        if prompt_bf.shape[1] != decode_bf.shape[1]:
            raise ValueError(f"hidden sizes differ: {prompt_bf.shape[1]} vs {decode_bf.shape[1]}")
        chunks = [prompt_bf] + [c for c in torch.split(decode_bf, chunk, dim=0) if c.numel()]  # as chunk_rows
        parts += [c.reshape(-1) for c in chunks]
        counts.append(len(chunks))
    proofs = build_chunk_proofs(parts, topk)
    out, pos = [], 0
    for n in counts:
        out.append(proofs[pos : pos + n])
        pos += n
    return out


def build_chunk_proofs(chunks: list[torch.Tensor], topk: int = TOPK) -> list[bytes]:
    """The proof of each flat bf16 chunk: its top-k |activations| as points (index, bf16 bits).

    The bytes are exactly `ProofPoly.from_points_tensor(idx, flat[idx]).to_bytes()` of toploc
    (tests/test_proofs.py compares them). Chunks of equal size share one top-k call, and every
    chunk whose indices are distinct mod FIELD (always, below FIELD values per chunk) is
    interpolated by `interpolate_mod_field` in one batch: toploc's C++ builder spends ~0.6 ms
    per proof in a modular inverse per pair, which was 15% of generation time. The other
    chunks, where toploc searches a smaller modulus, go through the library one by one.
    """
    proofs: list[bytes | None] = [None] * len(chunks)
    by_size: dict[int, list[int]] = {}
    for i, flat in enumerate(chunks):
        by_size.setdefault(flat.numel(), []).append(i)
    for numel, members in by_size.items():
        if not 0 < numel < 2**31:
            raise ProofBuildError(f"cannot build a proof of a chunk of {numel} values")
        k = min(topk, numel)
        flats = torch.stack([chunks[i] for i in members])  # [G, numel] bf16
        idx = flats.abs().topk(k, dim=1).indices  # [G, k] int64
        bits = torch.gather(flats, 1, idx).view(torch.int16).numpy().astype(np.int64) & 0xFFFF  # [G, k]
        x = idx.numpy() % FIELD  # [G, k]
        x_sorted = np.sort(x, axis=1)
        fast = (x_sorted[:, 1:] != x_sorted[:, :-1]).all(axis=1)  # [G] toploc's first modulus, FIELD, is injective
        if fast.any():
            coeffs = interpolate_mod_field(x[fast].T, bits[fast].T)  # [k, F]
            header = np.full((1, coeffs.shape[1]), FIELD, dtype=np.int64)
            words = np.concatenate([header, coeffs]).T.astype(">u2")  # [F, 1 + k] big-endian u16
            for i, row in zip(np.asarray(members)[fast], words, strict=True):
                proofs[i] = row.tobytes()
        for g in np.flatnonzero(~fast):
            proofs[members[g]] = _library_proof(flats[g], idx[g])
    return proofs  # type: ignore[return-value]


def _library_proof(flat: torch.Tensor, idx: torch.Tensor) -> bytes:
    try:
        proof = ProofPoly.from_points_tensor(idx, flat[idx])
    except (RuntimeError, ValueError) as e:
        raise ProofBuildError(f"toploc failed on a chunk of {flat.numel()} values: {e}") from e
    if proof.modulus == 0:
        raise ProofBuildError(f"toploc returned a zero-modulus proof for {flat.numel()} values")
    data: bytes = proof.to_bytes()
    return data


@lru_cache(maxsize=1)
def _inverse_of_difference() -> np.ndarray:
    """[2 * FIELD] float64: entry d + FIELD is the inverse of d mod FIELD (d in (-FIELD, FIELD), d != 0)."""
    a = np.arange(FIELD, dtype=np.int64)
    inv, base, e = np.ones(FIELD, dtype=np.int64), a.copy(), FIELD - 2  # Fermat: a^(p-2)
    while e:
        if e & 1:
            inv = inv * base % FIELD
        base = base * base % FIELD
        e >>= 1
    table = np.concatenate([inv[np.arange(-FIELD, 0) % FIELD], inv]).astype(np.float64)
    table[FIELD] = np.nan  # d = 0 has no inverse: a repeated x would poison its column visibly
    return table


def _mod(a: np.ndarray) -> np.ndarray:
    """a mod FIELD for integer-valued float64 |a| < FIELD^2: exact (a correctly rounded quotient
    that is not an integer is at least 1/FIELD from one), and SIMD-fast where int64 % is not."""
    reduced: np.ndarray = a - np.floor(a / FIELD) * FIELD
    return reduced


def interpolate_mod_field(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Coefficients (ascending) of the polynomial through (x, y) mod FIELD, for F point sets at once.

    x: [k, F] int64 in [0, FIELD), distinct within a column; y: [k, F] int64 (bf16 bits).
    Returns [k, F] int64. Newton divided differences then a Horner expansion: the polynomial of
    degree < k through k points is unique mod a prime, so this equals toploc's coefficients.
    """
    k = x.shape[0]
    inv = _inverse_of_difference()
    dd = (y % FIELD).astype(np.float64)  # [k, F] divided differences, in place
    x_shifted = x + FIELD
    for j in range(1, k):
        dd[j:] = _mod((dd[j:] - dd[j - 1 : -1]) * inv[x_shifted[j:] - x[: k - j]])
    minus_x = ((FIELD - x) % FIELD).astype(np.float64)  # [k, F]
    poly = np.zeros(dd.shape)  # [k, F] p(X) = dd[k-1]; p = p * (X - x_i) + dd[i]
    poly[0] = dd[k - 1]
    for i in range(k - 2, -1, -1):
        deg = k - 1 - i  # degree of p after this step
        shifted = poly[:deg] * minus_x[i]
        shifted[1:] += poly[: deg - 1]
        poly[deg] = poly[deg - 1]
        poly[:deg] = _mod(shifted)
        poly[0] = _mod(poly[0] + dd[i])
    if np.isnan(poly).any():
        raise ProofBuildError("repeated index in a chunk's top-k")
    return poly.astype(np.int64)


def check_proof_shape(proof: bytes, k: int) -> None:
    """Raise MalformedProof unless `proof` is a k-coefficient proof the C++ path can evaluate."""
    if not isinstance(proof, (bytes, bytearray)):
        raise MalformedProof("proof is not bytes", type(proof).__name__)
    if len(proof) != 2 + 2 * k:
        raise MalformedProof(f"proof length must be {2 + 2 * k}", len(proof))
    modulus = int.from_bytes(proof[:2], "big")
    if not 0 < modulus <= MAX_MODULUS:
        raise MalformedProof(f"modulus must be in 1..{MAX_MODULUS}", modulus)
    if not any(proof[2:]):
        raise MalformedProof("all coefficients are zero", bytes(proof[:8]))


def verify_rollout_proofs(
    prompt_hidden: torch.Tensor,  # [P, D] recomputed by the validator
    decode_hidden: torch.Tensor,  # [C, D] recomputed by the validator
    proofs: list[bytes],
    thresholds: ToplocThresholds = ToplocThresholds(),
    topk: int = TOPK,
    chunk: int = CHUNK,
) -> ProofCheck:
    """Compare recomputed hidden states with a rollout's proofs; a bad proof is a reject."""
    prompt_bf = _as_bf16(prompt_hidden)
    decode_bf = _as_bf16(decode_hidden)
    dim = prompt_bf.shape[1]
    rows = chunk_rows(prompt_bf.shape[0], decode_bf.shape[0], chunk)
    if (bad := proof_list_problem(proofs, rows, dim, topk)) is not None:
        return bad

    # Group chunks into single-tensor C++ calls: (activations [rows, D], proofs, rows per proof).
    n_full = decode_bf.shape[0] // chunk
    calls = [(prompt_bf, [bytes(proofs[0])], rows[0])]
    if n_full:
        calls.append((decode_bf[: n_full * chunk], [bytes(p) for p in proofs[1 : 1 + n_full]], chunk))
    if decode_bf.shape[0] % chunk:
        calls.append((decode_bf[n_full * chunk :].contiguous(), [bytes(proofs[-1])], rows[-1]))
    results: list[ChunkResult] = []
    for acts, chunk_proofs, per in calls:
        k = _chunk_k(per, dim, topk)
        for r in c_verify_proofs_bytes(acts, chunk_proofs, per, k):
            results.append(ChunkResult(r.exp_mismatches, r.mant_err_mean, r.mant_err_median, k))
    return judge_chunks(results, thresholds)


def proof_list_problem(proofs: object, rows: list[int], dim: int, topk: int) -> ProofCheck | None:
    """The reject of a proof list that cannot be evaluated (wrong count, a malformed proof), else None."""
    if not isinstance(proofs, (list, tuple)) or len(proofs) != len(rows):
        got = len(proofs) if isinstance(proofs, (list, tuple)) else type(proofs).__name__
        return ProofCheck(False, f"expected {len(rows)} proofs, got {got}", ())
    for i, (proof, r) in enumerate(zip(proofs, rows, strict=True)):
        try:
            check_proof_shape(proof, _chunk_k(r, dim, topk))
        except MalformedProof as e:
            return ProofCheck(False, f"proof {i}: {e}", ())
    return None


def verify_many_rollout_proofs(
    rollouts: list[tuple[torch.Tensor, torch.Tensor, list[bytes]]],  # per rollout: prompt [P, D], decode [C, D], proofs
    thresholds: ToplocThresholds = ToplocThresholds(),
    topk: int = TOPK,
    chunk: int = CHUNK,
) -> list[ProofCheck]:
    """verify_rollout_proofs of every rollout, the same ProofCheck for each, with toploc's verification
    arithmetic run on all chunks at once (verify_chunks) instead of one C++ call per
    chunk group: that path starts OpenMP and std::thread workers on every call, which on a few
    rollouts costs more CPU than the check (tests/test_proofs.py pins the equality)."""
    out: list[ProofCheck | None] = [None] * len(rollouts)
    groups: dict[int, tuple[list[torch.Tensor], list[bytes], list[tuple[int, int]]]] = {}  # by k
    n_chunks: dict[int, int] = {}
    for n, (prompt_hidden, decode_hidden, proofs) in enumerate(rollouts):
        prompt_bf, decode_bf = _as_bf16(prompt_hidden), _as_bf16(decode_hidden)
        dim = prompt_bf.shape[1]
        rows = chunk_rows(prompt_bf.shape[0], decode_bf.shape[0], chunk)
        if (bad := proof_list_problem(proofs, rows, dim, topk)) is not None:
            out[n] = bad
            continue
        parts = [prompt_bf] + [c for c in torch.split(decode_bf, chunk, dim=0) if c.numel()]  # as chunk_rows
        for i, (part, proof) in enumerate(zip(parts, proofs, strict=True)):
            acts, group_proofs, slots = groups.setdefault(_chunk_k(part.shape[0], dim, topk), ([], [], []))
            acts.append(part.reshape(-1))
            group_proofs.append(bytes(proof))
            slots.append((n, i))
        n_chunks[n] = len(parts)

    placed: dict[tuple[int, int], ChunkResult] = {}
    for k, (chunks, group_proofs, slots) in groups.items():
        for slot, result in zip(slots, verify_chunks(chunks, group_proofs, k), strict=True):
            placed[slot] = result
    for n, count in n_chunks.items():
        out[n] = judge_chunks([placed[(n, i)] for i in range(count)], thresholds)
    return [r if r is not None else ProofCheck(False, "not verified", ()) for r in out]  # every slot is set above


def judge_chunks(results: list[ChunkResult], thresholds: ToplocThresholds) -> ProofCheck:
    """A rollout's verdict from its chunks' error measures: the first chunk over a threshold rejects."""
    t = thresholds
    for i, c in enumerate(results):
        max_exp = t.max_exp_mismatches * c.k // TOPK
        reason = (
            f"{c.exp_mismatches} exponent mismatches > {max_exp}"
            if c.exp_mismatches > max_exp
            else f"mantissa error mean {c.mant_err_mean:.2f} > {t.max_mant_err_mean}"
            if c.mant_err_mean > t.max_mant_err_mean
            else f"mantissa error median {c.mant_err_median:.2f} > {t.max_mant_err_median}"
            if c.mant_err_median > t.max_mant_err_median
            else ""
        )
        if reason:
            return ProofCheck(False, f"chunk {i}: {reason}", tuple(results))
    return ProofCheck(True, "", tuple(results))


def verify_chunks(chunks: list[torch.Tensor], proofs: list[bytes], k: int) -> list[ChunkResult]:
    """toploc's verify_proofs (poly.cpp) on many chunks at once (flat bf16, each with >= k
    activations): the top-k |activation| indices of each chunk, the proof polynomial evaluated there
    (index mod the proof's modulus, Horner mod FIELD), then bf16 exponents compared and, where they
    agree, the mantissa distance averaged (mean) and its element count // 2 after sorting taken
    (median); no agreeing exponent gives mean = median = 2^64. Proofs must pass check_proof_shape."""
    b = len(chunks)
    idx = np.empty((b, k), dtype=np.int64)  # [B, k] top-k indices, the same selection as per chunk
    values = np.empty((b, k), dtype=np.int64)  # [B, k] bf16 bits of the activations there
    by_size: dict[int, list[int]] = {}
    for j, flat in enumerate(chunks):
        by_size.setdefault(flat.numel(), []).append(j)
    for js in by_size.values():
        stacked = torch.stack([chunks[j] for j in js])  # [b', rows x D]
        top = stacked.abs().topk(k, dim=1).indices
        idx[js] = top.numpy()
        values[js] = stacked.gather(1, top).view(torch.int16).numpy().astype(np.int64) & 0xFFFF
    raw = np.frombuffer(b"".join(proofs), dtype=">u2").reshape(b, 1 + k).astype(np.int64)  # [B, 1 + k]
    modulus, coeffs = raw[:, :1], raw[:, 1:]  # [B, 1], [B, k] ascending powers
    x = idx % modulus  # [B, k]
    y = np.repeat(coeffs[:, -1:], k, axis=1)  # Horner from the highest coefficient
    # Two Horner steps per reduction mod FIELD: y < FIELD and x, coefficients < 2^16 (u16 fields of
    # the proof) keep (y * x + c) * x + c' below 2^49, exact in int64, and a reduction deferred by
    # one step leaves the same residue; the modulo is the loop's costly operation.
    i = k - 2
    while i >= 1:
        y = ((y * x + coeffs[:, i : i + 1]) * x + coeffs[:, i - 1 : i]) % FIELD
        i -= 2
    if i == 0:
        y = (y * x + coeffs[:, :1]) % FIELD
    y = y % FIELD  # toploc's safeMod (a lone coefficient is never reduced in the loop)
    exp_a, exp_b = (y & 0x7F80) >> 7, (values & 0x7F80) >> 7
    same = exp_a == exp_b  # [B, k]
    err = np.where(same, np.abs((y & 0x7F) - (values & 0x7F)), 1 << 30)  # mismatches sort last
    count = same.sum(1)
    ordered = np.sort(err, axis=1)
    out = []
    for j in range(b):
        agree = int(count[j])
        if agree:
            mean, median = float(ordered[j, :agree].sum()) / agree, float(ordered[j, agree // 2])
        else:
            mean = median = float(2**64)
        out.append(ChunkResult(k - agree, mean, median, k))
    return out


# ---------------------------------------------------------------- wire encoding


def encode_proofs(proofs: list[bytes]) -> bytes:
    """One rollout's proofs as bytes: u16 count, then per proof u16 length + bytes (big endian)."""
    out = bytearray(len(proofs).to_bytes(2, "big"))
    for p in proofs:
        out += len(p).to_bytes(2, "big") + bytes(p)
    return bytes(out)


def decode_proofs(data: bytes) -> list[bytes]:
    """Inverse of encode_proofs; raises MalformedProof on truncated or trailing bytes."""
    if len(data) < 2:
        raise MalformedProof("encoded proofs shorter than the count", len(data))
    n, pos, proofs = int.from_bytes(data[:2], "big"), 2, []
    for _ in range(n):
        if pos + 2 > len(data):
            raise MalformedProof("truncated before a proof length", pos)
        size = int.from_bytes(data[pos : pos + 2], "big")
        if pos + 2 + size > len(data):
            raise MalformedProof("truncated proof", (pos, size, len(data)))
        proofs.append(bytes(data[pos + 2 : pos + 2 + size]))
        pos += 2 + size
    if pos != len(data):
        raise MalformedProof("trailing bytes after proofs", len(data) - pos)
    return proofs


# ---------------------------------------------------------------- Merkle root


def leaf_hash(data: bytes) -> bytes:
    """sha256(0x00 || data): leaves and inner nodes are domain-separated (RFC 6962)."""
    return hashlib.sha256(b"\x00" + data).digest()


def merkle_root(leaf_hashes: list[bytes]) -> bytes:
    """Binary sha256 Merkle root; node = sha256(0x01 || left || right).

    Odd levels: the last node is promoted unchanged to the next level (never duplicated,
    so no two leaf lists share a root). The empty tree's root is sha256(b"").
    """
    if not leaf_hashes:
        return hashlib.sha256(b"").digest()
    for h in leaf_hashes:
        if len(h) != 32:
            raise ValueError(f"leaf hashes must be 32 bytes, got {len(h)}")
    level = list(leaf_hashes)
    while len(level) > 1:
        nxt = [hashlib.sha256(b"\x01" + level[i] + level[i + 1]).digest() for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


def rollout_proofs_hash(proofs: list[bytes]) -> bytes:
    """The Merkle leaf of one rollout: leaf_hash of its encoded proof list."""
    return leaf_hash(encode_proofs(proofs))

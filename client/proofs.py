"""TOPLOC activation proofs for rollouts, their wire encoding and their Merkle root.

A rollout's proofs commit to the final (post-norm) hidden states that produced it:
one proof for the prompt (the prefill, as one chunk) and one per chunk of 32 decode
positions. Each proof is a polynomial through the top-128 bf16 activations of its chunk
(index -> bf16 bits), 258 bytes on the wire. A validator recomputes the hidden states in
one prefill pass and compares exponents and mantissas at its own top-k (DESIGN.md 6.3).

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

import torch
from toploc.poly import ProofPoly, c_verify_proofs_bytes

TOPK = 128  # activations committed per chunk
CHUNK = 32  # decode positions per proof
PROOF_BYTES = 2 + 2 * TOPK  # u16 modulus + TOPK u16 coefficients = 258
MAX_MODULUS = 65497  # largest modulus toploc picks (a prime)


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
    prompt_bf = _as_bf16(prompt_hidden)
    decode_bf = _as_bf16(decode_hidden)
    if prompt_bf.shape[1] != decode_bf.shape[1]:
        raise ValueError(f"hidden sizes differ: {prompt_bf.shape[1]} vs {decode_bf.shape[1]}")
    parts = [prompt_bf] + list(decode_bf.split(chunk, dim=0))
    proofs = []
    for part in parts:
        flat = part.reshape(-1)  # [rows * D] bf16
        k = min(topk, flat.numel())
        idx = flat.abs().topk(k).indices  # [k] int64
        try:
            proof = ProofPoly.from_points_tensor(idx, flat[idx])
        except (RuntimeError, ValueError) as e:
            raise ProofBuildError(f"toploc failed on a chunk of {flat.numel()} values: {e}") from e
        if proof.modulus == 0:
            raise ProofBuildError(f"toploc returned a zero-modulus proof for {flat.numel()} values")
        proofs.append(proof.to_bytes())
    return proofs


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
    if not isinstance(proofs, (list, tuple)) or len(proofs) != len(rows):
        n = len(proofs) if isinstance(proofs, (list, tuple)) else type(proofs).__name__
        return ProofCheck(False, f"expected {len(rows)} proofs, got {n}", ())
    for i, (proof, r) in enumerate(zip(proofs, rows)):
        try:
            check_proof_shape(proof, _chunk_k(r, dim, topk))
        except MalformedProof as e:
            return ProofCheck(False, f"proof {i}: {e}", ())

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

    t = thresholds
    for i, c in enumerate(results):
        max_exp = t.max_exp_mismatches * c.k // TOPK
        reason = (
            f"{c.exp_mismatches} exponent mismatches > {max_exp}" if c.exp_mismatches > max_exp
            else f"mantissa error mean {c.mant_err_mean:.2f} > {t.max_mant_err_mean}" if c.mant_err_mean > t.max_mant_err_mean
            else f"mantissa error median {c.mant_err_median:.2f} > {t.max_mant_err_median}"
            if c.mant_err_median > t.max_mant_err_median
            else ""
        )
        if reason:
            return ProofCheck(False, f"chunk {i}: {reason}", tuple(results))
    return ProofCheck(True, "", tuple(results))


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

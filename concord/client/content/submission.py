"""A Bundle on the wire: three files and a SubmissionManifest in IPFS (DESIGN.md sections 4 and 5).

`put_submission` writes what a validator needs and nothing else; `fetch_submission` reads it
back under the task's size limits, every byte sha256-checked by the store, every field
parsed strictly. Same bundle -> same bytes -> same manifest digest (the one on chain).

Wire formats (one canonical encoding each; a decoder refuses anything else):

* rollouts file `rollouts.safetensors`: ONE safetensors file, no metadata, written by
  `safetensors.torch.save` (deterministic layout). Inner step k's batch has the tensors
  `{k:04d}.{field}` for the fields of `ROLLOUT_FIELDS` (dtype, shape):
      prompt_idx  int64   [N]       global prompt index i
      sample_idx  int64   [N]       sample index j in the group
      keys        uint64  [N]       sampler keys of (task, round, trainer, i, j)
      prompts     int64   [N, P]
      completions int64   [N, C]    PAD after the first EOS
      mask        bool    [N, C]    True up to and including the first EOS
      lengths     int64   [N]       = mask.sum(1)
      rewards     float64 [N]
      temperature float64 []        sampler temperature the batch was generated with
      group_size  int64   []
  Steps are numbered 0..H-1 without gaps. Hidden states and behaviour log-probs never go on
  the wire (a validator recomputes both); task, round and trainer come from the manifest.
* proofs file `proofs.bin` (big-endian): magic b"CPF1", u32 H, H x u32 N_k, then for every
  rollout in (inner step, row) order `concord.client.engine.proofs.encode_proofs(rollout proofs)` (u16
  count, then per proof, in chunk order, u16 length + bytes). Each record is exactly the
  bytes the rollout's Merkle leaf hashes, so the proof root is recomputable from the file.
* delta: `delta_shards(delta)` = `concord.client.content.weights.shard_bytes(delta)` (deterministic safetensors
  shards, float32, the default shard bound), named `delta-{i:05d}-of-{n:05d}.safetensors`. A
  decoder accepts exactly those files: the same number of shards, in order, with those names
  and byte for byte those bytes (no extra or empty shard, no metadata, no header padding, no
  other split), so one delta has one list of shard CIDs and one bundle one digest.
* inner states (validator.sampling replays one inner step from them): for k = 1..H one file
  `state-{k:04d}.safetensors` = `safetensors.torch.save(client.engine.grpo.inner_state(...))`
  after inner step k-1 (theta_k as "param.<name>", the inner optimizer's state as
  "opt.<key>.<name>", float32, no metadata), listed in order under the manifest's `states`; exactly
  H of them (state H's parameters minus the base model's are the delta, bit for bit), each at
  most `state_bytes_bound(limits)` = 4 x max_delta_bytes (theta plus at most three optimizer
  tensors per parameter), checked before download. Given the task's state layout
  (`inner_state_layout`: exactly the names and shapes inner_state writes for this model and inner
  optimizer; an LM's states are its adapters' "param.<name>" only), every state listed must declare
  exactly the canonical file size of that layout (`check_state_refs`, no download: a padded header,
  an extra or missing tensor, another shape changes the size), fetched or not, and every state
  fetched decodes to exactly that layout. The manifest commits to each
  state's sha256; a state whose bytes do not hash to it, that is not canonical, or that does not
  fit the base model is a `SubmissionError` naming `states[i]` and its CID.
* manifest stats (numbers only, exactly these keys): mean_reward (float), work_units,
  inner_steps, rollouts (sum N_k), tokens (sum N_k * (P_k + C_k)), proofs (number of proof
  byte strings), and the 32-byte proof root as eight big-endian u32 words
  `proof_root.0` .. `proof_root.7` (manifest stats hold numbers, not strings).

Failures a trainer is to blame for (malformed or missing content, limits exceeded, a digest
mismatch) raise `SubmissionError` naming the field and CID: a validator rejects on it.
`StoreUnavailable` / `DaemonError` (the validator's own IPFS node failing) pass through
unchanged: they are no reason to reject anyone.
"""

from __future__ import annotations

import functools
import math
import re
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from concord.client.content.manifest import (
    MAX_MANIFEST_BYTES,
    MAX_SHARDS,
    ManifestError,
    ShardRef,
    SubmissionManifest,
    cid_for_digest,
    decode_manifest,
    short_repr,
)
from concord.client.content.store import (
    MIN_RATE,
    ContentMismatch,
    ContentNotFound,
    SizeLimitExceeded,
    Store,
)
from concord.client.content.weights import DEFAULT_MAX_SHARD_BYTES, shard_bytes, shard_tensors
from concord.client.digest import Digest
from concord.client.engine.bundle import Bundle, RolloutProofs
from concord.client.engine.config import TABLE, ConfigError, GRPOConfig, Int, TaskConfig
from concord.client.engine.grpo import OPT_PREFIX, PARAM_PREFIX
from concord.client.engine.lm_task import LMTaskConfig
from concord.client.engine.proofs import CHUNK, PROOF_BYTES, encode_proofs
from concord.client.engine.rollout import RolloutBatch

ROLLOUTS_NAME = "rollouts.safetensors"
PROOFS_NAME = "proofs.bin"
PROOFS_MAGIC = b"CPF1"
MAX_STEPS = 10_000  # step prefixes are 4 digits

ROLLOUT_FIELDS: dict[str, tuple[torch.dtype, int]] = {  # field -> (dtype, ndim)
    "prompt_idx": (torch.int64, 1),
    "sample_idx": (torch.int64, 1),
    "keys": (torch.uint64, 1),
    "prompts": (torch.int64, 2),
    "completions": (torch.int64, 2),
    "mask": (torch.bool, 2),
    "lengths": (torch.int64, 1),
    "rewards": (torch.float64, 1),
    "temperature": (torch.float64, 0),
    "group_size": (torch.int64, 0),
}
ROOT_WORDS = tuple(f"proof_root.{i}" for i in range(8))
STAT_INTS = ("work_units", "inner_steps", "rollouts", "tokens", "proofs") + ROOT_WORDS
STAT_KEYS = ("mean_reward",) + STAT_INTS

# Upper bounds on the rollouts file given the counts (for the size limit checked before download).
_TENSOR_HEADER_BYTES = 256  # one safetensors header entry: name, dtype, shape, offsets, padding
_ROLLOUT_BYTES = 5 * 8  # prompt_idx, sample_idx, keys, lengths, rewards
_TOKEN_BYTES = 8 + 1  # int64 token + bool mask (prompt tokens have no mask: a bound, not exact)
_STEP_BYTES = len(ROLLOUT_FIELDS) * _TENSOR_HEADER_BYTES + 16  # headers + the two scalars

_STEP_NAME = re.compile(r"(\d{4})\.([a-z_]+)")


class SubmissionError(ValueError):
    """A submission that cannot be accepted as sent: ``field`` says where, ``cid`` which content."""

    def __init__(self, field: str, cid: str, reason: str, value: Any = None) -> None:
        shown = "" if value is None else f" (got {short_repr(value)})"
        super().__init__(f"submission {field} [{cid}]: {reason}{shown}")
        self.field = field
        self.cid = cid
        self.reason = reason
        self.value = value


@dataclass(frozen=True)
class SubmissionLimits:
    """What a task lets one submission weigh; checked on the manifest's claims before any download."""

    __pydantic_config__ = TABLE

    max_inner_steps: Int
    max_rollouts: Int  # over all inner steps
    max_tokens: Int  # prompt + completion tokens over all rollouts
    max_proof_bytes: Int  # the proofs file
    max_delta_bytes: Int  # all delta shards together

    def __post_init__(self) -> None:
        for name in ("max_inner_steps", "max_rollouts", "max_tokens", "max_proof_bytes", "max_delta_bytes"):
            value = getattr(self, name)
            if type(value) is not int or value <= 0:
                raise ConfigError("limits", name, f"must be a positive int, got {value!r}")
            if value >= 1 << 63:  # a manifest integer (client.content.manifest): the spec must stay encodable
                raise ConfigError("limits", name, f"must be < 2**63, got {value}")
        if self.max_inner_steps > MAX_STEPS:
            raise ConfigError("limits", "max_inner_steps", f"must be <= {MAX_STEPS}, got {self.max_inner_steps}")

    @property
    def max_rollouts_bytes(self) -> int:
        return rollouts_bytes_bound(self.max_inner_steps, self.max_rollouts, self.max_tokens)


def rollouts_bytes_bound(steps: int, rollouts: int, tokens: int) -> int:
    """Largest rollouts file that H steps, N rollouts and T tokens can encode to."""
    return 8 + steps * _STEP_BYTES + rollouts * _ROLLOUT_BYTES + tokens * _TOKEN_BYTES


def proofs_bytes_bound(steps: int, rollouts: int, max_new_tokens: int) -> int:
    """Largest proofs file: a prompt proof plus one per CHUNK decode tokens per rollout."""
    per_rollout = 2 + (1 + -(-max_new_tokens // CHUNK)) * (2 + PROOF_BYTES)
    return len(PROOFS_MAGIC) + 4 + 4 * steps + rollouts * per_rollout


def default_limits(
    cfg: TaskConfig | LMTaskConfig, n_params: int, n_tensors: int, prompt_len: int, step_batches: int = 1
) -> SubmissionLimits:
    """Limits that an honest submission of a task of either kind fits exactly into (no slack beyond
    headers): H inner steps of ``step_batches`` wire batches each (the LM: one per GRPO group), prompts
    up to ``prompt_len`` tokens, a delta of ``n_params`` float32 values in ``n_tensors`` tensors."""
    batches = cfg.grpo.inner_steps * step_batches
    rollouts = cfg.grpo.inner_steps * cfg.grpo.rollouts_per_step
    return SubmissionLimits(
        max_inner_steps=batches,
        max_rollouts=rollouts,
        max_tokens=rollouts * (prompt_len + cfg.sampler.max_new_tokens),
        max_proof_bytes=proofs_bytes_bound(batches, rollouts, cfg.sampler.max_new_tokens),
        max_delta_bytes=4 * n_params + _TENSOR_HEADER_BYTES * n_tensors + 8 * n_tensors,
    )


# ----------------------------------------------------------------------------- rollouts file


def encode_rollouts(batches: tuple[RolloutBatch, ...] | list[RolloutBatch]) -> bytes:
    """The rollouts file of a list of batches (layout in the module docstring)."""
    if not 1 <= len(batches) <= MAX_STEPS:
        raise ValueError(f"expected 1..{MAX_STEPS} batches, got {len(batches)}")
    tensors: dict[str, torch.Tensor] = {}
    for k, b in enumerate(batches):
        fields = {
            "prompt_idx": b.prompt_idx,
            "sample_idx": b.sample_idx,
            "keys": torch.from_numpy(np.ascontiguousarray(b.keys, dtype=np.uint64)),
            "prompts": b.prompts,
            "completions": b.completions,
            "mask": b.mask,
            "lengths": b.lengths,
            "rewards": b.rewards,
            "temperature": torch.tensor(float(b.temperature), dtype=torch.float64),
            "group_size": torch.tensor(int(b.group_size), dtype=torch.int64),
        }
        for name, t in fields.items():
            dtype, ndim = ROLLOUT_FIELDS[name]
            if t.dtype != dtype or t.dim() != ndim:
                raise ValueError(
                    f"batch {k} field {name}: expected {dtype} with {ndim} dims, got {t.dtype} {tuple(t.shape)}"
                )
            tensors[f"{k:04d}.{name}"] = t.detach().to("cpu").contiguous()
    return st_save(tensors)


def decode_rollouts(data: bytes, cid: str, task_id: int, round_: int, trainer: str) -> tuple[RolloutBatch, ...]:
    """Rollouts file -> batches, refusing unknown names, missing steps, wrong dtypes/shapes, bad counts."""
    try:
        tensors = st_load(bytes(data))
    except (SafetensorError, ValueError, RuntimeError) as e:  # torch raises on some corrupt headers
        raise SubmissionError("rollouts", cid, f"not a safetensors file: {e}") from None
    steps: dict[int, dict[str, torch.Tensor]] = {}
    for name, t in tensors.items():
        m = _STEP_NAME.fullmatch(name)
        if m is None or m.group(2) not in ROLLOUT_FIELDS:
            raise SubmissionError(f"rollouts.{name}", cid, "unknown tensor name")
        steps.setdefault(int(m.group(1)), {})[m.group(2)] = t
    if not steps:
        raise SubmissionError("rollouts", cid, "no inner steps")
    batches = []
    for k in range(max(steps) + 1):
        got = steps.get(k, {})
        for name, (dtype, ndim) in ROLLOUT_FIELDS.items():
            field = f"rollouts.{k:04d}.{name}"
            if name not in got:
                raise SubmissionError(field, cid, "missing tensor")
            if got[name].dtype != dtype:
                raise SubmissionError(field, cid, f"expected dtype {dtype}", got[name].dtype)
            if got[name].dim() != ndim:
                raise SubmissionError(field, cid, f"expected {ndim} dims", tuple(got[name].shape))
        batches.append(_batch(got, k, cid, task_id, round_, trainer))
    if encode_rollouts(batches) != bytes(data):
        raise SubmissionError("rollouts", cid, "not the canonical encoding (metadata, layout or padding differ)")
    return tuple(batches)


def _batch(t: dict[str, torch.Tensor], k: int, cid: str, task_id: int, round_: int, trainer: str) -> RolloutBatch:
    """One step's tensors -> RolloutBatch, after the shape and count checks."""
    n, p = t["prompts"].shape
    c = t["completions"].shape[1]
    where = f"rollouts.{k:04d}"
    if n < 1 or p < 1 or c < 1:
        raise SubmissionError(f"{where}.prompts", cid, "expected N, P, C >= 1", (n, p, c))
    want = {
        "prompt_idx": (n,),
        "sample_idx": (n,),
        "keys": (n,),
        "completions": (n, c),
        "mask": (n, c),
        "lengths": (n,),
        "rewards": (n,),
    }
    for name, shape in want.items():
        if tuple(t[name].shape) != shape:
            raise SubmissionError(
                f"{where}.{name}", cid, f"expected shape {shape} (N={n}, C={c})", tuple(t[name].shape)
            )
    if not torch.equal(t["lengths"], t["mask"].sum(1)):
        raise SubmissionError(f"{where}.lengths", cid, "lengths != mask.sum(1)")
    temperature = float(t["temperature"])
    group_size = int(t["group_size"])
    if not (np.isfinite(temperature) and temperature >= 0):
        raise SubmissionError(f"{where}.temperature", cid, "expected a finite value >= 0", temperature)
    if group_size < 1:
        raise SubmissionError(f"{where}.group_size", cid, "expected >= 1", group_size)
    return RolloutBatch(
        task_id=task_id,
        round=round_,
        trainer=trainer,
        prompt_idx=t["prompt_idx"],
        sample_idx=t["sample_idx"],
        keys=t["keys"].numpy(),
        prompts=t["prompts"],
        completions=t["completions"],
        mask=t["mask"],
        lengths=t["lengths"],
        rewards=t["rewards"],
        logprobs=torch.empty(0),
        hidden=torch.empty(0),
        temperature=temperature,
        group_size=group_size,
    )


# ----------------------------------------------------------------------------- proofs file


def encode_proof_file(proofs: tuple[tuple[RolloutProofs, ...], ...]) -> bytes:
    """The proofs file of [H][N] per-rollout proof lists (layout in the module docstring)."""
    out = bytearray(PROOFS_MAGIC + struct.pack(">I", len(proofs)))
    out += b"".join(struct.pack(">I", len(step)) for step in proofs)
    for step in proofs:
        for rollout in step:
            out += encode_proofs(list(rollout))
    return bytes(out)


def decode_proof_file(data: bytes, cid: str, limits: SubmissionLimits) -> tuple[tuple[RolloutProofs, ...], ...]:
    """Proofs file -> [H][N] proof lists; refuses a bad magic, counts over limits, truncation, trailing bytes."""
    data = bytes(data)
    head = len(PROOFS_MAGIC) + 4
    if len(data) < head or data[: len(PROOFS_MAGIC)] != PROOFS_MAGIC:
        raise SubmissionError("proofs", cid, f"expected magic {PROOFS_MAGIC!r}", data[: len(PROOFS_MAGIC)])
    (h,) = struct.unpack_from(">I", data, len(PROOFS_MAGIC))
    if not 1 <= h <= limits.max_inner_steps:
        raise SubmissionError("proofs.inner_steps", cid, f"expected 1..{limits.max_inner_steps}", h)
    if len(data) < head + 4 * h:
        raise SubmissionError("proofs", cid, "truncated in the step counts", len(data))
    counts = struct.unpack_from(f">{h}I", data, head)
    if sum(counts) > limits.max_rollouts:
        raise SubmissionError("proofs.rollouts", cid, f"over the limit of {limits.max_rollouts}", sum(counts))
    pos = head + 4 * h
    out = []
    for k, n in enumerate(counts):
        step = []
        for row in range(n):
            field = f"proofs[{k}][{row}]"
            if pos + 2 > len(data):
                raise SubmissionError(field, cid, "truncated before the proof count", pos)
            (count,) = struct.unpack_from(">H", data, pos)
            pos += 2
            rollout = []
            for j in range(count):
                if pos + 2 > len(data):
                    raise SubmissionError(f"{field}[{j}]", cid, "truncated before the proof length", pos)
                (size,) = struct.unpack_from(">H", data, pos)
                if pos + 2 + size > len(data):
                    raise SubmissionError(f"{field}[{j}]", cid, f"truncated proof of {size} bytes", pos)
                rollout.append(data[pos + 2 : pos + 2 + size])
                pos += 2 + size
            step.append(tuple(rollout))
        out.append(tuple(step))
    if pos != len(data):
        raise SubmissionError("proofs", cid, "trailing bytes after the last proof", len(data) - pos)
    return tuple(out)


# ----------------------------------------------------------------------------- delta shards


def delta_shards(
    delta: dict[str, torch.Tensor], max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES
) -> list[tuple[str, bytes]]:
    """(file name, bytes) per delta shard: client.content.weights' deterministic shards, renamed `delta-...`."""
    for name, t in delta.items():
        if t.dtype != torch.float32:
            raise ValueError(f"delta tensor {name!r}: expected float32, got {t.dtype}")
    return [("delta-" + name.removeprefix("model-"), data) for name, data in shard_bytes(delta, max_shard_bytes)]


def delta_layout(shapes: dict[str, tuple[int, ...]]) -> list[tuple[str, int]]:
    """(file name, size in bytes) of every shard ``delta_shards`` makes of a delta with these shapes:
    a pure function of names and shapes (float32), known before any shard is downloaded."""
    return list(_delta_layout(tuple(shapes.items())))


@functools.lru_cache(maxsize=16)
def _delta_layout(shapes: tuple[tuple[str, tuple[int, ...]], ...]) -> tuple[tuple[str, int], ...]:
    """Cached by the base model's shapes: every submission on one base model has the same layout."""
    return tuple(
        (name, len(data))
        for name, data in delta_shards({n: torch.zeros(shape, dtype=torch.float32) for n, shape in shapes})
    )


def _check_shard_list(refs: Sequence[ShardRef], names: Sequence[str], what: str) -> None:
    """The same number of delta shards as ``names``, each under its canonical name; else SubmissionError
    naming the shard (an extra one by its own CID, a missing one by the last shard sent)."""
    if len(refs) > len(names):
        raise SubmissionError(
            f"delta[{len(names)}]",
            refs[len(names)].cid,
            f"extra shard: {what} encodes to {len(names)} shard(s), the manifest lists {len(refs)}",
            refs[len(names)].name,
        )
    if len(refs) < len(names):
        raise SubmissionError(
            f"delta[{len(refs)}]",
            refs[-1].cid if refs else "-",
            f"missing shard: {what} encodes to {len(names)} shard(s), the manifest lists {len(refs)}",
            len(refs),
        )
    for i, (ref, name) in enumerate(zip(refs, names, strict=True)):
        if ref.name != name:
            raise SubmissionError(f"delta[{i}].name", ref.cid, f"expected the canonical shard name {name!r}", ref.name)


def check_delta_refs(refs: tuple[ShardRef, ...] | list[ShardRef], shapes: dict[str, tuple[int, ...]]) -> None:
    """The manifest's delta list against ``delta_layout(shapes)``, before download: the same number of
    shards, each with its canonical name and size; else SubmissionError naming the shard's CID."""
    want = delta_layout(shapes)
    _check_shard_list(refs, [name for name, _ in want], "a delta of the base model")
    for i, (ref, (_, size)) in enumerate(zip(refs, want, strict=True)):
        if ref.size != size:
            raise SubmissionError(
                f"delta[{i}].size",
                ref.cid,
                f"expected the canonical size {size} (no metadata or padding): refused before download",
                ref.size,
            )


def decode_delta(
    blobs: list[tuple[ShardRef, bytes]], shapes: dict[str, tuple[int, ...]] | None
) -> dict[str, torch.Tensor]:
    """Delta shards -> one float32 state dict; names unique; exactly ``shapes`` when given; and the
    shards exactly ``delta_shards`` of the decoded delta (count, order, names, bytes)."""
    delta: dict[str, torch.Tensor] = {}
    for where, cid, name, t in shard_tensors(((ref.cid, data) for ref, data in blobs), "delta", SubmissionError):
        if t.dtype != torch.float32:
            raise SubmissionError(where, cid, "expected dtype torch.float32", t.dtype)
        if shapes is not None and name not in shapes:
            raise SubmissionError(where, cid, "not a parameter of the base model")
        if shapes is not None and tuple(t.shape) != tuple(shapes[name]):
            raise SubmissionError(where, cid, f"expected shape {tuple(shapes[name])}", tuple(t.shape))
        delta[name] = t
    if shapes is not None and set(delta) != set(shapes):
        missing = sorted(set(shapes) - set(delta))
        raise SubmissionError(
            f"delta.{missing[0]}", blobs[0][0].cid if blobs else "-", "missing tensor", f"{len(missing)} missing"
        )
    check_canonical_delta(blobs, delta)
    return delta


def check_canonical_delta(blobs: list[tuple[ShardRef, bytes]], delta: dict[str, torch.Tensor]) -> None:
    """The shards must be exactly ``delta_shards(delta)``: else SubmissionError naming the shard and field.

    Checked in this order: the shard count (an extra shard is named by its own CID, a missing one
    by the last shard sent), then per shard its file name and its bytes (metadata, header padding,
    a different split or tensor order all change the bytes)."""
    want = delta_shards(delta)
    _check_shard_list([ref for ref, _ in blobs], [name for name, _ in want], "this delta")
    for i, ((ref, data), (_, canonical)) in enumerate(zip(blobs, want, strict=True)):
        if bytes(data) != canonical:
            raise SubmissionError(
                f"delta[{i}]",
                ref.cid,
                f"not the canonical encoding: {_encoding_difference(data, canonical)}",
                f"{len(data)} bytes, canonical {len(canonical)}",
            )


def _encoding_difference(data: bytes, canonical: bytes) -> str:
    """What differs between a safetensors shard that decoded fine and its canonical bytes (for the error)."""
    head = struct.unpack_from("<Q", data)[0] if len(data) >= 8 else 0
    want = struct.unpack_from("<Q", canonical)[0]
    if b'"__metadata__"' in bytes(data[8 : 8 + head]):
        return "the header carries __metadata__"
    if head != want:
        return f"header of {head} bytes, canonical {want} (padding or layout)"
    if bytes(data[: 8 + head]) != canonical[: 8 + want]:
        return "the header differs (tensor order, offsets or split)"
    if len(data) != len(canonical):
        return f"{len(data) - len(canonical):+d} bytes after the header (trailing or missing data)"
    return "the tensor data differs from its re-encoding"


# ----------------------------------------------------------------------------- stats


def encode_stats(bundle: Bundle, batches: tuple[RolloutBatch, ...] | list[RolloutBatch]) -> dict[str, Any]:
    """The manifest's claimed numbers (keys in STAT_KEYS)."""
    root = bytes(bundle.proof_root)
    if len(root) != 32:
        raise ValueError(f"proof_root must be 32 bytes, got {len(root)}")
    stats: dict[str, Any] = {
        "mean_reward": float(bundle.mean_reward),
        "work_units": int(bundle.work_units),
        "inner_steps": len(batches),
        "rollouts": sum(b.n for b in batches),
        "tokens": sum(b.n * (b.prompts.shape[1] + b.completions.shape[1]) for b in batches),
        "proofs": sum(len(r) for step in bundle.proofs for r in step),
    }
    stats.update(zip(ROOT_WORDS, struct.unpack(">8I", root), strict=True))
    return stats


def decode_stats(stats: dict[str, Any], cid: str) -> dict[str, Any]:
    """Exactly STAT_KEYS, mean_reward a float, the rest non-negative ints (the manifest checked ranges)."""
    for key in stats:
        if key not in STAT_KEYS:
            raise SubmissionError(f"stats.{key}", cid, "unknown claimed stat")
    for key in STAT_KEYS:
        if key not in stats:
            raise SubmissionError(f"stats.{key}", cid, "missing claimed stat")
    if type(stats["mean_reward"]) is not float:
        raise SubmissionError("stats.mean_reward", cid, "expected a float", stats["mean_reward"])
    for key in STAT_INTS:
        if type(stats[key]) is not int or stats[key] < 0:
            raise SubmissionError(f"stats.{key}", cid, "expected an integer >= 0", stats[key])
    for key in ROOT_WORDS:
        if stats[key] >= 1 << 32:
            raise SubmissionError(f"stats.{key}", cid, "expected a u32 word", stats[key])
    return stats


# ----------------------------------------------------------------------------- put / fetch


# ----------------------------------------------------------------------------- inner states


def state_name(k: int) -> str:
    """File name of inner state k (1 <= k <= H)."""
    return f"state-{k:04d}.safetensors"


def state_bytes_bound(limits: SubmissionLimits) -> int:
    """The largest inner-state file a validator downloads: theta plus at most three optimizer
    tensors per parameter, each no larger than the delta."""
    return 4 * limits.max_delta_bytes


def state_files(bundle: Bundle) -> list[tuple[str, bytes]]:
    """(file name, bytes) of every inner state of a bundle, k = 1..H."""
    for k, state in enumerate(bundle.states, start=1):
        for name, t in state.items():
            if t.dtype != torch.float32:
                raise ValueError(f"inner state {k} tensor {name!r}: expected float32, got {t.dtype}")
    return [(state_name(k), st_save(dict(state))) for k, state in enumerate(bundle.states, start=1)]


StateLayout = tuple[tuple[str, tuple[int, ...]], ...]  # (tensor name, shape) of one inner state, sorted by name


def inner_state_layout(shapes: dict[str, tuple[int, ...]], grpo: GRPOConfig) -> StateLayout:
    """The names and shapes of every inner state k >= 1 of a model with parameters ``shapes`` trained
    by the task's inner optimizer (client.engine.grpo.inner_state after one step or more): each
    "param.<name>", then per parameter SGD's "opt.momentum_buffer.<name>" (momentum betas[0] > 0) or
    AdamW's "opt.exp_avg.<name>", "opt.exp_avg_sq.<name>" and the scalar "opt.step.<name>"."""
    out = [(PARAM_PREFIX + n, tuple(s)) for n, s in shapes.items()]
    for n, shape in shapes.items():
        if grpo.optimizer == "sgd":
            out += [(f"{OPT_PREFIX}momentum_buffer.{n}", tuple(shape))] if grpo.betas[0] > 0 else []
        else:
            out += [(f"{OPT_PREFIX}exp_avg.{n}", tuple(shape)), (f"{OPT_PREFIX}exp_avg_sq.{n}", tuple(shape))]
            out += [(f"{OPT_PREFIX}step.{n}", ())]
    return tuple(sorted(out))


def adapter_state_layout(shapes: dict[str, tuple[int, ...]]) -> StateLayout:
    """An LM submission's state layout: the adapters as "param.<name>" (client.runtime.lm_work)."""
    return tuple(sorted((PARAM_PREFIX + n, tuple(s)) for n, s in shapes.items()))


def state_file_size(layout: StateLayout) -> int:
    """The size of the canonical file (safetensors.torch.save, float32) of an inner state of ``layout``."""
    return _canonical_header(layout)[1]


def check_state_refs(
    refs: Sequence[ShardRef],
    inner_steps: int,
    limits: SubmissionLimits,
    cid: str,
    layout: StateLayout | None = None,
) -> None:
    """The manifest's state list before any download: H states, canonical names, sizes in bounds, and
    with the task's ``layout`` every declared size exactly the canonical one (for every state listed,
    sampled or not: a padded or extra-tensor state is refused without fetching it)."""
    if len(refs) != inner_steps:
        raise SubmissionError("states", cid, f"expected {inner_steps} inner state(s)", len(refs))
    bound = state_bytes_bound(limits)
    exact = None if layout is None else state_file_size(layout)
    for i, ref in enumerate(refs):
        if ref.name != state_name(i + 1):
            raise SubmissionError(
                f"states[{i}].name", ref.cid, f"expected {state_name(i + 1)!r}: refused before download", ref.name
            )
        if ref.size > bound:
            raise SubmissionError(
                f"states[{i}].size", ref.cid, f"{ref.size} bytes, over the limit of {bound}: refused before download"
            )
        if exact is not None and ref.size != exact:
            raise SubmissionError(
                f"states[{i}].size",
                ref.cid,
                f"{ref.size} bytes, not the {exact} of the task's canonical inner state: refused before download",
            )


def decode_state(
    data: bytes,
    ref: ShardRef,
    i: int,
    shapes: dict[str, tuple[int, ...]] | None,
    layout: StateLayout | None = None,
) -> dict[str, torch.Tensor]:
    """One inner-state file: safetensors, float32, canonical (re-encodes to the same bytes), with
    exactly the base model's parameters when ``shapes`` is given and exactly the tensors of ``layout``
    (names and shapes, nothing extra) when that is given; else SubmissionError."""
    where = f"states[{i}]"
    try:
        state = st_load(data)
    except (SafetensorError, ValueError, RuntimeError) as e:
        raise SubmissionError(where, ref.cid, f"not a safetensors file ({e})") from None
    for name, t in state.items():
        if t.dtype != torch.float32:
            raise SubmissionError(f"{where}.{name}", ref.cid, "expected finite float32", str(t.dtype))
    # one finiteness test over every value (numpy's is ~20x torch.isfinite's speed here), then the culprit
    if state and not bool(np.isfinite(np.concatenate([t.numpy().reshape(-1) for t in state.values()])).all()):
        name = next(n for n, t in state.items() if not bool(torch.isfinite(t).all()))  # the first, by name
        raise SubmissionError(f"{where}.{name}", ref.cid, "expected finite float32", str(state[name].dtype))
    got = tuple(sorted((n, tuple(t.shape)) for n, t in state.items()))
    header, size = _canonical_header(got)
    if len(data) != size or bytes(data[: len(header)]) != header:  # = (st_save(state) != data), see below
        raise SubmissionError(where, ref.cid, "not the canonical encoding of its tensors (safetensors.torch.save)")
    if layout is not None and got != layout:
        odd = sorted(set(got) ^ set(layout))
        raise SubmissionError(
            f"{where}.{odd[0][0]}", ref.cid, "tensors differ from the task's inner state (names and shapes)", odd[0][1]
        )
    if shapes is not None:
        params = {k.removeprefix(PARAM_PREFIX): t for k, t in state.items() if k.startswith(PARAM_PREFIX)}
        if set(params) != set(shapes) or any(tuple(params[n].shape) != tuple(s) for n, s in shapes.items()):
            raise SubmissionError(f"{where}.param", ref.cid, "parameters differ from the base model's names and shapes")
    return state


@functools.lru_cache(maxsize=16)
def _canonical_header(layout: tuple[tuple[str, tuple[int, ...]], ...]) -> tuple[bytes, int]:
    """(header bytes, file size) of ``safetensors.torch.save`` of float32 tensors with these names and
    shapes: u64 header length + JSON header, a pure function of the layout (cached per base model).

    Why comparing these is the whole canonical check: a file whose first bytes equal this header
    declares every tensor at its canonical offset, back to back in save's order from the data
    start, so the tensors loaded from it are exactly its data bytes in that order; with the size
    equal too nothing trails them. save() of those tensors writes this header and those bytes,
    so the file equals its re-encoding, without re-encoding its data."""
    canonical = st_save({name: torch.zeros(shape, dtype=torch.float32) for name, shape in layout})
    (head,) = struct.unpack_from("<Q", canonical)
    return canonical[: 8 + head], len(canonical)


def fetch_states(
    store: Store,
    digest: Digest | bytes | str,
    wanted: Sequence[int],
    limits: SubmissionLimits,
    shapes: dict[str, tuple[int, ...]] | None = None,
    deadline: float | None = None,
    layout: StateLayout | None = None,
) -> dict[int, dict[str, torch.Tensor]]:
    """Inner states ``wanted`` (each 1..H) of the submission behind ``digest``: downloaded, sha256-
    checked against the manifest and decoded (exactly ``layout`` when given: `inner_state_layout`);
    SubmissionError names the state and its CID."""
    cid = cid_for_digest(digest)
    if deadline is None:
        deadline = time.monotonic() + store.timeout + len(wanted) * state_bytes_bound(limits) / MIN_RATE
    try:
        manifest = decode_manifest(
            _fetch(store, "manifest", cid, lambda: store.get_manifest(digest, deadline=deadline))
        )
    except ManifestError as e:
        raise SubmissionError(f"manifest.{e.field}", cid, e.reason, e.value) from None
    if not isinstance(manifest, SubmissionManifest):
        raise SubmissionError("manifest.kind", cid, "expected a submission manifest", manifest.kind)
    out: dict[int, dict[str, torch.Tensor]] = {}
    for k in sorted(set(wanted)):
        if not 1 <= k <= len(manifest.states):
            raise SubmissionError("states", cid, f"no inner state {k} (the manifest lists {len(manifest.states)})")
        ref = manifest.states[k - 1]
        get = functools.partial(store.get_bytes, ref, min(ref.size, state_bytes_bound(limits)), deadline)
        out[k] = decode_state(_fetch(store, f"states[{k - 1}]", ref.cid, get), ref, k - 1, shapes, layout)
    return out


def submission_files(bundle: Bundle) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    """(rollouts file, proofs file, delta shards) of a bundle; refuses what would not round-trip."""
    trainer = bundle.trainer.lower()
    if len(bundle.proofs) != len(bundle.batches):
        raise ValueError(f"{len(bundle.proofs)} proof steps for {len(bundle.batches)} batches")
    for k, (b, p) in enumerate(zip(bundle.batches, bundle.proofs, strict=True)):
        if (b.task_id, b.round, b.trainer.lower()) != (bundle.task_id, bundle.round, trainer):
            raise ValueError(
                f"batch {k} is tagged {(b.task_id, b.round, b.trainer)}, the bundle "
                f"{(bundle.task_id, bundle.round, bundle.trainer)}"
            )
        if b.hidden.numel() or b.logprobs.numel():
            raise ValueError(f"batch {k} still carries hidden states / log-probs: submit strip_private(batch)")
        if len(p) != b.n:
            raise ValueError(f"step {k}: {len(p)} proof lists for {b.n} rollouts")
    return encode_rollouts(bundle.batches), encode_proof_file(bundle.proofs), delta_shards(bundle.delta)


def submission_manifest(
    bundle: Bundle,
    rollouts: ShardRef,
    proofs: ShardRef,
    delta: Sequence[ShardRef],
    stats: dict[str, Any] | None = None,
    states: Sequence[ShardRef] = (),
) -> SubmissionManifest:
    """The manifest of ``bundle`` (its task, rounds and trainer) naming these uploaded files, with
    ``stats`` as its claimed numbers (default: the bundle's own, encode_stats)."""
    claims = encode_stats(bundle, bundle.batches) if stats is None else stats
    b = bundle
    return SubmissionManifest(
        b.task_id, b.round, b.base_round, b.trainer, rollouts, proofs, tuple(delta), claims, tuple(states)
    )


def put_submission(store: Store, bundle: Bundle, pin: bool = True) -> tuple[Digest, SubmissionManifest]:
    """Upload the bundle's files and manifest; return (digest = what goes on chain, manifest)."""
    rollouts, proofs, shards = submission_files(bundle)
    manifest = submission_manifest(
        bundle,
        store.put_file(rollouts, ROLLOUTS_NAME, pin=pin),
        store.put_file(proofs, PROOFS_NAME, pin=pin),
        [store.put_file(data, name, pin=pin) for name, data in shards],
        states=[store.put_file(data, name, pin=pin) for name, data in state_files(bundle)],
    )
    digest = store.put_manifest(manifest.to_bytes(), pin=pin)
    return digest, manifest


MAX_SUBMISSION_FILES = 2 + MAX_SHARDS  # rollouts + proofs + delta shards (at most one per base-model tensor)


def submission_bytes_bound(limits: SubmissionLimits) -> int:
    """The most bytes one submission may make a validator download: manifest + the three files' limits."""
    return MAX_MANIFEST_BYTES + limits.max_rollouts_bytes + limits.max_proof_bytes + limits.max_delta_bytes


def submission_deadline_s(limits: SubmissionLimits, timeout: float) -> float:
    """Seconds a validator gives one submission's whole fetch (manifest and every block of every file).

    Protocol rule (issue 10): a submitter must serve its content at MIN_RATE bytes/s after at
    most one store timeout of latency, counted over the task's limits rather than the
    manifest's claims (a claim could be small and the provider slow): ``timeout +
    submission_bytes_bound(limits) / MIN_RATE``. Past it the submission counts as unavailable
    (the trainer's fault), so a slow provider costs one submission's deadline, never a round's.
    """
    return timeout + submission_bytes_bound(limits) / MIN_RATE


# The late-fetch rule (issue 23; docs/PROTOCOL.md "A submission's fetch time"): content is the trainer's
# fault only once its whole fetch deadline has passed, counted in chain time from a point every validator
# reads the same off the chain and none can choose: the round's submitEnd for the submission (every
# Submitted block is at or before it), shareEnd = submitEnd + commitSeconds / 4 for the inner states a
# sampled check fetches apart (the seed, which picks them, is fixed by then). The deadline is the rule's
# own, with FETCH_LATENCY_S as its store timeout, not a node's ipfs_timeout: every validator's bound is
# the same, and a task file is checked against it before it is published.
FETCH_LATENCY_S = 30.0  # the rule's one store timeout of latency (a node's default ipfs_timeout)
FETCH_MARGIN_S = 3.0  # a fetch starts a block or a poll after its event or the seed (1 s clocks, 0.25 s polls)


def content_window_s(limits: SubmissionLimits) -> float:
    """The rule's fetch deadline of one submission (and of the inner states a sample reads)."""
    return submission_deadline_s(limits, FETCH_LATENCY_S)


def content_due_s(commit_seconds: int, states_apart: bool, window_s: float) -> float:
    """Seconds after submitEnd before which no validator may judge a submission's content missing:
    from submitEnd, or from shareEnd when a sampled check fetches inner states apart (``states_apart``:
    sampled mode on a workload that keeps them apart), plus ``window_s`` and FETCH_MARGIN_S."""
    start = commit_seconds // 4 if states_apart else 0  # the contract's shareEnd offset (integer seconds)
    return start + window_s + FETCH_MARGIN_S


def commit_reserve_s(commit_seconds: int) -> float:
    """The end of the commit phase no fetch may take: re-checks, the outer step and the commit itself."""
    return commit_seconds / 4


def min_commit_seconds(limits: SubmissionLimits, states_apart: bool) -> int:
    """The shortest commit phase in which the late-fetch rule fits before `commit_reserve_s`."""
    window = content_window_s(limits)

    def fits(seconds: int) -> bool:
        return content_due_s(seconds, states_apart, window) <= seconds - commit_reserve_s(seconds)

    # near the answer at once (due <= 3/4 of the phase; from shareEnd, 1/4 of it is gone), then exact
    seconds = math.ceil((window + FETCH_MARGIN_S) * (2 if states_apart else 4 / 3))
    while seconds > 1 and fits(seconds - 1):
        seconds -= 1
    while not fits(seconds):
        seconds += 1
    return seconds


def fetch_submission(
    store: Store,
    digest: Digest | bytes | str,
    limits: SubmissionLimits,
    param_shapes: dict[str, tuple[int, ...]] | None = None,
    deadline: float | None = None,
    n_states: int | None = None,
    state_layout: StateLayout | None = None,
) -> Bundle:
    """The Bundle behind an on-chain digest, or SubmissionError naming the field and CID.

    Every download happens before ``deadline`` (a ``time.monotonic()`` value; default now +
    ``submission_deadline_s(limits, store.timeout)``); content not in by then is unavailable.

    Order: manifest (<= 1 MiB, sha256 = digest) -> claimed counts and file sizes against
    ``limits`` -> rollouts, proofs, delta downloads (each sha256-checked) -> strict parsing ->
    cross-checks (claimed counts = parsed counts, one proof list per rollout). With
    ``param_shapes`` the delta must have exactly the base model's names and shapes. The manifest
    must list ``n_states`` inner states (default: one per inner step; an LM submission has its
    own count, client.runtime.lm_work), each declaring exactly the canonical size of
    ``state_layout`` when given (`inner_state_layout`); they are fetched on demand (`fetch_states`).
    """
    cid = cid_for_digest(digest)
    if deadline is None:
        deadline = time.monotonic() + submission_deadline_s(limits, store.timeout)
    try:
        manifest = decode_manifest(
            _fetch(store, "manifest", cid, lambda: store.get_manifest(digest, deadline=deadline))
        )
    except ManifestError as e:
        raise SubmissionError(f"manifest.{e.field}", cid, e.reason, e.value) from None
    if not isinstance(manifest, SubmissionManifest):
        raise SubmissionError("manifest.kind", cid, "expected a submission manifest", manifest.kind)
    stats = decode_stats(manifest.stats, cid)
    claims = (("inner_steps", limits.max_inner_steps), ("rollouts", limits.max_rollouts), ("tokens", limits.max_tokens))
    for key, limit in claims:
        if stats[key] > limit:
            raise SubmissionError(f"stats.{key}", cid, f"over the task's limit of {limit}", stats[key])
    rollout_limit = rollouts_bytes_bound(stats["inner_steps"], stats["rollouts"], stats["tokens"])
    _limit(manifest.rollouts, "rollouts", rollout_limit)
    _limit(manifest.proofs, "proofs", limits.max_proof_bytes)
    delta_bytes = sum(ref.size for ref in manifest.delta)
    if delta_bytes > limits.max_delta_bytes:
        raise SubmissionError(
            "delta",
            manifest.delta[0].cid,
            f"{delta_bytes} bytes in {len(manifest.delta)} "
            f"shard(s), over the task's limit of {limits.max_delta_bytes}: refused before download",
        )
    if param_shapes is not None:
        check_delta_refs(manifest.delta, param_shapes)
    n = stats["inner_steps"] if n_states is None else n_states
    check_state_refs(manifest.states, n, limits, cid, state_layout)
    files = 2 + len(manifest.delta)
    cap = MAX_SUBMISSION_FILES if param_shapes is None else 2 + len(param_shapes)
    if files > cap:  # each shard holds at least one tensor: more shards than tensors is padding
        raise SubmissionError(
            "delta",
            manifest.delta[0].cid,
            f"{files} files, over the cap of {cap}: refused before download",
            len(manifest.delta),
        )

    ref = manifest.rollouts
    raw = _fetch(store, "rollouts", ref.cid, lambda: store.get_bytes(ref, rollout_limit, deadline))
    batches = decode_rollouts(raw, ref.cid, manifest.task_id, manifest.round, manifest.trainer)
    counts = {
        "inner_steps": len(batches),
        "rollouts": sum(b.n for b in batches),
        "tokens": sum(b.n * (b.prompt_len + b.completions.shape[1]) for b in batches),
    }
    for key, got in counts.items():
        if got != stats[key]:
            raise SubmissionError(f"stats.{key}", cid, f"claims {stats[key]}, the rollouts file holds {got}", got)

    ref = manifest.proofs
    raw = _fetch(store, "proofs", ref.cid, lambda: store.get_bytes(ref, limits.max_proof_bytes, deadline))
    proofs = decode_proof_file(raw, ref.cid, limits)
    if len(proofs) != len(batches):
        raise SubmissionError("proofs.inner_steps", ref.cid, f"expected {len(batches)} steps", len(proofs))
    for k, (step, b) in enumerate(zip(proofs, batches, strict=True)):
        if len(step) != b.n:
            raise SubmissionError(f"proofs[{k}]", ref.cid, f"expected one proof list per rollout ({b.n})", len(step))
    n_proofs = sum(len(r) for step in proofs for r in step)
    if n_proofs != stats["proofs"]:
        raise SubmissionError("stats.proofs", cid, f"claims {stats['proofs']}, the proofs file holds {n_proofs}")

    blobs = []
    for i, ref in enumerate(manifest.delta):
        get = functools.partial(store.get_bytes, ref, ref.size, deadline)
        blobs.append((ref, _fetch(store, f"delta[{i}]", ref.cid, get)))
    delta = decode_delta(blobs, param_shapes)

    return Bundle(
        task_id=manifest.task_id,
        round=manifest.round,
        base_round=manifest.base_round,
        trainer=manifest.trainer,
        batches=batches,
        proofs=proofs,
        delta=delta,
        mean_reward=stats["mean_reward"],
        work_units=stats["work_units"],
        proof_root=struct.pack(">8I", *(stats[k] for k in ROOT_WORDS)),
    )


def _limit(ref: ShardRef, field: str, limit: int) -> None:
    if ref.size > limit:
        raise SubmissionError(field, ref.cid, f"{ref.size} bytes, over the limit of {limit}: refused before download")


def _fetch(store: Store, field: str, cid: str, get: Callable[[], bytes]) -> bytes:
    """Run a store read; content the trainer failed to provide becomes a SubmissionError for ``field``."""
    try:
        return get()
    except (ContentNotFound, ContentMismatch, SizeLimitExceeded) as e:
        raise SubmissionError(field, cid, str(e)) from e

"""State dicts as safetensors shards with deterministic bytes: same weights -> same files -> same sha256.

Sharding rule: tensors in sorted-name order are packed greedily into shards of at most
`max_shard_bytes` of tensor data; a tensor larger than the bound gets a shard of its own.
Shard i of n is named `model-{i:05d}-of-{n:05d}.safetensors`. No metadata, contiguous
CPU tensors, so the bytes depend only on names, dtypes, shapes and values.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

DEFAULT_MAX_SHARD_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class Shard:
    name: str
    sha256: str  # hex
    size: int  # bytes


class ShardDigestMismatch(ValueError):
    def __init__(self, name: str, expected: str, got: str):
        super().__init__(f"shard {name}: expected sha256 {expected}, got {got}")
        self.name, self.expected, self.got = name, expected, got


class DuplicateTensor(ValueError):
    def __init__(self, name: str):
        super().__init__(f"tensor {name!r} appears in more than one shard")
        self.name = name


def _tensor_bytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def plan_shards(state: dict[str, torch.Tensor], max_shard_bytes: int) -> list[list[str]]:
    """Tensor names per shard, by the sharding rule in the module docstring."""
    groups: list[list[str]] = []
    size = 0
    for name in sorted(state):
        n = _tensor_bytes(state[name])
        if groups and groups[-1] and size + n <= max_shard_bytes:
            groups[-1].append(name)
            size += n
        else:
            groups.append([name])
            size = n
    return groups or [[]]


def shard_bytes(
    state: dict[str, torch.Tensor], max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES
) -> list[tuple[str, bytes]]:
    """(file name, bytes) per shard; pure function of the state's names, dtypes, shapes, values."""
    groups = plan_shards(state, max_shard_bytes)
    out = []
    for i, names in enumerate(groups, start=1):
        tensors = {n: state[n].detach().to("cpu").contiguous() for n in names}
        out.append((f"model-{i:05d}-of-{len(groups):05d}.safetensors", st_save(tensors)))
    return out


def save_shards(
    state: dict[str, torch.Tensor], directory: str | Path, max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES
) -> list[Shard]:
    """Write the shards into `directory`; return (name, sha256, size) per shard in order."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    shards = []
    for name, data in shard_bytes(state, max_shard_bytes):
        (directory / name).write_bytes(data)
        shards.append(Shard(name, hashlib.sha256(data).hexdigest(), len(data)))
    return shards


def load_shard_bytes(blobs: list[tuple[Shard, bytes]]) -> dict[str, torch.Tensor]:
    """Check each blob against its shard's sha256, then merge the tensors (names must not repeat)."""
    state: dict[str, torch.Tensor] = {}
    for shard, data in blobs:
        got = hashlib.sha256(data).hexdigest()
        if got != shard.sha256:
            raise ShardDigestMismatch(shard.name, shard.sha256, got)
        for name, tensor in st_load(data).items():
            if name in state:
                raise DuplicateTensor(name)
            state[name] = tensor
    return state


def load_shards(directory: str | Path, shards: list[Shard]) -> dict[str, torch.Tensor]:
    """Read and verify shards from `directory` (every byte checked against its sha256 before use)."""
    directory = Path(directory)
    return load_shard_bytes([(s, (directory / s.name).read_bytes()) for s in shards])


def shard_tensors(
    blobs: Iterable[tuple[str, bytes]], field: str, error: Callable[[str, str, str], Exception]
) -> Iterator[tuple[str, str, str, torch.Tensor]]:
    """The tensors of fetched shards ((cid, bytes) each), shard by shard and by name within a shard,
    as (where, cid, name, tensor) with where = ``f"{field}[i].{name}"``. Raises ``error(where, cid,
    reason)`` for a shard that is not a safetensors file (where: ``f"{field}[i]"``) and for a
    tensor name an earlier shard had."""
    seen: set[str] = set()
    for i, (cid, data) in enumerate(blobs):
        try:
            tensors = st_load(data)
        except (SafetensorError, ValueError, RuntimeError) as e:  # torch raises on some corrupt headers
            raise error(f"{field}[{i}]", cid, f"not a safetensors file: {e}") from None
        for name, t in sorted(tensors.items()):
            where = f"{field}[{i}].{name}"
            if name in seen:
                raise error(where, cid, "tensor appears in more than one shard")
            seen.add(name)
            yield where, cid, name, t

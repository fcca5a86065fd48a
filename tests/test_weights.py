"""Safetensors shards: bounded size, deterministic bytes, verified on load."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import pytest
import torch

from concord.client.content.weights import (
    Shard,
    ShardDigestMismatch,
    load_shards,
    plan_shards,
    save_shards,
)
from concord.client.engine.config import ModelConfig
from concord.client.engine.model import build_policy, policy_state


def _state() -> dict[str, torch.Tensor]:
    return policy_state(build_policy(ModelConfig(d_model=32, n_layers=2, n_heads=4, max_seq_len=16, seed=1)))


def test_shards_are_bounded_and_roundtrip(tmp_path) -> None:
    state = _state()
    limit = 8 * 1024
    shards = save_shards(state, tmp_path, max_shard_bytes=limit)
    assert len(shards) > 1
    for names in plan_shards(state, limit):
        data = sum(state[n].numel() * state[n].element_size() for n in names)
        assert data <= limit or len(names) == 1
    for s in shards:
        blob = (tmp_path / s.name).read_bytes()
        assert s.size == len(blob) and s.sha256 == hashlib.sha256(blob).hexdigest()
    loaded = load_shards(tmp_path, shards)
    assert sorted(loaded) == sorted(state)
    assert all(torch.equal(loaded[k], state[k]) for k in state)


def test_same_weights_same_bytes_across_processes(tmp_path) -> None:
    here = save_shards(_state(), tmp_path / "a", max_shard_bytes=16 * 1024)
    code = (
        "import sys; from concord.client.engine.config import ModelConfig;"
        "from concord.client.engine.model import build_policy, policy_state;"
        "from concord.client.content.weights import save_shards;"
        "st = policy_state(build_policy(ModelConfig(d_model=32, n_layers=2, n_heads=4, max_seq_len=16, seed=1)));"
        "print(' '.join(s.sha256 for s in save_shards(st, sys.argv[1], max_shard_bytes=16*1024)))"
    )
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "b")], capture_output=True, text=True, check=True)
    assert out.stdout.split() == [s.sha256 for s in here]


def test_tampered_shard_is_refused(tmp_path) -> None:
    shards = save_shards(_state(), tmp_path)
    path = tmp_path / shards[0].name
    blob = bytearray(path.read_bytes())
    blob[-1] ^= 1
    path.write_bytes(bytes(blob))
    with pytest.raises(ShardDigestMismatch) as err:
        load_shards(tmp_path, shards)
    assert err.value.expected == shards[0].sha256 and err.value.got != shards[0].sha256


def test_one_changed_weight_changes_the_digest(tmp_path) -> None:
    state = _state()
    a = save_shards(state, tmp_path / "a")
    state = dict(state)
    state["lm_head.weight"] = state["lm_head.weight"].clone()
    state["lm_head.weight"][0, 0] += 1e-6
    b = save_shards(state, tmp_path / "b")
    assert [s.sha256 for s in a] != [s.sha256 for s in b]
    assert isinstance(a[0], Shard) and a[0].name == "model-00001-of-00001.safetensors"

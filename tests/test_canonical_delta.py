"""Canonical delta shards (issue 10): a delta shard is exactly the project's own encoding of the
tensors it names, so one bundle content has one digest.

Through a real js-ipfs daemon: the honest bundle is accepted; the same tensors sent as padded
shards (331 empty extra files), with 2,000 bytes of metadata, with an extra, missing or reordered
shard, another split, a padded header, another tensor order in the header or another file name
are refused by `fetch_submission` with a SubmissionError naming the shard's field and CID. On a
real devnet (`concord bench attacks`'s network, every node its own process) the padded-shard and
metadata cheaters end rejected and slashed while the honest trainer is accepted and paid.
"""

from __future__ import annotations

import dataclasses
import json
import struct
from pathlib import Path

import pytest
import torch
from rich.console import Console
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from concord.client.chain import Role
from concord.client.content.manifest import SubmissionManifest
from concord.client.content.store import Store
from concord.client.content.submission import (
    SubmissionError,
    check_canonical_delta,
    delta_layout,
    delta_shards,
    fetch_submission,
    put_submission,
    state_files,
    submission_files,
    submission_manifest,
)
from concord.client.content.task_spec import derived_limits
from concord.client.engine.bundle import Bundle, make_bundle
from concord.client.engine.config import DEFAULT_TASK, GRPOConfig
from concord.client.engine.envs import make_env
from concord.client.engine.grpo import pin_determinism
from concord.client.engine.model import build_policy, policy_state
from scripts.adversaries.trainer_cheats import CHEATS, METADATA_BYTES, PADDED_SHARDS
from scripts.bench import attacks as bench_attacks
from scripts.demo import NodeSpec

TRAINER = "0x" + "cd" * 20
CFG = dataclasses.replace(DEFAULT_TASK, grpo=GRPOConfig(prompts_per_step=2, group_size=4, inner_steps=1))


@pytest.fixture(scope="module")
def made():
    pin_determinism(1)
    env, base = make_env(CFG.env), build_policy(CFG.model)
    return env, base, make_bundle(base, env, CFG, 3, 1, TRAINER, base_round=0)


def shapes_of(base: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(t.shape) for k, t in policy_state(base).items()}


def put_with_delta(store: Store, bundle: Bundle, shards: list[tuple[str, bytes]]) -> tuple[str, SubmissionManifest]:
    """The honest rollouts, proofs, stats and inner states with hand-made delta files; (digest, manifest)."""
    rollouts, proofs, _ = submission_files(bundle)
    manifest = submission_manifest(
        bundle,
        store.put_file(rollouts, "rollouts.safetensors"),
        store.put_file(proofs, "proofs.bin"),
        [store.put_file(data, name) for name, data in shards],
        states=[store.put_file(data, name) for name, data in state_files(bundle)],
    )
    return store.put_manifest(manifest.to_bytes()), manifest


def with_header(data: bytes, header: bytes) -> bytes:
    """A safetensors file with the same tensor data under another header (padded to 8 bytes)."""
    (n,) = struct.unpack_from("<Q", data)
    header += b" " * (-len(header) % 8)
    return struct.pack("<Q", len(header)) + header + data[8 + n :]


def renamed(blobs: list[bytes]) -> list[tuple[str, bytes]]:
    n = len(blobs)
    return [(f"delta-{i:05d}-of-{n:05d}.safetensors", b) for i, b in enumerate(blobs, start=1)]


def variants(bundle: Bundle) -> dict[str, tuple[list[tuple[str, bytes]], str, int]]:
    """name -> (delta files with the honest tensors, field the error must name, index of the shard it names)."""
    [(name, honest)] = delta_shards(bundle.delta)
    tensors = dict(st_load(honest))
    names = sorted(tensors)
    head = json.loads(honest[8 : 8 + struct.unpack_from("<Q", honest)[0]])
    first, rest = {k: tensors[k] for k in names[:1]}, {k: tensors[k] for k in names[1:]}
    return {
        "padded with 331 empty shards": (renamed([honest] + [st_save({})] * PADDED_SHARDS), "delta[1]", 1),
        "2000 bytes of metadata": ([(name, st_save(tensors, metadata={"note": "x" * METADATA_BYTES}))], "delta[0]", 0),
        "one extra empty shard": ([(name, honest), ("delta-00002-of-00001.safetensors", st_save({}))], "delta[1]", 1),
        "split in two shards": (renamed([st_save(first), st_save(rest)]), "delta[1]", 1),
        "two shards reordered": (renamed([st_save(rest), st_save(first)]), "delta[1]", 1),
        "second shard missing": (renamed([st_save(first)]), "delta[0]", 0),  # its tensors named nowhere
        "header padded with spaces": (
            [(name, with_header(honest, json.dumps(head, separators=(",", ":")).encode() + b" " * 64))],
            "delta[0]",
            0,
        ),
        "tensors reordered in the header": (
            [
                (
                    name,
                    with_header(honest, json.dumps(dict(reversed(list(head.items()))), separators=(",", ":")).encode()),
                )
            ],
            "delta[0]",
            0,
        ),
        "another file name": ([("delta.safetensors", honest)], "delta[0].name", 0),
    }


def test_honest_delta_is_its_canonical_encoding(made, store: Store, other: Store) -> None:
    env, base, bundle = made
    digest, manifest = put_submission(store, bundle)
    assert [(r.name, r.size) for r in manifest.delta] == delta_layout(shapes_of(base))
    got = fetch_submission(other, digest, derived_limits(CFG), shapes_of(base))
    assert all(torch.equal(got.delta[k], bundle.delta[k]) for k in bundle.delta)
    again, _ = put_submission(store, dataclasses.replace(bundle, delta={k: t.clone() for k, t in bundle.delta.items()}))
    assert again == digest  # one content, one digest


@pytest.mark.parametrize(
    "case",
    [
        "padded with 331 empty shards",
        "2000 bytes of metadata",
        "one extra empty shard",
        "split in two shards",
        "two shards reordered",
        "second shard missing",
        "header padded with spaces",
        "tensors reordered in the header",
        "another file name",
    ],
)
def test_same_tensors_other_bytes_are_refused_naming_shard_and_cid(made, store: Store, other: Store, case: str) -> None:
    env, base, bundle = made
    shards, field, index = variants(bundle)[case]
    merged = {k: v for _, d in shards for k, v in st_load(d).items()}
    assert all(torch.equal(v, bundle.delta[k]) for k, v in merged.items())  # the honest tensors
    assert len(merged) == len(bundle.delta) or case == "second shard missing"
    limits = dataclasses.replace(derived_limits(CFG), max_delta_bytes=10**6)  # the size limit is not the point
    digest, manifest = put_with_delta(store, bundle, shards)
    # a validator: refused before any delta shard is downloaded where the manifest's list already differs
    with pytest.raises(SubmissionError) as info:
        fetch_submission(other, digest, limits, shapes_of(base))
    err = info.value
    assert err.field.split(".")[0] == field.split(".")[0] and err.field.startswith(field), str(err)
    assert err.cid == manifest.delta[index].cid and err.cid in str(err)
    if case == "second shard missing":
        return  # without the base model's shapes that is a smaller delta: check_schema's business
    # without the base model's shapes (the bytes checked after download) the verdict is the same
    with pytest.raises(SubmissionError) as info:
        fetch_submission(other, digest, limits)
    assert info.value.field.startswith(field.split(".")[0]) and info.value.cid == manifest.delta[index].cid


def test_the_byte_check_names_what_differs(made) -> None:
    """decode-time errors say why: extra shard, __metadata__, padding, header order, name."""
    _, _, bundle = made
    import hashlib

    from concord.client.content.manifest import ShardRef, cid_for_digest

    def refs(shards: list[tuple[str, bytes]]) -> list[tuple[ShardRef, bytes]]:
        out = []
        for name, data in shards:
            sha = hashlib.sha256(data).hexdigest()
            out.append((ShardRef(name, cid_for_digest(sha), sha, len(data)), data))
        return out

    reasons = {
        "padded with 331 empty shards": "extra shard: this delta encodes to 1 shard(s), the manifest lists 332",
        "2000 bytes of metadata": "the header carries __metadata__",
        "header padded with spaces": "padding or layout",
        "tensors reordered in the header": "the header differs",
        "another file name": "expected the canonical shard name 'delta-00001-of-00001.safetensors'",
    }
    cases = variants(bundle)
    for case, reason in reasons.items():
        with pytest.raises(SubmissionError, match="submission delta") as info:
            check_canonical_delta(refs(cases[case][0]), bundle.delta)
        assert reason in str(info.value), (case, str(info.value))
    check_canonical_delta(refs(delta_shards(bundle.delta)), bundle.delta)  # the honest shards pass


@pytest.mark.slow
@pytest.mark.e2e
def test_padded_and_metadata_cheaters_are_rejected_and_slashed_on_a_devnet(tmp_path: Path) -> None:
    """One round of `concord bench attacks`'s network, trimmed: one honest trainer, the two delta-shard
    cheaters, two honest validators, every node its own process against real Anvil and js-ipfs."""
    modes = ["padded_delta_shards", "delta_shard_metadata"]
    specs = [NodeSpec("trainer-1", Role.TRAINER, 1)]
    specs += [NodeSpec(f"cheat-{m}", Role.TRAINER, 2 + k, m) for k, m in enumerate(modes)]
    specs += [NodeSpec(f"validator-{i + 1}", Role.VALIDATOR, 2 + len(modes) + i) for i in range(2)]
    plan = bench_attacks.AttackPlan("delta-shards", 1, tuple(specs), min_validators=2, timeout_s=600.0)
    obs = bench_attacks.run_plan(plan, tmp_path, Console(quiet=True))
    rows = {r.scenario: r for r in bench_attacks.judge_trainers(obs)}
    for mode in modes:
        assert CHEATS[mode].caught_by == "fetch"
        assert rows[mode].detected, rows[mode].note
        assert rows[mode].slashed == obs.params.slash_amount and rows[mode].bounty > 0
        assert "rejected by fetch" in rows[mode].note
    honest = [(specs[0].address.lower(), 0)]
    assert bench_attacks.honest_outcome(obs, honest) == (0, [])  # accepted and paid its share in full
    assert bench_attacks.expected_bounties(obs) == bench_attacks.paid_bounties(obs)
    assert obs.conservation_ok

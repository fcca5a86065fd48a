"""Submissions and models through a real js-ipfs daemon: round trips, digests, every refusal (issue 4)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from concord.client.content.manifest import (
    ManifestError,
    ModelManifest,
    ShardRef,
    SubmissionManifest,
    cid_for_digest,
)
from concord.client.content.model_store import ModelError, fetch_model, put_model
from concord.client.content.store import Store, StoreUnavailable
from concord.client.content.submission import (
    PROOFS_MAGIC,
    SubmissionError,
    SubmissionLimits,
    decode_proof_file,
    decode_state,
    default_limits,
    encode_proof_file,
    encode_stats,
    fetch_states,
    fetch_submission,
    inner_state_layout,
    put_submission,
    state_bytes_bound,
    state_file_size,
    state_files,
    submission_files,
    submission_manifest,
)
from concord.client.content.task_spec import (
    TaskSpecError,
    TaskSpecManifest,
    fetch_task_spec,
    load_task_spec,
    put_task_spec,
)
from concord.client.digest import Digest
from concord.client.engine.bundle import Bundle, make_bundle, proof_root
from concord.client.engine.config import DEFAULT_TASK, GRPOConfig, to_dict
from concord.client.engine.envs import make_env
from concord.client.engine.grpo import pin_determinism
from concord.client.engine.model import build_policy, policy_state
from concord.client.engine.rollout import RolloutBatch
from concord.validator.tiny_checks import verify_bundle

TRAINER = "0x" + "ab" * 20
CFG = dataclasses.replace(DEFAULT_TASK, grpo=GRPOConfig(prompts_per_step=2, group_size=4, inner_steps=2))
MB = 1_000_000


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def made():
    """A real bundle from the engine: tiny model, 2 inner steps x 8 rollouts."""
    pin_determinism(1)
    env, base = make_env(CFG.env), build_policy(CFG.model)
    return env, base, make_bundle(base, env, CFG, 7, 3, TRAINER, base_round=2)


def limits_for(base: torch.nn.Module, env) -> SubmissionLimits:
    state = policy_state(base)
    return default_limits(CFG, sum(t.numel() for t in state.values()), len(state), env.prompt_len)


def assert_same_bundle(got: Bundle, want: Bundle) -> None:
    assert (got.task_id, got.round, got.base_round, got.trainer) == (
        want.task_id,
        want.round,
        want.base_round,
        want.trainer.lower(),
    )
    assert (got.mean_reward, got.work_units, got.proof_root) == (want.mean_reward, want.work_units, want.proof_root)
    assert got.proofs == want.proofs
    assert len(got.batches) == len(want.batches)
    for g, w in zip(got.batches, want.batches, strict=True):
        for f in dataclasses.fields(RolloutBatch):
            a, b = getattr(g, f.name), getattr(w, f.name)
            if isinstance(a, torch.Tensor):
                assert a.dtype == b.dtype and torch.equal(a, b), f.name
            elif f.name == "keys":
                assert a.dtype == b.dtype and (a == b).all(), f.name
            else:
                assert a == (b.lower() if f.name == "trainer" else b), f.name
    assert set(got.delta) == set(want.delta)
    assert all(torch.equal(got.delta[k], want.delta[k]) for k in want.delta)


def put_parts(
    store: Store,
    bundle: Bundle,
    rollouts: bytes | None = None,
    proofs: bytes | None = None,
    delta: list[tuple[str, bytes]] | None = None,
    stats: dict | None = None,
    states: list[ShardRef] | None = None,
) -> str:
    """Upload a submission with some parts replaced by hand-made bytes (``states``: the manifest's
    state list as given); return its manifest digest."""
    r, p, d = submission_files(bundle)
    manifest = submission_manifest(
        bundle,
        store.put_file(r if rollouts is None else rollouts, "rollouts.safetensors"),
        store.put_file(p if proofs is None else proofs, "proofs.bin"),
        [store.put_file(data, name) for name, data in (d if delta is None else delta)],
        stats,
        [store.put_file(data, name) for name, data in state_files(bundle)] if states is None else states,
    )
    return store.put_manifest(manifest.to_bytes())


def edit_rollouts(bundle: Bundle, edit) -> bytes:
    tensors = dict(st_load(submission_files(bundle)[0]))
    edit(tensors)
    return st_save(tensors)


# ----------------------------------------------------------------------------- submissions: round trip


def test_submission_round_trip_is_exact_and_still_verifies(made, store: Store, other: Store) -> None:
    env, base, bundle = made
    digest, manifest = put_submission(store, bundle)
    assert digest == manifest.digest() == Digest(hashlib.sha256(manifest.to_bytes()).digest())
    stats = manifest.stats
    assert (stats["inner_steps"], stats["rollouts"], stats["work_units"]) == (2, 16, bundle.work_units)
    assert stats["tokens"] == sum(b.n * b.tokens.shape[1] for b in bundle.batches)
    assert stats["proofs"] == sum(len(r) for s in bundle.proofs for r in s) >= 16
    got = fetch_submission(
        other, digest, limits_for(base, env), {k: tuple(t.shape) for k, t in policy_state(base).items()}
    )
    assert_same_bundle(got, bundle)
    assert proof_root(got) == bundle.proof_root
    assert verify_bundle(base, got, env, CFG).accepted


def test_same_bundle_same_bytes_same_digest(made, store: Store) -> None:
    _, _, bundle = made
    assert submission_files(bundle) == submission_files(bundle)
    first, _ = put_submission(store, bundle)
    second, _ = put_submission(
        store, dataclasses.replace(bundle, delta={k: t.clone() for k, t in bundle.delta.items()})
    )
    assert first == second
    claimed_more, _ = put_submission(store, dataclasses.replace(bundle, work_units=bundle.work_units + 1))
    assert claimed_more != first


def test_proofs_file_layout_is_the_stated_one(made) -> None:
    _, _, bundle = made
    data = encode_proof_file(bundle.proofs)
    assert data[:4] == PROOFS_MAGIC and struct.unpack(">III", data[4:16]) == (2, 8, 8)
    first = bundle.proofs[0][0]
    assert struct.unpack(">HH", data[16:20]) == (len(first), len(first[0]))
    assert data[20 : 20 + len(first[0])] == first[0]
    size = 16 + sum(2 + sum(2 + len(p) for p in r) for s in bundle.proofs for r in s)
    assert len(data) == size


# ----------------------------------------------------------------------------- submissions: refusals


def test_inner_states_round_trip_and_replay_one_step(made, store: Store, other: Store) -> None:
    """The manifest commits to inner states 1 and 2 (H = 2); a validator fetches state 1 alone and
    replays inner step 1 from it to exactly state 2, whose parameters are theta_base + delta."""
    from concord.client.engine.grpo import inner_update, restore_inner_state

    env, base, bundle = made
    digest, manifest = put_submission(store, bundle)
    assert [s.name for s in manifest.states] == ["state-0001.safetensors", "state-0002.safetensors"]
    shapes = {n: tuple(t.shape) for n, t in policy_state(base).items()}
    got = fetch_states(other, digest, [1], limits_for(base, env), shapes)
    assert set(got) == {1} and set(got[1]) == set(bundle.states[0])
    end = {k.removeprefix("param."): t for k, t in bundle.states[1].items() if k.startswith("param.")}
    assert all(torch.equal(end[k] - policy_state(base)[k], bundle.delta[k]) for k in bundle.delta)
    assert all(torch.equal(got[1][k], bundle.states[0][k]) for k in got[1])
    policy, opt = restore_inner_state(base, got[1], 1, CFG.grpo)
    inner_update(policy, opt, bundle.batches[1], CFG.grpo, base)  # the trainer's batch: same tensors the replay uses
    after = policy_state(policy)
    assert max(float((after[k] - (policy_state(base)[k] + bundle.delta[k])).abs().max()) for k in after) < 1e-6


def test_bad_inner_states_are_refused_naming_the_state_and_cid(made, store: Store, other: Store) -> None:
    """Missing, misnamed and oversized states are refused before download; a state whose bytes do not
    hash to the manifest's sha256, or that is not canonical, is a SubmissionError, not a crash."""
    env, base, bundle = made
    limits = limits_for(base, env)
    shapes = {n: tuple(t.shape) for n, t in policy_state(base).items()}
    (name, data), (name2, data2) = state_files(bundle)
    good, second = store.put_file(data, name), store.put_file(data2, name2)

    def refused(states: list[ShardRef]) -> SubmissionError:
        digest = put_parts(store, bundle, states=states)
        with pytest.raises(SubmissionError) as info:
            fetch_submission(other, digest, limits, shapes)
        return info.value

    assert refused([good]).field == "states"  # H = 2 needs two
    assert refused([good, second, store.put_file(data, "state-0003.safetensors")]).field == "states"
    assert refused([dataclasses.replace(good, name="state-0007.safetensors"), second]).field == "states[0].name"
    huge = dataclasses.replace(good, size=state_bytes_bound(limits) + 1)
    err = refused([huge, second])
    assert (err.field, err.cid) == ("states[0].size", good.cid) and "before download" in str(err)

    # the manifest passes; fetching the state itself fails cleanly
    other_bytes = data[:-4] + b"\x00\x00\x80\x7f"  # same size, other content (last float -> inf)
    forged = dataclasses.replace(store.put_file(other_bytes, name), sha256=good.sha256)
    for states, field in (([forged, second], "states[0]"),):
        digest = put_parts(store, bundle, states=states)
        fetch_submission(other, digest, limits, shapes)  # the list is well-formed
        with pytest.raises(SubmissionError) as info:
            fetch_states(other, digest, [1], limits, shapes)
        assert info.value.field == field and info.value.cid == forged.cid, str(info.value)
    tensors = dict(st_load(data))
    padded = st_save(tensors, metadata={"pad": "x" * 64})
    digest = put_parts(store, bundle, states=[store.put_file(padded, name), second])
    with pytest.raises(SubmissionError) as info:
        fetch_states(other, digest, [1], limits, shapes)
    assert info.value.field == "states[0]" and "canonical" in str(info.value)
    wrong = st_save({k.replace("param.", "param.x"): v for k, v in tensors.items()})
    digest = put_parts(store, bundle, states=[store.put_file(wrong, name), second])
    with pytest.raises(SubmissionError) as info:
        fetch_states(other, digest, [1], limits, shapes)
    assert info.value.field == "states[0].param"


@pytest.mark.parametrize(("optimizer", "betas"), [("sgd", (0.9, 0.99)), ("sgd", (0.0, 0.99)), ("adamw", (0.9, 0.99))])
def test_inner_state_layout_is_what_training_writes(optimizer: str, betas: tuple[float, float]) -> None:
    grpo = GRPOConfig(prompts_per_step=1, group_size=2, inner_steps=2, optimizer=optimizer, betas=betas)
    cfg = dataclasses.replace(CFG, grpo=grpo)
    env, base = make_env(cfg.env), build_policy(cfg.model)
    bundle = make_bundle(base, env, cfg, 7, 3, TRAINER)
    layout = inner_state_layout({n: tuple(t.shape) for n, t in policy_state(base).items()}, grpo)
    for state, (_, data) in zip(bundle.states, state_files(bundle), strict=True):
        assert tuple(sorted((n, tuple(t.shape)) for n, t in state.items())) == layout
        assert state_file_size(layout) == len(data)


def test_every_listed_state_has_the_canonical_size_fetched_or_not(made, store: Store, other: Store) -> None:
    """With the task's state layout, a padded state 2 or one with an extra tensor is refused by the
    manifest's sizes alone, before any download and whether or not a sample ever reads state 2; a
    fetched state with a same-size swap of tensors is refused by its decode."""
    env, base, bundle = made
    limits = limits_for(base, env)
    shapes = {n: tuple(t.shape) for n, t in policy_state(base).items()}
    layout = inner_state_layout(shapes, CFG.grpo)
    (name, data), (name2, data2) = state_files(bundle)
    good = store.put_file(data, name)
    digest = put_parts(store, bundle, states=[good, store.put_file(data2, name2)])
    fetch_submission(other, digest, limits, shapes, state_layout=layout)  # honest: passes
    tensors2 = dict(st_load(data2))
    some = sorted(n for n in tensors2 if n.startswith("opt."))[0]
    bad_states = {
        "padded": st_save(tensors2, metadata={"pad": "x" * 64}),
        "extra tensor": st_save(dict(tensors2, **{"opt.junk." + some.split(".", 2)[2]: tensors2[some].clone()})),
        "missing tensor": st_save({n: t for n, t in tensors2.items() if n != some}),
    }
    for what, raw in bad_states.items():
        digest = put_parts(store, bundle, states=[good, store.put_file(raw, name2)])
        fetch_submission(other, digest, limits, shapes)  # without the layout only the bound is checked
        with pytest.raises(SubmissionError) as info:
            fetch_submission(other, digest, limits, shapes, state_layout=layout)
        assert info.value.field == "states[1].size" and "before download" in str(info.value), what
    # same size, other names: an optimizer tensor renamed (as long as the name): the decode refuses it
    renamed = some[:-1] + ("x" if some[-1] != "x" else "y")
    swapped = st_save({(renamed if n == some else n): t for n, t in tensors2.items()})
    assert len(swapped) == len(data2)
    digest = put_parts(store, bundle, states=[good, store.put_file(swapped, name2)])
    fetch_submission(other, digest, limits, shapes, state_layout=layout)
    with pytest.raises(SubmissionError) as info:
        fetch_states(other, digest, [2], limits, shapes, layout=layout)
    assert info.value.field.startswith("states[1].") and "task's inner state" in str(info.value)


def test_decode_state_refuses_each_bad_state_naming_the_field(made) -> None:
    """decode_state without a store: a non-finite value names its tensor, another dtype names its
    tensor, and every byte-level variant of a valid state (metadata, header padding, tensor order,
    trailing or missing bytes) is refused as non-canonical exactly when its re-encoding differs;
    a state of other parameters names states[i].param."""
    env, base, bundle = made
    shapes = {n: tuple(t.shape) for n, t in policy_state(base).items()}
    (name, data), _ = state_files(bundle)
    ref = ShardRef(name, cid_for_digest(hashlib.sha256(data).digest()), hashlib.sha256(data).hexdigest(), len(data))
    got = decode_state(data, ref, 0, shapes)
    assert set(got) == set(bundle.states[0]) and all(torch.equal(got[k], bundle.states[0][k]) for k in got)

    def refused(raw: bytes) -> SubmissionError:
        with pytest.raises(SubmissionError) as info:
            decode_state(raw, ref, 0, shapes)
        assert info.value.cid == ref.cid
        return info.value

    tensors = dict(st_load(data))
    last = sorted(tensors)[-1]
    for bad in (float("nan"), float("inf"), float("-inf")):
        poisoned = tensors[last].clone()
        poisoned.view(-1)[0] = bad
        assert refused(st_save(dict(tensors, **{last: poisoned}))).field == f"states[0].{last}"
    assert refused(st_save(dict(tensors, **{last: tensors[last].double()}))).field == f"states[0].{last}"
    head = struct.unpack_from("<Q", data)[0]
    header = json.loads(data[8 : 8 + head])
    names = sorted(tensors)  # another order of the same tensors, offsets consistent: valid safetensors, not save's
    offsets, pos = {}, 0
    for n in reversed(names):
        offsets[n], pos = [pos, pos + tensors[n].numel() * 4], pos + tensors[n].numel() * 4
    reordered_header = json.dumps({n: dict(header[n], data_offsets=offsets[n]) for n in names}).encode()
    reordered_header += b" " * (-len(reordered_header) % 8)
    reordered = struct.pack("<Q", len(reordered_header)) + reordered_header
    reordered += b"".join(tensors[n].numpy().tobytes() for n in reversed(names))
    spaced = json.dumps(header, separators=(", ", ": ")).encode()
    spaced += b" " * (-len(spaced) % 8)
    variants = {
        "metadata": st_save(tensors, metadata={"pad": "x" * 64}),
        "trailing": data + b"\x00" * 8,
        "reordered": reordered,
        "spaced header": struct.pack("<Q", len(spaced)) + spaced + data[8 + head :],
        "padded header": struct.pack("<Q", head + 8) + data[8 : 8 + head] + b" " * 8 + data[8 + head :],
    }
    for what, raw in variants.items():
        err = refused(raw)
        assert err.field == "states[0]", what
        try:
            loaded = st_load(raw)
        except Exception:  # safetensors refuses it itself (trailing bytes leave the buffer not covered)
            continue
        assert st_save(dict(loaded)) != raw and "canonical" in str(err), what  # a real non-canonical encoding
    other = st_save({k.replace("param.", "param.x"): v for k, v in tensors.items()})
    assert refused(other).field == "states[0].param"
    assert refused(data[:-4]).field == "states[0]"  # truncated: not even safetensors


def test_limits_are_checked_before_any_download(made, store: Store, other: Store) -> None:
    env, base, bundle = made
    digest, manifest = put_submission(store, bundle)
    ok = limits_for(base, env)
    cases = [
        (dataclasses.replace(ok, max_rollouts=15), "stats.rollouts"),
        (dataclasses.replace(ok, max_inner_steps=1), "stats.inner_steps"),
        (dataclasses.replace(ok, max_tokens=ok.max_tokens // 2), "stats.tokens"),
        (dataclasses.replace(ok, max_proof_bytes=manifest.proofs.size - 1), "proofs"),
        (dataclasses.replace(ok, max_delta_bytes=sum(r.size for r in manifest.delta) - 1), "delta"),
    ]
    for limits, field in cases:
        with pytest.raises(SubmissionError) as info:
            fetch_submission(other, digest, limits)
        assert info.value.field == field, str(info.value)
    assert "refused before download" in str(info.value) and manifest.delta[0].cid in str(info.value)
    cached = {p.name for p in other.cache_dir.iterdir()}
    assert cached == {digest.hex()}  # only the manifest was downloaded: no rollouts, proofs or delta bytes


MALFORMED = {
    # name: (what to replace, field the error must name)
    "rewards as float32": (lambda t: t.update({"0001.rewards": t["0001.rewards"].float()}), "rollouts.0001.rewards"),
    "unknown tensor": (lambda t: t.update({"0000.hidden": torch.zeros(3)}), "rollouts.0000.hidden"),
    "missing tensor": (lambda t: t.pop("0001.keys"), "rollouts.0001.keys"),
    "wrong shape": (lambda t: t.update({"0000.mask": t["0000.mask"][:-1]}), "rollouts.0000.mask"),
    "lengths vs mask": (lambda t: t.update({"0000.lengths": t["0000.lengths"] + 1}), "rollouts.0000.lengths"),
    "2-d rewards": (lambda t: t.update({"0000.rewards": t["0000.rewards"][:, None]}), "rollouts.0000.rewards"),
    "step missing": (lambda t: [t.pop(k) for k in list(t) if k.startswith("0001.")], "stats.inner_steps"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_rollouts_are_refused_naming_field_and_cid(made, store: Store, other: Store, case: str) -> None:
    env, base, bundle = made
    edit, field = MALFORMED[case]
    bad = edit_rollouts(bundle, edit)
    digest = put_parts(store, bundle, rollouts=bad)
    with pytest.raises(SubmissionError) as info:
        fetch_submission(other, digest, limits_for(base, env))
    assert info.value.field == field, str(info.value)
    bad_cid = store.put_file(bad, "x").cid
    assert info.value.cid in (bad_cid, cid_for_digest(digest))


def test_non_canonical_rollouts_are_refused(made, store: Store, other: Store) -> None:
    env, base, bundle = made
    with_metadata = st_save(dict(st_load(submission_files(bundle)[0])), metadata={"note": "same tensors"})
    digest = put_parts(store, bundle, rollouts=with_metadata)
    with pytest.raises(SubmissionError, match="not the canonical encoding") as info:
        fetch_submission(other, digest, limits_for(base, env))
    assert info.value.field == "rollouts"


def test_malformed_proofs_and_delta_are_refused(made, store: Store, other: Store) -> None:
    env, base, bundle = made
    limits = limits_for(base, env)
    limits = dataclasses.replace(limits, max_delta_bytes=2 * limits.max_delta_bytes)  # room for a float64 delta
    shapes = {k: tuple(t.shape) for k, t in policy_state(base).items()}
    short_step = (bundle.proofs[0], bundle.proofs[1][:-1])
    good = encode_proof_file(bundle.proofs)
    as64 = [(n, st_save({k: v.double() for k, v in st_load(d).items()})) for n, d in submission_files(bundle)[2]]
    extra = [(n, st_save({**st_load(d), "extra.weight": torch.zeros(2)})) for n, d in submission_files(bundle)[2]]
    cases = [
        ({"proofs": encode_proof_file(short_step)}, "proofs[1]"),  # proofs count != rollouts
        ({"proofs": good + b"\0"}, "proofs"),  # trailing bytes
        ({"proofs": good[:-3]}, "proofs[1][7][1]"),  # truncated last proof
        ({"proofs": b"XXXX" + good[4:]}, "proofs"),  # bad magic
        ({"delta": as64}, "delta[0].size"),  # wrong dtype: not the canonical size, refused before download
        ({"delta": extra}, "delta[0].size"),  # not a base parameter: likewise
        ({"stats": {**encode_stats(bundle, bundle.batches), "bonus": 1}}, "stats.bonus"),
        ({"stats": {**encode_stats(bundle, bundle.batches), "proofs": 1}}, "stats.proofs"),
    ]
    assert len(bundle.proofs[1][7]) == 2, "the truncation case assumes a rollout with two proofs"
    for parts, field in cases:
        digest = put_parts(store, bundle, **parts)
        with pytest.raises(SubmissionError) as info:
            fetch_submission(other, digest, limits, shapes)
        assert info.value.field == field, str(info.value)
    # without the base model's shapes the shard is downloaded and parsed: the wrong-dtype tensor is named
    with pytest.raises(SubmissionError) as info:
        fetch_submission(other, put_parts(store, bundle, delta=as64), limits)
    assert info.value.field == f"delta[0].{sorted(bundle.delta)[0]}", str(info.value)


def test_decode_refuses_more_proof_rollouts_than_the_limit(made) -> None:
    env, base, bundle = made
    data = encode_proof_file(bundle.proofs)
    with pytest.raises(SubmissionError) as info:
        decode_proof_file(data, "cid", dataclasses.replace(limits_for(base, env), max_rollouts=15))
    assert info.value.field == "proofs.rollouts" and info.value.value == 16


def test_missing_content_is_a_clear_error_within_the_timeout(made, store: Store, other: Store) -> None:
    env, base, bundle = made
    r, _, _ = submission_files(bundle)
    ghost_sha = hashlib.sha256(b"never uploaded " + os.urandom(8)).hexdigest()
    ghost = ShardRef("rollouts.safetensors", cid_for_digest(ghost_sha), ghost_sha, len(r))
    honest = SubmissionManifest.from_bytes(store.get_manifest(put_submission(store, bundle)[0]))
    digest = store.put_manifest(dataclasses.replace(honest, rollouts=ghost).to_bytes())
    start = time.monotonic()
    with pytest.raises(SubmissionError) as info:
        fetch_submission(other, digest, limits_for(base, env))
    assert time.monotonic() - start < other.timeout + 3
    assert info.value.field == "rollouts" and info.value.cid == ghost.cid and "not found" in str(info.value)
    # A digest nobody stored at all, and a model digest where a submission is expected.
    with pytest.raises(SubmissionError) as info:
        fetch_submission(other, hashlib.sha256(os.urandom(8)).hexdigest(), limits_for(base, env))
    assert info.value.field == "manifest"
    model = put_model(store, policy_state(base), CFG.model, None, None)
    with pytest.raises(SubmissionError) as info:
        fetch_submission(other, model, limits_for(base, env))
    assert info.value.field == "manifest.kind"


# ----------------------------------------------------------------------------- models


def test_model_round_trip_with_outer_state_and_parent(made, store: Store, other: Store, tmp_path: Path) -> None:
    _, base, bundle = made
    state = policy_state(base)
    momentum = {k: torch.full_like(t, 0.5) for k, t in bundle.delta.items()}
    parent = put_model(store, state, CFG.model, None, None)
    digest = put_model(store, state, CFG.model, momentum, parent, max_shard_bytes=40_000)
    got = fetch_model(other, digest, tmp_path / "models", max_bytes=10 * MB)
    assert got.config == CFG.model and got.manifest.parent == parent and got.manifest.dtype == "float32"
    assert len(got.manifest.shards) > 1 and got.manifest.outer_state is not None
    assert set(got.state) == set(state) and all(torch.equal(got.state[k], state[k]) for k in state)
    assert all(torch.equal(got.outer_state[k], momentum[k]) for k in momentum)
    first = fetch_model(other, parent, tmp_path / "models", max_bytes=10 * MB)
    assert first.outer_state is None and first.manifest.parent is None
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == sorted([digest.hex(), parent.hex()])


def test_same_weights_same_digest_across_calls_and_processes(made, store: Store, ipfs, tmp_path: Path) -> None:
    _, base, _ = made
    state = policy_state(base)
    digest = put_model(store, state, CFG.model, None, None)
    assert put_model(store, {k: t.clone() for k, t in state.items()}, CFG.model, None, None) == digest
    code = (
        "import sys; from concord.client.engine.config import ModelConfig, from_dict; import json;"
        "from concord.client.engine.model import build_policy, policy_state;"
        "from concord.client.content.model_store import put_model;"
        "from concord.client.content.store import Store;"
        "cfg = from_dict(ModelConfig, json.loads(sys.argv[2]), 'model');"
        "print(put_model(Store(sys.argv[1], None), policy_state(build_policy(cfg)), cfg, None, None))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, ipfs.api, json.dumps(to_dict(CFG.model))],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).parents[1],
        check=True,
    )
    assert out.stdout.strip() == str(digest)
    other_cfg = dataclasses.replace(CFG.model, seed=1)
    assert put_model(store, state, other_cfg, None, None) != digest  # config is part of the identity


def test_second_fetch_touches_no_network_and_corruption_is_refetched(
    made, store: Store, other: Store, tmp_path: Path, dead_store
) -> None:
    _, base, _ = made
    state = policy_state(base)
    digest = put_model(store, state, CFG.model, None, None)
    cache = tmp_path / "models"
    fetch_model(other, digest, cache, max_bytes=10 * MB)
    offline = fetch_model(dead_store(None), digest, cache, max_bytes=10 * MB)
    assert all(torch.equal(offline.state[k], state[k]) for k in state)
    shard = cache / digest.hex() / offline.manifest.shards[0].name
    shard.write_bytes(b"\0" * shard.stat().st_size)  # corrupt the cached copy
    with pytest.raises(StoreUnavailable):
        fetch_model(dead_store(None), digest, cache, max_bytes=10 * MB)  # not served; refetch needs the daemon
    assert not (cache / digest.hex()).exists()
    again = fetch_model(other, digest, cache, max_bytes=10 * MB)
    assert all(torch.equal(again.state[k], state[k]) for k in state)


def test_bad_models_are_refused_and_nothing_is_cached(made, store: Store, other: Store, tmp_path: Path) -> None:
    _, base, _ = made
    state = policy_state(base)
    cache = tmp_path / "models"
    digest = put_model(store, state, CFG.model, None, None)
    good = ModelManifest.from_bytes(store.get_manifest(digest))
    size = sum(r.size for r in good.shards)
    ghost_sha = hashlib.sha256(os.urandom(16)).hexdigest()
    ghost = ShardRef("model-00001-of-00001.safetensors", cid_for_digest(ghost_sha), ghost_sha, 1000)
    half = store.put_file(st_save({k: v.half() for k, v in state.items()}), "model-00001-of-00001.safetensors")
    bad_cfg = {**good.config, "n_heads": 3}
    cases = [
        (digest, size - 1, "shards"),  # over max_bytes
        (store.put_manifest(dataclasses.replace(good, shards=(ghost,)).to_bytes()), MB, "shards[0]"),
        (
            store.put_manifest(dataclasses.replace(good, shards=(half,)).to_bytes()),
            MB,
            f"shards[0].{sorted(state)[0]}",
        ),  # dtype != manifest's
        (store.put_manifest(dataclasses.replace(good, config=bad_cfg).to_bytes()), MB, "config.n_heads"),
        (
            store.put_manifest(dataclasses.replace(good, outer_state=good.shards).to_bytes()),
            MB,
            "outer_state[0].name",
        ),  # name used twice
    ]
    for case_digest, limit, field in cases:
        start = time.monotonic()
        with pytest.raises(ModelError) as info:
            fetch_model(other, case_digest, cache, max_bytes=limit)
        assert info.value.field == field, str(info.value)
        assert time.monotonic() - start < other.timeout + 3
        assert not cache.exists() or list(cache.iterdir()) == []  # no final dir, no temp dir
        if field == "shards[0]":
            assert info.value.cid == ghost.cid and "not found" in str(info.value)


# ----------------------------------------------------------------------------- task spec

SPEC_TOML = """
trainers_per_round = 3
[model]
vocab_size = 32
d_model = 64
n_layers = 2
n_heads = 4
max_seq_len = 32
[env]
env_id = "sort"
params = { n_min = 4, n_max = 6, alphabet = 8 }
[sampler]
temperature = 1
max_new_tokens = 8
[grpo]
prompts_per_step = 2
group_size = 4
inner_steps = 2
lr = 3e-3
[validation]
sampling_tie_tol = 0.02
"""


def test_task_spec_from_toml_digest_and_round_trip(made, store: Store, other: Store, tmp_path: Path) -> None:
    env, base, _ = made
    path = tmp_path / "task.toml"
    path.write_text(SPEC_TOML)
    spec = load_task_spec(path)
    assert spec.task.model == CFG.model and spec.task.grpo == CFG.grpo and spec.task.trainers_per_round == 3
    assert spec.task.sampler.temperature == 1.0 and spec.validation.sampling_tie_tol == 0.02
    assert spec.limits == limits_for(base, env)  # derived: what an honest bundle needs
    data = spec.to_bytes()
    doc = json.loads(data)
    assert doc["kind"] == "task_spec"
    assert doc["outer"] == {
        "lr": 1.0,
        "momentum": 0.0,
        "nesterov": True,
        "clip": 1.0,
        "agreement": True,
        "staleness_discount": 0.0,
        "staleness_rebase": 0.5,
    }
    assert doc["validation"]["max_exp_mismatches"] == 38  # defaults are written out
    digest = put_task_spec(store, spec)
    assert digest == spec.digest() == Digest(hashlib.sha256(data).digest())
    assert fetch_task_spec(other, digest) == spec
    path.write_text(SPEC_TOML.replace("lr = 3e-3", "lr = 4e-3"))
    assert load_task_spec(path).digest() != digest
    with pytest.raises(ManifestError, match="canonical"):
        TaskSpecManifest.from_bytes(data.replace(b'"lr":1.0', b'"lr":1'))


def test_task_spec_names_every_bad_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(
        SPEC_TOML.replace("n_layers = 2", "n_layers = 2\nwidth = 9")
        .replace("lr = 3e-3", 'lr = "fast"')
        .replace("alphabet = 8", "alphabet = 99")
        .replace("temperature = 1", "temperature = true")
        + "[limits]\nmax_rollouts = 0\nmax_inner_steps = 2\nmax_tokens = 1\nmax_proof_bytes = 1\n"
        "max_delta_bytes = 1\n[oracle]\nx = 1\n"
    )
    with pytest.raises(TaskSpecError) as info:
        load_task_spec(path)
    named = {(e.section, e.key) for e in info.value.errors}
    assert named == {
        ("task", "oracle"),
        ("model", "width"),
        ("grpo", "lr"),
        ("sampler", "temperature"),
        ("env.params", "alphabet"),
        ("limits", "max_rollouts"),
    }
    assert str(path) in str(info.value) and "'fast'" in str(info.value)

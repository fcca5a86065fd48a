"""Bad input at every door: task files, manifests, CLI arguments (issue 5).

Each bad value must be refused with the project's own error naming what was wrong (a
dotted field like `grpo.lr`, a manifest field and its CID, or a CLI flag), never a raw
Python exception, and nothing may change on disk or on chain. The task-file table is
derived from the config dataclasses, so a field added without a bad case fails
`test_every_task_field_has_bad_cases`.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import logging
import math
import time
import tomllib
import typing
from pathlib import Path
from typing import Any, Literal

import pytest
import requests

from concord.client.chain import Deployment, TaskParams
from concord.client.cli import main as cli_main
from concord.client.content.manifest import (
    MAX_FILE_BYTES,
    MAX_MANIFEST_BYTES,
    MAX_SHARDS,
    ModelManifest,
    SubmissionManifest,
    canonical_bytes,
    cid_for_digest,
    digest_of,
)
from concord.client.content.model_store import ModelError, fetch_model
from concord.client.content.store import Store
from concord.client.content.submission import (
    STAT_KEYS,
    SubmissionError,
    SubmissionLimits,
    fetch_submission,
)
from concord.client.content.task_spec import SECTIONS, TaskSpecError, fetch_task_spec
from concord.client.digest import Digest
from concord.client.engine.config import MAX_INNER_STEPS, ModelConfig, TaskConfig, to_dict
from concord.client.engine.envs import REGISTRY
from concord.client.initiator import (
    INT_FIELDS,
    REQUIRED,
    TOKEN_FIELDS,
    load_task_file,
)
from concord.client.initiator import main as task_main
from concord.client.runtime import procs
from concord.client.runtime.config import NodeConfigError, add_node_args, node_config

DATA = Path(__file__).parent / "data"
SMALL_TOML = (DATA / "small_task.toml").read_text().format(inner_steps=1, max_rounds=5, min_validators=1)
INITIATOR = 0

# ============================================================================ door 1: task files

BASE_FILE = tomllib.loads(SMALL_TOML)


def _full_document() -> dict:
    """The small task with every spec field written out (defaults and derived limits included) + [chain]."""
    from concord.client.content.task_spec import parse_task_spec

    data = {k: v for k, v in BASE_FILE.items() if k != "chain"}
    spec = parse_task_spec(data, "base")
    doc = spec.to_json()
    del doc["kind"]
    doc["chain"] = dict(BASE_FILE["chain"])
    return doc


BASE = _full_document()
ENV_ID = BASE["env"]["env_id"]


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(v)


def _toml(doc: dict, prefix: str = "") -> str:
    """A TOML document: scalars (and inline values) first, then one [table] per dict."""
    lines = [f"{k} = {_toml_value(v)}" for k, v in doc.items() if not isinstance(v, dict)]
    for k, v in doc.items():
        if isinstance(v, dict):
            name = f"{prefix}{k}"
            lines.append(f"\n[{name}]")
            lines.append(_toml(v, name + "."))
    return "\n".join(lines)


def _with(doc: dict, path: str, value: Any) -> dict:
    """A deep copy of doc with path ('grpo.lr', 'task.trainers_per_round', 'env.params.n_min') set or deleted."""
    out = json.loads(json.dumps(doc, allow_nan=True))
    keys = path.split(".")
    if keys[0] == "task":
        keys = keys[1:]
    node = out
    for k in keys[:-1]:
        node = node[k]
    if value is DELETE:
        node.pop(keys[-1], None)
    else:
        node[keys[-1]] = value
    return out


DELETE = object()


def task_fields() -> dict[str, Any]:
    """Every field of a task file, dotted, with its type: derived from the dataclasses, not listed by hand."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(TaskConfig):
        typ = typing.get_type_hints(TaskConfig)[f.name]
        if not dataclasses.is_dataclass(typ):
            out[f"task.{f.name}"] = typ
    for section, cls in SECTIONS.items():
        for name, typ in typing.get_type_hints(cls).items():
            out[f"{section}.{name}"] = typ
    env_cls = REGISTRY[ENV_ID][0]
    for name, typ in typing.get_type_hints(env_cls).items():
        if name != "env_id":
            out[f"env.params.{name}"] = typ
    from_spec = ("spec_digest", "initial_model_digest", "max_work_units")  # not [chain] keys
    for name in [f.name for f in dataclasses.fields(TaskParams) if f.name not in from_spec] + ["budget"]:
        out[f"chain.{name}"] = "tokens" if name in TOKEN_FIELDS + ("budget",) else int
    return out


def _named(path: str) -> tuple[str, str]:
    """('grpo', 'lr') for 'grpo.lr'; ('env.params', 'n_min') for 'env.params.n_min'."""
    section, _, key = path.rpartition(".")
    return section, key


# Out of range (or otherwise invalid) values for every field. An entry is (value, field named),
# the field defaulting to the one set; a dict value sets several fields at once. Bools have no range.
OUT_OF_RANGE: dict[str, list] = {
    "task.trainers_per_round": [0, -3, 1 << 17],
    "model.vocab_size": [0, 1 << 21, (8, "model.vocab_size")],  # 8 < the env's tokens (cross-check)
    "model.d_model": [
        0,
        -64,
        1 << 17,
        ({"model.vocab_size": 1 << 20, "model.d_model": 1 << 15, "model.n_heads": 2}, "model.d_model"),
    ],  # 2**36 parameters
    "model.n_layers": [0, 2000],
    "model.n_heads": [0, 3, 1 << 17],
    "model.max_seq_len": [0, 1 << 17, (12, "sampler.max_new_tokens")],  # prompt + completion no longer fit
    "model.seed": [-1, 1 << 64],
    "model.kind": ["gpt"],
    "model.d_ff": [-1, 1 << 21],
    "model.hf_arch": ["gpt2"],
    "model.hf_path": [
        "/some/dir",
        "x" * 2000,  # only with kind = "hf"
        ({"model.kind": "hf", "model.hf_path": "/no/such/dir"}, "model.hf_path"),
    ],
    "env.env_id": ["chess", ""],
    "env.params": [({"n_min": 4, "bogus": 1}, "env.params.bogus")],
    "env.params.n_min": [0, (7, "env.params.n_min")],
    "env.params.n_max": [(2, "env.params.n_min"), (100, "sampler.max_new_tokens")],
    "env.params.alphabet": [1, 25],
    "env.params.copy_credit": [-1, 101],
    "env.params.distinct": [
        ({"env.params.distinct": 1, "env.params.alphabet": 4}, "env.params.distinct"),
        1 << 70,
    ],  # not a 64-bit manifest integer
    "sampler.temperature": [-0.5, 1e9, float("nan"), float("inf")],
    "sampler.max_new_tokens": [0, -1, 100, 1 << 20],
    "sampler.stop_at_eos": [],
    "grpo.prompts_per_step": [0, 1 << 17],
    "grpo.group_size": [1, 0, 1 << 13],
    "grpo.inner_steps": [0, MAX_INNER_STEPS + 1, 10**30],
    "grpo.lr": [0.0, -1.0, float("inf"), float("nan")],
    "grpo.betas": [[1.0, 0.9], [-0.1, 0.9], [0.9], [0.9, 0.99, 0.5]],
    "grpo.weight_decay": [-0.1, 2.0],
    "grpo.eps_low": [-0.1, 1.5],
    "grpo.eps_high": [-1.0, float("inf")],
    "grpo.ratio_clamp": [0.5, -4.0],
    "grpo.kl_coef": [-1.0],
    "grpo.entropy_coef": [-1.0],
    "grpo.optimizer": ["adam"],
    "grpo.warmup_steps": [-1, MAX_INNER_STEPS + 1],
    "grpo.grad_clip": [-1.0, float("nan")],
    "grpo.std_normalize": [],
    "outer.lr": [0.0, -1.0, float("inf")],
    "outer.momentum": [1.0, -0.1, float("nan")],
    "outer.nesterov": [],
    "outer.clip": [0.5, -1.0, float("nan"), float("inf")],
    "outer.agreement": [],
    "outer.staleness_discount": [-0.5, 1001.0, float("nan"), float("inf")],
    "outer.staleness_rebase": [-0.1, 1.5, float("nan"), float("inf")],
    "validation.max_exp_mismatches": [-1],
    "validation.max_mant_err_mean": [-1.0, float("inf")],
    "validation.max_mant_err_median": [-1.0, float("nan")],
    "validation.sampling_tie_tol": [-0.01],
    "validation.replay_cos_min": [1.5, -2.0],
    "validation.replay_rel_l2_max": [-1e-3],
    "validation.prefill_precision": ["fp16"],
    "validation.mode": ["partial"],
    "validation.row_fraction": [0.0, 1.5, float("nan")],
    "validation.replay_steps": [-1, MAX_INNER_STEPS + 1],
    "validation.replay_fraction": [0.0, -0.5, 1.5, float("nan")],
    "limits.max_inner_steps": [0, -1, MAX_INNER_STEPS + 1],
    "limits.max_rollouts": [0, -1],
    "limits.max_tokens": [0, -1, 1 << 70],
    "limits.max_proof_bytes": [0, -1],
    "limits.max_delta_bytes": [0, -1],
    **{f"chain.{k}": [-1, "-1", "1.0000000000000000001", 10**11, "1e30", "NaN"] for k in TOKEN_FIELDS},
    **{f"chain.{k}": [lo - 1, hi + 1] for k, (lo, hi) in INT_FIELDS.items()},
    "chain.budget": [-1, "1", ({"chain.max_rounds": 0, "chain.budget": DELETE}, "chain.budget")],
}
OUT_OF_RANGE["chain.slash_amount"].append(150)  # > min_trainer_stake
OUT_OF_RANGE["chain.min_trainer_stake"].append((50, "chain.slash_amount"))


def wrong_types(typ: Any) -> list:
    """Values of the wrong type for a field type (a str where a number goes, a float where an int, ...)."""
    if typ == "tokens":
        return [1.5, True, [1], {"a": 1}]
    origin = typing.get_origin(typ)
    if origin is Literal:
        return [3, ["tiny"], True]
    if origin is tuple:
        return ["0.9", 0.9, ["a", 0.9], {"a": 1}]
    if origin is dict:
        return [3, "n_min", [1, 2]]
    if typ is bool:
        return [1, "yes", 0.0]
    if typ is int:
        return ["7", 1.5, True, [1], {"a": 1}]
    if typ is float:
        return ["x", True, [0.5], {"a": 1.0}]
    if typ is str:
        return [3, True, ["a"]]
    raise AssertionError(f"no wrong-type values for {typ}")


def _cases() -> list:
    cases = []
    fields = task_fields()
    for path, typ in fields.items():
        for entry in OUT_OF_RANGE.get(path, []):
            value, named = entry if isinstance(entry, tuple) else (entry, path)
            cases.append(pytest.param(path, value, named, id=f"{path}={value!r:.30}"))
        for value in wrong_types(typ):
            cases.append(pytest.param(path, value, path, id=f"{path}:{type(value).__name__}={value!r:.20}"))
    return cases


def _load_bad(tmp_path: Path, doc: dict) -> TaskSpecError:
    path = tmp_path / "bad.toml"
    path.write_text(_toml(doc))
    with pytest.raises(TaskSpecError) as info:
        load_task_file(path)
    return info.value


def test_the_base_document_is_valid(tmp_path: Path) -> None:
    """The table mutates one field of a valid file (every field written out), so each error is that field's."""
    path = tmp_path / "base.toml"
    path.write_text(_toml(BASE))
    task_file = load_task_file(path)
    assert to_dict(task_file.spec.task) == {k: BASE[k] for k in to_dict(task_file.spec.task)}
    assert task_file.params.max_rounds == 5 and task_file.spec.to_json()["limits"] == BASE["limits"]


def test_every_task_field_has_bad_cases() -> None:
    fields = task_fields()
    assert len(fields) >= 60
    missing = [p for p, typ in fields.items() if p not in OUT_OF_RANGE]
    assert not missing, f"no out-of-range case for {missing}: add one to OUT_OF_RANGE"
    no_range = [p for p, t in fields.items() if not OUT_OF_RANGE[p] and t is not bool]
    assert not no_range, f"only bools may go without an out-of-range value: {no_range}"
    assert not set(OUT_OF_RANGE) - set(fields), "OUT_OF_RANGE names fields that no longer exist"


@pytest.mark.parametrize(("path", "value", "named"), _cases())
def test_bad_task_field_is_named(tmp_path: Path, path: str, value: Any, named: str) -> None:
    doc = BASE
    for p, v in value.items() if isinstance(value, dict) and "." in next(iter(value), "") else [(path, value)]:
        doc = _with(doc, p, v)
    err = _load_bad(tmp_path, doc)
    assert named in {e.field for e in err.errors}, str(err)
    section, key = _named(named)
    assert f"[{section}] {key}:" in str(err) and str(tmp_path / "bad.toml") in str(err)


@pytest.mark.parametrize(
    "section", ["task", "model", "env", "env.params", "sampler", "grpo", "outer", "validation", "limits", "chain"]
)
def test_unknown_key_is_named(tmp_path: Path, section: str) -> None:
    err = _load_bad(tmp_path, _with(BASE, f"{section}.bogus_key", 1))
    assert {e.field for e in err.errors} == {f"{section}.bogus_key"}, str(err)


@pytest.mark.parametrize(
    "path", [f"chain.{k}" for k in REQUIRED] + [f"limits.{f.name}" for f in dataclasses.fields(SubmissionLimits)]
)
def test_missing_required_key_is_named(tmp_path: Path, path: str) -> None:
    err = _load_bad(tmp_path, _with(BASE, path, DELETE))
    assert path in {e.field for e in err.errors}, str(err)


@pytest.mark.parametrize(
    ("section", "value"),
    [
        ("chain", DELETE),
        ("chain", 3),
        ("model", 3),
        ("grpo", "fast"),
        ("validation", [1]),
        ("limits", True),
        ("env", "sort"),
    ],
)
def test_a_section_that_is_not_a_table_is_named(tmp_path: Path, section: str, value: Any) -> None:
    err = _load_bad(tmp_path, _with(BASE, section, value))
    assert {(e.section, e.key) for e in err.errors} == {(section, "*")}, str(err)


def test_many_bad_fields_are_named_at_once(tmp_path: Path) -> None:
    doc = BASE
    for path, value in {
        "grpo.lr": -1.0,
        "sampler.temperature": "hot",
        "chain.bounty_bps": 10_001,
        "validation.replay_cos_min": 2.0,
        "env.params.alphabet": 99,
        "task.extra": 1,
    }.items():
        doc = _with(doc, path, value)
    err = _load_bad(tmp_path, doc)
    assert {e.field for e in err.errors} == {
        "grpo.lr",
        "sampler.temperature",
        "chain.bounty_bps",
        "validation.replay_cos_min",
        "env.params.alphabet",
        "task.extra",
    }


@pytest.mark.parametrize(
    "text",
    [
        b"model = [",
        b"\xff\xfe = 1",
        b'[model]\nkind = "tiny\xc3"\n',
        b"[model]\nvocab_size = 1\nvocab_size = 2\n",
        b"x = 1\n[x]\n",
    ],
)
def test_a_file_that_is_not_toml_is_named(tmp_path: Path, text: bytes) -> None:
    path = tmp_path / "bad.toml"
    path.write_bytes(text)
    with pytest.raises(TaskSpecError) as info:
        load_task_file(path)
    assert [e.field for e in info.value.errors] == ["toml.*"]


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(TaskSpecError) as info:
        load_task_file(tmp_path / "nope.toml")
    assert [e.field for e in info.value.errors] == ["file.*"] and "nope.toml" in str(info.value)


# ============================================================================ door 2: manifests


def _sha(i: int) -> str:
    return digest_of(f"content {i}".encode()).hex()  # a shard's sha256 field: 64 hex chars, no 0x


def _ref(i: int, name: str | None = None, size: int = 1000) -> dict:
    return {
        "name": name or f"model-{i:05d}.safetensors",
        "cid": cid_for_digest(_sha(i)),
        "sha256": _sha(i),
        "size": size,
    }


MODEL_CFG = ModelConfig(vocab_size=32, d_model=32, n_layers=1, n_heads=2, max_seq_len=32)
MODEL_DOC = {
    "kind": "model",
    "config": to_dict(MODEL_CFG),
    "dtype": "float32",
    "shards": [_ref(0), _ref(1)],
    "outer_state": None,
    "parent": None,
}
SUB_DOC = {
    "kind": "submission",
    "task_id": 1,
    "round": 3,
    "base_round": 2,
    "trainer": "0x" + "ab" * 20,
    "rollouts": _ref(2, "rollouts.safetensors"),
    "proofs": _ref(3, "proofs.bin"),
    "delta": [_ref(4, "delta-00000-of-00001.safetensors")],
    "stats": {**dict.fromkeys(STAT_KEYS, 1), "mean_reward": 0.5},
    "states": [_ref(5, "state-0001.safetensors")],  # one inner step: its end state
}
SPEC_DOC = {"kind": "task_spec", **{k: v for k, v in BASE.items() if k != "chain"}}
LIMITS = SubmissionLimits(
    max_inner_steps=2, max_rollouts=64, max_tokens=64 * 40, max_proof_bytes=1 << 20, max_delta_bytes=1 << 20
)


def test_the_valid_documents_decode() -> None:
    """The mutations below start from documents that decode, so each refusal is the mutation's."""
    assert ModelManifest.from_bytes(canonical_bytes(MODEL_DOC)).shards[1].name == "model-00001.safetensors"
    assert SubmissionManifest.from_bytes(canonical_bytes(SUB_DOC)).base_round == 2
    from concord.client.content.task_spec import TaskSpecManifest

    assert TaskSpecManifest.from_bytes(canonical_bytes(SPEC_DOC)).task.grpo.prompts_per_step == 4


def _set(doc: dict, path: str, value: Any) -> dict:
    out = json.loads(json.dumps(doc))
    node = out
    keys = [int(k) if k.isdigit() else k for k in path.replace("[", ".").replace("]", "").split(".")]
    for k in keys[:-1]:
        node = node[k]
    node[keys[-1]] = value
    return out


def _spaced(doc: dict) -> bytes:
    return json.dumps(doc, sort_keys=True).encode()


def _unsorted(doc: dict) -> bytes:
    return json.dumps(dict(reversed(list(doc.items()))), separators=(",", ":"), ensure_ascii=False).encode()


def _escaped(doc: dict) -> bytes:
    """The canonical bytes with the first letter of ``kind`` written as a \\u escape: same value, other bytes."""
    c = doc["kind"][0]
    return canonical_bytes(doc).replace(f'"kind":"{c}'.encode(), f'"kind":"\\u{ord(c):04x}'.encode(), 1)


def _common(doc: dict) -> list:
    """Byte-level bad documents that every manifest kind must refuse; (bytes, field named)."""
    data = canonical_bytes(doc)
    first = next(iter(sorted(doc)))
    kind = f'"kind":"{doc["kind"]}"'.encode()
    return [
        (_spaced(doc), "<document>"),
        (_unsorted(doc), "<document>"),
        (data + b"\n", "<document>"),
        (b"\xef\xbb\xbf" + data, "<document>"),  # a UTF-8 BOM
        (_escaped(doc), "<document>"),
        (data[:-1] + b',"' + first.encode() + b'":1}', first),  # a duplicate key
        (data[:-1] + b',"zzz_extra":1}', "zzz_extra"),  # an unknown field
        (data.replace(b'"kind":"', b'"kind":"\xff', 1), "<document>"),  # not UTF-8
        (data.replace(kind, kind[:-1] + b'\\ud800"', 1), "kind"),  # a lone surrogate
        (b"not json at all", "<document>"),
        (b"", "<document>"),
        (b"[]", "<document>"),
        (b"1", "<document>"),
        (b'"model"', "<document>"),
        (b"null", "<document>"),
        (b'{"kind":NaN}', "kind"),
        (b"[" * 100_000 + b"]" * 100_000, "<document>"),  # nested too deeply
        (canonical_bytes({**doc, "kind": "evidence"}), "kind"),
    ]


@functools.cache
def _model_cases() -> list:
    doc = MODEL_DOC
    big = [_ref(i, size=1) for i in range(MAX_SHARDS + 1)]
    return _common(doc) + [
        (canonical_bytes(_set(doc, "shards[0].size", -1)), "shards[0].size"),
        (canonical_bytes(_set(doc, "shards[0].size", MAX_FILE_BYTES + 1)), "shards[0].size"),
        (canonical_bytes(_set(doc, "shards[0].size", "1000")), "shards[0].size"),
        (canonical_bytes(_set(doc, "shards[0].size", 1000.0)), "shards[0].size"),
        (canonical_bytes(_set(doc, "shards[1].sha256", "AB" * 32)), "shards[1].sha256"),
        (canonical_bytes(_set(doc, "shards[1].name", "../etc/passwd")), "shards[1].name"),
        (canonical_bytes(_set(doc, "shards[1].cid", "Qm" + "1" * 44)), "shards[1].cid"),
        (canonical_bytes(_set(doc, "shards[1].extra", 1)), "shards[1].extra"),
        (canonical_bytes(_set(doc, "shards", [])), "shards"),
        (canonical_bytes(_set(doc, "shards", big)), "shards"),  # under 1 MiB, over the count
        (canonical_bytes(SUB_DOC), "kind"),  # another kind of manifest
        (canonical_bytes(SPEC_DOC), "kind"),
        (canonical_bytes({k: v for k, v in doc.items() if k != "kind"}), "kind"),
        (canonical_bytes(_set(doc, "dtype", "int8")), "dtype"),
        (canonical_bytes(_set(doc, "parent", "00")), "parent"),
        (canonical_bytes(_set(doc, "config", [])), "config"),
        (canonical_bytes(_set(doc, "config.d_model", -32)), "config.d_model"),  # refused before any download
        (canonical_bytes(_set(doc, "config.d_model", 32.0)), "config.d_model"),
        (canonical_bytes(_set(doc, "config.depth", 3)), "config.depth"),
        (canonical_bytes(_set(doc, "shards[0].size", 600_000)), "shards"),  # over max_bytes: before download
    ]


@functools.cache
def _submission_cases() -> list:
    doc = SUB_DOC
    return _common(doc) + [
        (canonical_bytes(MODEL_DOC), "kind"),  # another kind of manifest
        (canonical_bytes(SPEC_DOC), "kind"),
        (canonical_bytes(_set(doc, "base_round", 4)), "base_round"),
        (canonical_bytes(_set(doc, "round", -1)), "round"),
        (canonical_bytes(_set(doc, "trainer", "0x12")), "trainer"),
        (canonical_bytes(_set(doc, "delta[0].size", -5)), "delta[0].size"),
        (canonical_bytes(_set(doc, "delta", [_ref(4, f"d{i}") for i in range(MAX_SHARDS + 1)])), "delta"),
        (canonical_bytes(_set(doc, "delta[0].size", LIMITS.max_delta_bytes + 1)), "delta.size"),
        (canonical_bytes(_set(doc, "proofs.size", LIMITS.max_proof_bytes + 1)), "proofs.size"),
        (canonical_bytes(_set(doc, "rollouts.size", 1 << 30)), "rollouts.size"),
        (canonical_bytes(_set(doc, "stats.mean_reward", 1)), "stats.mean_reward"),  # 1 where 1.0 goes
        (canonical_bytes(_set(doc, "stats.rollouts", 10**9)), "stats.rollouts"),
        (canonical_bytes(_set(doc, "stats.inner_steps", -1)), "stats.inner_steps"),
        (canonical_bytes(_set(doc, "stats.bogus", 1)), "stats.bogus"),
        (canonical_bytes(_set(doc, "stats", {f"k{i}": 1 for i in range(100)})), "stats"),
        (canonical_bytes({**doc, "stats": {**doc["stats"], "proof_root.0": 1 << 32}}), "stats.proof_root.0"),
        (canonical_bytes({k: v for k, v in doc.items() if k != "states"}), "states"),  # missing
        (canonical_bytes(_set(doc, "states", {"a": 1})), "states"),  # malformed
        (canonical_bytes(_set(doc, "states", [])), "states"),  # 1 step needs 1
        (
            canonical_bytes(_set(_set(doc, "stats.inner_steps", 2), "states", [_ref(5, "state-0001.safetensors")])),
            "states",
        ),
        (canonical_bytes(_set(doc, "states", [{**_ref(5, "s"), "sha256": "zz"}])), "states[0].sha256"),
        (canonical_bytes(_set(doc, "states", [_ref(5, "state-0002.safetensors")])), "states[0].name"),
        (
            canonical_bytes(
                _set(doc, "states", [{**_ref(5, "state-0001.safetensors"), "size": 4 * LIMITS.max_delta_bytes + 1}])
            ),
            "states[0].size",
        ),
    ]


# field named -> the shard whose CID a size-over-limit error names (refused before its download)
FILE_LIMITS = {
    "delta.size": lambda d: d["delta"][0],
    "proofs.size": lambda d: d["proofs"],
    "rollouts.size": lambda d: d["rollouts"],
    "states[0].size": lambda d: d["states"][0],
    "states[0].name": lambda d: d["states"][0],
}


@functools.cache
def _spec_cases() -> list:
    doc = SPEC_DOC
    return _common(doc) + [
        (canonical_bytes(MODEL_DOC), "kind"),  # another kind of manifest
        (canonical_bytes(_set(doc, "grpo.lr", 1)), "<document>"),  # 1 where 1.0 goes
        (canonical_bytes({k: v for k, v in doc.items() if k != "limits"}), "limits.*"),
        (canonical_bytes(_set(doc, "grpo.lr", -0.5)), "grpo.lr"),
        (canonical_bytes(_set(doc, "grpo.betas", [0.5] * 100_000)), "grpo.betas"),
        (canonical_bytes(_set(doc, "limits.max_rollouts", 0)), "limits.max_rollouts"),
        (canonical_bytes(_set(doc, "sampler.max_new_tokens", 1000)), "sampler.max_new_tokens"),
        (canonical_bytes(_set(doc, "env.params", {str(i): 1 for i in range(1000)})), "env.params.0"),
    ]


def _tree(root: Path) -> dict:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


@pytest.fixture
def dead_store(tmp_path: Path) -> Store:
    """A real Store whose daemon is not there: content comes only from its cache, and any download fails."""
    return Store(
        f"/ip4/127.0.0.1/tcp/{procs.free_port()}/http", tmp_path / "store-cache", timeout=1, retries=1, backoff=0
    )


def _seed(store: Store, data: bytes) -> Digest:
    """Put bytes in the store's cache under their sha256 (what a download would verify), return the digest."""
    digest = digest_of(data)
    (store.cache_dir / digest.hex()).write_bytes(data)
    return digest


def _expect_field(got: str, want: str) -> None:
    assert got == want or got.startswith(want + "."), f"named {got!r}, expected {want!r}"


@pytest.mark.parametrize("case", range(len(_model_cases())))
def test_bad_model_manifest_is_named_and_nothing_is_cached(dead_store: Store, tmp_path: Path, case: int) -> None:
    data, field = _model_cases()[case]
    digest = _seed(dead_store, data)
    models = tmp_path / "models"
    models.mkdir()
    before = _tree(tmp_path)
    with pytest.raises(ModelError) as info:
        fetch_model(dead_store, digest, models, max_bytes=1 << 19)
    assert info.value.cid == cid_for_digest(digest) and info.value.cid in str(info.value)
    _expect_field(info.value.field.removeprefix("manifest."), field)
    assert _tree(tmp_path) == before


@pytest.mark.parametrize("case", range(len(_submission_cases())))
def test_bad_submission_manifest_is_named_and_nothing_is_cached(dead_store: Store, tmp_path: Path, case: int) -> None:
    data, field = _submission_cases()[case]
    digest = _seed(dead_store, data)
    before = _tree(tmp_path)
    with pytest.raises(SubmissionError) as info:
        fetch_submission(dead_store, digest, LIMITS)
    err = info.value
    assert err.cid in str(err)
    if field in FILE_LIMITS:  # a file over its limit: the error names that file's CID
        assert err.cid == FILE_LIMITS[field](json.loads(data))["cid"] and "before download" in err.reason
    else:
        assert err.cid == cid_for_digest(digest)
    _expect_field(err.field.removeprefix("manifest."), field.removesuffix(".size") if field in FILE_LIMITS else field)
    assert _tree(tmp_path) == before


@pytest.mark.parametrize("case", range(len(_spec_cases())))
def test_bad_task_spec_manifest_is_named_and_nothing_is_cached(dead_store: Store, tmp_path: Path, case: int) -> None:
    data, field = _spec_cases()[case]
    digest = _seed(dead_store, data)
    before = _tree(tmp_path)
    with pytest.raises(TaskSpecError) as info:
        fetch_task_spec(dead_store, digest)
    assert cid_for_digest(digest) in info.value.source and cid_for_digest(digest) in str(info.value)
    fields = [e.field.removeprefix("manifest.").removeprefix("task.") for e in info.value.errors]
    assert any(f == field or f.startswith(field + ".") for f in fields), fields
    assert _tree(tmp_path) == before


@pytest.mark.parametrize(
    "data",
    [
        b'{"kind":"model","shards":[' + b",".join([json.dumps(_ref(0)).encode()] * 1_000_000) + b"]}",
        b'{"a":' + b"0" * (MAX_MANIFEST_BYTES + 1) + b"}",
        b"[" * (MAX_MANIFEST_BYTES // 2) + b"]" * (MAX_MANIFEST_BYTES // 2),
    ],
    ids=["a million shards", "a huge number", "a million brackets"],
)
def test_huge_documents_are_refused_by_size_before_parsing(data: bytes) -> None:
    """Over one block: refused on its length alone (the Store refuses it from block/stat, before the download)."""
    from concord.client.content.manifest import ManifestError, decode_manifest

    for decode in (ModelManifest.from_bytes, SubmissionManifest.from_bytes, decode_manifest):
        t0 = time.perf_counter()
        with pytest.raises(ManifestError) as info:
            decode(data)
        assert time.perf_counter() - t0 < 2.0  # a scan of at most 1 MiB, no JSON parsing
        assert info.value.field == "<document>" and (
            f"over the {MAX_MANIFEST_BYTES}-byte limit" in info.value.reason or "nested" in info.value.reason
        )


# ============================================================================ door 3: CLI arguments


@pytest.fixture
def conn(tmp_path: Path) -> list[str]:
    """Connection flags that parse but reach nothing (a closed port): a bad flag must fail before them."""
    dep = Deployment(31337, "0x" + "11" * 20, "0x" + "22" * 20, 1, "0x" + "33" * 20).to_json()  # reaches nothing
    (tmp_path / "dep.json").write_text(json.dumps(dep))
    (tmp_path / "bad-address.json").write_text(json.dumps({**dep, "concord": "0x1234"}))
    (tmp_path / "not.json").write_text("{oops")
    (tmp_path / "task.toml").write_text(SMALL_TOML)
    port = procs.free_port()
    return [
        "--rpc-url",
        f"http://127.0.0.1:{port}",
        "--deployment",
        str(tmp_path / "dep.json"),
        "--ipfs-api",
        f"/ip4/127.0.0.1/tcp/{port}/http",
        "--state-dir",
        str(tmp_path / "state"),
    ]


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        root.removeHandler(h)
    for h in handlers:
        root.addHandler(h)
    root.setLevel(level)


def _replace(argv: list[str], flag: str, value: str) -> list[str]:
    out = list(argv)
    out[out.index(flag) + 1] = value
    return out


# (argv with {conn} standing for the connection flags, the flag the error must name)
CLI_CASES = [
    (["trainer", "run", "--task", "x"], "--task"),
    (["trainer", "run", "--task", "-1"], "--task"),
    (["trainer", "run", "--task", "0"], "--task"),
    (["trainer", "run", "--task", "1", "--rounds", "-3", "{conn}"], "--rounds"),
    (["trainer", "run", "--task", "1", "--rounds", "two", "{conn}"], "--rounds"),
    (["trainer", "run", "--task", "1", "--stake", "-1", "{conn}"], "--stake"),
    (["trainer", "run", "--task", "1", "--threads", "0", "{conn}"], "--threads"),
    (["trainer", "run", "--task", "1", "--cheat", "inflated_rewards", "{conn}"], "--cheat"),  # the lab's flag
    (["trainer", "run", "--task", "1", "--poll-interval", "-1", "{conn}"], "--poll-interval"),
    (["trainer", "run", "--task", "1", "--poll-interval", "nan", "{conn}"], "--poll-interval"),
    (["trainer", "run", "--task", "1", "--devnet-account", "-2", "{conn}"], "--devnet-account"),
    (["trainer", "run", "--task", "1", "--keystore", "{tmp}/no-key.json", "{conn}"], "--keystore"),
    (["trainer", "run", "--task", "1", "--devnet", "{tmp}/missing.json"], "--devnet"),
    (["trainer", "run", "--task", "1", "--devnet", "{tmp}/not.json"], "--devnet"),
    (["trainer", "run", "--task", "1", "{conn}", "--rpc-url", "http://127.0.0.1:99999"], "--rpc-url"),
    (["trainer", "run", "--task", "1", "{conn}", "--rpc-url", "ftp://example"], "--rpc-url"),
    (["trainer", "run", "--task", "1", "{conn}", "--ipfs-api", "/ip4/127.0.0.1/tcp/70000/http"], "--ipfs-api"),
    (["trainer", "run", "--task", "1", "{conn}", "--ipfs-api", "localhost"], "--ipfs-api"),
    (["trainer", "run", "--task", "1", "{conn}", "--deployment", "{tmp}/missing.json"], "--deployment"),
    (["trainer", "run", "--task", "1", "{conn}", "--deployment", "{tmp}/bad-address.json"], "--deployment"),
    (["trainer", "run", "--task", "1", "{conn}", "--deployment", "{tmp}/not.json"], "--deployment"),
    (["validator", "run", "--task", "1", "--rounds", "0", "{conn}"], "--rounds"),
    (["validator", "run", "--task", "1", "--stake", "-5", "{conn}"], "--stake"),
    (["validator", "run", "--task", "1", "--cheat", "no_reveal", "{conn}"], "--cheat"),  # the lab's flag
    (["validator", "run", "--task", "one", "{conn}"], "--task"),
    (["validator", "withdraw", "{conn}", "--deployment", "{tmp}/bad-address.json"], "--deployment"),
    (["task", "publish", "{tmp}/missing.toml", "--check"], "missing.toml"),
    (["task", "publish", "{tmp}/not.json", "--check"], "not.json"),
    (["task", "publish", "{tmp}/task.toml", "--check", "--budget", "-5"], "budget"),
    (["task", "publish", "{tmp}/task.toml", "--check", "--budget", "lots"], "budget"),
    (["task", "publish", "{tmp}/task.toml", "{conn}", "--rpc-url", "http://127.0.0.1:0"], "--rpc-url"),
    (["task", "publish", "{tmp}/task.toml", "{conn}", "--devnet-account", "x"], "--devnet-account"),
    (["task", "publish", "{tmp}/task.toml", "{conn}", "--deployment", "{tmp}/bad-address.json"], "--deployment"),
    (["task", "publish"], "task_file"),
    (["status", "abc"], "task"),
    (["status", "--devnet", "{tmp}/missing.json"], "--devnet"),
    (["status", "--rpc-url", "http://127.0.0.1:1", "--deployment", "{tmp}/missing.json"], "--deployment"),
    (["status", "--devnet", "{tmp}/not.json"], "--devnet"),
    (["devnet", "sideways"], "action"),
    (["devnet", "up", "--anvil-port", "abc"], "--anvil-port"),
    (["devnet", "up", "--anvil-port", "70000"], "--anvil-port"),
    (["devnet", "up", "--ipfs-port", "0"], "--ipfs-port"),
    (["demo", "--ipfs-grpc-port", "-1"], "--ipfs-grpc-port"),
    (["demo", "--timeout", "-5"], "--timeout"),
    (["bench", "learn", "--seeds", "0"], "--seeds"),
    (["keys", "frobnicate"], "action"),
    (["keys", "new"], "--out"),
    (["bench", "nosuch"], "name"),
    (["bench", "gas", "--bogus"], "--bogus"),
    (["nosuch"], "command"),
]


def _cli_id(case) -> str:
    argv = case.values[0] if hasattr(case, "values") else case[0]
    return " ".join(argv)


@pytest.mark.parametrize(("argv", "flag"), CLI_CASES, ids=[_cli_id(c) for c in CLI_CASES])
def test_bad_cli_argument_is_named_without_a_traceback(
    argv: list[str], flag: str, conn: list[str], tmp_path: Path, capsys, restore_logging
) -> None:
    args: list[str] = []
    for a in argv:
        args += conn if a == "{conn}" else [a.replace("{tmp}", str(tmp_path))]
    # a later flag overrides an earlier one of the same name (argparse keeps the last)
    try:
        rc = cli_main(args)
    except SystemExit as e:  # argparse: usage, then `prog: error: argument --flag: ...`, exit 2
        rc = e.code
    err = capsys.readouterr().err
    assert rc not in (0, None), err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if flag in line]
    assert lines and any("error" in line.lower() for line in lines), err
    assert not (tmp_path / "state").exists()  # refused before any state dir is made


@pytest.mark.parametrize("role", ["trainer", "validator"])
def test_bad_cheat_is_named_by_the_lab_node_without_a_traceback(
    role: str, conn: list[str], tmp_path: Path, capsys, restore_logging
) -> None:
    """`python -m scripts.adversaries.trainer|validator run --cheat MODE`: an unknown mode is named."""
    import importlib

    lab = importlib.import_module(f"scripts.adversaries.{role}")
    with pytest.raises(SystemExit) as exit_:
        lab.main(["run", "--task", "1", "--cheat", "bogus", *conn])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "Traceback" not in err
    assert any("--cheat" in line and "invalid choice: 'bogus'" in line for line in err.splitlines()), err
    assert not (tmp_path / "state").exists()


def test_node_config_names_each_bad_flag(tmp_path: Path, conn: list[str]) -> None:
    """The library door (scripts call node_config directly) names the same flags as the CLI."""
    p = argparse.ArgumentParser()
    add_node_args(p)
    p.add_argument("--rounds", type=int, default=None)
    ok = node_config(p.parse_args(["--task", "3", *conn]), "trainer")
    assert ok.task_id == 3
    for extra, flag in (
        (["--rounds", "-1"], "--rounds"),
        (["--rpc-url", "http://[::1"], "--rpc-url"),
        (["--ipfs-api", "/ip4/1.2.3.4/udp/5/http"], "--ipfs-api"),
    ):
        with pytest.raises(NodeConfigError) as info:
            node_config(p.parse_args(["--task", "3", *conn, *extra]), "trainer")
        assert info.value.flag == flag


# ============================================================================ door 4: no state changes on chain


def _ipfs_objects(ipfs) -> int:
    return int(requests.post(f"{ipfs.api_url}/api/v0/repo/stat", timeout=10).json()["NumObjects"])


def test_publishing_bad_files_changes_nothing(chain_env, ipfs, tmp_path: Path, capsys, restore_logging) -> None:
    """Bad files (spec, [chain], what only the chain can judge) against one chain: no tx, no upload, no dir."""
    client = chain_env.client
    me = chain_env.signer(INITIATOR).address
    dep = client.deployment.save(tmp_path / "deployment.json")
    state = tmp_path / "initiator"
    conn = [
        "--rpc-url",
        chain_env.anvil.url,
        "--deployment",
        str(dep),
        "--ipfs-api",
        ipfs.api,
        "--devnet-account",
        str(INITIATOR),
        "--state-dir",
        str(state),
    ]

    def snapshot() -> tuple:
        return (
            client.concord.task_count(),
            client.token.balance_of(me),
            client.token.allowance(me, client.concord.address),
            client.rpc.call("eth_getTransactionCount", me, "latest"),
            client.rpc.block_number(),
            _ipfs_objects(ipfs),
            state.exists(),
        )

    before = snapshot()
    bad = {
        "grpo.lr": _with(BASE, "grpo.lr", float("nan")),
        "model.d_model": _with(BASE, "model.d_model", 1 << 17),
        "limits.max_rollouts": _with(BASE, "limits.max_rollouts", DELETE),
        "sampler.max_new_tokens": _with(BASE, "sampler.max_new_tokens", 1000),
        "chain.async_level": _with(BASE, "chain.async_level", 200),  # only the contract knows its maximum
        "chain.budget": _with(BASE, "chain.budget", 10**9),  # more than the initiator holds
    }
    for i, (field, doc) in enumerate(bad.items()):
        path = tmp_path / f"bad{i}.toml"
        path.write_text(_toml(doc))
        rc = task_main(["publish", str(path), *conn])
        err = capsys.readouterr().err
        section, key = _named(field)
        assert rc == 2 and f"[{section}] {key}:" in err and "Traceback" not in err, err
    assert snapshot() == before

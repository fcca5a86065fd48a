"""The off-chain task spec: what a task computes and how it is judged; its sha256 is the on-chain specDigest.

One manifest class for every model kind, parameterised by its task config: `TaskSpecManifest[TaskConfig]`
(kind "task_spec", below) or `TaskSpecManifest[LMTaskConfig]` (kind "lm_task_spec": the LMTaskConfig's
tables, client.engine.lm_task: source pins, env, adapter, sampler, grpo, outer, validation, plus [limits]
derived from the adapters' shapes, `lm_limits`). Both are one canonical raw block with the same shape
(the document's kind, the task's tables, [validation], [limits]); `fetch_task_spec` reads either by its
digest, the document's kind choosing its parser.

A tiny spec is the engine's TaskConfig (model, env, sampler, grpo, outer, trainers_per_round)
plus the validators' criteria (validator.checks.ValidationConfig) and the submission size
limits (client.content.submission.SubmissionLimits). The TOML file and the JSON document have the
same shape:

    trainers_per_round = 4          # optional, like every key that has a default
    [model]  [env] [env.params]  [sampler]  [grpo]  [outer]  [validation]  [limits]

Every key is written out in the JSON (defaults included), so the digest pins the full
computation, not just what the file happened to mention; the one exception is [validation]
replay_fraction, written only when it is not 1 (client.engine.config.OMITTED_AT_DEFAULT). [limits]
may be omitted: it is then derived from the rest (`concord.client.content.submission.default_limits`:
exactly what an honest submission needs). The JSON is a canonical manifest (client.content.manifest
rules) stored as one raw IPFS block, so `cid_for_digest(specDigest)` is its address.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from concord.client.content.manifest import (
    ManifestError,
    canonical_bytes,
    cid_for_digest,
    digest_of,
    parse_canonical,
)
from concord.client.content.store import Store
from concord.client.content.submission import SubmissionLimits, default_limits
from concord.client.digest import Digest
from concord.client.engine.config import (
    ConfigError,
    TaskConfig,
    ValidationConfig,
    from_dict,
    to_dict,
    validate_table,
)
from concord.client.engine.envs import SYM0, BadEnvParams, UnknownEnv, make_env
from concord.client.engine.lm import ModelSourceError
from concord.client.engine.lm_task import LMTaskConfig
from concord.client.engine.text_envs import BadTextEnvParams, UnknownTextEnv

KIND = "task_spec"
LM_KIND = "lm_task_spec"
SECTIONS: dict[str, type] = {"validation": ValidationConfig, "limits": SubmissionLimits}
SECTIONS.update(
    {k: t for k, t in typing.get_type_hints(TaskConfig).items() if isinstance(t, type) and dataclasses.is_dataclass(t)}
)


class TaskSpecError(ValueError):
    """A spec with one or more bad fields; ``errors`` lists every one found, each naming its field."""

    def __init__(self, source: str, errors: list[ConfigError]) -> None:
        lines = "\n".join(f"  {e}" for e in errors)
        super().__init__(f"task spec {source}: {len(errors)} bad field(s)\n{lines}")
        self.source = source
        self.errors = errors


TaskT = TypeVar("TaskT", TaskConfig, LMTaskConfig)  # the model kinds: tiny transformer, LM + LoRA


@dataclass(frozen=True)
class TaskSpecManifest(Generic[TaskT]):
    """A task's spec: its model kind's task config, the validators' criteria, the submission limits.
    ``kind`` is the document's kind; an LM task's validation is its config's own (`lm_task_spec`)."""

    task: TaskT
    validation: ValidationConfig
    limits: SubmissionLimits
    kind: str = KIND

    def __post_init__(self) -> None:
        if self.kind not in PARSERS:
            raise ValueError(f"spec kind {self.kind!r}: expected one of {sorted(PARSERS)}")
        if getattr(self.task, "validation", self.validation) != self.validation:  # one [validation] table
            raise ValueError("spec validation differs from its task's")

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            **to_dict(self.task),
            "validation": to_dict(self.validation),
            "limits": to_dict(self.limits),
        }

    def to_bytes(self) -> bytes:
        return canonical_bytes(self.to_json())

    def digest(self) -> Digest:
        """sha256 of the canonical bytes: the task's on-chain specDigest."""
        return digest_of(self.to_bytes())

    @staticmethod
    def from_bytes(data: bytes) -> TaskSpecManifest[Any]:
        """Canonical bytes -> spec of the document's kind; a ManifestError for another kind or a
        non-canonical value (`3` for `3.0`), a TaskSpecError naming every bad field."""
        obj = parse_canonical(data)
        parse = PARSERS.get(obj.pop("kind", None))
        if parse is None:
            raise ManifestError("kind", "expected " + " or ".join(repr(k) for k in PARSERS))
        spec = parse(obj)
        if spec.to_bytes() != bytes(data):
            raise ManifestError(
                "<document>", "not the canonical encoding of its spec (defaults written out, floats as floats)"
            )
        return spec


def lm_task_spec(task: LMTaskConfig, limits: SubmissionLimits) -> TaskSpecManifest[LMTaskConfig]:
    """An LM task's spec (its validation is the config's [validation] table)."""
    return TaskSpecManifest(task, task.validation, limits, LM_KIND)


def _lm_document(obj: dict[str, Any]) -> TaskSpecManifest[LMTaskConfig]:
    source = "<manifest>"
    if "limits" not in obj:
        raise TaskSpecError(source, [ConfigError("limits", "*", "missing table")])
    limits = obj.pop("limits")
    try:
        parsed_limits = from_dict(SubmissionLimits, limits, "limits")
    except ConfigError as e:
        raise TaskSpecError(source, [e]) from None
    return lm_task_spec(parse_lm_task(obj, source), parsed_limits)


def _tiny_document(obj: dict[str, Any]) -> TaskSpecManifest[TaskConfig]:
    return parse_task_spec(obj, "<manifest>", derive_limits=False)


# a stored document's kind -> its parser (the kind is data in the document, read before its tables)
PARSERS: dict[str, Callable[[dict[str, Any]], TaskSpecManifest[Any]]] = {KIND: _tiny_document, LM_KIND: _lm_document}


def parse_lm_task(data: dict[str, Any], source: str = "<dict>") -> LMTaskConfig:
    """An LMTaskConfig from its tables; a TaskSpecError naming the field (source pins, env, adapter ...)."""
    try:
        return from_dict(LMTaskConfig, data, "task")
    except ConfigError as e:
        raise TaskSpecError(source, [e]) from None
    except ModelSourceError as e:
        raise TaskSpecError(source, [ConfigError("source", e.field, f"expected {e.expected}, got {e.got}")]) from None
    except (UnknownTextEnv, BadTextEnvParams) as e:
        raise TaskSpecError(source, [ConfigError("env", getattr(e, "key", "env_id"), str(e))]) from None
    except ValueError as e:  # AdapterConfigError and the like: their message names the field
        raise TaskSpecError(source, [ConfigError("task", "*", str(e))]) from None


def lm_limits(task: LMTaskConfig, adapter_shapes: dict[str, tuple[int, ...]]) -> SubmissionLimits:
    """The limits an honest submission of ``task`` fits into (client.content.submission.default_limits):
    H x A groups of G rollouts, prompts up to the env's max_prompt_tokens, the adapters' delta."""
    params = sum(math.prod(s) for s in adapter_shapes.values())
    prompt_len = task.env.make().max_prompt_tokens
    return default_limits(task, params, len(adapter_shapes), prompt_len, task.grpo.prompts_per_step)


def parse_task_spec(
    data: dict[str, Any], source: str = "<dict>", derive_limits: bool = True
) -> TaskSpecManifest[TaskConfig]:
    """A spec from its TOML/JSON tables, naming every bad field at once (TaskSpecError). Each table is
    validated on its own (client.engine.config.validate_table), so one bad table hides no other's errors."""
    errors: list[ConfigError] = []
    top = {f.name for f in dataclasses.fields(TaskConfig)} | set(SECTIONS)
    errors += [ConfigError("task", key, f"unknown key (known: {sorted(top)})") for key in data if key not in top]
    built: dict[str, Any] = {}
    for section, cls in SECTIONS.items():
        if section in data:
            value, problems = validate_table(cls, data[section], section)
            built.update({section: value} if value is not None else {})
            errors += problems
    scalars = {k: v for k, v in data.items() if k in top and k not in SECTIONS}
    sections = {k: v for k, v in built.items() if k not in ("validation", "limits")}
    task, problems = validate_table(TaskConfig, {**scalars, **sections}, "task")
    errors += problems
    env = None
    if "env" in built:
        try:
            env = make_env(built["env"])
        except UnknownEnv as e:
            errors.append(ConfigError("env", "env_id", str(e)))
        except BadEnvParams as e:
            errors.append(ConfigError("env.params", e.key, e.problem))
    if "limits" not in data and not derive_limits:
        errors.append(ConfigError("limits", "*", "missing table"))
    if not errors and task is not None:
        errors += _cross_errors(task, env or make_env(task.env))
        hf_path = task.model.hf_path
        if derive_limits and hf_path and not (Path(hf_path) / "config.json").is_file():  # model 0 is built here
            errors.append(
                ConfigError("model", "hf_path", f"{hf_path!r} is not a local model directory (no config.json)")
            )
    if errors or task is None:  # task is None only when validate_table listed why
        raise TaskSpecError(source, errors)
    try:
        limits = built.get("limits") or derived_limits(task)
    except ConfigError as e:  # derived numbers out of range: the task asks for too much per submission
        raise TaskSpecError(source, [e]) from None
    spec: TaskSpecManifest[TaskConfig] = TaskSpecManifest(task, built.get("validation", ValidationConfig()), limits)
    try:
        spec.to_bytes()  # a spec that parses can be published: every value has a canonical encoding
    except ManifestError as e:
        section, _, key = e.field.rpartition(".")
        raise TaskSpecError(source, [ConfigError(section or "task", key, e.reason)]) from None
    return spec


def _cross_errors(task: TaskConfig, env: Any) -> list[ConfigError]:
    """Checks between sections: a rollout (prompt + completion) fits the model, its tokens the vocabulary."""
    errors = []
    need = env.prompt_len + task.sampler.max_new_tokens
    if need > task.model.max_seq_len:
        errors.append(
            ConfigError(
                "sampler",
                "max_new_tokens",
                f"prompt ({env.prompt_len} tokens for "
                f"{task.env.env_id}) + {task.sampler.max_new_tokens} new tokens = {need} is over "
                f"model.max_seq_len = {task.model.max_seq_len}",
            )
        )
    vocab = SYM0 + getattr(env, "alphabet", 10)  # symbols are SYM0 + k: the alphabet, or the digits 0-9
    if task.model.vocab_size < vocab:
        errors.append(
            ConfigError(
                "model",
                "vocab_size",
                f"{task.env.env_id} uses tokens up to {vocab - 1}, got vocab_size = {task.model.vocab_size}",
            )
        )
    return errors


def derived_limits(task: TaskConfig) -> SubmissionLimits:
    """The limits an honest submission of ``task`` needs (builds the initial model to count parameters)."""
    from concord.client.engine.model import build_policy, policy_state

    state = policy_state(build_policy(task.model))
    return default_limits(task, sum(t.numel() for t in state.values()), len(state), make_env(task.env).prompt_len)


def read_toml(path: Path) -> dict[str, Any]:
    """A task file's TOML tables; a TaskSpecError naming the file when it cannot be read or parsed."""
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except OSError as e:
        raise TaskSpecError(str(path), [ConfigError("file", "*", f"cannot read: {e.strerror}")]) from None
    except tomllib.TOMLDecodeError as e:
        raise TaskSpecError(str(path), [ConfigError("toml", "*", str(e))]) from None
    except UnicodeDecodeError as e:
        raise TaskSpecError(str(path), [ConfigError("toml", "*", f"not UTF-8 at byte {e.start}")]) from None


def load_task_spec(path: str | Path) -> TaskSpecManifest[TaskConfig]:
    """Read a spec from a TOML file; every bad field is named in one TaskSpecError."""
    path = Path(path)
    return parse_task_spec(read_toml(path), str(path))


def put_task_spec(store: Store, spec: TaskSpecManifest[Any]) -> Digest:
    """Store the spec (either kind) as one raw block; return its digest (the on-chain specDigest)."""
    return store.put_manifest(spec.to_bytes())


def fetch_task_spec(store: Store, digest: Digest | bytes | str) -> TaskSpecManifest[Any]:
    """The spec behind an on-chain specDigest, of either kind; a bad document is a TaskSpecError naming
    its CID and field."""
    source = f"manifest {cid_for_digest(digest)}"
    data = store.get_manifest(digest)
    try:
        return TaskSpecManifest.from_bytes(data)
    except ManifestError as e:
        shown = "" if e.value is None else f" (got {e.value!r:.80})"
        raise TaskSpecError(source, [ConfigError("manifest", e.field, e.reason + shown)]) from None
    except TaskSpecError as e:
        raise TaskSpecError(source, e.errors) from None

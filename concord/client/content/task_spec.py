"""The off-chain task spec: what a task computes and how it is judged; its sha256 is the on-chain specDigest.

A spec is the engine's TaskConfig (model, env, sampler, grpo, outer, trainers_per_round)
plus the validators' criteria (validator.checks.ValidationConfig) and the submission size
limits (client.content.submission.SubmissionLimits). The TOML file and the JSON document have the
same shape:

    trainers_per_round = 4          # optional, like every key that has a default
    [model]  [env] [env.params]  [sampler]  [grpo]  [outer]  [validation]  [limits]

Every key is written out in the JSON (defaults included), so the digest pins the full
computation, not just what the file happened to mention. [limits] may be omitted: it is then
derived from the rest (`concord.client.content.submission.default_limits`: exactly what an honest
submission needs). The JSON is a canonical manifest (client.content.manifest rules) stored as one
raw IPFS block, so `cid_for_digest(specDigest)` is its address.
"""

from __future__ import annotations

import dataclasses
import tomllib
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
    to_dict,
    validate_table,
)
from concord.client.engine.envs import SYM0, BadEnvParams, UnknownEnv, make_env

KIND = "task_spec"
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


@dataclass(frozen=True)
class TaskSpecManifest:
    task: TaskConfig
    validation: ValidationConfig
    limits: SubmissionLimits

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": KIND,
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
    def from_bytes(data: bytes) -> TaskSpecManifest:
        """Canonical bytes -> spec; refuses other kinds, bad fields and non-canonical values (`3` for `3.0`)."""
        obj = parse_canonical(data)
        if obj.pop("kind", None) != KIND:
            raise ManifestError("kind", f"expected {KIND!r}")
        spec = parse_task_spec(obj, "<manifest>", derive_limits=False)
        if spec.to_bytes() != bytes(data):
            raise ManifestError(
                "<document>", "not the canonical encoding of its spec (defaults written out, floats as floats)"
            )
        return spec


def parse_task_spec(data: dict[str, Any], source: str = "<dict>", derive_limits: bool = True) -> TaskSpecManifest:
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
    spec = TaskSpecManifest(task, built.get("validation", ValidationConfig()), limits)
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


def load_task_spec(path: str | Path) -> TaskSpecManifest:
    """Read a spec from a TOML file; every bad field is named in one TaskSpecError."""
    path = Path(path)
    return parse_task_spec(read_toml(path), str(path))


def put_task_spec(store: Store, spec: TaskSpecManifest) -> Digest:
    """Store the spec as one raw block; return its digest (the on-chain specDigest)."""
    return store.put_manifest(spec.to_bytes())


def fetch_task_spec(store: Store, digest: Digest | bytes | str) -> TaskSpecManifest:
    """The spec behind an on-chain specDigest; a bad document is a TaskSpecError naming its CID and field."""
    source = f"manifest {cid_for_digest(digest)}"
    data = store.get_manifest(digest)
    try:
        return TaskSpecManifest.from_bytes(data)
    except ManifestError as e:
        shown = "" if e.value is None else f" (got {e.value!r:.80})"
        raise TaskSpecError(source, [ConfigError("manifest", e.field, e.reason + shown)]) from None
    except TaskSpecError as e:
        raise TaskSpecError(source, e.errors) from None

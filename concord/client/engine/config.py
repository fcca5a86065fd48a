"""Typed task configuration: model, environment, sampler, GRPO inner loop, DiLoCo outer step.

Configs are frozen dataclasses validated once at the edge (TOML or a dict) by pydantic
(validate_table: strict scalar types, unknown and missing keys, every bad field named with its
table) and by their own range checks (__post_init__, which also guard configs built in code); the
rest of the code trusts them. to_dict is their canonical form (a task spec's digest is on chain).
`DEFAULT_TASK` is the one place the demo task's settings live, so the
learning bench, the simulation and the on-chain demo train the same thing.
"""

from __future__ import annotations

import dataclasses
import functools
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

C = TypeVar("C", bound="DataclassInstance")


class _Strict:
    """pydantic metadata: this scalar is validated strictly (no "3" for 3, no true for 1, no 3.0 for 3)."""

    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> Any:
        schema = handler(source)
        schema["strict"] = True
        return schema


class _Real:
    """pydantic metadata: a finite number (an int becomes a float), -0.0 read as 0.0: a spec's float has one
    canonical encoding, whatever the TOML wrote."""

    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> Any:
        from pydantic_core import core_schema

        number = core_schema.float_schema(strict=True, allow_inf_nan=False)
        return core_schema.no_info_after_validator_function(lambda v: float(v) + 0.0, number)


# The scalar types of config fields (plain int / float / str / bool to the type checker; strict to pydantic).
Int = Annotated[int, _Strict()]
Real = Annotated[float, _Real()]
Str = Annotated[str, _Strict()]
Bool = Annotated[bool, _Strict()]
# Every config dataclass sets `__pydantic_config__ = TABLE` (unannotated: a class attribute, not a field):
# a key that is not one of its fields is an error.
TABLE: dict[str, Any] = {"extra": "forbid"}
# A key added after specs were on chain: left out of to_dict (so of a spec's canonical bytes) while it holds
# its default, so every earlier spec keeps its bytes and digest; a document that writes the default out is
# not canonical (client.content.task_spec refuses it).
OMITTED_AT_DEFAULT: dict[str, Any] = {"omitted_at_default": True}


class ConfigError(ValueError):
    """A config table has an unknown key, a missing key, or a value of the wrong type/range."""

    def __init__(self, section: str, key: str, problem: str):
        super().__init__(f"[{section}] {key}: {problem}")
        self.section, self.key, self.problem = section, key, problem

    @property
    def field(self) -> str:
        """The dotted path of the bad value, e.g. ``grpo.lr`` (``task.x`` for a top-level key)."""
        return f"{self.section}.{self.key}"


# Upper bounds keep every derived number (limits, token counts, byte sizes) well inside a
# signed 64-bit int and refuse absurd work before it is started (a model is built to publish).
MAX_VOCAB = 1 << 20
MAX_D_MODEL = 1 << 16
MAX_LAYERS = 1024
MAX_SEQ_LEN = 1 << 16
MAX_SEED = (1 << 63) - 1
MAX_PARAMS = 1 << 34  # ~64 GiB of float32: far beyond a task a node can train
MAX_PROMPTS_PER_STEP = 1 << 16
MAX_GROUP_SIZE = 1 << 12
MAX_INNER_STEPS = 10_000  # = client.content.submission.MAX_STEPS (step names have 4 digits)
MAX_TRAINERS = 1 << 16
MAX_HF_PATH = 1024


def _in_range(
    section: str, name: str, value: Any, lo: float, hi: float, lo_open: bool = False, hi_open: bool = False
) -> None:
    """ConfigError unless lo <(=) value <(=) hi (NaN is never in range)."""
    ok = (value > lo if lo_open else value >= lo) and (value < hi if hi_open else value <= hi)
    if not ok:
        left, right = "(" if lo_open else "[", ")" if hi_open else "]"
        raise ConfigError(section, name, f"must be in {left}{lo}, {hi}{right}, got {value}")


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of the policy. kind 'tiny' = plain-torch transformer; 'hf' = transformers causal LM."""

    __pydantic_config__ = TABLE

    vocab_size: Int = 32
    d_model: Int = 64
    n_layers: Int = 2
    n_heads: Int = 4
    max_seq_len: Int = 64
    seed: Int = 0  # deterministic init
    kind: Literal["tiny", "hf"] = "tiny"
    d_ff: Int = 0  # 0 -> 4 * d_model
    hf_arch: Literal["qwen2", "llama"] = "qwen2"  # used when kind == "hf" and hf_path is empty
    hf_path: Str = ""  # local directory with config.json + weights; never the hub

    def __post_init__(self) -> None:
        bounds = {
            "vocab_size": MAX_VOCAB,
            "d_model": MAX_D_MODEL,
            "n_layers": MAX_LAYERS,
            "n_heads": MAX_D_MODEL,
            "max_seq_len": MAX_SEQ_LEN,
        }
        for name, hi in bounds.items():
            if getattr(self, name) <= 0:
                raise ConfigError("model", name, f"must be > 0, got {getattr(self, name)}")
            _in_range("model", name, getattr(self, name), 1, hi)
        if self.d_model % self.n_heads:
            raise ConfigError("model", "n_heads", f"{self.n_heads} does not divide d_model={self.d_model}")
        _in_range("model", "seed", self.seed, 0, MAX_SEED)
        _in_range("model", "d_ff", self.d_ff, 0, 16 * MAX_D_MODEL)
        if self.kind not in ("tiny", "hf"):
            raise ConfigError("model", "kind", f"expected 'tiny' or 'hf', got {self.kind!r}")
        if self.hf_arch not in ("qwen2", "llama"):
            raise ConfigError("model", "hf_arch", f"expected 'qwen2' or 'llama', got {self.hf_arch!r}")
        if len(self.hf_path) > MAX_HF_PATH:
            raise ConfigError("model", "hf_path", f"longer than {MAX_HF_PATH} chars")
        if self.hf_path and self.kind != "hf":
            raise ConfigError("model", "hf_path", f"only used with kind = 'hf', this model is {self.kind!r}")
        if self.approx_params > MAX_PARAMS:
            raise ConfigError(
                "model",
                "d_model",
                f"about {self.approx_params:.3g} parameters (vocab_size, d_model, "
                f"n_layers, d_ff), over the limit of {MAX_PARAMS}",
            )

    @property
    def approx_params(self) -> int:
        """An upper estimate of the parameter count (embeddings, head, blocks), known before building."""
        d, f = self.d_model, self.ffn_dim
        block = 4 * d * d + 3 * d * f + 13 * d  # attention + MLP (a gated MLP has three matrices) + norms
        return 2 * self.vocab_size * d + self.max_seq_len * d + self.n_layers * block + 2 * d

    @property
    def ffn_dim(self) -> int:
        return self.d_ff or 4 * self.d_model


@dataclass(frozen=True)
class EnvConfig:
    """Which verifiable environment, and its parameters (see client.engine.envs.REGISTRY)."""

    __pydantic_config__ = TABLE

    env_id: Str = "sort"
    params: dict[str, Int] = field(default_factory=dict)


@dataclass(frozen=True)
class SamplerConfig:
    """Seeded sampling. temperature 0 = greedy (no noise). Generation stops at EOS per sample."""

    __pydantic_config__ = TABLE

    temperature: Real = 1.0
    max_new_tokens: Int = 8
    stop_at_eos: Bool = True  # after EOS a sample emits PAD (masked out)

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ConfigError("sampler", "temperature", f"must be >= 0, got {self.temperature}")
        _in_range("sampler", "temperature", self.temperature, 0, 1e3)
        if self.max_new_tokens <= 0:
            raise ConfigError("sampler", "max_new_tokens", f"must be > 0, got {self.max_new_tokens}")
        _in_range("sampler", "max_new_tokens", self.max_new_tokens, 1, MAX_SEQ_LEN)


@dataclass(frozen=True)
class GRPOConfig:
    """Inner loop: H steps of AdamW or SGD on token-level GRPO; a fresh optimizer every round."""

    __pydantic_config__ = TABLE

    prompts_per_step: Int = 16
    group_size: Int = 8
    inner_steps: Int = 2  # H
    lr: Real = 3e-3
    betas: tuple[Real, Real] = (0.9, 0.99)
    weight_decay: Real = 0.0
    eps_low: Real = 0.2
    eps_high: Real = 0.2
    ratio_clamp: Real = 4.0  # importance-ratio coefficient is clamped at this value
    kl_coef: Real = 0.0  # KL(pi || pi_base of the round), k3 estimator
    entropy_coef: Real = 0.0  # bonus on the policy's per-token entropy (keeps groups diverse)
    optimizer: Literal["adamw", "sgd"] = "adamw"  # sgd: Nesterov momentum = betas[0] (0 = stateless)
    warmup_steps: Int = 0  # inner step k (0-based) uses lr * min(1, (k + 1) / (warmup_steps + 1))
    grad_clip: Real = 1.0
    std_normalize: Bool = False

    def __post_init__(self) -> None:
        for name in ("prompts_per_step", "group_size", "inner_steps"):
            if getattr(self, name) <= 0:
                raise ConfigError("grpo", name, f"must be > 0, got {getattr(self, name)}")
        if self.group_size < 2:
            raise ConfigError("grpo", "group_size", f"group-relative advantages need >= 2, got {self.group_size}")
        if not self.lr > 0:
            raise ConfigError("grpo", "lr", f"must be > 0, got {self.lr}")
        if len(self.betas) != 2:
            raise ConfigError("grpo", "betas", f"expected two values, got {self.betas}")
        for name, hi in (
            ("prompts_per_step", MAX_PROMPTS_PER_STEP),
            ("group_size", MAX_GROUP_SIZE),
            ("inner_steps", MAX_INNER_STEPS),
        ):
            _in_range("grpo", name, getattr(self, name), 1, hi)
        _in_range("grpo", "lr", self.lr, 0, 1e3, lo_open=True)
        for i, beta in enumerate(self.betas):
            if not 0 <= beta < 1:
                raise ConfigError("grpo", "betas", f"betas[{i}] must be in [0, 1), got {beta}")
        _in_range("grpo", "weight_decay", self.weight_decay, 0, 1)
        _in_range("grpo", "eps_low", self.eps_low, 0, 1)
        _in_range("grpo", "eps_high", self.eps_high, 0, 1e3)
        _in_range("grpo", "ratio_clamp", self.ratio_clamp, 1, 1e6)
        _in_range("grpo", "kl_coef", self.kl_coef, 0, 1e3)
        _in_range("grpo", "entropy_coef", self.entropy_coef, 0, 1e3)
        if self.optimizer not in ("adamw", "sgd"):
            raise ConfigError("grpo", "optimizer", f"expected 'adamw' or 'sgd', got {self.optimizer!r}")
        _in_range("grpo", "warmup_steps", self.warmup_steps, 0, MAX_INNER_STEPS)
        _in_range("grpo", "grad_clip", self.grad_clip, 0, 1e6)

    @property
    def rollouts_per_step(self) -> int:
        return self.prompts_per_step * self.group_size


@dataclass(frozen=True)
class OuterConfig:
    """DiLoCo outer optimizer: SGD with (Nesterov) momentum on the mean pseudo-gradient.

    clip: bounded influence (validator.aggregate.clip_deltas): before the mean, each accepted delta's
    global L2 norm is clipped to clip x the median norm of the round's accepted deltas, so one
    poisoner among K trainers moves the model at most about as far as clip honest trainers; 0 turns
    it off. 1.0: a delta larger than the round's median is scaled down to it (docs/SECURITY.md).
    agreement: with 3 or more accepted deltas, each is weighted by its cosine with their
    coordinate-wise median relative to the median cosine, capped at 1 (validator.aggregate): a delta
    that points against what the others agree on counts for nothing.
    staleness_discount: a delta built on model r - s and applied to model r (asyncLevel >= s) is
    weighted 1 / (1 + staleness_discount x s) in the mean (validator.aggregate.staleness_weight);
    0 (the default since the rebase) turns it off, a fresh delta (s = 0) always weighs 1.
    staleness_rebase: before any weighting, a stale delta d built on model b is rebased onto model r as
    d - staleness_rebase x (model r - model b) (validator.aggregate.rebase_stale): a delta is mostly the
    correction its inner steps make to the model they started from, and the rounds in between already
    made part of it; 0 turns it off, a fresh delta is never changed. Default 0.5 with no discount: on
    the default task it learned best of the rules measured at asyncLevel 1 and 2 (docs/LEARNING.md,
    "Asynchronous rounds"); a discount on top of the rebase slowed it down."""

    __pydantic_config__ = TABLE

    lr: Real = 1.0
    momentum: Real = 0.0
    nesterov: Bool = True
    clip: Real = 1.0
    agreement: Bool = True
    staleness_discount: Real = 0.0
    staleness_rebase: Real = 0.5

    def __post_init__(self) -> None:
        if not self.lr > 0:
            raise ConfigError("outer", "lr", f"must be > 0, got {self.lr}")
        _in_range("outer", "lr", self.lr, 0, 1e3, lo_open=True)
        if not 0 <= self.momentum < 1:
            raise ConfigError("outer", "momentum", f"must be in [0, 1), got {self.momentum}")
        if not (self.clip == 0 or 1 <= self.clip <= 1e3):
            raise ConfigError("outer", "clip", f"must be 0 (off) or in [1, 1000], got {self.clip}")
        _in_range("outer", "staleness_discount", self.staleness_discount, 0, 1e3)
        _in_range("outer", "staleness_rebase", self.staleness_rebase, 0, 1)


PrecisionSetting = Literal["auto", "bf16", "fp32"]  # ValidationConfig.prefill_precision (client.engine.precision)
ValidationMode = Literal["full", "sampled"]  # ValidationConfig.mode (validator.sampling)


@dataclass(frozen=True)
class ValidationConfig:
    """What a task states about acceptance (DESIGN.md section 3 'validation criteria').

    sampling_tie_tol: a generated token that is not the seeded argmax under the recomputed
    logits is tolerated only if its perturbed score (logits / T + Gumbel noise, float64) is
    within this much of the best one. Measured honest noise (KV-cache decode vs one full
    prefill, random-init demo model): 0 mismatches in fp32, largest gap 1.6e-3 in bf16. The
    tolerance is also an adversary's freedom: at 0.01 about 1% of tokens have a runner-up that
    close (5% at 0.05). bf16 tasks on larger models should measure their noise and raise it.
    replay: the submitted delta must have cosine >= replay_cos_min and
    |submitted - replayed| / |replayed| <= replay_rel_l2_max (a delta scaled by 1.01 has 0.01).
    prefill_precision: what the verification prefill runs in first. "bf16" = bf16 autocast
    (TOPLOC commits to bf16 activations anyway), "fp32" = float32 only, "auto" (default) = each
    validator lets its hardware decide (client.engine.precision): bf16 on a CUDA device with
    native bf16; on CPU a start-up measurement of prefill-sized matmuls, bf16 only if >= 1.2x
    faster. The bf16 prefill measured 2.2-2.9x faster than float32 where the CPU has native bf16
    (AMX; avx512_bf16) and 4.8x slower where oneDNN emulates it (AVX2 only: verification then
    2.6x generation; docs/BENCHMARKS.md), hence no fixed default. Either way every rollout that
    fails TOPLOC or sampling replay under bf16 is recomputed in float32 and judged on that: bf16
    rounding can speed up a rollout that passes, never reject one that float32 accepts
    (validator.tiny_prefill.recompute_states).
    mode: "full" checks every rollout and replays every inner step; "sampled" draws, per validator
    and submission, from the round's on-chain check seed and the validator's address
    (validator.sampling): ceil(row_fraction x rollouts) rollouts get the prefill checks (TOPLOC +
    sampling replay) and replay_steps inner steps are replayed alone, from the intermediate state
    the submission commits to (client.content.submission, "inner states"); schema, prompts,
    rewards, work units and the proof root stay on everything. replay_fraction q in (0, 1]: in
    sampled mode each validator replays a submission's steps only when its own draw from the check
    seed selects that submission (probability q, independent per validator; validator.sampling); a
    failed replay is flagged like a failed row, so every honest validator replays it and a cheat
    only the replay sees is caught with 1 - (1 - q)^V. 1 (the default) replays every submission;
    a spec writes the key only when it is not 1 (OMITTED_AT_DEFAULT).
    """

    __pydantic_config__ = TABLE

    max_exp_mismatches: Int = 38
    max_mant_err_mean: Real = 10.0
    max_mant_err_median: Real = 8.0
    sampling_tie_tol: Real = 0.01
    replay_cos_min: Real = 0.9999
    replay_rel_l2_max: Real = 1e-3
    prefill_precision: PrecisionSetting = "auto"
    mode: ValidationMode = "sampled"
    row_fraction: Real = 0.02
    replay_steps: Int = 1
    replay_fraction: Real = field(default=1.0, metadata=OMITTED_AT_DEFAULT)

    def __post_init__(self) -> None:
        _in_range("validation", "max_exp_mismatches", self.max_exp_mismatches, 0, MAX_SEQ_LEN)
        _in_range("validation", "max_mant_err_mean", self.max_mant_err_mean, 0, 1e6)
        _in_range("validation", "max_mant_err_median", self.max_mant_err_median, 0, 1e6)
        _in_range("validation", "sampling_tie_tol", self.sampling_tie_tol, 0, 1e6)
        _in_range("validation", "replay_cos_min", self.replay_cos_min, -1, 1)
        _in_range("validation", "replay_rel_l2_max", self.replay_rel_l2_max, 0, 1e6)
        if self.prefill_precision not in typing.get_args(PrecisionSetting):
            raise ConfigError(
                "validation", "prefill_precision", f"expected 'auto', 'bf16' or 'fp32', got {self.prefill_precision!r}"
            )
        if self.mode not in typing.get_args(ValidationMode):
            raise ConfigError("validation", "mode", f"expected 'full' or 'sampled', got {self.mode!r}")
        _in_range("validation", "row_fraction", self.row_fraction, 0, 1, lo_open=True)
        _in_range("validation", "replay_steps", self.replay_steps, 0, MAX_INNER_STEPS)
        _in_range("validation", "replay_fraction", self.replay_fraction, 0, 1, lo_open=True)


@dataclass(frozen=True)
class TaskConfig:
    """Everything a task fixes about the computation (the chain side adds stakes and phases)."""

    __pydantic_config__ = TABLE

    model: ModelConfig = field(default_factory=ModelConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    grpo: GRPOConfig = field(default_factory=GRPOConfig)
    outer: OuterConfig = field(default_factory=OuterConfig)
    trainers_per_round: Int = 4  # K, used by the simulation and the demo

    def __post_init__(self) -> None:
        _in_range("task", "trainers_per_round", self.trainers_per_round, 1, MAX_TRAINERS)

    @property
    def max_work_units(self) -> int:
        """The most work one honest submission can claim: every rollout of every inner step
        generating max_new_tokens (the chain's maxWorkUnits, DESIGN.md 3)."""
        return self.grpo.inner_steps * self.grpo.rollouts_per_step * self.sampler.max_new_tokens


@functools.cache
def _adapter(cls: type) -> Any:
    """pydantic's validator for a config dataclass (built once per class: about 0.1 s each)."""
    from pydantic import TypeAdapter

    return TypeAdapter(cls)


def _class_at(cls: type, path: tuple[str, ...]) -> type | None:
    """The config dataclass at ``path`` below ``cls`` (None when the path ends at a plain value)."""
    for name in path:
        typ = typing.get_type_hints(cls).get(name) if dataclasses.is_dataclass(cls) else None
        if not (isinstance(typ, type) and dataclasses.is_dataclass(typ)):
            return None
        cls = typ
    return cls if dataclasses.is_dataclass(cls) else None


def _config_error(cls: type, section: str, err: Any) -> ConfigError:
    """One pydantic error (a dict of ValidationError.errors()) as a ConfigError naming its table and key:
    ("grpo", "lr") inside a task, (section, "*") for a table that is not a table."""
    kind, value, names = err["type"], err.get("input"), [p for p in err["loc"] if isinstance(p, str)]
    index = "".join(f"[{p}]" for p in err["loc"] if isinstance(p, int))
    got = f"got {value!r}"
    if kind in ("dataclass_type", "dataclass_args_type"):  # a [table] written as a value
        return ConfigError(".".join(names) or section, "*", f"expected a table, {got}")
    parent, key = names[:-1], names[-1] if names else "*"
    nested = bool(parent) and _class_at(cls, (parent[0],)) is not None  # a [table] of its own, e.g. [grpo]
    where = ".".join(parent if nested else [section, *parent])  # else a table inside this one, e.g. env.params
    if kind in ("unexpected_keyword_argument", "extra_forbidden"):
        known = sorted(f.name for f in dataclasses.fields(_class_at(cls, tuple(parent)) or cls))
        return ConfigError(where, key, f"unknown key (known: {known})")
    arity = f"expected {len(_field_args(cls, names))} values, {got}"
    if index and kind == "missing":  # a tuple written with too few values
        return ConfigError(where, key, arity)
    problems = {
        "missing": "missing (this table has no default for it)",
        "int_type": f"expected int, {got}",
        "float_type": f"expected a number, {got}",
        "string_type": f"expected str, {got}",
        "bool_type": f"expected bool, {got}",
        "dict_type": f"expected a table, {got}",
        "finite_number": f"must be a finite number, {got}",
        "literal_error": f"expected {err.get('ctx', {}).get('expected')}, {got}",
        "tuple_type": arity,
        "too_short": arity,
        "too_long": arity,
    }
    problem = problems.get(kind, f"{err['msg']}, {got}")
    return ConfigError(where, key, f"{key}{index} {problem}" if index else problem)


def _field_args(cls: type, names: list[str]) -> tuple[Any, ...]:
    owner = _class_at(cls, tuple(names[:-1])) or cls
    return typing.get_args(typing.get_type_hints(owner).get(names[-1])) if names else ()


def validate_table(cls: type[C], data: Any, section: str) -> tuple[C | None, list[ConfigError]]:
    """``cls`` built from a (TOML) table by pydantic, or every problem found, each naming its table and
    key: unknown and missing keys, wrong types (no "3" for 3, no true for 1: Int, Real, Str, Bool are
    strict) and, for the tables whose types are right, their own range checks (__post_init__). An
    exception of another type raised by a __post_init__ (a ModelSourceError, say) propagates as it is."""
    from pydantic import ValidationError

    if not isinstance(data, dict):
        return None, [ConfigError(section, "*", f"expected a table, got {data!r}")]
    try:
        return _adapter(cls).validate_python(data), []
    except ValidationError as e:
        errors = []
        for err in e.errors():
            cause = err.get("ctx", {}).get("error")
            if err["type"] == "value_error" and isinstance(cause, ConfigError):
                errors.append(cause)
            elif err["type"] == "value_error" and isinstance(cause, Exception):
                raise cause from None
            else:
                errors.append(_config_error(cls, section, err))
        return None, errors


def from_dict(cls: type[C], data: dict[str, Any], section: str = "") -> C:
    """Build a config dataclass from a (TOML) dict, rejecting unknown keys and naming bad fields
    (the first ConfigError of validate_table's list)."""
    value, errors = validate_table(cls, data, section or cls.__name__)
    if value is None:
        raise errors[0]
    return value


def to_dict(cfg: DataclassInstance) -> dict[str, Any]:
    """The inverse of from_dict (tuples become lists, as TOML/JSON would store them); a field marked
    OMITTED_AT_DEFAULT is left out while it holds its default."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if f.metadata.get("omitted_at_default") and value == f.default:
            continue
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            value = to_dict(value)
        elif isinstance(value, tuple):
            value = list(value)
        elif isinstance(value, dict):
            value = dict(value)
        out[f.name] = value
    return out


def load_task(path: str | Path) -> TaskConfig:
    """Read a TaskConfig from a TOML file whose tables are [model], [env], [sampler], [grpo], [outer]."""
    with open(path, "rb") as fh:
        return from_dict(TaskConfig, tomllib.load(fh), "task")


# The demo task: sort 4-6 symbols drawn (with repetition) from an alphabet of 8. The learning
# bench, the simulation and the on-chain demo all start here; docs/LEARNING.md says how these
# numbers were chosen (SGD inner steps + Nesterov outer momentum learned best of what we tried).
DEFAULT_TASK = TaskConfig(
    model=ModelConfig(vocab_size=32, d_model=64, n_layers=2, n_heads=4, max_seq_len=32, seed=0),
    env=EnvConfig(env_id="sort", params={"n_min": 4, "n_max": 6, "alphabet": 8}),
    sampler=SamplerConfig(temperature=1.0, max_new_tokens=8),
    grpo=GRPOConfig(prompts_per_step=32, group_size=8, inner_steps=10, optimizer="sgd", lr=0.5, betas=(0.9, 0.99)),
    outer=OuterConfig(lr=1.0, momentum=0.5, nesterov=True),
    trainers_per_round=3,
)

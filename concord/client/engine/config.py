"""Typed task configuration: model, environment, sampler, GRPO inner loop, DiLoCo outer step.

Configs are frozen dataclasses validated once at the edge (TOML or a dict); the rest of the
code trusts them. `DEFAULT_TASK` is the one place the demo task's settings live, so the
learning bench, the simulation and the on-chain demo train the same thing.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

C = TypeVar("C", bound="DataclassInstance")


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

    vocab_size: int = 32
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    max_seq_len: int = 64
    seed: int = 0  # deterministic init
    kind: Literal["tiny", "hf"] = "tiny"
    d_ff: int = 0  # 0 -> 4 * d_model
    hf_arch: Literal["qwen2", "llama"] = "qwen2"  # used when kind == "hf" and hf_path is empty
    hf_path: str = ""  # local directory with config.json + weights; never the hub

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

    env_id: str = "sort"
    params: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class SamplerConfig:
    """Seeded sampling. temperature 0 = greedy (no noise). Generation stops at EOS per sample."""

    temperature: float = 1.0
    max_new_tokens: int = 8
    stop_at_eos: bool = True  # after EOS a sample emits PAD (masked out)

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

    prompts_per_step: int = 16
    group_size: int = 8
    inner_steps: int = 2  # H
    lr: float = 3e-3
    betas: tuple[float, float] = (0.9, 0.99)
    weight_decay: float = 0.0
    eps_low: float = 0.2
    eps_high: float = 0.2
    ratio_clamp: float = 4.0  # importance-ratio coefficient is clamped at this value
    kl_coef: float = 0.0  # KL(pi || pi_base of the round), k3 estimator
    entropy_coef: float = 0.0  # bonus on the policy's per-token entropy (keeps groups diverse)
    optimizer: Literal["adamw", "sgd"] = "adamw"  # sgd: Nesterov momentum = betas[0] (0 = stateless)
    warmup_steps: int = 0  # inner step k (0-based) uses lr * min(1, (k + 1) / (warmup_steps + 1))
    grad_clip: float = 1.0
    std_normalize: bool = False

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
    0 turns it off, a fresh delta (s = 0) always weighs 1."""

    lr: float = 1.0
    momentum: float = 0.0
    nesterov: bool = True
    clip: float = 1.0
    agreement: bool = True
    staleness_discount: float = 1.0

    def __post_init__(self) -> None:
        if not self.lr > 0:
            raise ConfigError("outer", "lr", f"must be > 0, got {self.lr}")
        _in_range("outer", "lr", self.lr, 0, 1e3, lo_open=True)
        if not 0 <= self.momentum < 1:
            raise ConfigError("outer", "momentum", f"must be in [0, 1), got {self.momentum}")
        if not (self.clip == 0 or 1 <= self.clip <= 1e3):
            raise ConfigError("outer", "clip", f"must be 0 (off) or in [1, 1000], got {self.clip}")
        _in_range("outer", "staleness_discount", self.staleness_discount, 0, 1e3)


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
    (validator.checks.recompute_states).
    mode: "full" checks every rollout and replays every inner step; "sampled" draws, per validator
    and submission, from the round's on-chain check seed and the validator's address
    (validator.sampling): ceil(row_fraction x rollouts) rollouts get the prefill checks (TOPLOC +
    sampling replay) and replay_steps inner steps are replayed alone, from the intermediate state
    the submission commits to (client.content.submission, "inner states"); schema, prompts,
    rewards, work units and the proof root stay on everything.
    """

    max_exp_mismatches: int = 38
    max_mant_err_mean: float = 10.0
    max_mant_err_median: float = 8.0
    sampling_tie_tol: float = 0.01
    replay_cos_min: float = 0.9999
    replay_rel_l2_max: float = 1e-3
    prefill_precision: PrecisionSetting = "auto"
    mode: ValidationMode = "sampled"
    row_fraction: float = 0.02
    replay_steps: int = 1

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


@dataclass(frozen=True)
class TaskConfig:
    """Everything a task fixes about the computation (the chain side adds stakes and phases)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    grpo: GRPOConfig = field(default_factory=GRPOConfig)
    outer: OuterConfig = field(default_factory=OuterConfig)
    trainers_per_round: int = 4  # K, used by the simulation and the demo

    def __post_init__(self) -> None:
        _in_range("task", "trainers_per_round", self.trainers_per_round, 1, MAX_TRAINERS)

    @property
    def max_work_units(self) -> int:
        """The most work one honest submission can claim: every rollout of every inner step
        generating max_new_tokens (the chain's maxWorkUnits, DESIGN.md 3)."""
        return self.grpo.inner_steps * self.grpo.rollouts_per_step * self.sampler.max_new_tokens


def _coerce(section: str, key: str, typ: Any, value: Any) -> Any:
    """Check one TOML value against a dataclass field type; tuples come from TOML arrays."""
    origin = typing.get_origin(typ)
    if origin is Literal:
        if value not in typing.get_args(typ):
            raise ConfigError(section, key, f"expected one of {typing.get_args(typ)}, got {value!r}")
        return value
    if origin is tuple:
        args = typing.get_args(typ)
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(section, key, f"expected {len(args)} values, got {value!r}")
        return tuple(_coerce(section, key, a, v) for a, v in zip(args, value, strict=True))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(section, key, f"expected a table, got {value!r}")
        return dict(value)
    if typ is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(section, key, f"expected a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(section, key, f"must be a finite number, got {value!r}")
        return float(value) + 0.0  # -0.0 -> 0.0: a spec has one canonical encoding
    if typ is int or typ is bool or typ is str:
        if type(value) is not typ:
            raise ConfigError(section, key, f"expected {typ.__name__}, got {value!r}")
        return value
    raise ConfigError(section, key, f"unsupported field type {typ}")


def from_dict(cls: type[C], data: dict[str, Any], section: str = "") -> C:
    """Build a config dataclass from a (TOML) dict, rejecting unknown keys and naming bad fields."""
    section = section or cls.__name__
    if not isinstance(data, dict):
        raise ConfigError(section, "*", f"expected a table, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(section, unknown[0], f"unknown key (known: {sorted(fields)})")
    missing = [
        name
        for name, f in fields.items()
        if name not in data and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(section, missing[0], "missing (this table has no default for it)")
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        typ = hints[name]
        if isinstance(typ, type) and dataclasses.is_dataclass(typ):
            kwargs[name] = from_dict(typ, value, name)
        else:
            kwargs[name] = _coerce(section, name, typ, value)
    return cls(**kwargs)


def to_dict(cfg: DataclassInstance) -> dict[str, Any]:
    """The inverse of from_dict (tuples become lists, as TOML/JSON would store them)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
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

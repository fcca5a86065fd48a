"""An LM task's configuration: the model source with its pins, the text environment, the adapters,
sampling, the GRPO inner loop, the DiLoCo outer step and the validation criteria.

The LM counterpart of client.engine.config.TaskConfig, loaded from TOML and validated once here
(unknown keys, wrong types and out-of-range values raise errors naming the field):

    trainers_per_round = 2
    [source]      kind, location, file, weights_sha256, tokenizer_sha256  (client.engine.lm.ModelSource)
    [env]         env_id, reward ("exact" | "partial", text_envs module doc), [env.params] (the
                  reasoning-gym dataset's kwargs), [env.format] (FORMAT_FIELDS)
    [adapter]     rank, alpha, targets, seed                               (lm_rollout.AdapterConfig)
    [sampler] [grpo] [outer] [validation]                                  (as for the tiny model;
                                                                            validation.mode "full" by default)

``DEFAULT_LM_TASK`` is configs/lm_task.toml (a test keeps the two equal): chain_sum with 2-4 one-digit
terms (issue 24 item 1: docs/LM.md) on the shipped SmolLM2-135M-Instruct, LoRA rank 8 on q_proj and v_proj.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from concord.client.engine import text_envs
from concord.client.engine.config import (
    MAX_TRAINERS,
    TABLE,
    ConfigError,
    GRPOConfig,
    Int,
    OuterConfig,
    SamplerConfig,
    Str,
    ValidationConfig,
    _in_range,
    from_dict,
)
from concord.client.engine.lm import SMOLLM2_135M, ModelSource
from concord.client.engine.lm_rollout import AdapterConfig


@dataclass(frozen=True)
class TextEnvConfig:
    """A named text environment (client.engine.text_envs.TEXT_ENVS), its reward rule, dataset kwargs and
    prompt format. reward: "exact" (default: the exact answer after normalisation, else 0) or "partial"
    (reasoning-gym's partial credit, only when a task asks for it)."""

    __pydantic_config__ = TABLE

    env_id: Str = text_envs.DEFAULT_TEXT_ENV
    reward: Str = "exact"
    params: dict[str, Any] = field(default_factory=lambda: dict(text_envs.TEXT_ENVS[text_envs.DEFAULT_TEXT_ENV].params))
    format: dict[str, Any] = field(default_factory=dict)

    def make(self, context: int | None = None) -> text_envs.TextEnv:
        """The validated environment (errors name the field: env_id, a dataset kwarg or a format field)."""
        return text_envs.make_text_env(self.env_id, self.params, context=context, reward=self.reward, **self.format)


@dataclass(frozen=True)
class LMTaskConfig:
    __pydantic_config__ = TABLE

    source: dict[str, Any] = field(default_factory=SMOLLM2_135M.to_dict)
    env: TextEnvConfig = field(default_factory=TextEnvConfig)
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    sampler: SamplerConfig = field(default_factory=lambda: SamplerConfig(temperature=1.0, max_new_tokens=16))
    grpo: GRPOConfig = field(
        default_factory=lambda: GRPOConfig(prompts_per_step=4, group_size=8, inner_steps=2, lr=2e-3, optimizer="adamw")
    )
    outer: OuterConfig = field(default_factory=lambda: OuterConfig(lr=1.0, momentum=0.0))
    # Full checks by default on the LM. The sampled mode works (validator.lm_checks, with row and replay flags)
    # and was measured per cheat (`concord bench lm_sampled`, docs/LM.md "Sampled checks on the LM"): under the
    # candidate (4 of 64 rows, replay_fraction 0.05, slash 4000) no measured cheat pays for V = 1, 2, 3, but its
    # cost measured 0.138-0.175 of a trainer's round, around the target 0.15 (tests/test_lm_sampled.py).
    validation: ValidationConfig = field(default_factory=lambda: ValidationConfig(mode="full"))
    trainers_per_round: Int = 2

    def __post_init__(self) -> None:
        _in_range("task", "trainers_per_round", self.trainers_per_round, 1, MAX_TRAINERS)
        self.model_source  # noqa: B018  (validates the [source] table: ModelSourceError names the field)
        env = self.env.make()
        if self.sampler.max_new_tokens != env.max_new_tokens:
            raise ConfigError(
                "sampler",
                "max_new_tokens",
                f"{self.sampler.max_new_tokens} differs from the environment's {env.max_new_tokens} "
                "(set it in [env.format] max_new_tokens)",
            )

    @property
    def model_source(self) -> ModelSource:
        return ModelSource.from_dict(self.source)

    @property
    def rollouts_per_round(self) -> int:
        return self.grpo.inner_steps * self.grpo.prompts_per_step * self.grpo.group_size

    @property
    def max_work_units(self) -> int:
        """The most generated tokens one submission can count (the on-chain maxWorkUnits)."""
        return self.rollouts_per_round * self.sampler.max_new_tokens


def is_lm_task(data: dict[str, Any]) -> bool:
    """Whether a task file's tables describe an LM task (a [source] table) rather than a tiny-model one."""
    return "source" in data


def load_lm_task(path: str | Path) -> LMTaskConfig:
    """Read an LMTaskConfig from TOML (module doc); a [chain] table (the on-chain terms, read by
    client.initiator) is left out."""
    with open(path, "rb") as fh:
        data = tomllib.load(fh)
    data.pop("chain", None)
    return from_dict(LMTaskConfig, data, "task")


DEFAULT_LM_TASK = LMTaskConfig()

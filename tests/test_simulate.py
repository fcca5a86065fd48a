"""The in-process network: K trainers + outer step; with K=1 and a plain outer step it is centralized GRPO."""

from __future__ import annotations

import dataclasses

import pytest

from client.config import DEFAULT_TASK, GRPOConfig, ModelConfig, OuterConfig, SamplerConfig, TaskConfig, EnvConfig
from client.grpo import pin_determinism
from client.simulate import simulate_centralized, simulate_decentralized

SMALL = TaskConfig(
    model=ModelConfig(d_model=32, n_layers=1, n_heads=4, max_seq_len=24, seed=0),
    env=EnvConfig("sort", {"n_min": 4, "n_max": 6, "alphabet": 8}),
    sampler=SamplerConfig(max_new_tokens=8),
    grpo=GRPOConfig(prompts_per_step=4, group_size=4, inner_steps=2, lr=3e-3),
    outer=OuterConfig(lr=1.0, momentum=0.0),
    trainers_per_round=1,
)


def test_one_trainer_plain_outer_step_equals_centralized() -> None:
    pin_determinism(1)
    dec = simulate_decentralized(SMALL, rounds=3)
    cen = simulate_centralized(SMALL, rounds=3)
    assert len(dec.rewards) == len(cen.rewards) == 3
    assert dec.rewards == pytest.approx(cen.rewards, abs=1e-12)
    assert dec.exact == cen.exact


def test_k_trainers_see_k_times_the_rollouts() -> None:
    pin_determinism(1)
    task = dataclasses.replace(SMALL, trainers_per_round=3, outer=OuterConfig(lr=1.5, momentum=0.5))
    seen: list[tuple[int, float, float]] = []
    dec = simulate_decentralized(task, rounds=2, on_round=lambda r, m, e: seen.append((r, m, e)))
    assert [r for r, _, _ in seen] == [0, 1]
    assert all(0.0 <= m <= 1.0 and 0.0 <= e <= 1.0 for _, m, e in seen)
    assert dec.seconds > 0


@pytest.mark.slow
def test_default_task_learns() -> None:
    """The learning claim, end to end: reward rises from < 0.3 to >= 0.9 within 30 rounds."""
    pin_determinism(1)
    curve = simulate_decentralized(DEFAULT_TASK, rounds=30)
    assert curve.rewards[0] < 0.3
    assert max(curve.rewards[-3:]) >= 0.9


def test_task_config_loads_from_toml_and_names_bad_fields(tmp_path) -> None:
    from client.config import ConfigError, from_dict, load_task, to_dict

    path = tmp_path / "task.toml"
    path.write_text(
        '[model]\nd_model = 48\nn_heads = 4\n[env]\nenv_id = "add"\nparams = { n_digits = 2 }\n'
        "[grpo]\nlr = 1e-3\nbetas = [0.9, 0.95]\n[outer]\nlr = 1.5\nmomentum = 0.5\n"
    )
    task = load_task(path)
    assert task.model.d_model == 48 and task.env.params == {"n_digits": 2}
    assert task.grpo.betas == (0.9, 0.95) and task.outer.lr == 1.5 and task.outer.nesterov is True
    assert from_dict(TaskConfig, to_dict(DEFAULT_TASK)) == DEFAULT_TASK
    with pytest.raises(ConfigError) as err:
        from_dict(TaskConfig, {"grpo": {"lr": 1e-3, "inner_step": 4}})
    assert (err.value.section, err.value.key) == ("grpo", "inner_step")
    with pytest.raises(ConfigError) as err:
        from_dict(TaskConfig, {"model": {"d_model": "64"}})
    assert err.value.key == "d_model"
    with pytest.raises(ConfigError) as err:
        from_dict(TaskConfig, {"model": {"d_model": 66, "n_heads": 4}})
    assert err.value.key == "n_heads"

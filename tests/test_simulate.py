"""The in-process network: K trainers + outer step; with K=1 and a plain outer step it is centralized GRPO."""

from __future__ import annotations

import dataclasses

import pytest

from concord.client.engine.config import (
    DEFAULT_TASK,
    EnvConfig,
    GRPOConfig,
    ModelConfig,
    OuterConfig,
    SamplerConfig,
    TaskConfig,
)
from concord.client.engine.grpo import pin_determinism
from scripts.simulate import simulate_centralized, simulate_decentralized

SMALL = TaskConfig(
    model=ModelConfig(d_model=32, n_layers=1, n_heads=4, max_seq_len=24, seed=0),
    env=EnvConfig("sort", {"n_min": 4, "n_max": 6, "alphabet": 8}),
    sampler=SamplerConfig(max_new_tokens=8),
    grpo=GRPOConfig(prompts_per_step=4, group_size=4, inner_steps=2, lr=3e-3),
    outer=OuterConfig(lr=1.0, momentum=0.0),
    trainers_per_round=1,
)


def test_one_trainer_plain_outer_step_equals_centralized() -> None:
    """With a stateless inner optimizer (SGD, no momentum), K=1 and outer lr 1 / momentum 0,
    the network is exactly centralized GRPO; with Adam they part after round 0 (state reset)."""
    pin_determinism(1)
    sgd = dataclasses.replace(SMALL, grpo=dataclasses.replace(SMALL.grpo, optimizer="sgd", lr=0.5, betas=(0.0, 0.99)))
    dec = simulate_decentralized(sgd, rounds=3)
    cen = simulate_centralized(sgd, rounds=3)
    assert len(dec.rewards) == len(cen.rewards) == 3
    assert dec.rewards == pytest.approx(cen.rewards, abs=1e-6)
    assert dec.exact == cen.exact
    adam_dec = simulate_decentralized(SMALL, rounds=2)
    adam_cen = simulate_centralized(SMALL, rounds=2)
    assert adam_dec.rewards[0] == adam_cen.rewards[0]


def test_k_trainers_see_k_times_the_rollouts() -> None:
    pin_determinism(1)
    task = dataclasses.replace(SMALL, trainers_per_round=3, outer=OuterConfig(lr=1.5, momentum=0.5))
    seen: list[tuple[int, float, float]] = []
    dec = simulate_decentralized(task, rounds=2, on_round=lambda r, m, e: seen.append((r, m, e)))
    assert [r for r, _, _ in seen] == [0, 1]
    assert all(-1.0 <= m <= 1.0 and 0.0 <= e <= 1.0 for _, m, e in seen)  # chance-corrected: 0 is chance level
    assert dec.seconds > 0


@pytest.mark.slow
def test_default_task_learns() -> None:
    """The first half of the learning claim (docs/LEARNING.md; the 30 rounds are `concord bench learn`'s,
    measured 0.054 -> 0.848, exact 0.42): 3 trainers + DiLoCo take the mean chance-corrected reward from
    < 0.3 to > 0.6 in 15 rounds, with exact answers appearing (measured 2026-12-08: 0.054 -> 0.737,
    exact 0.195, climbing every round)."""
    pin_determinism(1)
    curve = simulate_decentralized(DEFAULT_TASK, rounds=15)
    assert curve.rewards[0] < 0.3
    assert curve.rewards[-1] > 0.6
    assert curve.exact[-1] > 0.1


def test_task_config_loads_from_toml_and_names_bad_fields(tmp_path) -> None:
    from concord.client.engine.config import ConfigError, from_dict, load_task, to_dict

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


def test_bench_learn_ends_with_one_json_line(tmp_path, capsys) -> None:
    import json

    from scripts.bench.learn import main

    png = tmp_path / "curve.png"
    argv = ["--rounds", "2", "--env", "reverse", "--trainers", "2", "--inner-steps", "1", "--plot", str(png)]
    assert main(argv) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    result = json.loads(last)
    assert {
        "rounds",
        "final_reward_centralized",
        "final_reward_decentralized",
        "final_exact_decentralized",
        "seconds",
    } <= set(result)
    assert result["rounds"] == 2 and -1.0 <= result["final_reward_decentralized"] <= 1.0
    assert -1.0 <= result["final_reward_centralized"] <= 1.0 and result["seconds"] > 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_learn_seeds_adds_per_seed_rows_and_means(tmp_path, capsys) -> None:
    """--seeds 2: seed 0 stays the headline (same numbers as a plain run), seed 1 differs."""
    import json

    from scripts.bench.learn import main

    argv = [
        "--rounds",
        "1",
        "--env",
        "reverse",
        "--trainers",
        "2",
        "--inner-steps",
        "1",
        "--plot",
        str(tmp_path / "c.png"),
    ]
    assert main(argv) == 0
    plain = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert main(argv + ["--seeds", "2"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["final_reward_decentralized"] == plain["final_reward_decentralized"]
    assert [r["seed"] for r in result["per_seed"]] == [0, 1]
    seed0, seed1 = result["per_seed"]
    assert seed0["final_reward_centralized"] == plain["final_reward_centralized"]
    assert seed1["final_reward_decentralized"] != seed0["final_reward_decentralized"]
    mean = (seed0["final_reward_decentralized"] + seed1["final_reward_decentralized"]) / 2
    assert abs(result["mean_final_reward_decentralized"] - mean) < 1e-4
    with pytest.raises(SystemExit):
        main(argv + ["--seeds", "0"])


def test_async_level_trains_round_r_on_model_r_minus_level() -> None:
    """asyncLevel 1: round 1 builds on model 0 (as a level past the run does), level 0 on model 1;
    round 0 is the same for every level. A negative level is refused."""
    pin_determinism(1)
    task = dataclasses.replace(SMALL, trainers_per_round=2, outer=OuterConfig(lr=1.0, momentum=0.5))
    sync = simulate_decentralized(task, rounds=2)
    one = simulate_decentralized(task, rounds=2, async_level=1)
    far = simulate_decentralized(task, rounds=2, async_level=3)
    assert sync.rewards[0] == one.rewards[0] == far.rewards[0]
    assert one.rewards == far.rewards and one.exact == far.exact  # rounds 0 and 1 both on model 0
    assert one.rewards[1] != sync.rewards[1]
    with pytest.raises(ValueError, match="async_level"):
        simulate_decentralized(task, rounds=1, async_level=-1)


def test_bench_learn_async_levels_adds_one_entry_per_level(tmp_path, capsys) -> None:
    import json

    from scripts.bench.learn import main

    argv = ["--rounds", "2", "--env", "reverse", "--trainers", "2", "--inner-steps", "1", "--skip-centralized"]
    argv += ["--plot", str(tmp_path / "c.png")]
    assert main(argv) == 0
    plain = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert main(argv + ["--async-levels", "0,1"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["async_level"] == 0 and set(result["async"]) == {"async0", "async1"}
    assert result["async"]["async0"]["final_reward"] == plain["final_reward_decentralized"]
    assert result["async"]["async0"]["ratio_to_first"] == 1.0
    one = result["async"]["async1"]
    assert one["ratio_to_first"] == pytest.approx(one["final_reward"] / plain["final_reward_decentralized"], abs=1e-3)
    assert main(argv + ["--async-level", "1"]) == 0
    assert (
        json.loads(capsys.readouterr().out.strip().splitlines()[-1])["final_reward_decentralized"]
        == one["final_reward"]
    )
    for bad in (["--async-levels", "0,x"], ["--async-levels", "1,1"], ["--async-level", "9"]):
        with pytest.raises(SystemExit):
            main(argv + bad)

"""`concord bench lm` (scripts/bench/lm.py) with its centralized baseline (issue 24 item 3), on a tiny run.

The real model and engine on a task cut down to 2 prompts x 4 samples x 2 inner steps, 2 trainers,
1 round, 6 held-out problems: the keys of issue 24's "Done when" list and the invariants between them
(not outcomes: a round of a tiny batch says nothing about learning). And the baseline's definition:
its first inner step, made under the same adapters as the trainers', is the trainers' own groups (the
same prompts and sampling keys), taken as one batch.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from concord.client.engine import lm
from concord.client.engine.config import GRPOConfig
from concord.client.engine.lm_grpo import make_submission
from concord.client.engine.lm_rollout import LMRollouts, adapter_state, attach_adapters
from concord.client.engine.lm_task import DEFAULT_LM_TASK
from concord.client.runtime import paths
from scripts.bench import lm as bench

pytestmark = pytest.mark.unit

SMALL = {"prompts_per_step": 2, "group_size": 4, "inner_steps": 2, "lr": 0.002, "optimizer": "adamw"}
HELDOUT = 6

# the keys issue 24's "Done when" names that this bench reports (per-cheat detection runs with --cheats)
DONE_WHEN = (
    "heldout_overlap",
    "heldout_before",
    "heldout_after",
    "heldout_best",
    "heldout_greedy_before",
    "heldout_greedy_after",
    "heldout_gain_centralized",
    "gen_tokens_per_s",
    "hf_generate_tokens_per_s",
    "roofline_gflops",
    "gen_roofline_fraction",
    "validator_fraction",
    "verify_s",
    "generation_s",
    "proof_build_s",
    "delta_bytes",
    "honest_false_rejects",
    "seconds",
)


def small_task_file(tmp_path: Path) -> Path:
    """configs/lm_task.toml with a small [grpo] table (everything else the default task's)."""
    text = Path("configs/lm_task.toml").read_text()
    head, rest = text.split("[grpo]\n", 1)
    tail = rest[rest.index("\n[") :]  # the tables after [grpo]
    grpo = "".join(f"{k} = {json.dumps(v)}\n" for k, v in SMALL.items())
    path = tmp_path / "lm_task_small.toml"
    path.write_text(f"{head}[grpo]\n{grpo}{tail}")
    assert tomllib.loads(path.read_text())["grpo"] == SMALL
    return path


def run_bench(args: list[str]) -> dict[str, Any]:
    """`concord bench lm ARGS --json` in its own process (its timing spans are the process's: the
    timings file is chosen once per process, client.timing), its JSON line."""
    cmd = [sys.executable, "-m", "concord.client.cli", "bench", "lm", *args, "--json"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_bench_lm_reports_both_runs_and_their_gain_ratio(tmp_path: Path) -> None:
    plot = tmp_path / "curve.png"
    argv = ["--task-file", str(small_task_file(tmp_path)), "--rounds", "1", "--eval-every", "1"]
    argv += ["--heldout", str(HELDOUT), "--no-cheats", "--threads", "2"]
    out = run_bench([*argv, "--plot", str(plot)])

    missing = [k for k in DONE_WHEN if k not in out]
    assert not missing, missing
    assert out["heldout_overlap"] == 0 and out["honest_false_rejects"] == 0 and out["honest_checked"] == 2
    assert out["task"]["grpo"]["prompts_per_step"] == 2 and out["trainers"] == 2
    dec, cen = out["heldout_curve"], out["heldout_centralized_curve"]
    assert [p[0] for p in dec] == [p[0] for p in cen] == [0, 1]  # every round evaluated, both runs
    assert dec[0] == cen[0] == [0, out["heldout_before"], out["heldout_greedy_before"]]  # one base model
    for run, curve in (("heldout_", dec), ("heldout_centralized_", cen)):
        for _, sampled, greedy in curve:  # one sample per problem: multiples of 1/HELDOUT
            for acc in (sampled, greedy):
                assert 0 <= acc <= 1 and abs(acc * HELDOUT - round(acc * HELDOUT)) < 1e-3
        assert out[f"{run}after"] == curve[-1][1] and out[f"{run}greedy_after"] == curve[-1][2]
        assert out[f"{run}best"] == max(p[1] for p in curve) >= out[f"{run}after"]
        assert out[f"{run}decline"] == pytest.approx(out[f"{run}best"] - out[f"{run}after"], abs=1e-4)
        assert out[f"{run}greedy_best"] == max(p[2] for p in curve)
        assert [p[1] for p in curve if p[0] == out[f"{run}best_round"]][0] == out[f"{run}best"]
    gain, gain_c = out["heldout_gain_decentralized"], out["heldout_gain_centralized"]
    assert gain == out["heldout_gain"] == pytest.approx(out["heldout_after"] - out["heldout_before"], abs=1e-4)
    assert gain_c == pytest.approx(out["heldout_centralized_after"] - out["heldout_before"], abs=1e-4)
    if gain_c > 0:
        assert out["heldout_gain_ratio"] == pytest.approx(gain / gain_c, abs=1e-3)
    else:  # a ratio over no centralized gain says nothing
        assert out["heldout_gain_ratio"] is None
    assert out["centralized_s"] > 0 and out["seconds"] > out["centralized_s"]
    assert out["generation_s"] > 0 and out["validator_fraction"] > 0
    assert len(out["centralized"]) > 20 and out["train_reward_centralized_last"] is not None
    assert plot.stat().st_size > 10_000


def test_the_centralized_baseline_takes_every_trainers_prompts_and_keys_as_one_batch() -> None:
    """Round 0's first inner step of the baseline runs under the same adapters as the trainers' first
    step, so its groups are the trainers' step-0 groups, token for token, trainer after trainer; its
    optimizer is one for the whole run (its step count goes on across rounds)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        check_the_baselines_first_step()
    finally:
        torch.set_num_threads(threads)


def check_the_baselines_first_step() -> None:
    grpo = GRPOConfig(prompts_per_step=1, group_size=4, inner_steps=2, lr=2e-3, optimizer="adamw")
    loaded = lm.load(DEFAULT_LM_TASK.model_source, paths.models_dir())
    model = attach_adapters(loaded.model, DEFAULT_LM_TASK.adapter)
    env = DEFAULT_LM_TASK.env.make(context=loaded.context)
    rollouts = LMRollouts.for_env(model, loaded.tokenizer, env, DEFAULT_LM_TASK.sampler)
    initial = adapter_state(model)
    trainers = bench.TRAINERS[:2]
    theirs = [make_submission(rollouts, initial, grpo, bench.TASK_ID, 0, t)[0] for t in trainers]

    central = bench.Centralized.start(rollouts, initial, grpo)
    steps = central.round(rollouts, grpo, 0, trainers)
    assert [len(s) for s in steps] == [2 * grpo.prompts_per_step] * grpo.inner_steps  # K x A groups a step
    first = [g for sub in theirs for g in sub.batches[: grpo.prompts_per_step]]  # each trainer's step 0
    for mine, their in zip(steps[0], first, strict=True):
        assert mine.trainer == their.trainer and torch.equal(mine.prompt_idx, their.prompt_idx)
        assert np.array_equal(mine.keys, their.keys) and torch.equal(mine.prompts, their.prompts)
        assert torch.equal(mine.completions, their.completions) and torch.equal(mine.rewards, their.rewards)
    assert central.state.keys() == initial.keys()

    stepped = max(int(s["step"]) for s in central.optimizer.state.values()) if central.optimizer.state else 0
    central.round(rollouts, grpo, 1, trainers)
    after = max(int(s["step"]) for s in central.optimizer.state.values()) if central.optimizer.state else 0
    assert after >= stepped and len(central.rewards) == 2  # the moments carry over: no fresh optimizer


def test_span_totals_leave_out_the_baselines_windows(tmp_path: Path) -> None:
    """The network's time keys come from the timing spans outside the baseline's rounds and evaluations."""
    path = tmp_path / "timings.jsonl"
    spans = [("generation", 1.0, 3.0), ("generation", 10.0, 14.0), ("training", 14.0, 15.5), ("training", 20.0, 21.0)]
    path.write_text("".join(json.dumps({"cat": c, "t0": a, "t1": b, "tid": 1}) + "\n" for c, a, b in spans))
    assert bench.span_totals(path) == {"generation": 6.0, "training": 2.5}
    assert bench.span_totals(path, [(9.5, 15.5)]) == {"generation": 2.0, "training": 1.0}
    assert bench.span_totals(tmp_path / "none.jsonl") == {}

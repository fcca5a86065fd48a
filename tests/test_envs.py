"""Environments: seeded prompts, exact answers, partial-credit rewards that validators recompute."""

from __future__ import annotations

import pytest
import torch

from client.config import EnvConfig, ModelConfig, SamplerConfig
from client.envs import (
    BLANK,
    BOS,
    EOS,
    PAD,
    PLUS,
    SEP,
    SYM0,
    BadEnvParams,
    UnknownEnv,
    exact,
    make_env,
    multiset_reward,
    positional_reward,
    reward,
    rewards,
)
from client.model import build_policy
from client.rollout import generate


def s(*vals: int) -> list[int]:
    return [SYM0 + v for v in vals]


def test_sort_prompt_and_answer() -> None:
    env = make_env(EnvConfig("sort", {"n_min": 4, "n_max": 6, "alphabet": 8}))
    lengths = set()
    for seed in range(200):
        p = env.prompt(seed)
        assert len(p) == env.prompt_len == 8 and p[0] == BOS and p[-1] == SEP
        items = [t for t in p[1:-1] if t != BLANK]
        assert all(SYM0 <= t < SYM0 + 8 for t in items)
        lengths.add(len(items))
        assert env.answer(p) == sorted(items)
        assert env.prompt(seed) == p
    assert lengths == {4, 5, 6}
    assert make_env(EnvConfig("sort", {})).prompt(5) == env.prompt(5)


def test_reward_rule_numbers() -> None:
    ans = s(0, 4, 5, 5)
    assert positional_reward(s(0, 4, 5, 5) + [EOS, PAD], ans) == 1.0
    assert positional_reward(s(0, 4, 4, 5) + [EOS], ans) == 4 / 5  # one wrong symbol
    assert positional_reward(s(0, 4, 5, 5), ans) == 4 / 5  # no EOS
    assert positional_reward(s(0, 4, 5, 5, 5) + [EOS], ans) == 4 / 6  # one extra symbol
    assert positional_reward([EOS], ans) == 0.0
    assert multiset_reward(s(5, 0, 5, 4) + [EOS], ans) == 1.0
    assert multiset_reward(s(0, 4, 4, 5) + [EOS], ans) == 4 / 5
    sort = make_env(EnvConfig("sort", {"copy_credit": 50}))
    prompt = [BOS, *s(5, 0, 5, 4), BLANK, BLANK, SEP]
    assert reward(sort, prompt, s(0, 4, 5, 5) + [EOS]) == 1.0
    assert reward(sort, prompt, s(5, 0, 5, 4) + [EOS]) == (2 / 5 + 1.0) / 2  # positions 0.. : 5/0 no, 0/4 no, 5/5 yes, 4/5 no, EOS yes
    assert reward(sort, prompt, s(0, 4, 5, 5) + [PAD]) < 1.0


def test_reverse_add_modadd_answers() -> None:
    rev = make_env(EnvConfig("reverse", {}))
    p = [BOS, *s(1, 2, 3, 7), BLANK, BLANK, SEP]
    assert rev.answer(p) == s(7, 3, 2, 1)
    add = make_env(EnvConfig("add", {"n_digits": 3}))
    p = [BOS, *s(9, 5, 7), PLUS, *s(0, 8, 6), SEP]  # 957 + 86 = 1043: carries in every column
    assert add.answer(p) == s(1, 0, 4, 3)
    assert reward(add, p, s(1, 0, 4, 3) + [EOS]) == 1.0
    assert reward(add, p, s(0, 9, 4, 3) + [EOS]) == 3 / 5
    rev_add = make_env(EnvConfig("add", {"n_digits": 3, "reverse_answer": 1}))
    assert rev_add.answer(p) == s(3, 4, 0, 1)
    mod = make_env(EnvConfig("modadd", {"modulus": 23}))
    p = [BOS, *s(1, 9), PLUS, *s(0, 7), SEP]  # (19 + 7) mod 23 = 3
    assert mod.answer(p) == s(0, 3)
    for env in (rev, add, mod):
        for seed in range(50):
            assert len(env.prompt(seed)) == env.prompt_len


def test_registry_rejects_unknown_ids_and_params() -> None:
    with pytest.raises(UnknownEnv):
        make_env(EnvConfig("chess", {}))
    with pytest.raises(BadEnvParams) as err:
        make_env(EnvConfig("sort", {"n_mx": 6}))
    assert err.value.key == "n_mx"
    with pytest.raises(BadEnvParams):
        make_env(EnvConfig("sort", {"n_min": 7, "n_max": 6}))
    with pytest.raises(BadEnvParams):
        make_env(EnvConfig("add", {"n_digits": 0}))


def test_random_init_policy_rarely_solves_the_default_task() -> None:
    """The default demo environment is hard: a random-init policy solves < 1% exactly, reward < 0.3."""
    from client.config import DEFAULT_TASK

    env = make_env(DEFAULT_TASK.env)
    policy = build_policy(DEFAULT_TASK.model)
    batch = generate(policy, env, list(range(64)), 8, DEFAULT_TASK.sampler, 1, 0, "0x" + "ab" * 20)
    assert batch.n == 512
    assert float(exact(batch.rewards.numpy()).mean()) < 0.01
    assert float(batch.rewards.mean()) < 0.3
    again = rewards(env, batch.prompts.numpy(), batch.completions.numpy())
    assert torch.equal(torch.from_numpy(again), batch.rewards)

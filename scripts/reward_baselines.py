"""What an answer that ignores the prompt earns on each environment (issue 10): the lab's measurement.

`python -m scripts.reward_baselines [--json]` prints, per environment (default parameters), under
the reward rule of client/engine/envs.py and under the earlier rule (plain positional / multiset credit,
`legacy_reward`):

* best constant: the best fixed completion (symbols then EOS), the same for every prompt: for every
  length, the completion with the highest exact expected raw credit (`candidate_constants`:
  ascent over pair moves, which finds the exhaustive maximum on sort and reverse), then the best
  of those under the rule measured;
* random guess: symbols drawn uniformly from the environment's symbols (digits 0-9, or the sort
  alphabet), as many as the answer has (the format, which the prompt shows), then EOS.

A random guess that ignores the prompt is a mixture of fixed answers, so it never earns more
than the best of them: "best constant <= random guess" needs every fixed answer it can produce to
earn the same on average, which the chance-corrected rule makes true on add and modadd (0 for
every fixed answer). On sort and reverse the guess reads the answer's length from the prompt,
which no fixed answer can, and the rule keeps the best fixed answer below it.

Expectations are exact where the prompt distribution is small enough to enumerate (weighted by
the answer it determines, since rewards depend on the prompt only through its answer): `modadd`
(all m^2 operand pairs), `add` (one prompt per sum, weighted by its number of operand pairs),
`sort` (one prompt per multiset of items, multinomial weights). Random guessing is exact on
`modadd` (every digit string on every prompt) and averages 16 draws per prompt elsewhere (with a
standard error). `reverse` (8^4 + 8^5 + 8^6 item sequences) is scored on seeded prompts (with a
standard error); its candidates come from exact expectations, so there is no selection bias.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from math import factorial

import numpy as np

from concord.client.engine import envs
from concord.client.engine.config import EnvConfig
from concord.client.engine.envs import (
    BLANK,
    BOS,
    EOS,
    PAD,
    PLUS,
    REGISTRY,
    SEP,
    SYM0,
    AddEnv,
    Env,
    ModAddEnv,
    SortEnv,
    make_env,
)

Reward = Callable[[Env, list[int], list[int]], float]
Weighted = list[tuple[list[int], float]]  # (prompt, probability)


# ----------------------------------------------------------------------------- the rules compared


def new_reward(env: Env, prompt: list[int], completion: list[int]) -> float:
    return envs.reward(env, prompt, completion)


def legacy_reward(env: Env, prompt: list[int], completion: list[int]) -> float:
    """The rule before issue 10: matches / the longer length, blended with multiset credit for sort/reverse."""
    answer = env.answer(prompt)
    seq = list(completion)
    if EOS in seq:
        seq = seq[: seq.index(EOS) + 1]
    while seq and seq[-1] == PAD:
        seq.pop()
    target = answer + [EOS]
    longer = max(len(seq), len(target))
    positional = sum(a == b for a, b in zip(seq, target, strict=False)) / longer
    if not isinstance(env, SortEnv):
        return positional
    multiset = sum((Counter(seq) & Counter(target)).values()) / longer
    return ((100 - env.copy_credit) * positional + env.copy_credit * multiset) / 100


# ----------------------------------------------------------------------------- prompt distributions


def symbols(env: Env) -> list[int]:
    """The tokens an answer is written in."""
    return [SYM0 + v for v in range(env.alphabet if isinstance(env, SortEnv) else 10)]


def answer_lengths(env: Env) -> list[int]:
    return list(range(env.n_min, env.n_max + 1)) if isinstance(env, SortEnv) else [env.answer_len]


def exact_prompts(env: Env) -> Weighted | None:
    """Every answer the environment can ask for, as one prompt each with its exact probability
    (idealized uniform draws); None where that is too many to enumerate (reverse)."""
    if isinstance(env, ModAddEnv):
        m, w = env.modulus, env.width
        if m * m > 250_000:
            return None
        digits = lambda x: [SYM0 + int(c) for c in str(x).zfill(w)]  # noqa: E731
        return [([BOS, *digits(a), PLUS, *digits(b), SEP], 1 / (m * m)) for a in range(m) for b in range(m)]
    if isinstance(env, AddEnv):
        n, big = env.n_digits, 10**env.n_digits
        digits = lambda x: [SYM0 + int(c) for c in str(x).zfill(n)]  # noqa: E731
        out = []
        for s in range(2 * big - 1):
            a = min(s, big - 1)
            pairs = min(s, 2 * big - 2 - s) + 1  # (a, b) with a + b = s
            out.append(([BOS, *digits(a), PLUS, *digits(s - a), SEP], pairs / big**2))
        return out
    if type(env) is SortEnv and not env.distinct:
        out = []
        lengths = answer_lengths(env)
        for n in lengths:
            for items in itertools.combinations_with_replacement(range(env.alphabet), n):
                arrangements = factorial(n) // math.prod(factorial(k) for k in Counter(items).values())
                p = Fraction(arrangements, env.alphabet**n) / len(lengths)
                out.append(([BOS, *(SYM0 + v for v in items), *([BLANK] * (env.n_max - n)), SEP], float(p)))
        return out
    return None


def seeded_prompts(env: Env, count: int, start: int = 0) -> Weighted:
    return [(env.prompt(seed), 1 / count) for seed in range(start, start + count)]


# ----------------------------------------------------------------------------- the two baselines


def mean_reward(env: Env, prompts: Weighted, completion: list[int], rule: Reward) -> float:
    return sum(w * rule(env, p, completion) for p, w in prompts)


def candidate_constants(env: Env, starts: int = 4, seed: int = 0) -> list[list[int]]:
    """One fixed completion per length 1..answer_len + 1 (symbols, then EOS): the one with the highest
    exact expected raw credit b(c) (``env.baseline``) found by ascent over pair moves (any two
    positions to any two symbols, so swaps too) from ``starts`` starts, plus the bare EOS.

    Checked once against exhaustive search over every such completion (8^1 + ... + 8^7 on sort
    and reverse, ~3 minutes): the same maxima (sort `023567$` 0.4121, reverse 0.3473); on a small
    alphabet by tests/test_envs.py."""
    syms = symbols(env)
    rng = np.random.default_rng(seed)
    expected = lambda g: env.baseline(tuple(g) + (EOS,))  # noqa: E731
    out = [[EOS]]
    for length in range(1, max(answer_lengths(env)) + 2):
        best: tuple[list[int], float] | None = None
        for k in range(starts):
            guess = [syms[0]] * length if k == 0 else [syms[int(i)] for i in rng.integers(0, len(syms), length)]
            score, changed = expected(guess), True
            while changed:
                changed = False
                for t1, t2 in itertools.combinations_with_replacement(range(length), 2):
                    for s1, s2 in itertools.product(syms, syms if t2 != t1 else [None]):
                        trial = list(guess)
                        trial[t1] = s1
                        if s2 is not None:
                            trial[t2] = s2
                        value = expected(trial)
                        if value > score + 1e-12:
                            guess, score, changed = trial, value, True
            if best is None or score > best[1]:
                best = (guess, score)
        out.append(best[0] + [EOS])
    return out


def best_constant(env: Env, prompts: Weighted, rule: Reward) -> tuple[list[int], float]:
    """The best of ``candidate_constants`` under ``rule``, scored on ``prompts``, with its mean reward
    (on ties one of an answer's length, then the longest: a well-formed answer rather than the bare EOS)."""
    lengths = answer_lengths(env)
    scored = [(mean_reward(env, prompts, c, rule), c) for c in candidate_constants(env)]
    value, const = max(scored, key=lambda x: (round(x[0], 12), len(x[1]) - 1 in lengths, len(x[1])))
    return const, value


def random_guess(env: Env, prompts: Weighted, rule: Reward, draws: int = 16, seed: int = 0) -> tuple[float, float]:
    """(mean reward, standard error) of uniform random symbols of the answer's length, then EOS."""
    rng = np.random.default_rng(seed)
    syms = symbols(env)
    per_prompt = []
    for p, _ in prompts:
        n = len(env.answer(p))
        guesses = rng.integers(0, len(syms), size=(draws, n))
        per_prompt.append(np.mean([rule(env, p, [syms[k] for k in g] + [EOS]) for g in guesses]))
    weights = np.array([w for _, w in prompts])
    values = np.array(per_prompt)
    mean = float(np.dot(weights, values))
    se = float(np.sqrt(np.dot(weights, (values - mean) ** 2) / len(values)))
    return mean, se


def exact_random_guess(env: Env, prompts: Weighted, rule: Reward) -> float:
    """The exact mean reward of uniform random guessing: the average over every symbol string of the
    answer's length (feasible for short answers: modadd, add)."""
    syms = symbols(env)
    total = 0.0
    for p, w in prompts:
        n = len(env.answer(p))
        strings = list(itertools.product(syms, repeat=n))
        total += w * sum(rule(env, p, list(s) + [EOS]) for s in strings) / len(strings)
    return total


# ----------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class Baseline:
    env_id: str
    rule: str  # "chance-corrected" | "legacy"
    constant: str  # the best constant, rendered
    constant_reward: float
    constant_se: float  # 0 where exact
    random_reward: float
    random_se: float
    exact: bool

    def to_json(self) -> dict:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


def measure(env_id: str, rule_name: str, seeded: int = 4000) -> Baseline:
    from concord.client.engine.envs import render

    env = make_env(EnvConfig(env_id, {}))
    rule = new_reward if rule_name == "chance-corrected" else legacy_reward
    exact = exact_prompts(env)
    if exact is not None:
        const, value = best_constant(env, exact, rule)
        strings = len(symbols(env)) ** max(answer_lengths(env))
        if strings * len(exact) <= 200_000:  # modadd: every symbol string on every prompt
            rand, rand_se = exact_random_guess(env, exact, rule), 0.0
        else:
            rand, rand_se = random_guess(env, exact, rule)
        return Baseline(env_id, rule_name, render(const), value, 0.0, rand, rand_se, True)
    score = seeded_prompts(env, seeded)
    const, _ = best_constant(env, score, rule)  # candidates from exact expectations: no search on the sample
    values = np.array([rule(env, p, const) for p, _ in score])
    rand, rand_se = random_guess(env, score, rule)
    return Baseline(
        env_id,
        rule_name,
        render(const),
        float(values.mean()),
        float(values.std() / math.sqrt(len(values))),
        rand,
        rand_se,
        False,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.reward_baselines", description=__doc__.splitlines()[0])
    parser.add_argument("--seeded", type=int, default=4000, help="seeded prompts where not enumerated (reverse)")
    parser.add_argument("--json", action="store_true", help="one JSON line per row only")
    args = parser.parse_args(argv)
    rows = [
        measure(env_id, rule, args.seeded) for env_id in sorted(REGISTRY) for rule in ("legacy", "chance-corrected")
    ]
    for r in rows:
        if args.json:
            print(json.dumps(r.to_json()))
        else:
            pm = lambda se: f" +- {se:.4f}" if se else ""  # noqa: E731
            print(
                f"{r.env_id:8s} {r.rule:17s} best constant {r.constant:9s} {r.constant_reward:+.4f}{pm(r.constant_se)}"
                f"   random guess {r.random_reward:+.4f}{pm(r.random_se)}   {'exact' if r.exact else 'sampled'}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Verifiable environments: prompts from a seed, rewards as pure functions of (prompt, completion).

Shared vocabulary (every environment, every model): the special tokens below, then symbols
`SYM0 + k` (digits 0-9 are symbols 0-9). Each environment emits prompts of one fixed length
per parameter set (shorter items are filled with BLANK before SEP), so batches need no
left padding.

Raw credit: the completion is cut after its first EOS (EOS kept; with no EOS, trailing PAD is
dropped); the target is the answer followed by EOS. Positional credit = positions where the two
agree / the longer length. Sort and reverse blend in multiset credit (right symbols in any place,
`copy_credit` percent), which rewards copying the input before ordering it (without it GRPO
collapses onto one prompt-independent answer; see docs/LEARNING.md).

Reward rule (issue 10): the raw credit relative to what the same completion earns on a prompt it
did not read. With b(c) = E_p'[raw(p', c)], the raw credit of completion c averaged over the
environment's prompt distribution (exact, from the priors below: a pure function of c), and the
environment's chance share s,

    reward(p, c) = (raw(p, c) - s b(c)) / (1 - s b(c))        (s = 1: Cohen's kappa)

so a fixed completion c earns b(c) (1 - s) / (1 - s b(c)) on average: with s = 1 exactly 0,
whatever c is. A uniformly random guess (the answer's length, symbols drawn uniformly, then EOS) is a
mixture of fixed completions, so the best fixed answer never earns less than it unless every
well-formed fixed answer earns the same. Hence s = 1 for add and modadd, whose answers have one
length (a random guess there is a mixture of well-formed constants): every fixed answer, and
random guessing, earn exactly 0. Sort and reverse answers take their length from the prompt,
which a random guess of the right length reads and a constant cannot, so s = 1/2 keeps the best
constant below random guessing (measured: docs/LEARNING.md, `python -m scripts.reward_baselines`)
while leaving half of the prompt-independent credit that GRPO learns the answer's shape from
(with s = 1 the default task reached 0.56 in 30 rounds, exact 8%, instead of 0.85 / 42%).

Rewards lie in [-s b/(1 - s b), 1]; every reward is 1.0 iff the completion is exactly the answer
then EOS (for copy_credit < 100). The priors are exact fractions of the idealized prompt
distribution (uniform draws: the sha256 draws' modulo bias is below 1e-8), rounded once to a
float, so every validator computes the same bits.

Batches (`rewards`): the same rule with array operations over a whole batch, to the same bits as
`reward` row by row, because every float operation happens in the scalar path's order: credits
are exact integer ratios, the expected credits add position by position from 0 (as `sum` does),
the multiset baseline adds its per-symbol terms in order of first occurrence (as `Counter`
iterates) from tables of the same cached priors, and answers are computed once per distinct
prompt. tests/test_envs.py pins the equality on every environment.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from math import comb
from typing import Any, Protocol

import numpy as np

from concord.client.engine.config import EnvConfig

PAD, BOS, EOS, SEP, BLANK, PLUS = 0, 1, 2, 3, 4, 5
SYM0 = 8  # symbol k is token SYM0 + k
SPECIAL_NAMES = {PAD: "_", BOS: "^", EOS: "$", SEP: "=", BLANK: ".", PLUS: "+"}


class UnknownEnv(KeyError):
    def __init__(self, env_id: str):
        super().__init__(f"unknown environment {env_id!r}; known: {sorted(REGISTRY)}")
        self.env_id = env_id


class BadEnvParams(ValueError):
    def __init__(self, env_id: str, key: str, problem: str):
        super().__init__(f"{env_id}.{key}: {problem}")
        self.env_id, self.key, self.problem = env_id, key, problem


def draws(seed: int, count: int, bound: int) -> list[int]:
    """`count` integers in [0, bound) from sha256(seed, k): fixed forever, independent of numpy."""
    head = hashlib.sha256(b"concord.env.v1" + seed.to_bytes(32, "big"))  # the prefix every draw shares
    out = []
    for k in range(count):
        h = head.copy()
        h.update(k.to_bytes(4, "big"))
        out.append(int.from_bytes(h.digest()[:8], "big") % bound)
    return out


def positional_reward(completion: Sequence[int], answer: Sequence[int]) -> float:
    """The shared reward rule from the module docstring."""
    seq = _cut(completion)
    target = list(answer) + [EOS]
    matches = sum(a == b for a, b in zip(seq, target, strict=False))  # the longer one's tail scores 0
    return matches / max(len(seq), len(target))


def multiset_reward(completion: Sequence[int], answer: Sequence[int]) -> float:
    """Right symbols regardless of place: sum_v min(count_seq(v), count_target(v)) / the longer length.

    Same cut and EOS convention as positional_reward; 1.0 iff the completion is a permutation of
    the answer (with EOS last or anywhere)."""
    seq = _cut(completion)
    target = list(answer) + [EOS]
    common = Counter(seq) & Counter(target)
    return sum(common.values()) / max(len(seq), len(target))


def chance_corrected(raw: float, baseline: float) -> float:
    """(raw - baseline) / (1 - baseline): 1.0 stays 1.0, the baseline maps to 0 (module docstring)."""
    if raw == 1.0:
        return 1.0
    return (raw - baseline) / (1.0 - baseline)


def expected_positional(seq: list[int], target_len: int, prior: Callable[[int, int], float]) -> float:
    """E[positional_reward] of the cut completion ``seq`` over targets of ``target_len`` tokens (EOS
    included) whose position t holds token x with probability prior(t, x)."""
    matches = sum(prior(t, seq[t]) for t in range(min(len(seq), target_len)))
    return matches / max(len(seq), target_len)


def expected_multiset(seq: list[int], target_len: int, at_least: Callable[[int, int], float]) -> float:
    """E[multiset_reward] of ``seq`` over targets of ``target_len`` tokens ending in one EOS whose symbols
    hold token v at least j times with probability at_least(v, j): sum_v E[min(count_seq(v), count_target(v))]."""
    common = sum(sum(at_least(v, j) for j in range(1, k + 1)) for v, k in Counter(seq).items() if v != EOS)
    return (common + (EOS in seq)) / max(len(seq), target_len)


def _cut(completion: Sequence[int]) -> list[int]:
    seq = list(completion)
    if EOS in seq:
        return seq[: seq.index(EOS) + 1]
    while seq and seq[-1] == PAD:
        seq.pop()
    return seq


def render(tokens: Sequence[int]) -> str:
    """Human-readable tokens: symbols as base-36 characters, specials as punctuation."""
    chars = "0123456789abcdefghijklmnopqrstuvwxyz"
    return "".join(SPECIAL_NAMES.get(int(t), chars[int(t) - SYM0] if int(t) >= SYM0 else "?") for t in tokens)


class Env(Protocol):
    # Read-only members: the environments are frozen dataclasses.
    @property
    def env_id(self) -> str: ...

    @property
    def chance_share(self) -> float:
        """Share of the baseline that `reward` subtracts (module docstring)."""
        ...

    @property
    def prompt_len(self) -> int: ...

    @property
    def answer_len(self) -> int:
        """Longest answer in tokens, EOS excluded (max_new_tokens must be > this)."""
        ...

    def prompt(self, seed: int) -> list[int]: ...

    def answer(self, prompt: Sequence[int]) -> list[int]: ...

    def raw_reward(self, prompt: Sequence[int], completion: Sequence[int]) -> float:
        """Partial credit in [0, 1] before the chance correction; 1.0 iff exact."""
        ...

    def baseline(self, completion: tuple[int, ...]) -> float:
        """E over the environment's prompts of raw_reward(prompt, completion), exactly."""
        ...

    def raw_credits(self, seq: Ragged, target: Ragged) -> np.ndarray:
        """raw_reward of every row [N] float64 (cut completions, answers + EOS), to the same bits."""
        ...

    def baselines(self, seq: Ragged) -> np.ndarray:
        """baseline of every row's cut completion [N] float64, to the same bits."""
        ...


def _symbols(prompt: Sequence[int]) -> list[int]:
    """Symbol values between BOS and SEP, BLANK fill dropped."""
    return [t - SYM0 for t in prompt[1:-1] if t >= SYM0]


@dataclass(frozen=True)
class SortEnv:
    """Sort n_min..n_max symbols (repeats allowed) drawn from an alphabet of `alphabet`, ascending."""

    n_min: int = 4
    n_max: int = 6
    alphabet: int = 8
    copy_credit: int = 50  # percent of the reward from multiset_reward (right symbols, any place)
    distinct: int = 0  # 1: the items are distinct (drawn without replacement), so no counting of repeats
    env_id: str = "sort"
    chance_share = 0.5  # of the baseline subtracted (module docstring)

    @property
    def prompt_len(self) -> int:
        return self.n_max + 2  # BOS, items, BLANK fill, SEP

    @property
    def answer_len(self) -> int:
        return self.n_max

    def prompt(self, seed: int) -> list[int]:
        r = draws(seed, self.n_max + 1, 1 << 30)
        n = self.n_min + r[0] % (self.n_max - self.n_min + 1)
        if self.distinct:  # partial Fisher-Yates over the alphabet
            pool = list(range(self.alphabet))
            for k in range(n):
                pick = k + r[1 + k] % (self.alphabet - k)
                pool[k], pool[pick] = pool[pick], pool[k]
            items = [SYM0 + v for v in pool[:n]]
        else:
            items = [SYM0 + v % self.alphabet for v in r[1 : n + 1]]
        return [BOS, *items, *([BLANK] * (self.n_max - n)), SEP]

    def answer(self, prompt: Sequence[int]) -> list[int]:
        return [SYM0 + v for v in sorted(_symbols(prompt))]

    def raw_reward(self, prompt: Sequence[int], completion: Sequence[int]) -> float:
        """Blend of positional and multiset credit; 1.0 iff exact (both terms are then 1)."""
        answer = self.answer(prompt)
        w = self.copy_credit
        return ((100 - w) * positional_reward(completion, answer) + w * multiset_reward(completion, answer)) / 100

    def raw_credits(self, seq: Ragged, target: Ragged) -> np.ndarray:
        w = self.copy_credit
        out: np.ndarray = ((100 - w) * positional_credits(seq, target) + w * multiset_credits(seq, target)) / 100
        return out

    def baselines(self, seq: Ragged) -> np.ndarray:
        w = self.copy_credit
        lengths = range(self.n_min, self.n_max + 1)
        total = np.zeros(len(seq.lengths))  # [N] float64, summed over n in order as `baseline` does
        firsts = first_counts(seq)
        for n, (prior, counts) in zip(lengths, self._baseline_tables(seq.tokens.shape[1]), strict=True):
            total += (
                (100 - w) * expected_positional_rows(seq, n + 1, prior)
                + w * expected_multiset_rows(seq, n + 1, counts, firsts)
            ) / 100
        out: np.ndarray = total / len(lengths)
        return out

    @functools.lru_cache(maxsize=64)
    def _baseline_tables(self, width: int) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
        """Per n in n_min..n_max: the positional prior [n + 1, SYM0 + alphabet] (row n: EOS) and the
        running sums of count_prior [SYM0 + alphabet, width + 1] (column k: sum over j = 1..k)."""
        vocab = SYM0 + self.alphabet
        out = []
        for n in range(self.n_min, self.n_max + 1):
            prior = [
                [self.position_prior(n, t, x) if t < n else float(x == EOS) for x in range(vocab)] for t in range(n + 1)
            ]
            out.append(
                (
                    _frozen(prior),
                    _frozen([_running(functools.partial(self.count_prior, n, v), width) for v in range(vocab)]),
                )
            )
        return tuple(out)

    @functools.lru_cache(maxsize=65536)
    def baseline(self, completion: tuple[int, ...]) -> float:
        """E over prompts of raw_reward(prompt, completion): n uniform on n_min..n_max, then the items."""
        seq, w = _cut(completion), self.copy_credit
        total = 0.0
        lengths = range(self.n_min, self.n_max + 1)
        for n in lengths:
            prior = lambda t, x, n=n: self.position_prior(n, t, x) if t < n else float(x == EOS)  # noqa: E731
            at_least = lambda v, j, n=n: self.count_prior(n, v, j)  # noqa: E731
            total += (
                (100 - w) * expected_positional(seq, n + 1, prior) + w * expected_multiset(seq, n + 1, at_least)
            ) / 100
        return total / len(lengths)

    @functools.lru_cache(maxsize=4096)
    def position_prior(self, n: int, t: int, token: int) -> float:
        """P(position t of the answer holds ``token``) over prompts with n items: the t-th smallest
        of n uniform draws (with repetition), or of a uniform n-subset when ``distinct``."""
        s, a = token - SYM0, self.alphabet
        if not 0 <= s < a or not 0 <= t < n:
            return 0.0
        if self.distinct:
            return float(Fraction(comb(s, t) * comb(a - 1 - s, n - 1 - t), comb(a, n)))
        return float(_order_stat_cdf(n, t, Fraction(s + 1, a)) - _order_stat_cdf(n, t, Fraction(s, a)))

    @functools.lru_cache(maxsize=4096)
    def count_prior(self, n: int, token: int, j: int) -> float:
        """P(the n items hold ``token`` at least j times) (j >= 1)."""
        if not 0 <= token - SYM0 < self.alphabet:
            return 0.0
        if self.distinct:
            return float(Fraction(n, self.alphabet)) if j == 1 else 0.0
        return float(_binomial_tail(n, j, Fraction(1, self.alphabet)))


@dataclass(frozen=True)
class ReverseEnv(SortEnv):
    """Write the n_min..n_max symbols in reverse order."""

    env_id: str = "reverse"

    def answer(self, prompt: Sequence[int]) -> list[int]:
        return [SYM0 + v for v in reversed(_symbols(prompt))]

    @functools.lru_cache(maxsize=4096)
    def position_prior(self, n: int, t: int, token: int) -> float:
        """Every item, so every answer position, is uniform over the alphabet (also when distinct)."""
        return 1.0 / self.alphabet if 0 <= token - SYM0 < self.alphabet and 0 <= t < n else 0.0


@dataclass(frozen=True)
class AddEnv:
    """Add two n_digits decimal numbers (carries included); answer has n_digits+1 digits, MSB first."""

    n_digits: int = 3
    reverse_answer: int = 0  # 1: least significant digit first (easier to learn left to right)
    env_id: str = "add"
    chance_share = 1.0  # of the baseline subtracted (module docstring)

    @property
    def prompt_len(self) -> int:
        return 2 * self.n_digits + 3  # BOS a PLUS b SEP

    @property
    def answer_len(self) -> int:
        return self.n_digits + 1

    def prompt(self, seed: int) -> list[int]:
        d = [v % 10 for v in draws(seed, 2 * self.n_digits, 1 << 30)]
        a, b = d[: self.n_digits], d[self.n_digits :]
        return [BOS, *(SYM0 + x for x in a), PLUS, *(SYM0 + x for x in b), SEP]

    def answer(self, prompt: Sequence[int]) -> list[int]:
        n = self.n_digits
        a = int("".join(str(t - SYM0) for t in prompt[1 : 1 + n]))
        b = int("".join(str(t - SYM0) for t in prompt[2 + n : 2 + 2 * n]))
        digits = [SYM0 + int(c) for c in str(a + b).zfill(n + 1)]
        return digits[::-1] if self.reverse_answer else digits

    def raw_reward(self, prompt: Sequence[int], completion: Sequence[int]) -> float:
        return positional_reward(completion, self.answer(prompt))

    def raw_credits(self, seq: Ragged, target: Ragged) -> np.ndarray:
        return positional_credits(seq, target)

    def baselines(self, seq: Ragged) -> np.ndarray:
        return expected_positional_rows(seq, self.answer_len + 1, self._prior_table())

    @functools.lru_cache(maxsize=1)
    def _prior_table(self) -> np.ndarray:
        return prior_table(self.position_prior, self.answer_len)

    @functools.lru_cache(maxsize=65536)
    def baseline(self, completion: tuple[int, ...]) -> float:
        """E over prompts of raw_reward(prompt, completion)."""
        n = self.answer_len
        return expected_positional(
            _cut(completion), n + 1, lambda t, x: self.position_prior(t, x) if t < n else float(x == EOS)
        )

    @functools.lru_cache(maxsize=4096)
    def position_prior(self, t: int, token: int) -> float:
        """The carry digit (a + b >= N, N = 10**n_digits) is 1 with P = (N - 1) / 2N; every lower
        digit of the sum is uniform (a's digit is uniform whatever b's digit and the carry)."""
        d, n = token - SYM0, self.n_digits
        if not 0 <= d <= 9 or not 0 <= t <= n:
            return 0.0
        if t != (n if self.reverse_answer else 0):
            return 0.1
        big = 10**n
        p_one = Fraction(big - 1, 2 * big)
        return float({0: 1 - p_one, 1: p_one}.get(d, Fraction(0)))


@dataclass(frozen=True)
class ModAddEnv:
    """(a + b) mod modulus, operands and answer as fixed-width decimal digits."""

    modulus: int = 23
    env_id: str = "modadd"
    chance_share = 1.0  # of the baseline subtracted (module docstring)

    @property
    def width(self) -> int:
        return len(str(self.modulus - 1))

    @property
    def prompt_len(self) -> int:
        return 2 * self.width + 3

    @property
    def answer_len(self) -> int:
        return self.width

    def _digits(self, x: int) -> list[int]:
        return [SYM0 + int(c) for c in str(x).zfill(self.width)]

    def prompt(self, seed: int) -> list[int]:
        a, b = (v % self.modulus for v in draws(seed, 2, 1 << 30))
        return [BOS, *self._digits(a), PLUS, *self._digits(b), SEP]

    def answer(self, prompt: Sequence[int]) -> list[int]:
        w = self.width
        a = int("".join(str(t - SYM0) for t in prompt[1 : 1 + w]))
        b = int("".join(str(t - SYM0) for t in prompt[2 + w : 2 + 2 * w]))
        return self._digits((a + b) % self.modulus)

    def raw_reward(self, prompt: Sequence[int], completion: Sequence[int]) -> float:
        return positional_reward(completion, self.answer(prompt))

    def raw_credits(self, seq: Ragged, target: Ragged) -> np.ndarray:
        return positional_credits(seq, target)

    def baselines(self, seq: Ragged) -> np.ndarray:
        return expected_positional_rows(seq, self.width + 1, self._prior_table())

    @functools.lru_cache(maxsize=1)
    def _prior_table(self) -> np.ndarray:
        return prior_table(self.position_prior, self.width)

    @functools.lru_cache(maxsize=65536)
    def baseline(self, completion: tuple[int, ...]) -> float:
        """E over prompts of raw_reward(prompt, completion)."""
        w = self.width
        return expected_positional(
            _cut(completion), w + 1, lambda t, x: self.position_prior(t, x) if t < w else float(x == EOS)
        )

    @functools.lru_cache(maxsize=4096)
    def position_prior(self, t: int, token: int) -> float:
        """(a + b) mod m is uniform on [0, m): the share of those numbers with digit d at place t."""
        d, w, m = token - SYM0, self.width, self.modulus
        if not 0 <= d <= 9 or not 0 <= t < w:
            return 0.0
        place = 10 ** (w - 1 - t)
        count = (m // (10 * place)) * place + min(max(m % (10 * place) - d * place, 0), place)
        return float(Fraction(count, m))


def _binomial_tail(n: int, k: int, p: Fraction) -> Fraction:
    """P(Binomial(n, p) >= k), exactly."""
    return sum((comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(max(k, 0), n + 1)), Fraction(0))


def _order_stat_cdf(n: int, t: int, p: Fraction) -> Fraction:
    """P(the t-th smallest (0-based) of n iid draws is in a set of probability p) = P(Bin(n, p) >= t + 1)."""
    return _binomial_tail(n, t + 1, p)


def _check_sort(p: dict[str, int], env_id: str) -> None:
    if not 1 <= p.get("n_min", 4) <= p.get("n_max", 6):
        raise BadEnvParams(env_id, "n_min", f"need 1 <= n_min <= n_max, got {p}")
    if not 2 <= p.get("alphabet", 8) <= 24:
        raise BadEnvParams(env_id, "alphabet", f"must be in [2, 24], got {p.get('alphabet')}")
    if p.get("distinct", 0) and p.get("n_max", 6) > p.get("alphabet", 8):
        raise BadEnvParams(env_id, "distinct", f"n_max > alphabet cannot be distinct: {p}")
    if not 0 <= p.get("copy_credit", 50) <= 100:
        raise BadEnvParams(env_id, "copy_credit", f"must be in [0, 100], got {p.get('copy_credit')}")


def _check_add(p: dict[str, int], env_id: str) -> None:
    if not 1 <= p.get("n_digits", 3) <= 8:
        raise BadEnvParams(env_id, "n_digits", f"must be in [1, 8], got {p.get('n_digits')}")


def _check_mod(p: dict[str, int], env_id: str) -> None:
    if not 2 <= p.get("modulus", 23) <= 10**6:
        raise BadEnvParams(env_id, "modulus", f"must be in [2, 1e6], got {p.get('modulus')}")


class EnvClass(Protocol):
    """An environment's class: a frozen dataclass whose fields (env_id aside) are its int parameters."""

    __dataclass_fields__: dict[str, dataclasses.Field[Any]]

    def __call__(self, *args: Any, **kwargs: Any) -> Env: ...  # make_env passes the int params by keyword


REGISTRY: dict[str, tuple[EnvClass, Callable[[dict[str, int], str], None]]] = {
    "sort": (SortEnv, _check_sort),
    "reverse": (ReverseEnv, _check_sort),
    "add": (AddEnv, _check_add),
    "modadd": (ModAddEnv, _check_mod),
}


def make_env(cfg: EnvConfig) -> Env:
    """The environment an EnvConfig names, its parameters validated."""
    if cfg.env_id not in REGISTRY:
        raise UnknownEnv(cfg.env_id)
    cls, check = REGISTRY[cfg.env_id]
    known = {f for f in cls.__dataclass_fields__ if f != "env_id"}
    for key, value in cfg.params.items():
        if key not in known:
            raise BadEnvParams(cfg.env_id, key, f"unknown parameter (known: {sorted(known)})")
        if type(value) is not int:
            raise BadEnvParams(cfg.env_id, key, f"expected int, got {value!r}")
    check(dict(cfg.params), cfg.env_id)
    return cls(**cfg.params)


def reward(env: Env, prompt: Sequence[int], completion: Sequence[int]) -> float:
    """Reward of one completion: a pure function of the token lists (validators recompute it);
    1.0 iff the completion is exactly answer + EOS; chance-corrected (module docstring), so a fixed
    completion earns no more than random guessing."""
    prompt, completion = [int(t) for t in prompt], [int(t) for t in completion]
    return chance_corrected(env.raw_reward(prompt, completion), env.chance_share * env.baseline(tuple(completion)))


def rewards(env: Env, prompts: np.ndarray, completions: np.ndarray) -> np.ndarray:
    """Rewards [N] float64 for prompts [N, P] and completions [N, C] (int arrays or tensors): `reward`
    of every row, computed for the batch at once (module docstring, "Batches"); inputs the batched
    path does not take (not 2-D integer arrays of one row count, tokens outside [0, MAX_TOKEN))
    go row by row."""
    prompts, completions = np.asarray(prompts), np.asarray(completions)
    batchable = (
        prompts.ndim == 2
        and completions.ndim == 2
        and len(prompts) == len(completions) > 0
        and prompts.shape[1] > 0
        and np.issubdtype(prompts.dtype, np.integer)
        and np.issubdtype(completions.dtype, np.integer)
        and 0 <= int(completions.min(initial=0))
        and int(completions.max(initial=0)) < MAX_TOKEN
    )
    if not batchable:
        return _rewards_by_row(env, prompts, completions)
    tokens = completions.astype(np.int64)
    seq = Ragged(tokens, cut_lengths(tokens))
    raw = env.raw_credits(seq, answer_rows(env, prompts))
    base = env.chance_share * env.baselines(seq)  # [N], as `reward` scales it
    if bool((1.0 - base == 0).any()):  # chance_corrected divides by zero there: the scalar path raises
        return _rewards_by_row(env, prompts, completions)
    out: np.ndarray = np.where(raw == 1.0, 1.0, (raw - base) / (1.0 - base))
    return out


def _rewards_by_row(env: Env, prompts: np.ndarray, completions: np.ndarray) -> np.ndarray:
    return np.array(
        [reward(env, p.tolist(), c.tolist()) for p, c in zip(prompts, completions, strict=True)], dtype=np.float64
    )


# ----------------------------------------------------------------------------- batched credit
MAX_TOKEN = 1 << 16  # token ids the batched path takes (it counts tokens in arrays this wide)


@dataclass(frozen=True)
class Ragged:
    """Token rows of different lengths, padded: row n is tokens[n, :lengths[n]]."""

    tokens: np.ndarray  # [N, C] int64
    lengths: np.ndarray  # [N] int64


def cut_lengths(completions: np.ndarray) -> np.ndarray:
    """len(_cut(row)) of every row [N]: up to and including the first EOS, else without trailing PAD."""
    n, c = completions.shape
    is_eos = completions == EOS
    non_pad = completions != PAD
    last = np.where(non_pad.any(1), c - non_pad[:, ::-1].argmax(1), 0)
    out: np.ndarray = np.where(is_eos.any(1), is_eos.argmax(1) + 1, last).astype(np.int64)
    return out


def answer_rows(env: Env, prompts: np.ndarray) -> Ragged:
    """env.answer(prompt) + [EOS] of every row, computed once per distinct prompt (padded with -1)."""
    distinct, inverse = np.unique(prompts, axis=0, return_inverse=True)
    answers = [env.answer([int(t) for t in row]) + [EOS] for row in distinct]
    tokens = np.full((len(answers), max(len(a) for a in answers)), -1, dtype=np.int64)
    for u, a in enumerate(answers):
        tokens[u, : len(a)] = a
    lengths = np.array([len(a) for a in answers], dtype=np.int64)
    inverse = inverse.reshape(-1)
    return Ragged(tokens[inverse], lengths[inverse])


def positional_credits(seq: Ragged, target: Ragged) -> np.ndarray:
    """positional_reward of every row [N]: matching positions / the longer length."""
    both = np.minimum(seq.lengths, target.lengths)
    matches = np.zeros(len(both), dtype=np.int64)
    for t in range(min(seq.tokens.shape[1], target.tokens.shape[1])):
        matches += (t < both) & (seq.tokens[:, t] == target.tokens[:, t])
    out: np.ndarray = matches / np.maximum(seq.lengths, target.lengths)
    return out


def multiset_credits(seq: Ragged, target: Ragged) -> np.ndarray:
    """multiset_reward of every row [N]: sum over tokens of the smaller count / the longer length."""
    n = len(seq.lengths)
    width = int(max(seq.tokens.max(initial=0), target.tokens.max(initial=0))) + 1
    rows = np.arange(n)

    def counts(r: Ragged) -> np.ndarray:  # [N, width] occurrences of each token in each row
        out = np.zeros((n, width), dtype=np.int64)
        for t in range(r.tokens.shape[1]):
            inside = t < r.lengths
            out[rows[inside], r.tokens[inside, t]] += 1
        return out

    common = np.minimum(counts(seq), counts(target)).sum(1)
    credit: np.ndarray = common / np.maximum(seq.lengths, target.lengths)
    return credit


def expected_positional_rows(seq: Ragged, target_len: int, prior: np.ndarray) -> np.ndarray:
    """expected_positional of every row [N] with prior(t, x) = prior[t, x] (0 outside the table)."""
    tokens, lengths = seq.tokens, seq.lengths
    known = tokens < prior.shape[1]
    at = np.where(known, tokens, 0)
    matches = np.zeros(len(lengths))
    for t in range(min(tokens.shape[1], target_len)):  # position by position, as `sum` adds them
        matches = matches + np.where(known[:, t] & (t < lengths), prior[t, at[:, t]], 0.0)
    out: np.ndarray = matches / np.maximum(lengths, target_len)
    return out


def first_counts(seq: Ragged) -> np.ndarray:
    """[N, C] int64: at the first occurrence of each token other than EOS in a row's cut completion, how
    often the token occurs there; 0 at every other position (what expected_multiset_rows adds up)."""
    tokens, lengths = seq.tokens, seq.lengths
    c = tokens.shape[1]
    inside = np.arange(c)[None, :] < lengths[:, None]  # [N, C] positions of the cut completion
    out = np.zeros(tokens.shape, dtype=np.int64)
    for t in range(c):
        v = tokens[:, t : t + 1]  # [N, 1]
        first = inside[:, t] & ~(tokens[:, :t] == v).any(1) & (v[:, 0] != EOS)
        out[:, t] = np.where(first, ((tokens == v) & inside).sum(1), 0)
    return out


def expected_multiset_rows(seq: Ragged, target_len: int, running: np.ndarray, firsts: np.ndarray) -> np.ndarray:
    """expected_multiset of every row [N] with sum_{j <= k} at_least(v, j) = running[v, k] (0 outside
    the table), ``firsts`` = first_counts(seq): each token's term added at its first occurrence, in
    the order Counter iterates."""
    tokens, lengths = seq.tokens, seq.lengths
    known = (tokens < running.shape[0]) & (firsts > 0)
    at = np.where(known, tokens, 0)
    common = np.zeros(len(lengths))
    for t in range(tokens.shape[1]):
        common = common + np.where(known[:, t], running[at[:, t], firsts[:, t]], 0.0)
    has_eos = ((tokens == EOS) & (np.arange(tokens.shape[1])[None, :] < lengths[:, None])).any(1)
    out: np.ndarray = (common + has_eos) / np.maximum(lengths, target_len)
    return out


def _running(term: Callable[[int], float], width: int) -> list[float]:
    """[0, term(1), term(1) + term(2), ...] up to k = width, added in that order."""
    out, total = [0.0], 0.0
    for j in range(1, width + 1):
        total = total + term(j)
        out.append(total)
    return out


def prior_table(prior: Callable[[int, int], float], n: int) -> np.ndarray:
    """The prior `baseline` reads, as a table [n + 1, SYM0 + 10]: prior(t, token) for the n answer
    positions, then a last row for EOS."""
    return _frozen([[prior(t, x) if t < n else float(x == EOS) for x in range(SYM0 + 10)] for t in range(n + 1)])


def _frozen(rows: list[list[float]]) -> np.ndarray:
    table = np.array(rows, dtype=np.float64)
    table.setflags(write=False)
    return table


def exact(rewards_: np.ndarray) -> np.ndarray:
    """Exact solves [N] bool: by the reward rule, reward == 1.0 exactly."""
    solved: np.ndarray = np.asarray(rewards_) == 1.0
    return solved

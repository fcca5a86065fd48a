"""Verifiable environments: prompts from a seed, rewards as pure functions of (prompt, completion).

Shared vocabulary (every environment, every model): the special tokens below, then symbols
`SYM0 + k` (digits 0-9 are symbols 0-9). Each environment emits prompts of one fixed length
per parameter set (shorter items are filled with BLANK before SEP), so batches need no
left padding.

Reward rule: the completion is cut after its first EOS (EOS kept; with no EOS, trailing PAD
is dropped); the target is the answer followed by EOS. Positional credit = positions where
the two agree / the longer length. Sort and reverse blend in multiset credit (right symbols
in any place, `copy_credit` percent), which rewards copying the input before ordering it
(without it GRPO collapses onto one prompt-independent answer; see docs/LEARNING.md).
Every reward is 1.0 iff the completion is exactly the answer then EOS.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

import numpy as np

from client.config import EnvConfig

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
    out = []
    for k in range(count):
        h = hashlib.sha256(b"concord.env.v1" + seed.to_bytes(32, "big") + k.to_bytes(4, "big")).digest()
        out.append(int.from_bytes(h[:8], "big") % bound)
    return out


def positional_reward(completion: Sequence[int], answer: Sequence[int]) -> float:
    """The shared reward rule from the module docstring."""
    seq = _cut(completion)
    target = list(answer) + [EOS]
    matches = sum(a == b for a, b in zip(seq, target))
    return matches / max(len(seq), len(target))


def multiset_reward(completion: Sequence[int], answer: Sequence[int]) -> float:
    """Right symbols regardless of place: sum_v min(count_seq(v), count_target(v)) / the longer length.

    Same cut and EOS convention as positional_reward; 1.0 iff the completion is a permutation of
    the answer (with EOS last or anywhere)."""
    seq = _cut(completion)
    target = list(answer) + [EOS]
    common = Counter(seq) & Counter(target)
    return sum(common.values()) / max(len(seq), len(target))


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
    env_id: str

    @property
    def prompt_len(self) -> int: ...

    @property
    def answer_len(self) -> int:
        """Longest answer in tokens, EOS excluded (max_new_tokens must be > this)."""
        ...

    def prompt(self, seed: int) -> list[int]: ...

    def answer(self, prompt: Sequence[int]) -> list[int]: ...

    def reward(self, prompt: Sequence[int], completion: Sequence[int]) -> float:
        """Pure function of the token lists; 1.0 iff the completion is exactly answer + EOS."""
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

    def reward(self, prompt: Sequence[int], completion: Sequence[int]) -> float:
        """Blend of positional and multiset credit; 1.0 iff exact (both terms are then 1)."""
        answer = self.answer(prompt)
        w = self.copy_credit
        return ((100 - w) * positional_reward(completion, answer) + w * multiset_reward(completion, answer)) / 100


@dataclass(frozen=True)
class ReverseEnv(SortEnv):
    """Write the n_min..n_max symbols in reverse order."""

    env_id: str = "reverse"

    def answer(self, prompt: Sequence[int]) -> list[int]:
        return [SYM0 + v for v in reversed(_symbols(prompt))]


@dataclass(frozen=True)
class AddEnv:
    """Add two n_digits decimal numbers (carries included); answer has n_digits+1 digits, MSB first."""

    n_digits: int = 3
    reverse_answer: int = 0  # 1: least significant digit first (easier to learn left to right)
    env_id: str = "add"

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

    def reward(self, prompt: Sequence[int], completion: Sequence[int]) -> float:
        return positional_reward(completion, self.answer(prompt))


@dataclass(frozen=True)
class ModAddEnv:
    """(a + b) mod modulus, operands and answer as fixed-width decimal digits."""

    modulus: int = 23
    env_id: str = "modadd"

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

    def reward(self, prompt: Sequence[int], completion: Sequence[int]) -> float:
        return positional_reward(completion, self.answer(prompt))


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


REGISTRY: dict[str, tuple[type, Callable[[dict[str, int], str], None]]] = {
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
    """Reward of one completion: a pure function of the token lists (validators recompute it)."""
    return env.reward([int(t) for t in prompt], [int(t) for t in completion])


def rewards(env: Env, prompts: np.ndarray, completions: np.ndarray) -> np.ndarray:
    """Rewards [N] float64 for prompts [N, P] and completions [N, C] (int arrays or tensors)."""
    prompts, completions = np.asarray(prompts), np.asarray(completions)
    return np.array([reward(env, p.tolist(), c.tolist()) for p, c in zip(prompts, completions)], dtype=np.float64)


def exact(rewards_: np.ndarray) -> np.ndarray:
    """Exact solves [N] bool: by the reward rule, reward == 1.0 exactly."""
    return np.asarray(rewards_) == 1.0

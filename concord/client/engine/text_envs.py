"""Verifiable text environments over reasoning-gym: prompts from a seed, rewards from the dataset's scorer.

The text counterpart of client/engine/envs.py (which speaks token ids of a tiny vocabulary). An
environment is a reasoning-gym dataset (name + kwargs) and a prompt format:

    item(seed)      = reasoning_gym.create_dataset(dataset, seed=seed, size=1, **params)[0]
                      (question, answer, metadata): reasoning-gym draws item 0 from
                      random.Random(seed), so the item is a pure function of (dataset, params,
                      seed) for the pinned reasoning-gym version. The seed is the protocol's
                      prompt seed H(task, round, trainer, i) (client.engine.sampler.prompt_seed).
    messages(seed)  = [system_prompt] + few_shot worked examples (user question, assistant
                      answer; items of fixed seeds, the same for every prompt) + the question,
                      each question followed by the instruction
    prompt text     = the tokenizer's chat template over the messages (generation prompt added)
                      + answer_prefix (prefilled: the completion continues it)
    answer          = the completion's first non-empty line, after the completion is cut at its
                      first EOS and decoded without special tokens
    reward          = by the environment's reward rule (``reward``, the task's [env] reward):
      "exact" (default): 1.0 iff the answer equals the item's answer after this normalisation,
                      else 0.0 (``exact_reward``): runs of whitespace become one space and the ends
                      are stripped; when the item's answer is a number (an integer or decimal,
                      optional sign, digits grouped by commas in threes allowed), the answer must
                      be exactly one such number and equal it by value ("+05", "5.0" and "5." are 5;
                      "-5", "50", "5 or 6", "5 5 5", "5 apples" are not); otherwise the two strings
                      must be equal (case included). Wrong, ambiguous, several candidates: 0.
      "partial":      reasoning-gym's dataset.score_answer(answer, item(seed)) in [0, 1], which
                      pays part of the reward for a wrong answer that contains the right one
                      ("-5" for 5 earns 0.5): only as an explicit task option.
    Both are pure functions of (seed, completion): trainers and validators compute the same float.

A prompt longer than max_prompt_tokens raises ``PromptTooLong``; the environment refuses
max_prompt_tokens + max_new_tokens beyond the model's context.

Held-out problems (``heldout_problems``): training prompts and held-out problems come from disjoint
seed streams (the protocol's prompt seeds of real rounds and trainers vs a round and trainer no task
reaches: client.engine.lm_rollout.heldout_seeds), but two seeds can draw the same problem (chain_sum
with two one-digit terms has 200), so the held-out set is also deduplicated by content: it keeps a
held-out seed only when its question string is no training prompt's and no earlier held-out
problem's.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

Param = int | float | str | bool
RewardRule = Literal["exact", "partial"]
REWARD_RULES: tuple[RewardRule, ...] = ("exact", "partial")


class UnknownTextEnv(KeyError):
    def __init__(self, env_id: str):
        super().__init__(f"env_id: unknown text environment {env_id!r}; known: {sorted(TEXT_ENVS)}")
        self.env_id = env_id


class BadTextEnvParams(ValueError):
    """A text environment's field (``key``) that is out of range, unknown or of the wrong type."""

    def __init__(self, env_id: str, key: str, problem: str):
        super().__init__(f"{env_id}.{key}: {problem}")
        self.env_id, self.key, self.problem = env_id, key, problem


class PromptTooLong(ValueError):
    """A rendered prompt has more tokens than the environment's max_prompt_tokens."""

    def __init__(self, env_id: str, seed: int, limit: int, got: int):
        super().__init__(f"{env_id}.max_prompt_tokens: prompt of seed {seed} has {got} tokens, limit {limit}")
        self.env_id, self.seed, self.limit, self.got = env_id, seed, limit, got
        self.key = "max_prompt_tokens"


class BadCompletion(ValueError):
    """A completion whose token ids the tokenizer cannot decode."""

    def __init__(self, key: str, problem: str):
        super().__init__(f"{key}: {problem}")
        self.key, self.problem = key, problem


FEW_SHOT_DOMAIN = b"concord.text.fewshot.v1"


def few_shot_seed(k: int) -> int:
    """Seed of worked example k: its own domain, so it is no trainer's prompt seed in practice."""
    return int.from_bytes(hashlib.sha256(FEW_SHOT_DOMAIN + k.to_bytes(4, "big")).digest()[:8], "big")


@dataclass(frozen=True)
class TextEnv:
    """One verifiable text environment (module doc). Frozen: validated once by ``make_text_env``."""

    env_id: str
    dataset: str  # reasoning-gym dataset name
    params: tuple[tuple[str, Param], ...] = ()  # its kwargs, sorted by name (seed and size are ours)
    system_prompt: str = ""  # "" = the chat template's own default
    instruction: str = ""  # appended to every question after a blank line
    few_shot: int = 0  # worked examples before the question
    answer_prefix: str = ""  # prefilled at the start of the assistant turn
    max_prompt_tokens: int = 256
    max_new_tokens: int = 16
    reward: RewardRule = "exact"  # module doc: exact by default, reasoning-gym's partial credit on request

    def _dataset(self, seed: int) -> Any:
        import reasoning_gym

        return reasoning_gym.create_dataset(self.dataset, seed=seed, size=1, **dict(self.params))

    def item(self, seed: int) -> dict[str, Any]:
        """The dataset entry of ``seed``: question, answer, metadata."""
        entry: dict[str, Any] = self._dataset(seed)[0]
        return entry

    def question(self, entry: Mapping[str, Any]) -> str:
        q = str(entry["question"]).strip()
        return f"{q}\n\n{self.instruction}" if self.instruction else q

    def messages(self, seed: int) -> list[dict[str, str]]:
        """Chat messages of prompt ``seed`` (module doc), before the chat template."""
        out = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        for k in range(self.few_shot):
            shot = self.item(few_shot_seed(k))
            out.append({"role": "user", "content": self.question(shot)})
            out.append({"role": "assistant", "content": f"{self.answer_prefix}{shot['answer']}"})
        out.append({"role": "user", "content": self.question(self.item(seed))})
        return out

    def prompt_text(self, tokenizer: Any, seed: int) -> str:
        """The rendered prompt: chat template + generation prompt + answer prefix."""
        rendered = tokenizer.apply_chat_template(self.messages(seed), tokenize=False, add_generation_prompt=True)
        return f"{rendered}{self.answer_prefix}"

    def prompt_ids(self, tokenizer: Any, seed: int) -> list[int]:
        """Token ids of the rendered prompt (the template carries the special tokens itself)."""
        ids: list[int] = tokenizer(self.prompt_text(tokenizer, seed), add_special_tokens=False)["input_ids"]
        if len(ids) > self.max_prompt_tokens:
            raise PromptTooLong(self.env_id, seed, self.max_prompt_tokens, len(ids))
        return ids

    def score(self, seed: int, completion: str) -> float:
        """Reward of a decoded completion of prompt ``seed`` under the environment's reward rule (module doc)."""
        ds = self._dataset(seed)
        answer = extract_answer(completion)
        if self.reward == "partial":
            return float(ds.score_answer(answer, ds[0]))
        return exact_reward(answer, str(ds[0]["answer"]))

    def exact(self, seed: int, completion: str) -> bool:
        """Whether a decoded completion of prompt ``seed`` is exactly right (the "exact" rule, whatever
        the environment's reward rule): what "accuracy" counts."""
        return exact_reward(extract_answer(completion), str(self.item(seed)["answer"])) == 1.0

    @property
    def metric(self) -> str:
        """What the mean reward is called: "accuracy" under the exact rule, "mean score" under partial credit."""
        return "accuracy" if self.reward == "exact" else "mean score"


class HeldOutExhausted(ValueError):
    """The held-out stream ran out before it gave ``wanted`` problems outside the training prompts."""

    def __init__(self, env_id: str, wanted: int, got: int, draws: int):
        super().__init__(
            f"{env_id}.heldout: {got} of {wanted} problems outside the training prompts and distinct "
            f"in {draws} held-out draws (the task's problem space is too small for this held-out set)"
        )
        self.env_id, self.wanted, self.got, self.draws = env_id, wanted, got, draws


@dataclass(frozen=True)
class HeldOut:
    """A held-out set disjoint from the training prompts by content (module doc)."""

    seeds: tuple[int, ...]  # held-out prompt seeds, in stream order, their questions pairwise distinct
    skipped_training: int  # held-out draws dropped because a training prompt asks the same question
    skipped_duplicate: int  # held-out draws dropped because an earlier held-out problem asks it


def heldout_problems(env: TextEnv, stream: Iterable[int], n: int, training: Iterable[int]) -> HeldOut:
    """The first ``n`` seeds of the held-out ``stream`` whose question is no question of the
    ``training`` seeds and no earlier kept one's (module doc); ``HeldOutExhausted`` when the stream
    ends first."""
    train = {str(env.item(seed)["question"]) for seed in training}
    seen: set[str] = set()
    kept: list[int] = []
    skipped_training = skipped_duplicate = draws = 0
    for seed in stream:
        if len(kept) == n:
            break
        draws += 1
        question = str(env.item(seed)["question"])
        if question in train:
            skipped_training += 1
        elif question in seen:
            skipped_duplicate += 1
        else:
            seen.add(question)
            kept.append(seed)
    if len(kept) < n:
        raise HeldOutExhausted(env.env_id, n, len(kept), draws)
    return HeldOut(tuple(kept), skipped_training, skipped_duplicate)


def extract_answer(completion: str) -> str:
    """The completion's first non-empty line, stripped ('' when there is none)."""
    for line in completion.splitlines():
        if line.strip():
            return line.strip()
    return ""


_NUMBER = re.compile(r"[+-]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d*)?|[+-]?\.\d+")


def normalise_answer(text: str) -> str:
    """Runs of whitespace as one space, ends stripped."""
    return " ".join(text.split())


def parse_number(text: str) -> Decimal | None:
    """The value of ``text`` when all of it is one integer or decimal (optional sign, comma-grouped
    thousands, no exponent), else None."""
    if not _NUMBER.fullmatch(text):
        return None
    return Decimal(text.replace(",", ""))


def exact_reward(answer: str, oracle: str) -> float:
    """The "exact" rule (module doc): 1.0 iff ``answer`` is the oracle's answer after normalisation,
    compared by value when the oracle is a number, else 0.0."""
    got, want = normalise_answer(answer), normalise_answer(oracle)
    want_number = parse_number(want)
    if want_number is None:
        return 1.0 if got == want else 0.0
    got_number = parse_number(got)
    return 1.0 if got_number is not None and got_number == want_number else 0.0


def decode_completion(tokenizer: Any, ids: Sequence[int]) -> str:
    """Completion ids cut at the first EOS, decoded without special tokens; ids outside the
    vocabulary raise ``BadCompletion`` (nothing is guessed)."""
    ids = [int(t) for t in ids]
    vocab = len(tokenizer)
    bad = [t for t in ids if not 0 <= t < vocab]
    if bad:
        raise BadCompletion("completion", f"token ids outside the vocabulary [0, {vocab}): {bad[:5]}")
    eos = tokenizer.eos_token_id
    if eos in ids:
        ids = ids[: ids.index(eos)]
    text: str = tokenizer.decode(ids, skip_special_tokens=True)
    return text


# Named environments (docs/LM.md: the base model's accuracy on each, and why the default is what it is).
SYSTEM_SHORT = "Reply with only the final answer."
ANSWER_PREFIX = "Answer: "


def _env(env_id: str, dataset: str, max_new_tokens: int = 16, max_prompt_tokens: int = 256, **params: Param) -> TextEnv:
    """A named environment in the format measured best (docs/LM.md): a short system prompt, one
    worked example and the answer prefix prefilled."""
    return TextEnv(
        env_id,
        dataset,
        tuple(sorted(params.items())),
        system_prompt=SYSTEM_SHORT,
        few_shot=1,
        answer_prefix=ANSWER_PREFIX,
        max_prompt_tokens=max_prompt_tokens,
        max_new_tokens=max_new_tokens,
    )


TEXT_ENVS: dict[str, TextEnv] = {
    # The default (issue 24 item 1, docs/LM.md): 2-4 one-digit terms, 84,200 problems (200 + 4,000 +
    # 80,000), base exact accuracy 0.13-0.14, commonest answer 0.049.
    "chain_sum": _env("chain_sum", "chain_sum", min_terms=2, max_terms=4, min_digits=1, max_digits=1),
    "basic_arithmetic": _env(
        "basic_arithmetic", "basic_arithmetic", min_terms=2, max_terms=2, min_digits=1, max_digits=1
    ),
    "letter_counting": _env("letter_counting", "letter_counting", min_words=2, max_words=3),
    "spell_backward": _env("spell_backward", "spell_backward", min_word_len=3, max_word_len=4),
    "leg_counting": _env(
        "leg_counting", "leg_counting", min_animals=1, max_animals=1, min_instances=1, max_instances=3
    ),
    "number_sorting": _env(
        "number_sorting",
        "number_sorting",
        max_new_tokens=32,
        max_prompt_tokens=512,  # reasoning-gym's question carries a long format instruction
        min_numbers=3,
        max_numbers=3,
        min_decimals=0,
        max_decimals=0,
        min_value=0,
        max_value=99,
    ),
}
DEFAULT_TEXT_ENV = "chain_sum"

FORMAT_FIELDS = ("system_prompt", "instruction", "few_shot", "answer_prefix", "max_prompt_tokens", "max_new_tokens")


def make_text_env(
    env_id: str,
    params: Mapping[str, Param] | None = None,
    context: int | None = None,
    reward: str = "exact",
    **fmt: Any,
) -> TextEnv:
    """The named environment, its dataset kwargs updated by ``params``, its reward rule (REWARD_RULES)
    and its prompt format by ``fmt`` (FORMAT_FIELDS), validated: unknown names, wrong types and
    out-of-range values raise ``UnknownTextEnv`` / ``BadTextEnvParams`` naming the field. ``context``
    (the model's positions) bounds max_prompt_tokens + max_new_tokens."""
    import reasoning_gym

    if env_id not in TEXT_ENVS:
        raise UnknownTextEnv(env_id)
    base = TEXT_ENVS[env_id]
    merged = dict(base.params) | dict(params or {})
    for key in ("seed", "size"):
        if key in merged:
            raise BadTextEnvParams(env_id, key, "set by the protocol (the prompt seed), not by the task")
    for key, value in merged.items():
        if not isinstance(value, (int, float, str, bool)):
            raise BadTextEnvParams(env_id, key, f"expected int, float, str or bool, got {value!r}")
    try:
        reasoning_gym.create_dataset(base.dataset, seed=0, size=1, **merged)
    except TypeError as e:  # an unknown keyword of the dataset's config
        raise BadTextEnvParams(env_id, "params", f"{base.dataset}: {e}") from None
    except (AssertionError, ValueError) as e:  # the dataset config's own validate()
        raise BadTextEnvParams(env_id, "params", f"{base.dataset}: {e or 'invalid'} ({merged})") from None
    if reward not in REWARD_RULES:
        raise BadTextEnvParams(env_id, "reward", f"expected one of {list(REWARD_RULES)}, got {reward!r}")
    unknown = set(fmt) - set(FORMAT_FIELDS)
    if unknown:
        raise BadTextEnvParams(env_id, sorted(unknown)[0], f"unknown field (known: {list(FORMAT_FIELDS)})")
    env = dataclasses.replace(base, params=tuple(sorted(merged.items())), reward=reward, **fmt)
    _check_format(env, context)
    return env


def _check_format(env: TextEnv, context: int | None) -> None:
    for key in ("system_prompt", "instruction", "answer_prefix"):
        if not isinstance(getattr(env, key), str):
            raise BadTextEnvParams(env.env_id, key, f"expected str, got {getattr(env, key)!r}")
    for key, low in (("few_shot", 0), ("max_prompt_tokens", 1), ("max_new_tokens", 1)):
        value = getattr(env, key)
        if type(value) is not int or value < low:
            raise BadTextEnvParams(env.env_id, key, f"expected an int >= {low}, got {value!r}")
    if context is not None and env.max_prompt_tokens + env.max_new_tokens > context:
        raise BadTextEnvParams(
            env.env_id,
            "max_new_tokens",
            f"max_prompt_tokens {env.max_prompt_tokens} + max_new_tokens {env.max_new_tokens} > context {context}",
        )

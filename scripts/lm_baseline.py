"""The base LM's accuracy on candidate text tasks and answer formats (issue 12): the lab's measurement.

`python -m scripts.lm_baseline [--n 128] [--only LABEL,...] [--batch 32] [--threads 1]` loads the
shipped SmolLM2-135M-Instruct (client/engine/lm.py; cache under client.runtime.paths.models_dir()),
and for every option below samples one completion per prompt at temperature 1 (plain softmax
sampling: no top-k, no top-p) with KV-cache batched `model.generate`, for prompts of the protocol's
prompt seeds prompt_seed(task 0, round 0, trainer 0x..01, i), i < n. It prints a table (accuracy =
share of completions exactly right under the "exact" reward rule of client/engine/text_envs.py, with
a binomial standard error; mean score = mean of reasoning-gym's partial-credit scorer, the "partial"
rule) and one JSON line. Results are in docs/LM.md.

`--candidates` measures the default-task candidates of issue 24 instead (CANDIDATES, in the task's
own format): exact accuracy greedy and at the task's temperature with the library's batched
generator (LMRollouts.evaluate, the protocol's seeded sampler, adapters at their seed = the base
model), distinct question strings over --draws prompt seeds, and the commonest answer's share.

An option is a text environment (client/engine/text_envs.py) with dataset kwargs and a prompt
format: the naive format of the issue (the plain question + "Give only the final answer."), then a
short system prompt, one worked example (few-shot), a prefilled answer prefix, and easier
configurations or smaller answer spaces.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from concord.client.engine import lm, text_envs
from concord.client.engine.lm_rollout import LMRollouts, attach_adapters
from concord.client.engine.lm_task import DEFAULT_LM_TASK
from concord.client.engine.sampler import prompt_seed
from concord.client.runtime import paths

TRAINER = "0x" + "00" * 19 + "01"
NAIVE = "Give only the final answer."
SYSTEM = text_envs.SYSTEM_SHORT


@dataclass(frozen=True)
class Option:
    label: str
    env_id: str
    params: dict[str, Any] = field(default_factory=dict)
    fmt: dict[str, Any] = field(default_factory=dict)


def _fmt(system: bool = False, shot: bool = False, prefix: str = "", naive: bool = False, new: int = 16):
    return {
        "system_prompt": SYSTEM if system else "",
        "few_shot": int(shot),
        "answer_prefix": prefix,
        "instruction": NAIVE if naive else "",
        "max_new_tokens": new,
    }


CS2 = {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1}
BEST = {"system": True, "shot": True, "prefix": "Answer: "}
OPTIONS = [
    # chain_sum, two one-digit terms: the format ladder
    Option("chain_sum/naive", "chain_sum", CS2, _fmt(naive=True)),
    Option("chain_sum/system", "chain_sum", CS2, _fmt(system=True)),
    Option("chain_sum/shot", "chain_sum", CS2, _fmt(shot=True)),
    Option("chain_sum/prefix", "chain_sum", CS2, _fmt(prefix="Answer: ")),
    Option("chain_sum/system+shot", "chain_sum", CS2, _fmt(system=True, shot=True)),
    Option("chain_sum/system+shot+prefix", "chain_sum", CS2, _fmt(**BEST)),
    Option("chain_sum/3 terms/system+shot+prefix", "chain_sum", CS2 | {"max_terms": 3, "min_terms": 3}, _fmt(**BEST)),
    # other tasks with the full format, easier configurations and smaller answer spaces
    Option(
        "basic_arithmetic/2x1 digit/system+shot+prefix",
        "basic_arithmetic",
        {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1},
        _fmt(**BEST),
    ),
    Option("letter_counting/2-3 words/system+shot+prefix", "letter_counting", {}, _fmt(**BEST)),
    Option(
        "letter_counting/1 word/system+shot+prefix", "letter_counting", {"min_words": 1, "max_words": 1}, _fmt(**BEST)
    ),
    Option("spell_backward/3-4 letters/system+shot+prefix", "spell_backward", {}, _fmt(**BEST)),
    Option(
        "spell_backward/3 letters/system+shot+prefix",
        "spell_backward",
        {"min_word_len": 3, "max_word_len": 3},
        _fmt(**BEST),
    ),
    Option(
        "leg_counting/1 animal/system+shot+prefix",
        "leg_counting",
        {"min_animals": 1, "max_animals": 1, "min_instances": 1, "max_instances": 3},
        _fmt(**BEST),
    ),
    Option(
        "number_sorting/3 ints/system+shot+prefix",
        "number_sorting",
        {"min_numbers": 3, "max_numbers": 3, "min_decimals": 0, "max_decimals": 0, "min_value": 0, "max_value": 99},
        _fmt(**BEST, new=32),
    ),
]


def generate(model: Any, tokenizer: Any, prompts: list[list[int]], max_new_tokens: int, batch: int) -> list[list[int]]:
    """One completion per prompt: temperature-1 softmax sampling, KV cache, left-padded batches."""
    pad = tokenizer.pad_token_id
    out: list[list[int]] = []
    for s in range(0, len(prompts), batch):
        chunk = prompts[s : s + batch]
        width = max(len(p) for p in chunk)
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in chunk])  # [B, T]
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in chunk])  # [B, T]
        with torch.no_grad():
            gen = model.generate(
                input_ids=ids,
                attention_mask=mask,
                do_sample=True,
                temperature=1.0,
                top_k=0,
                top_p=1.0,
                max_new_tokens=max_new_tokens,
                pad_token_id=pad,
                eos_token_id=tokenizer.eos_token_id,
            )
        out += gen[:, width:].tolist()
    return out


def _length(completion: list[int], eos: int) -> int:
    """Tokens generated up to and including the first EOS (the rest is padding)."""
    return completion.index(eos) + 1 if eos in completion else len(completion)


def measure(loaded: lm.LoadedLM, option: Option, n: int, batch: int) -> dict[str, Any]:
    env = text_envs.make_text_env(option.env_id, option.params, context=loaded.context, **option.fmt)
    seeds = [prompt_seed(0, 0, TRAINER, i) for i in range(n)]
    prompts = [env.prompt_ids(loaded.tokenizer, s) for s in seeds]
    torch.manual_seed(0)
    t0 = time.perf_counter()
    completions = generate(loaded.model, loaded.tokenizer, prompts, env.max_new_tokens, batch)
    seconds = time.perf_counter() - t0
    texts = [text_envs.decode_completion(loaded.tokenizer, c) for c in completions]
    exact = [env.exact(s, t) for s, t in zip(seeds, texts, strict=True)]  # the exact rule, whatever env.reward is
    partial = dataclasses.replace(env, reward="partial")
    scores = [partial.score(s, t) for s, t in zip(seeds, texts, strict=True)]  # reasoning-gym's partial credit
    acc = sum(exact) / n
    answers = Counter(env.item(s)["answer"] for s in seeds)
    return {
        "label": option.label,
        "env": option.env_id,
        "params": dict(env.params),
        "n": n,
        "accuracy": acc,
        "stderr": math.sqrt(acc * (1 - acc) / n),
        "mean_score": sum(scores) / n,
        "best_constant": answers.most_common(1)[0][1] / n,  # accuracy of always giving the commonest answer
        "prompt_tokens": sum(map(len, prompts)) / n,
        "new_tokens": sum(_length(c, loaded.tokenizer.eos_token_id) for c in completions),
        "seconds": seconds,
        "example": {"prompt": env.prompt_text(loaded.tokenizer, seeds[0]), "completion": texts[0]},
    }


# Headroom candidates for the default task (issue 24 item 1), all in the task's own format
# (text_envs._env: system prompt, one worked example, "Answer: " prefix, max_new_tokens 16).
CANDIDATES = [
    Option("chain_sum/2 terms/1 digit (old default)", "chain_sum", CS2),
    Option("chain_sum/2-4 terms/1 digit", "chain_sum", CS2 | {"max_terms": 4}),
    Option("chain_sum/3-4 terms/1 digit", "chain_sum", CS2 | {"min_terms": 3, "max_terms": 4}),
    Option("chain_sum/2 terms/1-2 digits", "chain_sum", CS2 | {"max_digits": 2}),
    Option("basic_arithmetic/2 terms/1-2 digits", "basic_arithmetic", {"max_digits": 2}),
    Option("basic_arithmetic/3 terms/1 digit", "basic_arithmetic", {"min_terms": 3, "max_terms": 3}),
]


def distinct_problems(env: text_envs.TextEnv, draws: int) -> tuple[int, float]:
    """(distinct question strings, share of the commonest answer) over ``draws`` prompt seeds of
    the protocol's stream (task 0, rounds of 16 prompts of one trainer): the problem space the seeds
    reach and the accuracy of always giving the commonest answer."""
    questions: set[str] = set()
    answers: Counter[str] = Counter()
    for i in range(draws):
        entry = env.item(prompt_seed(0, i // 16, TRAINER, i % 16))
        questions.add(str(entry["question"]))
        answers[str(entry["answer"])] += 1
    return len(questions), answers.most_common(1)[0][1] / draws


def measure_candidate(loaded: lm.LoadedLM, model: Any, option: Option, n: int, draws: int) -> dict[str, Any]:
    """Exact accuracy of the base model (adapters at their seed: B = 0) on ``n`` problems, greedy and
    at the task's temperature, with the library's batched generator (LMRollouts.evaluate: shared
    prefix, one KV-cache decode loop, the protocol's seeded sampler), plus distinct_problems."""
    env = text_envs.make_text_env(option.env_id, option.params, context=loaded.context, **option.fmt)
    sampler = dataclasses.replace(DEFAULT_LM_TASK.sampler, max_new_tokens=env.max_new_tokens)
    rollouts = LMRollouts.for_env(model, loaded.tokenizer, env, sampler)
    seeds = [prompt_seed(0, 0, TRAINER, i) for i in range(n)]
    t0 = time.perf_counter()
    greedy = rollouts.evaluate(seeds, 0.0)
    sampled = rollouts.evaluate(seeds, sampler.temperature)
    seconds = time.perf_counter() - t0
    distinct, best_constant = distinct_problems(env, draws)
    return {
        "label": option.label,
        "params": dict(env.params),
        "n": n,
        "greedy": greedy,
        "sampled": sampled,
        "draws": draws,
        "distinct": distinct,
        "best_constant": best_constant,
        "seconds": seconds,
    }


def candidates(loaded: lm.LoadedLM, n: int, draws: int, wanted: list[str]) -> None:
    """The headroom table (docs/LM.md): one row and one JSON line per candidate."""
    model = attach_adapters(loaded.model, DEFAULT_LM_TASK.adapter)
    console = Console(width=160)
    table = Table(title=f"default-task candidates: exact accuracy on {n} problems, distinct over {draws} draws")
    for col in ("candidate", "greedy", f"T={DEFAULT_LM_TASK.sampler.temperature:g}", "best const", "distinct", "s"):
        table.add_column(col, justify="left" if col == "candidate" else "right")
    for option in CANDIDATES:
        if wanted and not any(option.label.startswith(w) for w in wanted):
            continue
        row = measure_candidate(loaded, model, option, n, draws)
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
        table.add_row(
            row["label"],
            f"{row['greedy']:.3f}",
            f"{row['sampled']:.3f}",
            f"{row['best_constant']:.3f}",
            f"{row['distinct']:,}",
            f"{row['seconds']:.0f}",
        )
    console.print(table)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=128, help="prompts per option")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: the measurement in docs/LM.md)")
    ap.add_argument("--only", default="", help="comma-separated labels (or label prefixes) to run")
    ap.add_argument("--examples", action="store_true", help="print one prompt and completion per option")
    ap.add_argument(
        "--candidates",
        action="store_true",
        help="the default-task candidates (CANDIDATES): greedy and sampled exact accuracy with the batched generator",
    )
    ap.add_argument("--draws", type=int, default=100_000, help="prompt seeds to count distinct problems over")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    t0 = time.perf_counter()
    loaded = lm.load(lm.SMOLLM2_135M, paths.models_dir())
    load_s = time.perf_counter() - t0
    wanted = [w for w in args.only.split(",") if w]
    if args.candidates:
        candidates(loaded, args.n, args.draws, wanted)
        return
    options = [o for o in OPTIONS if not wanted or any(o.label.startswith(w) for w in wanted)]

    console = Console(width=160)
    rows = []
    for option in options:
        row = measure(loaded, option, args.n, args.batch)
        rows.append(row)
        console.print(f"{row['label']}: {row['accuracy']:.3f} ({row['seconds']:.0f} s)")
        if args.examples:
            console.print(row["example"], markup=False)

    table = Table(title=f"SmolLM2-135M-Instruct base accuracy, temperature 1, n={args.n}, {args.threads} thread(s)")
    for col in ("option", "dataset params", "prompt tok", "new tok", "accuracy", "mean score", "best const", "s"):
        table.add_column(col, justify="left" if col in ("option", "dataset params") else "right")
    for r in rows:
        table.add_row(
            r["label"],
            ", ".join(f"{k}={v}" for k, v in r["params"].items()),
            f"{r['prompt_tokens']:.0f}",
            f"{r['new_tokens'] / r['n']:.1f}",
            f"{r['accuracy']:.3f} ± {r['stderr']:.3f}",
            f"{r['mean_score']:.3f}",
            f"{r['best_constant']:.3f}",
            f"{r['seconds']:.0f}",
        )
    console.print(table)
    summary = {
        "model": "SmolLM2-135M-Instruct.Q4_1",
        "params": loaded.params,
        "load_s": round(load_s, 2),
        "from_cache": loaded.from_cache,
        "threads": args.threads,
        "n": args.n,
        "options": {r["label"]: round(r["accuracy"], 4) for r in rows},
        "best_constant": {r["label"]: round(r["best_constant"], 4) for r in rows},
        "gen_tokens_per_s": round(sum(r["new_tokens"] for r in rows) / max(sum(r["seconds"] for r in rows), 1e-9), 1),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()

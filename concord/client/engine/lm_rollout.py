"""Rollouts of a pretrained LM with LoRA adapters: the protocol's seeded sampler on a shared prompt.

The real-LM counterpart of client/engine/rollout.py, producing the same ``RolloutBatch`` so that
proofs (client.engine.bundle.batch_proofs), rewards and claims work unchanged. Differences:

- One batch per GRPO group: the G samples of ONE prompt (rows n = sample j). The prompt is run
  once (batch 1) and its KV cache repeated G times; decoding then runs the G rows together. A
  validator recomputes the same way (``prefill_group``): the prompt once, then every completion
  token of the G rows in one forward on the repeated cache. Causal attention makes the prompt's
  states a function of the prompt alone, so sharing it changes no number a check compares.
- Logits only where they are used: the last prompt position and the completion positions
  (``[G, C, V]``, never ``[G, P+C, V]``: with a 49,152-token vocabulary the head over every prompt
  position would cost a third of the forward pass).
- EOS and PAD are the tokenizer's (SmolLM2: ``<|im_end|>``, id 2, for both): after a row's first
  EOS it holds PAD; ``mask`` is True up to and including the first EOS.
- Rewards: the text environment's reward rule (exact by default) on the completion cut at its
  first EOS and decoded (client.engine.text_envs): trainer and validator call the same function.

Layout of one group (G rows, P prompt tokens, C decode steps, D = hidden size, V = vocabulary):
  prompts [G, P] (identical rows), completions [G, C], hidden [G, P+C, D] float32 post-norm
  (position P+t = the state computed on completion token t), logprobs [G, C].

LoRA (PyPI peft): the trainable parameters are low-rank adapters on ``AdapterConfig.targets``;
their state (``adapter_state``: peft's own state-dict names, float32, sorted) is what a round's
delta, the training replay and the DiLoCo outer step work on. The base weights never change.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from concord.client.engine import sampler as smp
from concord.client.engine.config import TABLE, Int, SamplerConfig, Str
from concord.client.engine.model import StateMismatch
from concord.client.engine.rollout import RolloutBatch, completion_mask
from concord.client.engine.text_envs import TextEnv, decode_completion

# A few prompt-seed rounds no task reaches: the held-out set's prompts come from here.
HELDOUT_ROUND = (1 << 62) + 1
HELDOUT_TRAINER = "0x" + "00" * 20


class AdapterConfigError(ValueError):
    def __init__(self, key: str, problem: str):
        super().__init__(f"[adapter] {key}: {problem}")
        self.key, self.problem = key, problem


class PromptGroupMismatch(ValueError):
    """A group's rows do not share one prompt (a GRPO group is G samples of one prompt)."""

    def __init__(self, rows: list[int]):
        super().__init__(f"prompts: rows {rows[:5]} differ from row 0 (a group shares one prompt)")
        self.rows = rows


KNOWN_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class AdapterConfig:
    """LoRA adapters (peft): rank r, scale alpha / r, on the named linear layers of every block.

    seed: the initial A matrices are drawn from it (B starts at zero, so the initial model equals
    the base model); every node derives the same initial adapter from the task alone."""

    __pydantic_config__ = TABLE

    rank: Int = 8
    alpha: Int = 16
    targets: Str = "q_proj,v_proj"  # comma-separated names of linear layers (KNOWN_TARGETS)
    seed: Int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.rank <= 1024:
            raise AdapterConfigError("rank", f"must be in [1, 1024], got {self.rank}")
        if not 0 < self.alpha <= 10_000:
            raise AdapterConfigError("alpha", f"must be in [1, 10000], got {self.alpha}")
        names = self.target_list
        bad = [n for n in names if n not in KNOWN_TARGETS]
        if not names or bad or len(set(names)) != len(names):
            raise AdapterConfigError("targets", f"expected distinct names from {KNOWN_TARGETS}, got {self.targets!r}")
        if not 0 <= self.seed < 1 << 63:
            raise AdapterConfigError("seed", f"must be in [0, 2^63), got {self.seed}")

    @property
    def target_list(self) -> list[str]:
        return [t.strip() for t in self.targets.split(",") if t.strip()]


def attach_adapters(model: Any, cfg: AdapterConfig) -> Any:
    """The base causal LM wrapped by peft with fresh adapters (B = 0, A from cfg.seed), eval mode.

    The base weights are frozen (requires_grad False); only the adapters train."""
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, target_modules=cfg.target_list, lora_dropout=0.0, bias="none")
    with warnings.catch_warnings():  # peft calls a transformers API deprecated in v5 (a FutureWarning per wrap)
        warnings.filterwarnings("ignore", "`is_gradient_checkpointing` is deprecated", FutureWarning)
        peft_model = get_peft_model(model, lora)
    gen = torch.Generator().manual_seed(cfg.seed)
    with torch.no_grad():
        for name, p in sorted(peft_model.named_parameters()):
            if "lora_A" in name:  # Kaiming-uniform-like, from our own generator (peft's init uses the global RNG)
                bound = 1.0 / float(p.shape[1]) ** 0.5
                p.copy_((torch.rand(p.shape, generator=gen) * 2 - 1) * bound)
            elif "lora_B" in name:
                p.zero_()
    peft_model.eval()
    return peft_model


def adapter_state(peft_model: Any) -> dict[str, torch.Tensor]:
    """The adapters' tensors (peft's state-dict names), float32 CPU copies, sorted by name."""
    from peft import get_peft_model_state_dict

    state = get_peft_model_state_dict(peft_model)
    return {k: state[k].detach().to("cpu", torch.float32).clone() for k in sorted(state)}


def load_adapter_state(peft_model: Any, state: dict[str, torch.Tensor]) -> None:
    """Set the adapters to ``state``; names and shapes must match the model's exactly."""
    from peft import set_peft_model_state_dict

    current = adapter_state(peft_model)
    missing = [n for n in current if n not in state]
    unexpected = [n for n in state if n not in current]
    shape = [n for n in current if n in state and tuple(state[n].shape) != tuple(current[n].shape)]
    if missing or unexpected or shape:
        raise StateMismatch(missing, unexpected, shape)
    set_peft_model_state_dict(peft_model, {k: v.to(torch.float32) for k, v in state.items()})


def adapter_parameters(peft_model: Any) -> list[torch.nn.Parameter]:
    return [p for _, p in sorted(peft_model.named_parameters()) if p.requires_grad]


def _body(peft_model: Any) -> Any:
    """The decoder stack (embeddings, blocks with adapters, final norm): returns last_hidden_state."""
    return peft_model.base_model.model.model


def _head(peft_model: Any) -> Any:
    return peft_model.base_model.model.lm_head


def model_device(peft_model: Any) -> torch.device:
    device: torch.device = next(peft_model.parameters()).device
    return device


@dataclass(frozen=True)
class Prefix:
    """The KV cache of the tokens every prompt of the environment starts with (chat template, system
    prompt, worked example: ~55 of chain_sum's ~72 prompt tokens), computed once per adapters; a
    prompt then runs only its own suffix on a fork of it. Causal attention makes the prefix's states
    the same whatever follows, so this changes no number a check compares beyond float rounding."""

    ids: tuple[int, ...]
    hidden: torch.Tensor  # [1, L, D]
    cache: Any  # a transformers DynamicCache of batch 1, never extended in place (see fork_cache)


def fork_cache(cache: Any, repeats: int) -> Any:
    """A cache that continues ``cache`` for ``repeats`` x its batch rows; ``cache`` itself is left as it
    is (its layers are shallow-copied, and extending a layer replaces its tensors, never writes into
    them), so a prefix computed with gradients can be forked by every group of a training step."""
    fork = copy.copy(cache)
    fork.layers = [copy.copy(layer) for layer in cache.layers]
    fork.batch_repeat_interleave(repeats)
    return fork


def _cache_of(out: Any, given: Any) -> Any:
    found = getattr(out, "cache", None)
    if found is None:
        found = getattr(out, "past_key_values", None)
    return given if found is None else found


def prefix_forward(peft_model: Any, ids: tuple[int, ...]) -> Prefix:
    """The shared prefix run once (batch 1) under the current adapters; with grad when enabled."""
    from transformers import DynamicCache

    cache = DynamicCache()
    out = _body(peft_model)(input_ids=torch.tensor([ids], device=model_device(peft_model)), cache=cache, use_cache=True)
    return Prefix(tuple(ids), out.last_hidden_state, _cache_of(out, cache))


def prompt_forward(
    peft_model: Any, prompts: torch.Tensor, prefix: Prefix | None = None, repeats: int = 1
) -> tuple[torch.Tensor, Any]:
    """Prompts [B, P] of one length: (hidden [B, P, D], KV cache with every row repeated ``repeats``
    times). Rows that all start with ``prefix.ids`` run only their suffix on a fork of its cache."""
    from transformers import DynamicCache

    b, p = prompts.shape
    dev = model_device(peft_model)
    n = len(prefix.ids) if prefix is not None else 0
    if prefix is not None and p > n and bool((prompts[:, :n] == torch.tensor(prefix.ids)).all()):
        cache = fork_cache(prefix.cache, b)
        out = _body(peft_model)(input_ids=prompts[:, n:].to(dev), cache=cache, use_cache=True)
        hidden = torch.cat([prefix.hidden.expand(b, -1, -1), out.last_hidden_state], dim=1)
    else:
        cache = DynamicCache()
        out = _body(peft_model)(input_ids=prompts.to(dev), cache=cache, use_cache=True)
        hidden = out.last_hidden_state
    cache = _cache_of(out, cache)
    if repeats > 1:
        cache.batch_repeat_interleave(repeats)
    return hidden, cache


def group_states(
    peft_model: Any, prompts: torch.Tensor, completions: torch.Tensor, prefix: Prefix | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(hidden [G, P+C, D], hidden that predicts each completion token [G, C, D]) in one pass over the
    shared prompt and all completion tokens; gradients flow when enabled (training)."""
    bad = (prompts != prompts[:1]).any(dim=1).nonzero().flatten().tolist()
    if bad:
        raise PromptGroupMismatch(bad)
    g, c = completions.shape
    h_prompt, cache = prompt_forward(peft_model, prompts[:1], prefix, repeats=g)  # [1, P, D]
    out = _body(peft_model)(input_ids=completions.to(model_device(peft_model)), cache=cache, use_cache=True)
    h_comp = out.last_hidden_state  # [G, C, D]
    h_prompt_g = h_prompt.expand(g, -1, -1)
    hidden = torch.cat([h_prompt_g, h_comp], dim=1)  # [G, P+C, D]
    predictors = torch.cat([h_prompt_g[:, -1:], h_comp[:, : c - 1]], dim=1)  # [G, C, D]
    return hidden, predictors


def completion_logits(peft_model: Any, predictors: torch.Tensor) -> torch.Tensor:
    """Float32 logits [G, C, V] of the states that predict the completion tokens."""
    logits: torch.Tensor = _head(peft_model)(predictors).float()
    return logits


@torch.no_grad()
def prefill_group(
    peft_model: Any, batch: RolloutBatch, bf16: bool = False, prefix: Prefix | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """A validator's recomputation of one group: (hidden [G, P+C, D], completion logits [G, C, V]), float32 CPU.

    bf16: the matmuls under bf16 autocast on the model's device (the float32 re-check rule of
    validator.tiny_prefill.recompute_states applies to rows that fail under it)."""
    dev = model_device(peft_model)
    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
        hidden, predictors = group_states(peft_model, batch.prompts, batch.completions, prefix)
        logits = completion_logits(peft_model, predictors)
    return hidden.float().cpu(), logits.float().cpu()


def _noise(keys: np.ndarray, step: int, vocab: int, temperature: float) -> np.ndarray | None:
    """The sampler's Gumbel noise [N, V] of ``keys`` at ``step`` (None at temperature 0: no noise)."""
    return None if temperature == 0 else smp.gumbel_noise(keys, step, vocab)


def _choose(logits: torch.Tensor, noise: np.ndarray | None, temperature: float) -> torch.Tensor:
    """smp.choose with the noise computed beforehand: the same float64 scores, the same argmax."""
    scaled = logits.detach().to(torch.float64)
    if noise is None:
        return scaled.argmax(dim=-1)
    return (scaled / temperature + torch.from_numpy(noise)).argmax(dim=-1)


@torch.no_grad()
def _decode(
    peft_model: Any, h_last: torch.Tensor, cache: Any, keys: np.ndarray, sampler: SamplerConfig, eos: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Seeded KV-cache decoding of N rows from the prompt's last states h_last [N, D]:
    (completions [N, C], logprobs [N, C], states of the completion tokens [N, C, D]).

    Row n's token t is smp.choose(logits, keys[n], t, T) as always; what batching changes is only
    which rows share a forward. A row that has chosen EOS still runs that EOS through the body (its
    state is the last one a proof covers), then leaves the batch (its cache rows are dropped); its
    later positions hold EOS (= PAD), log-prob 0 and a zero state (bundle.batch_proofs covers
    positions up to lengths[n] only). C = the steps until every row stopped (or max_new_tokens).
    The Gumbel noise of step t+1 (a function of the keys and t alone) is computed on a second thread
    while the model runs step t's forward (numpy releases the GIL)."""
    head, body = _head(peft_model), _body(peft_model)
    n, d = h_last.shape
    width = sampler.max_new_tokens
    tokens = torch.full((n, width), eos, dtype=torch.int64)  # [N, C]
    logps = torch.zeros(n, width)  # [N, C]
    states = torch.zeros(n, width, d)  # [N, C, D]
    active = torch.arange(n)  # rows still decoding, in the cache's row order
    temp = sampler.temperature if sampler.temperature > 0 else 1.0
    steps = 0
    with ThreadPoolExecutor(max_workers=1) as pool:
        vocab = int(_head(peft_model).weight.shape[0])
        noise = pool.submit(_noise, keys, 0, vocab, sampler.temperature)
        logits = head(h_last).float().cpu()  # [n_active, V]
        for t in range(width):
            tok = _choose(logits, noise.result(), sampler.temperature)  # [n_active]
            logp = torch.log_softmax(logits / temp, dim=-1).gather(1, tok[:, None])[:, 0]
            tokens[active, t], logps[active, t] = tok, logp
            going = tok != eos if sampler.stop_at_eos else torch.ones_like(tok, dtype=torch.bool)
            last = t + 1 == width or not bool(going.any())
            if not last:  # the next step's rows: those still going
                noise = pool.submit(_noise, keys[active[going].numpy()], t + 1, vocab, sampler.temperature)
            out = body(input_ids=tok[:, None].to(h_last.device), cache=cache, use_cache=True)
            cache = _cache_of(out, cache)
            h = out.last_hidden_state[:, -1]  # [n_active, D] state of the token just chosen
            states[active, t] = h.float().cpu()
            steps = t + 1
            if last:
                break
            if not bool(going.all()):  # drop the rows that just stopped from the batch and its cache
                keep = going.nonzero().flatten()
                cache.batch_select_indices(keep.to(h.device))
                active, h = active[keep], h[keep.to(h.device)]
            logits = head(h).float().cpu()
    return tokens[:, :steps], logps[:, :steps], states[:, :steps]


@torch.no_grad()
def generate_groups(
    peft_model: Any,
    prompts: list[list[int]],
    keys: list[np.ndarray],
    sampler: SamplerConfig,
    eos: int,
    prefix: Prefix | None = None,
) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Seeded samples of several prompts at once, len(keys[i]) of prompt i: per prompt (completions
    [G, C_i], logprobs [G, C_i], hidden [G, P_i + C_i, D]). Prompts of one length run their suffixes
    in one forward (on a fork of ``prefix``'s cache), then all their rows decode together (_decode);
    each prompt's completions are cut to the steps its own rows needed."""
    out: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None] = [None] * len(prompts)
    by_len: dict[int, list[int]] = {}
    for i, p in enumerate(prompts):
        by_len.setdefault(len(p), []).append(i)
    for members in by_len.values():
        sizes = [len(keys[i]) for i in members]
        h_prompt, cache = prompt_forward(peft_model, torch.tensor([prompts[i] for i in members]), prefix)  # [B, P, D]
        rows = torch.tensor(sizes, device=h_prompt.device)
        cache.batch_repeat_interleave(rows)  # prompt b's cache rows, sizes[b] times each
        h_last = h_prompt[:, -1].repeat_interleave(rows, dim=0)  # [N, D]
        all_keys = np.concatenate([keys[i] for i in members])
        completions, logprobs, states = _decode(peft_model, h_last, cache, all_keys, sampler, eos)
        h_cpu = h_prompt.float().cpu()
        start = 0
        for b, (i, g) in enumerate(zip(members, sizes, strict=True)):
            c = completions[start : start + g]
            stopped = (c == eos).any(dim=1) if sampler.stop_at_eos else torch.zeros(g, dtype=torch.bool)
            width = c.shape[1] if not bool(stopped.all()) else int((c == eos).int().argmax(dim=1).max()) + 1
            hidden = torch.cat([h_cpu[b : b + 1].expand(g, -1, -1), states[start : start + g, :width]], dim=1)
            out[i] = (c[:, :width], logprobs[start : start + g, :width], hidden)
            start += g
    return [o for o in out if o is not None]


@torch.no_grad()
def generate_group(
    peft_model: Any, prompt: list[int], keys: np.ndarray, sampler: SamplerConfig, eos: int, prefix: Prefix | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """G = len(keys) seeded samples of one prompt: (completions [G, C], logprobs [G, C], hidden [G, P+C, D])."""
    return generate_groups(peft_model, [prompt], [keys], sampler, eos, prefix)[0]


@dataclass(frozen=True)
class LMRollouts:
    """What generation needs besides the adapters: the model (with adapters), tokenizer, text env, sampler."""

    model: Any  # peft-wrapped causal LM
    tokenizer: Any
    env: TextEnv
    sampler: SamplerConfig
    prefix_ids: tuple[int, ...] = ()  # what every prompt of env starts with (shared_prefix_ids); () = none

    @classmethod
    def for_env(cls, model: Any, tokenizer: Any, env: TextEnv, sampler: SamplerConfig) -> LMRollouts:
        """Rollouts of ``env`` that run its shared prompt prefix once per adapters (shared_prefix_ids)."""
        return cls(model, tokenizer, env, sampler, shared_prefix_ids(env, tokenizer))

    @torch.no_grad()
    def prefix(self) -> Prefix | None:
        """The shared prefix under the current adapters (recompute after every update)."""
        return prefix_forward(self.model, self.prefix_ids) if self.prefix_ids else None

    @property
    def eos(self) -> int:
        return int(self.tokenizer.eos_token_id)

    def rewards(self, seed: int, completions: torch.Tensor) -> torch.Tensor:
        """[G] float64: the environment's scorer on each decoded completion of prompt ``seed``."""
        texts = [decode_completion(self.tokenizer, row.tolist()) for row in completions]
        return torch.tensor([self.env.score(seed, t) for t in texts], dtype=torch.float64)

    def group(
        self, task_id: int, round_: int, trainer: str, i: int, group_size: int, prefix: Prefix | None = None
    ) -> RolloutBatch:
        """The G seeded samples of prompt i of (task, round, trainer) under the current adapters
        (``prefix``: this env's shared prefix under the same adapters, or None to run the whole prompt)."""
        return self.step_groups(task_id, round_, trainer, [i], group_size, prefix)[0]

    def step_groups(
        self,
        task_id: int,
        round_: int,
        trainer: str,
        indices: Sequence[int],
        group_size: int,
        prefix: Prefix | None = None,
    ) -> list[RolloutBatch]:
        """The groups of prompts ``indices`` (an inner step's), generated together (generate_groups: one
        decode loop over all their rows); each group is what ``group`` returns for its prompt, up to
        float rounding of the batched matmuls."""
        seeds = [smp.prompt_seed(task_id, round_, trainer, i) for i in indices]
        prompts = [self.env.prompt_ids(self.tokenizer, seed) for seed in seeds]
        keys = [smp.sample_keys(task_id, round_, trainer, [(i, j) for j in range(group_size)]) for i in indices]
        made = generate_groups(self.model, prompts, keys, self.sampler, self.eos, prefix)
        batches = []
        for i, seed, prompt, k, (completions, logprobs, hidden) in zip(
            indices, seeds, prompts, keys, made, strict=True
        ):
            mask = completion_mask(completions, self.sampler.stop_at_eos, self.eos)
            batches.append(
                RolloutBatch(
                    task_id=task_id,
                    round=round_,
                    trainer=trainer,
                    prompt_idx=torch.full((group_size,), i, dtype=torch.int64),
                    sample_idx=torch.arange(group_size),
                    keys=k,
                    prompts=torch.tensor([prompt] * group_size),
                    completions=completions,
                    mask=mask,
                    lengths=mask.sum(1),
                    rewards=self.rewards(seed, completions),
                    logprobs=logprobs,
                    hidden=hidden,
                    temperature=self.sampler.temperature,
                    group_size=group_size,
                )
            )
        return batches

    @torch.no_grad()
    def evaluate(self, seeds: list[int], temperature: float, batch: int = 64) -> float:
        """Mean reward of one sample per prompt ``seeds``: the accuracy under the exact reward rule,
        the mean score under partial credit (``env.metric``). Seeded: the same draw every call, so two
        adapters are compared on the same noise. Prompts of equal length are batched."""
        prompts = {s: self.env.prompt_ids(self.tokenizer, s) for s in seeds}
        by_len: dict[int, list[int]] = {}
        for s in seeds:
            by_len.setdefault(len(prompts[s]), []).append(s)
        sampler = SamplerConfig(temperature, self.sampler.max_new_tokens, self.sampler.stop_at_eos)
        prefix = self.prefix()
        total = 0.0
        for group in by_len.values():
            for a in range(0, len(group), batch):
                part = group[a : a + batch]
                hidden, cache = prompt_forward(self.model, torch.tensor([prompts[s] for s in part]), prefix)
                keys = np.array([s & ((1 << 64) - 1) for s in part], dtype=np.uint64)
                completions, _, _ = _decode(self.model, hidden[:, -1], cache, keys, sampler, self.eos)
                for s, row in zip(part, completions, strict=True):
                    total += self.env.score(s, decode_completion(self.tokenizer, row.tolist()))
        return total / len(seeds)


def shared_prefix_ids(env: TextEnv, tokenizer: Any, probes: int = 8) -> tuple[int, ...]:
    """The longest token prefix the prompts of ``probes`` seeds share, less its last token (a token at
    the boundary could merge differently for another question); prompt_forward still checks each prompt."""
    prompts = [env.prompt_ids(tokenizer, smp.prompt_seed(0, HELDOUT_ROUND, HELDOUT_TRAINER, i)) for i in range(probes)]
    n = 0
    while all(len(p) > n and p[n] == prompts[0][n] for p in prompts):
        n += 1
    return tuple(prompts[0][: max(0, n - 1)])


def heldout_seeds(task_id: int, n: int) -> list[int]:
    """Prompt seeds of the held-out set: a round and a trainer address no submission uses."""
    return [smp.prompt_seed(task_id, HELDOUT_ROUND, HELDOUT_TRAINER, i) for i in range(n)]

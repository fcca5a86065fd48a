"""Batched KV-cache generation with seeded sampling, and the one-pass prefill validators replay.

Layout of a batch of N = prompts x group_size rollouts (row n = local prompt a * G + sample j):
- `prompts` [N, P]: every prompt of an environment has the same length P (no left padding).
- `completions` [N, C]: C = number of decode steps taken (<= max_new_tokens; generation stops
  early once every row has emitted EOS). After a row's first EOS the row holds PAD.
- `mask` [N, C] bool: True up to and including the first EOS (everything when stop_at_eos is
  off or no EOS came); `lengths` [N] = mask.sum(1).
- `hidden` [N, P+C, D]: the final post-norm hidden state of every position of
  tokens = cat(prompts, completions). Position t's state is computed from tokens[0..t] and
  gives the logits that predict token t+1. Generation feeds the last sampled token once more
  so the final position has a state too; PAD positions hold the states the model computes
  on PAD input (causal, so they never change earlier positions). `prefill` on `tokens`
  recomputes the same states in one forward pass.
- completion token t was chosen from the logits at position P-1+t (see `completion_logits`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from concord.client.engine import sampler as smp
from concord.client.engine.config import SamplerConfig
from concord.client.engine.envs import EOS, PAD, Env, rewards
from concord.client.engine.model import Policy, PolicyOutput


class PromptLengthMismatch(ValueError):
    def __init__(self, lengths: set[int]):
        super().__init__(f"prompts in one batch must share one length, got {sorted(lengths)}")
        self.lengths = lengths


@dataclass(frozen=True)
class RolloutBatch:
    task_id: int
    round: int
    trainer: str
    prompt_idx: torch.Tensor  # [N] int64, global prompt index i within the round
    sample_idx: torch.Tensor  # [N] int64, sample index j within the group
    keys: np.ndarray  # [N] uint64, sampler keys of (task, round, trainer, i, j)
    prompts: torch.Tensor  # [N, P] int64
    completions: torch.Tensor  # [N, C] int64, PAD after the first EOS
    mask: torch.Tensor  # [N, C] bool
    lengths: torch.Tensor  # [N] int64
    rewards: torch.Tensor  # [N] float64
    logprobs: torch.Tensor  # [N, C] float32, log softmax(logits / T) of the chosen token (0 where masked)
    hidden: torch.Tensor  # [N, P+C, D] post-norm hidden states (model dtype)
    temperature: float
    group_size: int

    @property
    def tokens(self) -> torch.Tensor:
        return torch.cat([self.prompts, self.completions], dim=1)  # [N, P+C]

    @property
    def prompt_len(self) -> int:
        return self.prompts.shape[1]

    @property
    def n(self) -> int:
        return self.prompts.shape[0]

    @property
    def work_units(self) -> int:
        """Generated tokens that count (mask), the unit trainers are paid in."""
        return int(self.lengths.sum())


def completion_logits(logits: torch.Tensor, prompt_len: int, n_completion: int) -> torch.Tensor:
    """Logits [N, C, V] that chose completion tokens 0..C-1, from full-sequence logits [N, P+C, V]."""
    return logits[:, prompt_len - 1 : prompt_len - 1 + n_completion]


def completion_mask(completions: torch.Tensor, stop_at_eos: bool = True, eos: int = EOS) -> torch.Tensor:
    """mask [N, C]: True up to and including the first ``eos`` of each row (all True without stop);
    ``eos`` is the tiny vocabulary's EOS unless a tokenizer has its own (the LM's)."""
    if not stop_at_eos:
        return torch.ones_like(completions, dtype=torch.bool)
    is_eos = (completions == eos).long()
    before = is_eos.cumsum(dim=1) - is_eos  # EOS seen strictly before t
    return before == 0


@torch.no_grad()
def generate_tokens(
    policy: Policy, prompts: torch.Tensor, keys: np.ndarray, cfg: SamplerConfig
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """KV-cache generation -> (completions [N, C], logprobs [N, C], hidden [N, P+C, D])."""
    out, cache = policy.decode(prompts, None)
    hidden_parts = [out.hidden]
    logits = out.logits[:, -1]  # [N, V]
    done = torch.zeros(prompts.shape[0], dtype=torch.bool)
    tokens, logps = [], []
    for t in range(cfg.max_new_tokens):
        tok = smp.choose(logits, keys, t, cfg.temperature)  # [N]
        tok = torch.where(done, torch.full_like(tok, PAD), tok)
        temp = cfg.temperature if cfg.temperature > 0 else 1.0
        logp = torch.log_softmax(logits / temp, dim=-1).gather(1, tok[:, None])[:, 0]
        logps.append(torch.where(done, torch.zeros_like(logp), logp))
        tokens.append(tok)
        if cfg.stop_at_eos:
            done = done | (tok == EOS)
        out, cache = policy.decode(tok[:, None], cache)  # state of the token just chosen
        hidden_parts.append(out.hidden)
        logits = out.logits[:, -1]
        if bool(done.all()):
            break
    return torch.stack(tokens, 1), torch.stack(logps, 1), torch.cat(hidden_parts, 1)


def generate(
    policy: Policy,
    env: Env,
    prompt_indices: list[int],
    group_size: int,
    cfg: SamplerConfig,
    task_id: int,
    round_: int,
    trainer: str,
) -> RolloutBatch:
    """G seeded samples for each assigned prompt index i (prompt from prompt_seed(task, round, trainer, i))."""
    prompt_list = [env.prompt(smp.prompt_seed(task_id, round_, trainer, i)) for i in prompt_indices]
    if len({len(p) for p in prompt_list}) > 1:
        raise PromptLengthMismatch({len(p) for p in prompt_list})
    pairs = [(i, j) for i in prompt_indices for j in range(group_size)]
    prompts = torch.tensor([prompt_list[a] for a in range(len(prompt_indices)) for _ in range(group_size)])
    keys = smp.sample_keys(task_id, round_, trainer, pairs)
    completions, logprobs, hidden = generate_tokens(policy, prompts, keys, cfg)
    mask = completion_mask(completions, cfg.stop_at_eos)
    return RolloutBatch(
        task_id=task_id,
        round=round_,
        trainer=trainer,
        prompt_idx=torch.tensor([i for i, _ in pairs]),
        sample_idx=torch.tensor([j for _, j in pairs]),
        keys=keys,
        prompts=prompts,
        completions=completions,
        mask=mask,
        lengths=mask.sum(1),
        rewards=torch.from_numpy(rewards(env, prompts.numpy(), completions.numpy())),
        logprobs=logprobs,
        hidden=hidden,
        temperature=cfg.temperature,
        group_size=group_size,
    )


@torch.no_grad()
def prefill(policy: Policy, batch: RolloutBatch, bf16: bool = False) -> PolicyOutput:
    """One forward over batch.tokens [N, P+C]: logits [N, P+C, V] and hidden [N, P+C, D], as in generation.

    bf16: matmuls under bf16 autocast on the policy's device (outputs still returned as float32);
    which precision a validator uses is client.engine.precision's choice."""
    if not bf16:
        return policy(batch.tokens)
    with torch.autocast(next(policy.parameters()).device.type, dtype=torch.bfloat16):
        out = policy(batch.tokens)
    return PolicyOutput(out.logits.float(), out.hidden.float())

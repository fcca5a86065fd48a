"""Policies: one base class, two implementations (a plain-torch transformer and a transformers adapter).

Both return float32 logits and the final *post-norm* hidden states, the activations TOPLOC
commits to. Hidden state at position t is computed from tokens[0..t] and yields the logits
that predict token t+1, in a full forward and in KV-cache decoding alike.
"""

from __future__ import annotations

import copy
import math
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, TypeVar

import torch
import torch.nn as nn
import torch.nn.functional as F

from concord.client.engine.config import ModelConfig


class StateMismatch(ValueError):
    """A state dict does not have exactly the policy's parameter names and shapes."""

    def __init__(self, missing: list[str], unexpected: list[str], shape: list[str]):
        super().__init__(f"missing={missing[:5]} unexpected={unexpected[:5]} wrong_shape={shape[:5]}")
        self.missing, self.unexpected, self.shape = missing, unexpected, shape


class PolicyOutput(NamedTuple):
    logits: torch.Tensor  # [B, T, V] float32
    hidden: torch.Tensor  # [B, T, D] post final norm, model dtype


class Policy(nn.Module):
    """What rollout, proofs and GRPO need from a model; the two implementations below subclass it.

    The KV cache is each implementation's own (opaque to callers, hence ``Any``): pass back what
    ``decode`` returned."""

    config: ModelConfig

    def forward(self, tokens: torch.Tensor) -> PolicyOutput:
        """Full causal forward over tokens [B, T] (no cache)."""
        raise NotImplementedError

    def decode(self, tokens: torch.Tensor, cache: Any | None) -> tuple[PolicyOutput, Any]:
        """Forward tokens [B, S] that continue the sequences held in cache (None = empty)."""
        raise NotImplementedError

    if TYPE_CHECKING:
        # nn.Module.__call__ runs forward (with hooks); typed here so a call yields a PolicyOutput.
        def __call__(self, tokens: torch.Tensor) -> PolicyOutput: ...


P = TypeVar("P", bound=Policy)
# TinyTransformer's KV cache: (keys, values) [B, H, T, Dh] per block.
KVCache = list[tuple[torch.Tensor, torch.Tensor]]


# ----------------------------------------------------------------------------- tiny transformer


class _Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads = cfg.n_heads
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.fc = nn.Linear(cfg.d_model, cfg.ffn_dim)
        self.out = nn.Linear(cfg.ffn_dim, cfg.d_model)

    def forward(
        self, x: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor] | None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        B, S, D = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(D, dim=-1)  # [B, S, D] each
        q, k, v = (t.view(B, S, self.n_heads, D // self.n_heads).transpose(1, 2) for t in (q, k, v))
        if kv is not None:
            k = torch.cat([kv[0], k], dim=2)  # [B, H, past+S, Dh]
            v = torch.cat([kv[1], v], dim=2)
        past = k.shape[2] - S
        # query s (absolute position past+s) sees keys 0..past+s
        mask = torch.ones(S, past + S, dtype=torch.bool, device=x.device).tril(diagonal=past)
        att = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # [B, H, S, Dh]
        x = x + self.proj(att.transpose(1, 2).reshape(B, S, D))
        x = x + self.out(F.gelu(self.fc(self.ln2(x))))
        return x, (k, v)


class TinyTransformer(Policy):
    """Decoder-only pre-norm transformer with learned positions; init is a pure function of config.seed."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos_emb = nn.Embedding(cfg.max_seq_len, cfg.d_model)
        self.blocks = nn.ModuleList(_Block(cfg) for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self._init_weights(cfg.seed)

    @torch.no_grad()
    def _init_weights(self, seed: int) -> None:
        gen = torch.Generator().manual_seed(seed)
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                p.zero_()
            elif ".ln" in name or name.startswith("ln_f"):
                p.fill_(1.0)
            else:
                std = 0.02
                if name.endswith(("proj.weight", "out.weight")):
                    std = 0.02 / math.sqrt(2 * self.config.n_layers)  # GPT-2 residual scaling
                p.copy_(torch.randn(p.shape, generator=gen) * std)

    def _run(self, tokens: torch.Tensor, cache: KVCache | None) -> tuple[PolicyOutput, KVCache]:
        B, S = tokens.shape
        past = 0 if cache is None else cache[0][0].shape[2]
        if past + S > self.config.max_seq_len:
            raise SequenceTooLong(past + S, self.config.max_seq_len)
        pos = torch.arange(past, past + S, device=tokens.device)
        x = self.tok_emb(tokens) + self.pos_emb(pos)  # [B, S, D]
        new_cache: KVCache = []
        for i, block in enumerate(self.blocks):
            x, kv = block(x, None if cache is None else cache[i])
            new_cache.append(kv)
        hidden = self.ln_f(x)  # [B, S, D]
        return PolicyOutput(self.lm_head(hidden).float(), hidden), new_cache

    def forward(self, tokens: torch.Tensor) -> PolicyOutput:
        return self._run(tokens, None)[0]

    def decode(self, tokens: torch.Tensor, cache: KVCache | None) -> tuple[PolicyOutput, KVCache]:
        return self._run(tokens, cache)


class SequenceTooLong(ValueError):
    def __init__(self, length: int, limit: int):
        super().__init__(f"sequence of {length} tokens exceeds max_seq_len={limit}")
        self.length, self.limit = length, limit


# ----------------------------------------------------------------------------- transformers adapter


class CausalLM(Protocol):
    """What HFPolicy uses of a transformers causal LM (an nn.Module)."""

    @property
    def model(self) -> nn.Module:
        """The base model: embeddings, decoder layers and the final norm (returns last_hidden_state)."""
        ...

    @property
    def lm_head(self) -> nn.Module: ...


class HFPolicy(Policy):
    """Adapter over a transformers causal LM: hidden = the base model's last_hidden_state (post-norm)."""

    def __init__(self, hf_model: CausalLM, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        self.hf = hf_model

    def _run(self, tokens: torch.Tensor, cache: Any | None) -> tuple[PolicyOutput, Any]:
        from transformers import DynamicCache

        if cache is None:
            cache = DynamicCache()
        out = self.hf.model(input_ids=tokens, cache=cache, use_cache=True)
        hidden = out.last_hidden_state  # [B, S, D] after the final RMSNorm
        return PolicyOutput(self.hf.lm_head(hidden).float(), hidden), out.cache

    def forward(self, tokens: torch.Tensor) -> PolicyOutput:
        out = self.hf.model(input_ids=tokens, use_cache=False)
        hidden = out.last_hidden_state
        return PolicyOutput(self.hf.lm_head(hidden).float(), hidden)

    def decode(self, tokens: torch.Tensor, cache: Any | None) -> tuple[PolicyOutput, Any]:
        return self._run(tokens, cache)


def hf_config(cfg: ModelConfig) -> Any:
    """A transformers config for a small random Qwen2/Llama matching ModelConfig (untied head)."""
    from transformers import LlamaConfig, Qwen2Config

    cls = Qwen2Config if cfg.hf_arch == "qwen2" else LlamaConfig
    return cls(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.d_model,
        intermediate_size=cfg.ffn_dim,
        num_hidden_layers=cfg.n_layers,
        num_attention_heads=cfg.n_heads,
        num_key_value_heads=cfg.n_heads,
        max_position_embeddings=cfg.max_seq_len,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )


def build_hf_policy(cfg: ModelConfig) -> HFPolicy:
    """Random init from cfg.seed, or load from cfg.hf_path (a local directory; never the hub)."""
    from transformers import AutoModelForCausalLM

    if cfg.hf_path:
        model = AutoModelForCausalLM.from_pretrained(
            cfg.hf_path, local_files_only=True, attn_implementation="eager", dtype=torch.float32
        )
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            # transformers leaves from_config and PreTrainedModel.float unannotated
            model = AutoModelForCausalLM.from_config(  # type: ignore[no-untyped-call]
                hf_config(cfg), attn_implementation="eager"
            )
    model.float().eval()  # type: ignore[no-untyped-call]
    return HFPolicy(model, cfg)


# ----------------------------------------------------------------------------- helpers


def build_policy(cfg: ModelConfig) -> Policy:
    """The policy a task's ModelConfig describes, in eval mode (no dropout anywhere)."""
    policy = TinyTransformer(cfg) if cfg.kind == "tiny" else build_hf_policy(cfg)
    return policy.eval()


def policy_state(policy: nn.Module) -> dict[str, torch.Tensor]:
    """Flat ordered state: parameter name -> detached tensor, in registration order (ties dedup'd)."""
    return {name: p.detach() for name, p in policy.named_parameters()}


@torch.no_grad()
def load_policy_state(policy: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy `state` into the policy's parameters; names and shapes must match exactly."""
    params = dict(policy.named_parameters())
    missing = [n for n in params if n not in state]
    unexpected = [n for n in state if n not in params]
    shape = [n for n in params if n in state and tuple(state[n].shape) != tuple(params[n].shape)]
    if missing or unexpected or shape:
        raise StateMismatch(missing, unexpected, shape)
    for name, p in params.items():
        p.copy_(state[name])


def clone_policy(policy: P) -> P:
    """An independent copy (a trainer's working model; the base stays untouched)."""
    return copy.deepcopy(policy)


def param_count(policy: nn.Module) -> int:
    return sum(p.numel() for p in policy.parameters())

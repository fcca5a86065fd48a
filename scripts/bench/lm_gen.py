"""How fast the LM rollout generates, against Hugging Face ``generate()`` and the machine's matmul limit.

`python -m scripts.bench.lm_gen [--steps 2] [--threads 2] [--json]`, and `concord bench lm` (which calls
``measure_generation`` once before training and puts its keys in its JSON line). On one inner step's
batch of the task (prompts_per_step prompts x group_size samples, the prompts of task TASK_ID,
round 0, trainer 0x01..01, under the task's initial adapters), best of ``steps`` runs each:

- ``gen_tokens_per_s``: the rollout's generation (``LMRollouts.step_groups``: shared prefix, the
  step's prompt suffixes batched, one KV-cache decode loop over all rows, hidden states and
  seeded Gumbel-max sampling as the protocol needs them); counted tokens (up to and including EOS,
  the work units) per second. ``per_group_tokens_per_s``: the same rows one group at a time
  (``LMRollouts.group``), what the trainer did before decoding a step's groups together.
- ``hf_generate_tokens_per_s``: transformers' ``model.generate`` on the same batch (the same prompts,
  each repeated group_size times, plain softmax sampling at the task's temperature, the same
  max_new_tokens and EOS), counted the same way; it keeps no hidden states and no seeded noise.
- ``roofline_gflops``: the best FLOP/s of the model's own matmul shapes (one block's projections
  and the vocabulary head, ROOFLINE_ROWS tokens, float32: the precision generation runs in, the
  current torch thread count), i.e. what this CPU's matmuls reach when they are compute bound.
- ``gen_flops``: the FLOPs generation actually computed (``generation_flops``: the body's matmuls
  and attention on every position it ran, the head on every row it sampled from), and
  ``gen_roofline_fraction`` = gen_flops / generation time / roofline.
- with ``--bf16``: the bfloat16-weights candidate's keys (``bf16_candidate``: its tokens/s, rows with
  the same tokens as float32, rows a float32 validator would reject, the bf16 roofline). A measurement
  for a protocol decision, not what trainers run.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import time
from dataclasses import dataclass
from typing import Any

import torch

from concord.client.engine import sampler as smp
from concord.client.engine.lm_rollout import LMRollouts
from concord.client.engine.rollout import RolloutBatch
from scripts.bench.proofs import best_of

TASK_ID = 12
TRAINER = "0x" + "01" * 20
ROOFLINE_ROWS = 256  # tokens per timed matmul: compute bound for every shape of a 576-wide model
REPEATS = 3


@dataclass(frozen=True)
class Shapes:
    """What the FLOP count needs of a decoder-only model (a transformers LlamaConfig's fields)."""

    d_model: int
    kv_dim: int  # key/value width (grouped-query attention: kv heads x head dim)
    ffn_dim: int
    layers: int
    vocab: int

    @classmethod
    def of(cls, config: Any) -> Shapes:
        head_dim = config.hidden_size // config.num_attention_heads
        return cls(
            config.hidden_size,
            config.num_key_value_heads * head_dim,
            config.intermediate_size,
            config.num_hidden_layers,
            config.vocab_size,
        )

    @property
    def block_matmul_params(self) -> int:
        """Weights one token multiplies in one block: q, k, v, o, gate, up, down (adapters not counted)."""
        d = self.d_model
        return d * d + 2 * d * self.kv_dim + d * d + 3 * d * self.ffn_dim

    def token_flops(self, context: int) -> int:
        """One position through the body at ``context`` positions of attention: matmuls + QK^T and AV."""
        return self.layers * (2 * self.block_matmul_params + 4 * self.d_model * context)

    @property
    def head_flops(self) -> int:
        return 2 * self.d_model * self.vocab


def generation_flops(shapes: Shapes, prefix_len: int, groups: list[RolloutBatch]) -> int:
    """FLOPs generation computed for ``groups``: the shared prefix once, each prompt's suffix once, each
    row's decoded positions (lengths[n] of them: positions after its EOS are not run) and one head row
    per sampled token. Positions after the prefix attend to everything before them."""
    flops = sum(shapes.token_flops(t + 1) for t in range(prefix_len))
    for g in groups:
        p = g.prompt_len
        flops += sum(shapes.token_flops(t + 1) for t in range(prefix_len, p))
        for n in range(g.n):
            length = int(g.lengths[n])
            flops += sum(shapes.token_flops(p + t + 1) for t in range(length)) + length * shapes.head_flops
    return flops


def roofline_gflops(
    shapes: Shapes, rows: int = ROOFLINE_ROWS, repeats: int = REPEATS, dtype: torch.dtype = torch.float32
) -> float:
    """Best-of GFLOP/s of the model's matmul shapes ([rows, in] x [in, out] for one block's projections
    and the head) in ``dtype`` (float32: what generation runs in), no grad."""
    gen = torch.Generator().manual_seed(0)
    d = shapes.d_model
    dims = [(d, d), (d, shapes.kv_dim), (d, shapes.kv_dim), (d, d), (d, shapes.ffn_dim), (d, shapes.ffn_dim)]
    dims += [(shapes.ffn_dim, d), (d, shapes.vocab)]
    weights = [(torch.randn(o, i, generator=gen) / i**0.5).to(dtype) for i, o in dims]  # [out, in]
    inputs = {i: torch.randn(rows, i, generator=gen).to(dtype) for i, _ in dims}  # [rows, in]
    flops = sum(2 * rows * i * o for i, o in dims)
    best = float("inf")
    with torch.no_grad():
        for _ in range(repeats + 1):  # the first pass warms up
            t0 = time.perf_counter()
            for w in weights:
                torch.nn.functional.linear(inputs[w.shape[1]], w)
            best = min(best, time.perf_counter() - t0)
    return flops / best / 1e9


def counted_tokens(completions: torch.Tensor, eos: int) -> int:
    """Tokens up to and including each row's first EOS (the work units of a RolloutBatch)."""
    total = 0
    for row in completions.tolist():
        total += row.index(eos) + 1 if eos in row else len(row)
    return total


def hf_generate(rollouts: LMRollouts, prompts: list[list[int]], group_size: int) -> torch.Tensor:
    """transformers' generate on the rows the rollout decodes: every prompt group_size times (left-padded
    when lengths differ), softmax sampling at the task's temperature, no top-k or top-p. [N, C] new tokens."""
    tok = rollouts.tokenizer
    rows = [p for p in prompts for _ in range(group_size)]
    width = max(map(len, rows))
    ids = torch.tensor([[tok.pad_token_id] * (width - len(p)) + p for p in rows])  # [N, T]
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in rows])  # [N, T]
    temp = rollouts.sampler.temperature
    with torch.no_grad():
        out = rollouts.model.generate(
            input_ids=ids,
            attention_mask=mask,
            do_sample=temp > 0,
            temperature=temp if temp > 0 else None,
            top_k=0,
            top_p=1.0,
            max_new_tokens=rollouts.sampler.max_new_tokens,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
        )
    new: torch.Tensor = out[:, width:]
    return new


def bf16_candidate(
    rollouts: LMRollouts, idx: list[int], group_size: int, fp32_groups: list[RolloutBatch], repeats: int
) -> dict[str, float]:
    """A candidate, not the protocol: generation with bfloat16 weights (half the bytes every decode step
    reads). Its tokens/s on the same batch, how many rows sample the same tokens as float32 generation,
    and how many rows a float32 validator (TOPLOC on its prefill's states, sampling replay on its
    logits: validator.lm_checks' checks, full mode) would reject: an honest trainer's loss if it were
    allowed. Run after the float32 timing, so the two share the machine's load only approximately."""
    from concord.client.engine.bundle import batch_proofs
    from concord.client.engine.config import ValidationConfig
    from concord.client.engine.lm_rollout import prefill_group
    from concord.client.engine.rollout import completion_mask
    from concord.validator.rules import completion_gaps, toploc_rows

    half = dataclasses.replace(rollouts, model=copy.deepcopy(rollouts.model).to(torch.bfloat16))

    def generate() -> list[RolloutBatch]:
        return half.step_groups(TASK_ID, 0, TRAINER, idx, group_size, half.prefix())

    t, groups = best_of(repeats, generate)
    vcfg = ValidationConfig(prefill_precision="fp32")
    prefix = rollouts.prefix()
    same = rejected = rows = 0
    for g, ref in zip(groups, fp32_groups, strict=True):
        for n in range(g.n):
            a, b = g.completions[n, : int(g.lengths[n])], ref.completions[n, : int(ref.lengths[n])]
            same += int(a.shape == b.shape and bool((a == b).all()))
        hidden, logits = prefill_group(rollouts.model, g, prefix=prefix)
        toploc = toploc_rows(hidden, g, batch_proofs(g), g.lengths, vcfg)
        # the sampling replay: a counted token that is not the seeded choice beyond the near-tie tolerance
        counted = completion_mask(g.completions, rollouts.sampler.stop_at_eos, rollouts.eos)  # [N, C]
        gap = completion_gaps(logits, g.completions, g.keys, rollouts.sampler.temperature)  # [N, C]
        replay_bad = ((gap > vcfg.sampling_tie_tol) & counted).any(dim=1)  # [N]
        bad = {n for n, r in enumerate(toploc) if not r.ok} | {n for n in range(g.n) if bool(replay_bad[n])}
        rejected += len(bad)
        rows += g.n
    tokens = sum(int(g.lengths.sum()) for g in groups)
    return {
        "bf16_gen_batch_s": round(t, 4),
        "bf16_gen_tokens_per_s": round(tokens / t, 2),
        "bf16_rows": rows,
        "bf16_same_rows": same,
        "bf16_fp32_validator_rejected_rows": rejected,
        "bf16_roofline_gflops": round(roofline_gflops(Shapes.of(rollouts.model.config), dtype=torch.bfloat16), 2),
    }


def measure_generation(
    rollouts: LMRollouts,
    prompts_per_step: int,
    group_size: int,
    repeats: int = 2,
    per_group: bool = True,
    bf16: bool = False,
) -> dict[str, float]:
    """The module doc's keys, measured on one inner step's batch (best of ``repeats`` runs each)."""
    shapes = Shapes.of(rollouts.model.config)
    idx = list(range(prompts_per_step))
    prompts = [rollouts.env.prompt_ids(rollouts.tokenizer, smp.prompt_seed(TASK_ID, 0, TRAINER, i)) for i in idx]

    def batched() -> list[RolloutBatch]:
        return rollouts.step_groups(TASK_ID, 0, TRAINER, idx, group_size, rollouts.prefix())

    def one_by_one() -> list[RolloutBatch]:
        prefix = rollouts.prefix()
        return [rollouts.group(TASK_ID, 0, TRAINER, i, group_size, prefix) for i in idx]

    # batched and one group at a time interleaved, so a busy neighbour slows both alike
    gen_s, pg_s = float("inf"), float("inf")
    groups: list[RolloutBatch] = []
    pg_groups: list[RolloutBatch] = []
    for _ in range(repeats):
        t, groups = best_of(1, batched)
        gen_s = min(gen_s, t)
        if per_group:
            t, pg_groups = best_of(1, one_by_one)
            pg_s = min(pg_s, t)
    tokens = sum(int(g.lengths.sum()) for g in groups)
    flops = generation_flops(shapes, len(rollouts.prefix_ids), groups)
    torch.manual_seed(0)
    hf_s, hf_new = best_of(repeats, lambda: hf_generate(rollouts, prompts, group_size))
    roof = roofline_gflops(shapes)
    out = {
        "gen_rows": len(idx) * group_size,
        "gen_batch_s": round(gen_s, 4),
        "gen_batch_tokens": tokens,
        "gen_tokens_per_s": round(tokens / gen_s, 2),
        "gen_flops": flops,
        "gen_gflops": round(flops / gen_s / 1e9, 2),
        "hf_generate_s": round(hf_s, 4),
        "hf_generate_tokens": counted_tokens(hf_new, rollouts.eos),
        "hf_generate_tokens_per_s": round(counted_tokens(hf_new, rollouts.eos) / hf_s, 2),
        "roofline_gflops": round(roof, 2),
        "gen_roofline_fraction": round(flops / gen_s / 1e9 / roof, 4),
        "threads": torch.get_num_threads(),
    }
    if per_group:
        out["per_group_s"] = round(pg_s, 4)
        out["per_group_tokens_per_s"] = round(sum(int(g.lengths.sum()) for g in pg_groups) / pg_s, 2)
    if bf16:
        out |= bf16_candidate(rollouts, idx, group_size, groups, repeats)
    return out


def main(argv: list[str] | None = None) -> int:
    from concord.client.engine import lm
    from concord.client.engine.lm_rollout import attach_adapters
    from concord.client.engine.lm_task import DEFAULT_LM_TASK
    from concord.client.runtime import paths

    p = argparse.ArgumentParser(prog="python -m scripts.bench.lm_gen", description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=2, help="runs of each measurement (best of)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", action="store_true", help="print only the JSON line")
    p.add_argument("--bf16", action="store_true", help="also the bfloat16-weights candidate (bf16_candidate)")
    p.add_argument("--no-per-group", dest="per_group", action="store_false", help="skip the one-group-at-a-time runs")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    task = DEFAULT_LM_TASK
    loaded = lm.load(task.model_source, paths.models_dir())
    model = attach_adapters(loaded.model, task.adapter)
    rollouts = LMRollouts.for_env(model, loaded.tokenizer, task.env.make(context=loaded.context), task.sampler)
    result = measure_generation(
        rollouts, task.grpo.prompts_per_step, task.grpo.group_size, args.steps, args.per_group, args.bf16
    )
    result["load_avg_1m"] = round(os.getloadavg()[0], 2)
    if not args.json:
        for key, value in result.items():
            print(f"{key:28s} {value}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""`concord bench proofs`: what proofs and verification cost next to generation and training.

One batch of N rollouts of exactly T generated tokens (EOS does not stop them, so every row
has T counted tokens) from a random-init policy, CPU, deterministic kernels. Each phase is
timed `--repeats` times and the fastest run is reported (other processes share the CPU):
- generation_s: KV-cache generation with seeded sampling and hidden-state capture;
- proof_build_s: TOPLOC proofs of every rollout (prefill chunk + one per 32 tokens);
- precision: the verification prefill's first precision as a validator on this machine
  chooses it for this batch (client.engine.precision; `--prefill-precision auto|bf16|fp32`,
  default auto: native bf16 on CUDA, on CPU a measurement of the policy's forward at the batch's
  size class), with the reason and the time the choice took; and what it chooses for the rows a
  sampled check prefills (ceil(row_fraction x N) rows of this batch, the default row_fraction);
- verify_s: one prefill pass in the chosen precision (under bf16, rows that fail there are
  re-checked in float32, as validator.tiny_prefill.recompute_states does) + TOPLOC verification +
  sampling replay of every token; verify_fp32_s: the same checks on the float32 path, so the
  chosen path can be seen to be no slower;
- train_s: one GRPO inner step on the batch; train_replay_s: the validator's replay of it
  (clone of the base model, fresh optimizer, the same step).
Prints a rich table, then exactly one JSON line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
import typing
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.table import Table

from concord.client.engine.bundle import batch_proofs
from concord.client.engine.config import (
    DEFAULT_TASK,
    GRPOConfig,
    ModelConfig,
    PrecisionSetting,
    SamplerConfig,
    ValidationConfig,
)
from concord.client.engine.envs import make_env
from concord.client.engine.grpo import (
    inner_update,
    make_inner_optimizer,
    pin_determinism,
    replay_training,
)
from concord.client.engine.model import build_policy, clone_policy, param_count
from concord.client.engine.precision import choose_for
from concord.client.engine.proofs import CHUNK
from concord.client.engine.rollout import generate, prefill
from concord.validator.rules import toploc_result
from concord.validator.sampling import rows_to_check
from concord.validator.tiny_prefill import check_sampling, recompute_states

TRAINER = "0x" + "be" * 20


def best_of(repeats: int, fn: Callable[[], Any]) -> tuple[float, Any]:
    """(fastest wall time, last result) over `repeats` calls."""
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="concord bench proofs", description=__doc__.splitlines()[0])
    p.add_argument("--rollouts", type=int, default=64, help="N rollouts (prompts x group size 8)")
    p.add_argument("--tokens", type=int, default=64, help="generated tokens per rollout")
    p.add_argument("--d-model", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument(
        "--prefill-precision",
        choices=typing.get_args(PrecisionSetting),
        default="auto",
        help="ValidationConfig.prefill_precision: auto (the hardware decides), bf16 or fp32",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    pin_determinism(args.threads)
    group = 8
    if args.rollouts % group:
        raise SystemExit(f"--rollouts must be a multiple of {group}, got {args.rollouts}")
    env = make_env(DEFAULT_TASK.env)
    model_cfg = ModelConfig(
        vocab_size=32,
        d_model=args.d_model,
        n_layers=args.layers,
        n_heads=4,
        max_seq_len=env.prompt_len + args.tokens,
        seed=0,
    )
    sampler = SamplerConfig(temperature=1.0, max_new_tokens=args.tokens, stop_at_eos=False)
    grpo = dataclasses.replace(GRPOConfig(), prompts_per_step=args.rollouts // group, group_size=group, inner_steps=1)
    vcfg = ValidationConfig(prefill_precision=args.prefill_precision)
    vcfg_fp32 = dataclasses.replace(vcfg, prefill_precision="fp32")
    policy = build_policy(model_cfg)
    t0 = time.perf_counter()
    seq = env.prompt_len + args.tokens
    chosen = choose_for(policy, vcfg.prefill_precision, args.rollouts * seq)  # once per process and size class
    choice_s = time.perf_counter() - t0
    sampled_rows = rows_to_check(args.rollouts, vcfg.row_fraction)
    chosen_sampled = choose_for(policy, vcfg.prefill_precision, sampled_rows * seq)
    idx = list(range(grpo.prompts_per_step))

    gen_s, batch = best_of(args.repeats, lambda: generate(policy, env, idx, group, sampler, 1, 0, TRAINER))
    proof_s, proofs = best_of(args.repeats, lambda: batch_proofs(batch))

    def verify(cfg: ValidationConfig) -> tuple[object, object, int, float, float]:
        t0 = time.perf_counter()
        out = recompute_states(policy, batch, proofs, batch.lengths, batch.keys, sampler, cfg)  # prefill + TOPLOC
        top = toploc_result(out.toploc)
        t1 = time.perf_counter()
        samp = check_sampling(out.logits, batch, batch.keys, sampler, cfg)
        t2 = time.perf_counter()
        return top, samp, out.fp32_rows, t1 - t0, t2 - t1

    parts, parts_fp32 = [], []
    for _ in range(args.repeats):  # interleaved, so a busy neighbour slows both paths alike
        parts.append(verify(vcfg))
        parts_fp32.append(verify(vcfg_fp32))
    top, samp, fp32_rows = parts[-1][0], parts[-1][1], parts[-1][2]
    states_s, sampling_s = (min(p[i] for p in parts) for i in (3, 4))
    verify_s = min(p[3] + p[4] for p in parts)
    verify_fp32_s = min(p[3] + p[4] for p in parts_fp32)
    prefill_s, _ = best_of(args.repeats, lambda: prefill(policy, batch, bf16=chosen.bf16))
    prefill_fp32_s, _ = best_of(args.repeats, lambda: prefill(policy, batch))
    toploc_s = max(0.0, states_s - prefill_s)

    def timed_train() -> float:
        pol = clone_policy(policy)
        opt = make_inner_optimizer(pol, grpo)
        t0 = time.perf_counter()
        inner_update(pol, opt, batch, grpo, policy)
        return time.perf_counter() - t0

    train_s = min(timed_train() for _ in range(args.repeats))
    replay_s, _ = best_of(args.repeats, lambda: replay_training(policy, [batch], grpo))

    decode_proof_bytes = sum(len(p) for rollout in proofs for p in rollout[1:])
    decode_tokens = int(batch.lengths.sum())
    per_32 = decode_proof_bytes * CHUNK / decode_tokens
    prefill_proof_bytes = sum(len(rollout[0]) for rollout in proofs)

    table = Table(
        title=f"concord bench proofs: {batch.n} rollouts x {args.tokens} tokens, "
        f"{param_count(policy):,} params (d={args.d_model}, L={args.layers}), "
        f"{args.threads} thread(s), best of {args.repeats}"
    )
    table.add_column("phase")
    table.add_column("seconds", justify="right")
    table.add_column("% of generation", justify="right")
    rows = [
        ("generation (KV cache, seeded sampling)", gen_s),
        ("proof build (TOPLOC, bf16, top-128, chunk 32)", proof_s),
        (f"verify = prefill + TOPLOC + sampling replay ({chosen.precision} path)", verify_s),
        (f"  prefill pass ({'bf16 autocast' if chosen.bf16 else 'float32'})", prefill_s),
        ("  TOPLOC verify (+ float32 re-check of failing rows)", toploc_s),
        ("  sampling replay", sampling_s),
        ("verify on the float32 path (for comparison)", verify_fp32_s),
        ("  float32 prefill pass", prefill_fp32_s),
        ("precision choice (once per process)", choice_s),
        ("train (1 GRPO inner step)", train_s),
        ("train replay (validator)", replay_s),
    ]
    for name, s in rows:
        table.add_row(name, f"{s:.4f}", f"{100 * s / gen_s:.1f}")
    console = Console()
    console.print(table)
    console.print(
        f"prefill precision: {chosen.precision} ({vcfg.prefill_precision}: {chosen.reason}; "
        f"hardware: {chosen.hint or '-'}); for a sampled check's {sampled_rows} row(s): "
        f"{chosen_sampled.precision} ({chosen_sampled.reason})"
    )
    console.print(
        f"proof bytes: {per_32:.1f} per 32 decode tokens; prefill proof {prefill_proof_bytes / batch.n:.0f} B/rollout; "
        f"TOPLOC rejects {int(top.evidence['rejected'])}/{batch.n}, sampling rejected tokens "
        f"{int(samp.evidence['rejected_tokens'])}/{int(samp.evidence['tokens'])} "
        f"(near-tie tolerated {int(samp.evidence['tolerated'])}); rows re-checked in float32: {fp32_rows}"
    )
    console.print(
        f"targets: proof build <= 10% of generation: {100 * proof_s / gen_s:.1f}%; "
        f"verify <= 25%: {100 * verify_s / gen_s:.1f}%; 258 B per 32 tokens: {per_32:.0f}; "
        f"chosen path no slower than float32: {verify_s:.4f} s vs {verify_fp32_s:.4f} s"
    )
    result = {
        "generation_s": round(gen_s, 5),
        "proof_build_s": round(proof_s, 5),
        "verify_s": round(verify_s, 5),
        "train_s": round(train_s, 5),
        "train_replay_s": round(replay_s, 5),
        "proof_bytes_per_32_tokens": round(per_32, 2),
        "rollouts": batch.n,
        "tokens_per_rollout": args.tokens,
        "params": param_count(policy),
        "toploc_rejects": int(top.evidence["rejected"]),
        "sampling_rejected_tokens": int(samp.evidence["rejected_tokens"]),
        "prefill_precision_setting": vcfg.prefill_precision,
        "prefill_precision": chosen.precision,
        "prefill_precision_reason": chosen.reason,
        "prefill_precision_hint": chosen.hint,
        "prefill_precision_sampled_rows": sampled_rows,
        "prefill_precision_sampled": chosen_sampled.precision,
        "prefill_precision_sampled_reason": chosen_sampled.reason,
        "precision_choice_s": round(choice_s, 5),
        "verify_fp32_s": round(verify_fp32_s, 5),
        "prefill_s": round(prefill_s, 5),
        "prefill_fp32_s": round(prefill_fp32_s, 5),
        "fp32_rechecked_rows": fp32_rows,
    }
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

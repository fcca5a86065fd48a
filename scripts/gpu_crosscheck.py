"""Cross-hardware TOPLOC check: do CPU rollouts verify against a GPU's hidden states, and back?

TOPLOC's promise is that a validator on other hardware accepts honest work. Three steps, the
middle one on a machine with a CUDA GPU (it needs only torch and client/engine/model.py):

    python scripts/gpu_crosscheck.py export .gpucheck            # CPU: the rollouts' tokens
    python3 scripts/gpu_crosscheck.py prefill .gpucheck $OUT     # GPU: hidden states + logits
    python scripts/gpu_crosscheck.py verify .gpucheck gpu_states.pt   # CPU: the checks

`verify` regenerates the same rollouts on the CPU (seeded, deterministic), and measures
(a) CPU proofs against the GPU's fp32 and bf16-autocast prefill (a GPU validator, CPU trainer),
(b) proofs built from the GPU's prefill states against the CPU validator's bf16 and fp32
prefill (a GPU trainer, CPU validator), (c) sampling replay of the CPU tokens from GPU logits.
Prints a table and one JSON line.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from concord.client.engine.config import DEFAULT_TASK, ModelConfig, SamplerConfig
from concord.client.engine.model import build_policy

# (name, model, prompts, samples per prompt, sampler): the demo policy and bench proofs' policy.
SETUPS = {
    "demo_0.1M": (DEFAULT_TASK.model, 32, 8, DEFAULT_TASK.sampler),
    "bench_3.2M": (
        ModelConfig(vocab_size=32, d_model=256, n_layers=4, n_heads=4, max_seq_len=8 + 64, seed=0),
        8,
        8,
        SamplerConfig(temperature=1.0, max_new_tokens=64, stop_at_eos=False),
    ),
}
TRAINER = "0x" + "c0" * 20


def generate_batches() -> dict[str, object]:
    from concord.client.engine.envs import make_env
    from concord.client.engine.rollout import generate

    env = make_env(DEFAULT_TASK.env)
    return {
        name: generate(build_policy(model), env, list(range(prompts)), group, sampler, 1, 0, TRAINER)
        for name, (model, prompts, group, sampler) in SETUPS.items()
    }


def export(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({name: b.tokens for name, b in generate_batches().items()}, folder / "tokens.pt")
    print(f"wrote {folder / 'tokens.pt'}")


def prefill_on_gpu(folder: Path, out: Path) -> None:
    tokens = torch.load(folder / "tokens.pt")
    device = "cuda" if torch.cuda.is_available() else "cpu"  # cpu: a dry run of the pipeline
    states = {"device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu", "torch": str(torch.__version__)}
    with torch.no_grad():
        for name, (model, *_rest) in SETUPS.items():
            policy = build_policy(model).to(device).eval()
            t = tokens[name].to(device)
            fp32 = policy(t)
            with torch.autocast(device, dtype=torch.bfloat16):
                bf16 = policy(t)
            states[name] = {
                "hidden_fp32": fp32.hidden.float().cpu(),
                "logits_fp32": fp32.logits.float().cpu(),
                "hidden_bf16": bf16.hidden.float().cpu(),
                "logits_bf16": bf16.logits.float().cpu(),
            }
    out.mkdir(parents=True, exist_ok=True)
    torch.save(states, out / "gpu_states.pt")
    print(f"{states['device']}, torch {states['torch']}: wrote {out / 'gpu_states.pt'}")


def verify(folder: Path, gpu_file: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    from concord.client.engine.bundle import batch_proofs
    from concord.client.engine.config import ValidationConfig
    from concord.client.engine.proofs import build_many_rollout_proofs
    from concord.client.engine.rollout import prefill
    from concord.validator.rules import toploc_result, toploc_rows
    from concord.validator.tiny_prefill import check_sampling

    gpu = torch.load(gpu_file)
    exported = torch.load(folder / "tokens.pt")
    vcfg = ValidationConfig()
    table = Table(title=f"TOPLOC across hardware: CPU (this machine) vs {gpu['device']} (torch {gpu['torch']})")
    for col in (
        "policy",
        "trainer -> validator",
        "rollouts rejected",
        "worst exp mismatches /128",
        "worst mant mean",
        "worst mant median",
    ):
        table.add_column(col, justify="right")
    result: dict[str, object] = {"gpu": gpu["device"]}

    def toploc_row(name: str, label: str, hidden: torch.Tensor, proofs, batch) -> None:
        """The validator's own TOPLOC check (validator.checks) of every rollout, as one table row."""
        ev = toploc_result(toploc_rows(hidden, batch, proofs, batch.lengths, vcfg)).evidence
        worst = (int(ev["worst_exp_mismatches"]), ev["worst_mant_err_mean"], ev["worst_mant_err_median"])
        table.add_row(
            name, label, f"{ev['rejected']}/{ev['rollouts']}", str(worst[0]), f"{worst[1]:.2f}", f"{worst[2]:.2f}"
        )
        result[f"{name}:{label}"] = {
            "rejected": int(ev["rejected"]),
            "rollouts": int(ev["rollouts"]),
            "worst_exp_mismatches": worst[0],
            "worst_mant_err_mean": round(worst[1], 3),
            "worst_mant_err_median": round(worst[2], 3),
        }

    for name, batch in generate_batches().items():
        if not torch.equal(batch.tokens, exported[name]):
            raise SystemExit(f"{name}: the CPU regenerated other tokens than were exported")
        states = gpu[name]
        cpu_proofs = batch_proofs(batch)
        toploc_row(name, "CPU -> GPU fp32", states["hidden_fp32"], cpu_proofs, batch)
        toploc_row(name, "CPU -> GPU bf16", states["hidden_bf16"], cpu_proofs, batch)
        p = batch.prompt_len
        policy = build_policy(SETUPS[name][0])
        cpu_hidden = {"bf16": prefill(policy, batch, bf16=True).hidden, "fp32": prefill(policy, batch).hidden}
        for precision in ("fp32", "bf16"):
            h = states[f"hidden_{precision}"]
            gpu_proofs = build_many_rollout_proofs(
                [(h[n, :p], h[n, p : p + int(batch.lengths[n])]) for n in range(batch.n)]
            )
            for validator in ("bf16", "fp32"):
                toploc_row(name, f"GPU {precision} -> CPU {validator}", cpu_hidden[validator], gpu_proofs, batch)
            sampling = check_sampling(states[f"logits_{precision}"], batch, batch.keys, SETUPS[name][3], vcfg)
            ev = sampling.evidence
            result[f"{name}:sampling CPU tokens vs GPU {precision} logits"] = {
                "rejected_tokens": int(ev["rejected_tokens"]),
                "tokens": int(ev["tokens"]),
                "tolerated": int(ev["tolerated"]),
            }
    console = Console(width=150)
    console.print(table)
    for key, value in result.items():
        if key.startswith(tuple(SETUPS)) and "sampling" in key:
            console.print(
                f"{key}: {value['rejected_tokens']}/{value['tokens']} tokens rejected "
                f"({value['tolerated']} near-ties tolerated)"
            )
    print(json.dumps(result))


if __name__ == "__main__":
    cmd, args = sys.argv[1], [Path(a) for a in sys.argv[2:]]
    {"export": export, "prefill": prefill_on_gpu, "verify": verify}[cmd](*args)

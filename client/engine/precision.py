"""Which precision a validator's verification prefill runs in: the hardware decides, not a default.

The rule (DESIGN.md 6.3-6.4, validator.checks.recompute_states): the prefill may run under bf16
autocast, and every rollout that fails TOPLOC or sampling replay there is recomputed in float32
and judged on that. bf16 can therefore only speed up rollouts that pass; which precision runs
first changes the cost of verification, never an honest trainer's verdict.

Whether bf16 is faster depends on the machine. With native bf16 matmuls (AMX, avx512_bf16,
CUDA from Ampere on) the autocast prefill is 2-5x faster; without them (an AVX2-only CPU)
oneDNN emulates bf16 and the same prefill is ~5x *slower* than float32. So:
- ValidationConfig.prefill_precision = "bf16" or "fp32" is honoured as configured;
- "auto" on CUDA takes bf16 where the device supports it natively, float32 otherwise;
- "auto" on CPU measures in float32 and under bf16 autocast and takes bf16 only if it measured at
  least BF16_MIN_SPEEDUP times faster (the bf16 path also pays output casts and the float32
  re-check of failing rows). What is measured:
  * for a validator's policy (`choose_for`), the policy's own forward at the size of the batch it
    is about to prefill, rounded up to a size class (a power of two of tokens in
    [MIN_MEASURE_TOKENS, MAX_MEASURE_TOKENS]). The size decides on a CPU with native bf16 too:
    on an AMD EPYC with avx512_bf16 the default task's full batch (5,632 tokens) runs 1.5x faster
    under bf16, while the ~110 tokens of the rows a sampled check prefills per step run 1.2x
    slower (autocast's per-op casts outweigh the matmuls at that size);
  * where only the model's dimensions are known (`choose`, e.g. the LM bench), one MLP block's
    matmuls at MEASURE_ROWS tokens.
  The CPU's capability and bf16 flags are reported as a hint only: the measurement decides.
  Choices are cached per process (model, thread count, size class).
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F

from client.engine.config import PrecisionSetting
from client.engine.model import Policy

Precision = Literal["bf16", "fp32"]

MEASURE_ROWS = 512  # tokens per timed matmul: enough to be compute bound, ~0.1-1 s in all at start-up
MEASURE_REPEATS = 3  # best of, fp32 and bf16 interleaved so a busy neighbour slows both alike
MIN_MEASURE_TOKENS = 32  # the smallest size class of a policy measurement
MAX_MEASURE_TOKENS = 4096  # the largest: a bigger batch is measured at this size
BF16_MIN_SPEEDUP = 1.2  # auto takes bf16 only when it is at least this much faster than float32
CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # /proc/cpuinfo flags of native bf16 matmul units


@dataclass(frozen=True)
class Measurement:
    """Best-of wall time of the same work (milliseconds) in each precision, on ``tokens`` tokens."""

    bf16_ms: float
    fp32_ms: float
    tokens: int = MEASURE_ROWS


@dataclass(frozen=True)
class PrefillPrecision:
    """The precision the verification prefill runs in first, and why."""

    precision: Precision
    reason: str  # "configured" | "native bf16 (CUDA ...)" | "measured at n tokens: bf16 x ms vs fp32 y ms" | ...
    hint: str = ""  # what the hardware says about bf16 (informational; never decides on CPU)
    measurement: Measurement | None = None

    @property
    def bf16(self) -> bool:
        return self.precision == "bf16"


def cpu_bf16_hint() -> str:
    """The CPU's torch capability level and its native-bf16 flags, e.g. 'AVX512; avx512_bf16'."""
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:  # not Linux: the measurement still decides
        flags = set()
    native = [f for f in CPU_BF16_FLAGS if f in flags]
    return f"{torch.backends.cpu.get_cpu_capability()}; {', '.join(native) if native else 'no native bf16 flags'}"


def decide(measured: Measurement, hint: str = "") -> PrefillPrecision:
    """The auto rule on CPU, a pure function of the measurement: bf16 iff it is at least
    BF16_MIN_SPEEDUP times faster than float32. It never picks the path measured slower."""
    bf16 = measured.bf16_ms * BF16_MIN_SPEEDUP <= measured.fp32_ms
    reason = f"measured at {measured.tokens} tokens: bf16 {measured.bf16_ms:.2f} ms vs fp32 {measured.fp32_ms:.2f} ms"
    return PrefillPrecision("bf16" if bf16 else "fp32", reason, hint, measured)


def measure_cpu(d_model: int, ffn_dim: int, rows: int = MEASURE_ROWS, repeats: int = MEASURE_REPEATS) -> Measurement:
    """Time one MLP block's matmuls ([rows, d] -> [rows, ffn] -> [rows, d], output cast to float32
    as the prefill returns it) in float32 and under CPU bf16 autocast; best of `repeats` each."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(rows, d_model, generator=gen)  # [R, D]
    w_in = torch.randn(ffn_dim, d_model, generator=gen) / d_model**0.5  # [F, D]
    w_out = torch.randn(d_model, ffn_dim, generator=gen) / ffn_dim**0.5  # [D, F]

    def block(bf16: bool) -> float:
        t0 = time.perf_counter()
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            F.linear(F.gelu(F.linear(x, w_in)), w_out).float()
        return time.perf_counter() - t0

    block(False), block(True)  # warm-up: first calls pick kernels and allocate
    best = {False: float("inf"), True: float("inf")}
    for _ in range(repeats):
        for bf16 in (False, True):
            best[bf16] = min(best[bf16], block(bf16))
    return Measurement(bf16_ms=1e3 * best[True], fp32_ms=1e3 * best[False], tokens=rows)


def size_class(tokens: int) -> int:
    """The token count a batch of ``tokens`` is measured at: the power of two at or above it, within
    [MIN_MEASURE_TOKENS, MAX_MEASURE_TOKENS]."""
    size = MIN_MEASURE_TOKENS
    while size < min(tokens, MAX_MEASURE_TOKENS):
        size *= 2
    return size


def measure_policy(policy: Policy, tokens: int, repeats: int = MEASURE_REPEATS) -> Measurement:
    """Time ``policy``'s forward (no grad, outputs as float32, as rollout.prefill returns them) on
    ``tokens`` random tokens, in rows of max_seq_len, in float32 and under CPU bf16 autocast; best of
    ``repeats`` each."""
    seq = min(policy.config.max_seq_len, tokens)
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, policy.config.vocab_size, (max(1, tokens // seq), seq), generator=gen)  # [B, T]

    def forward(bf16: bool) -> float:
        t0 = time.perf_counter()
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = policy(x)
            out.logits.float(), out.hidden.float()
        return time.perf_counter() - t0

    forward(False), forward(True)  # warm-up
    best = {False: float("inf"), True: float("inf")}
    for _ in range(repeats):
        for bf16 in (False, True):
            best[bf16] = min(best[bf16], forward(bf16))
    return Measurement(bf16_ms=1e3 * best[True], fp32_ms=1e3 * best[False], tokens=x.numel())


@functools.lru_cache(maxsize=16)
def _auto_cpu(d_model: int, ffn_dim: int, threads: int) -> PrefillPrecision:
    """Per process: one measurement per model width and thread count (threads is only a cache key)."""
    return decide(measure_cpu(d_model, ffn_dim), cpu_bf16_hint())


def choose(setting: PrecisionSetting, device: torch.device, d_model: int, ffn_dim: int) -> PrefillPrecision:
    """The verification prefill's precision for a model of this width on this device."""
    if setting != "auto":
        return PrefillPrecision(setting, "configured")
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        if torch.cuda.is_bf16_supported(including_emulation=False):
            return PrefillPrecision("bf16", f"native bf16 (CUDA {name})", name)
        return PrefillPrecision("fp32", f"no native bf16 on CUDA {name}", name)
    if device.type != "cpu":
        return PrefillPrecision("fp32", f"no bf16 rule for device {device.type}")
    return _auto_cpu(d_model, ffn_dim, torch.get_num_threads())


_POLICY_CHOICES: dict[tuple[object, ...], PrefillPrecision] = {}  # (model config, threads, size class) -> choice


def choose_for(policy: Policy, setting: PrecisionSetting, tokens: int = MAX_MEASURE_TOKENS) -> PrefillPrecision:
    """The verification prefill's precision for a batch of ``tokens`` tokens (rows x sequence length)
    through ``policy`` on the device its parameters live on: `choose`'s rule, except that "auto" on
    CPU measures the policy's own forward at the batch's size class, once per process and class
    (best of MEASURE_REPEATS: a few milliseconds for the classes a sampled check meets)."""
    device = next(policy.parameters()).device
    if setting != "auto" or device.type != "cpu":
        return choose(setting, device, policy.config.d_model, policy.config.ffn_dim)
    size = size_class(tokens)
    key = (policy.config, torch.get_num_threads(), size)
    if key not in _POLICY_CHOICES:
        _POLICY_CHOICES[key] = decide(measure_policy(policy, size), cpu_bf16_hint())
    return _POLICY_CHOICES[key]

"""Which precision a validator's verification prefill runs in: the hardware and the batch shape decide, once.

The rule (DESIGN.md 6.3-6.4, validator.tiny_prefill.recompute_states): the prefill may run under bf16
autocast, and every rollout that fails TOPLOC or sampling replay there is recomputed in float32
and judged on that. bf16 can therefore only speed up rollouts that pass; which precision runs
first changes the cost of verification, never an honest trainer's verdict.

Whether bf16 is faster depends on the machine and on the batch. With native bf16 matmuls (AMX,
avx512_bf16, CUDA from Ampere on) a large autocast prefill is 1.5-4x faster; without them (an
AVX2-only CPU) oneDNN emulates bf16 and the same prefill is ~5x *slower*; and on a native-bf16 CPU a
small batch is slower under autocast too (its per-op casts outweigh the matmuls). Measured on a
2-core AMD EPYC with avx512_bf16: the tiny model's full batch (5,632 tokens, d 64, ffn 256: 67 M
multiply-adds per MLP matmul at its size class) 1.5x faster under bf16, the ~110 tokens of a sampled
check (1.8 M) 1.2x slower; the LM's MLP at 512 tokens (d 576, ffn 1536: 453 M) 3.7x faster.

So the choice is a pure function of the hardware and the batch shape (``rule``), never of a
timing taken under whatever load the machine has at start-up:
- ValidationConfig.prefill_precision = "bf16" or "fp32" is honoured as configured;
- "auto" on CUDA: bf16 where the device runs it natively, float32 otherwise;
- "auto" on CPU: bf16 iff the CPU has native bf16 matmul units (/proc/cpuinfo flags amx_bf16 or
  avx512_bf16) and one MLP matmul of the batch is big enough, size_class(tokens) x d_model x ffn_dim
  >= BF16_MIN_MACS multiply-adds; float32 otherwise.

Decided once per machine: with a ``record_dir`` (nodes pass client.runtime.paths.home(), i.e.
$CONCORD_HOME or the XDG state dir) the first decision for each (device, model width, size class) is
written to ``record_dir/precision.json`` together with the hardware it was made on and the rule's
version, and every later process on that machine reads it back instead of deciding again. A record
made on other hardware or under another rule version is replaced (the reason says so).
"""

from __future__ import annotations

import functools
import json
import os
import platform
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from concord.client.engine.config import PrecisionSetting
from concord.client.engine.model import Policy

Precision = Literal["bf16", "fp32"]

MIN_MEASURE_TOKENS = 32  # the smallest size class
MAX_MEASURE_TOKENS = 4096  # the largest: a bigger batch is classed at this size
BF16_MIN_MACS = 1 << 24  # multiply-adds of one MLP matmul from which native bf16 autocast wins (module doc)
CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # /proc/cpuinfo flags of native bf16 matmul units
RECORD_FILE = "precision.json"
RULE_VERSION = 1  # bump when ``rule`` changes: records of an older rule are decided again


@dataclass(frozen=True)
class Hardware:
    """What the rule reads of the machine: the device kind, its name and its native bf16 support."""

    device: str  # "cpu" | "cuda" | another torch device type
    name: str  # the CPU's model name or the CUDA device's name
    native_bf16: bool
    detail: str = ""  # e.g. "AVX512; avx512_bf16" (torch's CPU capability and the flags found)


@dataclass(frozen=True)
class PrefillPrecision:
    """The precision the verification prefill runs in first, and why."""

    precision: Precision
    reason: str  # "configured" | "native bf16 (CUDA ...)" | "rule: ..." | "recorded in ...: rule: ..."
    hint: str = ""  # the hardware's detail (CPU capability and bf16 flags)

    @property
    def bf16(self) -> bool:
        return self.precision == "bf16"


def _cpu_flags() -> tuple[set[str], str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: no flags, float32
        return set(), platform.processor() or platform.machine()
    name = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), "")
    return set(text.split()), name or platform.machine()


@functools.cache
def cpu_hardware() -> Hardware:
    """This machine's CPU (read once per process: the hardware does not change under it)."""
    flags, name = _cpu_flags()
    native = [f for f in CPU_BF16_FLAGS if f in flags]
    detail = f"{torch.backends.cpu.get_cpu_capability()}; {', '.join(native) if native else 'no native bf16 flags'}"
    return Hardware("cpu", name, bool(native), detail)


def cpu_bf16_hint() -> str:
    """The CPU's torch capability level and its native-bf16 flags, e.g. 'AVX512; avx512_bf16'."""
    return cpu_hardware().detail


def device_hardware(device: torch.device) -> Hardware:
    if device.type == "cpu":
        return cpu_hardware()
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        return Hardware("cuda", name, bool(torch.cuda.is_bf16_supported(including_emulation=False)), name)
    return Hardware(device.type, device.type, False)


def size_class(tokens: int) -> int:
    """The token count a batch of ``tokens`` is classed at: the power of two at or above it, within
    [MIN_MEASURE_TOKENS, MAX_MEASURE_TOKENS]."""
    size = MIN_MEASURE_TOKENS
    while size < min(tokens, MAX_MEASURE_TOKENS):
        size *= 2
    return size


def rule(hw: Hardware, d_model: int, ffn_dim: int, tokens: int) -> PrefillPrecision:
    """The "auto" choice (module doc), a pure function of the hardware and the batch shape."""
    if hw.device == "cuda":
        if hw.native_bf16:
            return PrefillPrecision("bf16", f"native bf16 (CUDA {hw.name})", hw.detail)
        return PrefillPrecision("fp32", f"no native bf16 on CUDA {hw.name}", hw.detail)
    if hw.device != "cpu":
        return PrefillPrecision("fp32", f"no bf16 rule for device {hw.device}", hw.detail)
    size = size_class(tokens)
    macs = size * d_model * ffn_dim
    if not hw.native_bf16:
        return PrefillPrecision("fp32", "rule: no native bf16 on this CPU", hw.detail)
    big = macs >= BF16_MIN_MACS
    cmp = ">=" if big else "<"
    reason = f"rule: native bf16, {size}-token class x {d_model} x {ffn_dim} = {macs:,} MACs {cmp} 2^24"
    return PrefillPrecision("bf16" if big else "fp32", reason, hw.detail)


def _key(hw: Hardware, d_model: int, ffn_dim: int, tokens: int) -> str:
    return f"{hw.device}:{d_model}x{ffn_dim}@{size_class(tokens) if hw.device == 'cpu' else 0}"


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):  # missing or unreadable: decided again and rewritten
        return {}
    return data if isinstance(data, dict) else {}


def _write(path: Path, data: dict[str, Any]) -> None:
    """Atomically (temp file + rename): two nodes starting together each write a whole file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".precision-", dir=path.parent)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=1, sort_keys=True)
    os.replace(tmp, path)


def recorded(record_dir: Path, hw: Hardware, d_model: int, ffn_dim: int, tokens: int) -> PrefillPrecision:
    """The machine's recorded choice for this shape, or the rule's, recorded now (module doc)."""
    path = Path(record_dir) / RECORD_FILE
    data = _read(path)
    key = _key(hw, d_model, ffn_dim, tokens)
    if data.get("rule") != RULE_VERSION or data.get("hardware") != asdict(hw):
        data = {"rule": RULE_VERSION, "hardware": asdict(hw), "choices": {}}
    choices: dict[str, dict[str, str]] = data.setdefault("choices", {})
    if key in choices and choices[key].get("precision") in ("bf16", "fp32"):
        got = choices[key]
        return PrefillPrecision(got["precision"], f"recorded in {path}: {got.get('reason', '')}", hw.detail)  # type: ignore[arg-type]
    chosen = rule(hw, d_model, ffn_dim, tokens)
    choices[key] = {"precision": chosen.precision, "reason": chosen.reason}
    _write(path, data)
    return chosen


def choose(
    setting: PrecisionSetting,
    device: torch.device,
    d_model: int,
    ffn_dim: int,
    tokens: int = MAX_MEASURE_TOKENS,
    record_dir: Path | None = None,
) -> PrefillPrecision:
    """The verification prefill's precision for batches of ``tokens`` tokens through a model of this
    width on this device (module doc); with ``record_dir``, the machine's recorded choice."""
    if setting != "auto":
        return PrefillPrecision(setting, "configured")
    hw = device_hardware(device)
    if record_dir is None:
        return rule(hw, d_model, ffn_dim, tokens)
    return recorded(record_dir, hw, d_model, ffn_dim, tokens)


def choose_for(
    policy: Policy, setting: PrecisionSetting, tokens: int = MAX_MEASURE_TOKENS, record_dir: Path | None = None
) -> PrefillPrecision:
    """`choose` for a batch of ``tokens`` tokens (rows x sequence length) through ``policy`` on the
    device its parameters live on."""
    device = next(policy.parameters()).device
    return choose(setting, device, policy.config.d_model, policy.config.ffn_dim, tokens, record_dir)

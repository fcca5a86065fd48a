"""The verification prefill's precision: configured, native, or measured; never the slower path."""

from __future__ import annotations

import math

import pytest
import torch

from client.engine import precision as prec
from client.engine.bundle import batch_proofs
from client.engine.config import ConfigError, EnvConfig, ModelConfig, SamplerConfig, ValidationConfig, from_dict
from client.engine.envs import make_env
from client.engine.model import build_policy
from client.engine.precision import Measurement, PrefillPrecision, choose, choose_for, decide
from client.engine.rollout import generate, prefill
from validator.checks import recompute_states, toploc_rows

pytestmark = pytest.mark.unit

TRAINER = "0x" + "ab" * 20
CPU = torch.device("cpu")


@pytest.fixture
def fresh_cache():
    prec._auto_cpu.cache_clear()
    prec._POLICY_CHOICES.clear()
    yield
    prec._auto_cpu.cache_clear()
    prec._POLICY_CHOICES.clear()


def test_decide_is_a_function_of_the_measurement() -> None:
    fast = Measurement(bf16_ms=2.0, fp32_ms=9.5)  # native bf16 (AMX / avx512_bf16)
    slow = Measurement(bf16_ms=49.4, fp32_ms=9.7)  # emulated bf16 (AVX2 only)
    assert (
        decide(fast, "hint")
        == decide(fast, "hint")
        == PrefillPrecision("bf16", "measured at 512 tokens: bf16 2.00 ms vs fp32 9.50 ms", "hint", fast)
    )
    assert decide(slow).precision == "fp32"
    assert decide(slow).reason == "measured at 512 tokens: bf16 49.40 ms vs fp32 9.70 ms"
    # the margin: bf16 must be at least BF16_MIN_SPEEDUP times faster, ties go to float32
    assert decide(Measurement(5.0, 5.0 * prec.BF16_MIN_SPEEDUP)).precision == "bf16"
    assert decide(Measurement(5.0, 5.0 * prec.BF16_MIN_SPEEDUP - 0.01)).precision == "fp32"
    assert decide(Measurement(5.0, 5.0)).precision == "fp32"


def test_auto_never_picks_the_path_measured_slower() -> None:
    times = [0.1 * 1.37**i for i in range(25)]  # 0.1 ms .. ~190 ms
    for b in times:
        for f in times:
            chosen = decide(Measurement(b, f))
            if chosen.precision == "bf16":
                assert b < f and b * prec.BF16_MIN_SPEEDUP <= f
            else:
                assert b * prec.BF16_MIN_SPEEDUP > f


@pytest.mark.parametrize("setting", ["fp32", "bf16"])
def test_configured_precision_is_honoured_without_measuring(monkeypatch, fresh_cache, setting) -> None:
    def no_measuring(*_args: object, **_kw: object) -> Measurement:
        raise AssertionError("a configured precision must not be measured")

    monkeypatch.setattr(prec, "measure_cpu", no_measuring)
    assert choose(setting, CPU, 256, 1024) == PrefillPrecision(setting, "configured")
    policy = build_policy(ModelConfig(d_model=32, n_layers=1, n_heads=4, max_seq_len=24))
    monkeypatch.setattr(prec, "measure_policy", no_measuring)
    assert choose_for(policy, setting) == PrefillPrecision(setting, "configured")
    assert choose_for(policy, setting, tokens=40) == PrefillPrecision(setting, "configured")


def test_auto_on_cpu_follows_the_measurement_once_per_process(monkeypatch, fresh_cache) -> None:
    calls: list[tuple[int, int]] = []
    answers = {256: Measurement(bf16_ms=60.0, fp32_ms=12.0), 512: Measurement(bf16_ms=3.0, fp32_ms=12.0)}

    def measured(d_model: int, ffn_dim: int) -> Measurement:
        calls.append((d_model, ffn_dim))
        return answers[d_model]

    monkeypatch.setattr(prec, "measure_cpu", measured)
    slow = choose("auto", CPU, 256, 1024)
    assert (slow.precision, slow.reason) == ("fp32", "measured at 512 tokens: bf16 60.00 ms vs fp32 12.00 ms")
    assert slow.hint.startswith(torch.backends.cpu.get_cpu_capability())
    assert choose("auto", CPU, 256, 1024) is slow  # cached: one measurement per width and thread count
    assert choose("auto", CPU, 512, 2048).precision == "bf16"
    assert calls == [(256, 1024), (512, 2048)]


def test_size_classes_round_up_to_a_power_of_two_within_bounds() -> None:
    assert [prec.size_class(t) for t in (1, 32, 33, 110, 512, 513, 4096, 5632, 10**9)] == [
        32,
        32,
        64,
        128,
        512,
        1024,
        4096,
        4096,
        4096,
    ]


def test_auto_for_a_policy_measures_its_forward_at_the_batch_size_class(monkeypatch, fresh_cache) -> None:
    """choose_for measures the policy itself at the batch's size class, once per class: a small
    sampled batch and a full batch may get different precisions on one machine (native bf16 that
    loses on a few rows and wins on many), and each is the one measured faster."""
    policy = build_policy(ModelConfig(d_model=32, n_layers=1, n_heads=4, max_seq_len=24))
    calls: list[int] = []
    real = prec.measure_policy

    def measured(p: object, tokens: int, repeats: int = prec.MEASURE_REPEATS) -> Measurement:
        assert p is policy and repeats == prec.MEASURE_REPEATS
        calls.append(tokens)
        slow = tokens < 1024  # bf16 pays per-op casts: slower on small batches here
        return Measurement(bf16_ms=1.2 if slow else 5.0, fp32_ms=1.0 if slow else 9.0, tokens=tokens)

    monkeypatch.setattr(prec, "measure_policy", measured)
    small, full = choose_for(policy, "auto", 5 * 22), choose_for(policy, "auto", 256 * 22)
    assert (small.precision, full.precision) == ("fp32", "bf16")
    assert small.reason == "measured at 128 tokens: bf16 1.20 ms vs fp32 1.00 ms"
    assert choose_for(policy, "auto", 100) is small and choose_for(policy, "auto", 9000) is full  # cached per class
    assert calls == [128, 4096]
    m = real(policy, 64, repeats=2)  # the real thing: both paths timed on 64 tokens
    assert m.tokens == 48 and 0 < m.bf16_ms < math.inf and 0 < m.fp32_ms < math.inf  # two rows of max_seq_len


def test_real_measurement_times_both_paths(fresh_cache) -> None:
    m = prec.measure_cpu(64, 256, rows=64, repeats=2)
    assert 0 < m.bf16_ms < math.inf and 0 < m.fp32_ms < math.inf
    chosen = choose("auto", CPU, 64, 256)
    assert chosen.precision in ("bf16", "fp32") and chosen.reason.startswith("measured at 512 tokens: bf16 ")
    assert chosen.measurement is not None and chosen.precision == decide(chosen.measurement).precision


def test_validation_config_reads_and_checks_prefill_precision() -> None:
    assert ValidationConfig().prefill_precision == "auto"
    assert from_dict(ValidationConfig, {"prefill_precision": "fp32"}, "validation").prefill_precision == "fp32"
    with pytest.raises(ConfigError, match="prefill_precision"):
        ValidationConfig(prefill_precision="fp16")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="bf16_prefill"):  # the old boolean is gone, not silently ignored
        from_dict(ValidationConfig, {"bf16_prefill": True}, "validation")


def test_recompute_states_runs_the_chosen_precision_and_rechecks_bf16_failures_in_float32(fresh_cache) -> None:
    """fp32 configured: the float32 states, nothing re-checked. bf16 configured under TOPLOC
    thresholds of zero (float32 reproduces the trainer's bf16 activations exactly here, bf16
    autocast does not): the rollouts that fail under bf16 are recomputed in float32 and pass."""
    policy = build_policy(ModelConfig(d_model=64, n_layers=2, n_heads=4, max_seq_len=40, seed=3))
    env = make_env(EnvConfig("sort", {"n_min": 4, "n_max": 6, "alphabet": 8}))
    sampler = SamplerConfig(temperature=1.0, max_new_tokens=24, stop_at_eos=False)
    batch = generate(policy, env, list(range(16)), 8, sampler, task_id=1, round_=1, trainer=TRAINER)
    proofs = batch_proofs(batch)
    exact, fast = prefill(policy, batch), prefill(policy, batch, bf16=True)

    fp32 = recompute_states(
        policy, batch, proofs, batch.lengths, batch.keys, sampler, ValidationConfig(prefill_precision="fp32")
    )
    assert fp32.precision == PrefillPrecision("fp32", "configured") and fp32.fp32_rows == 0
    assert torch.equal(fp32.hidden, exact.hidden) and all(r.ok for r in fp32.toploc)

    strict = ValidationConfig(
        max_exp_mismatches=0, max_mant_err_mean=0.0, max_mant_err_median=0.0, prefill_precision="bf16"
    )
    assert all(r.ok for r in fp32.toploc) and not all(
        r.ok for r in toploc_rows(fast.hidden, batch, proofs, batch.lengths, strict)
    )
    bf16 = recompute_states(policy, batch, proofs, batch.lengths, batch.keys, sampler, strict)
    assert bf16.precision == PrefillPrecision("bf16", "configured")
    assert bf16.fp32_rows > 0  # the rollouts that failed under bf16 were re-checked ...
    rechecked = (bf16.hidden == exact.hidden).flatten(1).all(1)  # [N] rows holding float32 states
    assert int(rechecked.sum()) >= bf16.fp32_rows
    assert all(r.ok for r in bf16.toploc)  # ... and judged on float32, where they pass

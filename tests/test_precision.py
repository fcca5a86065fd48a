"""The verification prefill's precision: configured, or the hardware's and the batch shape's, decided once
per machine and recorded; verdicts never depend on it (the float32 re-check)."""

from __future__ import annotations

import json

import pytest
import torch

from concord.client.engine import precision as prec
from concord.client.engine.bundle import batch_proofs
from concord.client.engine.config import ConfigError, EnvConfig, ModelConfig, SamplerConfig, ValidationConfig, from_dict
from concord.client.engine.envs import make_env
from concord.client.engine.model import build_policy
from concord.client.engine.precision import PrefillPrecision, choose, choose_for
from concord.client.engine.rollout import generate, prefill
from concord.validator.rules import toploc_rows
from concord.validator.tiny_prefill import recompute_states

pytestmark = pytest.mark.unit

TRAINER = "0x" + "ab" * 20
CPU = torch.device("cpu")


NATIVE = prec.Hardware("cpu", "AMD EPYC", True, "AVX512; avx512_bf16")
EMULATED = prec.Hardware("cpu", "Intel Xeon", False, "AVX2; no native bf16 flags")


def test_configured_precision_is_honoured(tmp_path) -> None:
    for setting in ("bf16", "fp32"):
        assert choose(setting, CPU, 256, 1024) == PrefillPrecision(setting, "configured")
        policy = build_policy(ModelConfig(d_model=32, n_layers=1, n_heads=4, max_seq_len=24))
        assert choose_for(policy, setting, tokens=40, record_dir=tmp_path) == PrefillPrecision(setting, "configured")
    assert not (tmp_path / prec.RECORD_FILE).exists()  # nothing to decide, nothing recorded


def test_the_rule_is_a_function_of_the_hardware_and_the_batch_shape() -> None:
    """Native bf16 and a big enough batch: bf16; a small batch (a sampled check's few rows) or a CPU that
    emulates bf16: float32. The numbers of the module doc: the tiny model's sampled rows (110 tokens,
    d 64, ffn 256) float32, its full batch (5,632 tokens) bf16, the LM's group (8 x 16 tokens, d 576,
    ffn 1536) bf16."""
    assert prec.rule(NATIVE, 64, 256, 110).precision == "fp32"
    assert prec.rule(NATIVE, 64, 256, 5632).precision == "bf16"
    assert prec.rule(NATIVE, 576, 1536, 8 * 16).precision == "bf16"
    assert (
        prec.rule(NATIVE, 64, 256, 110).reason
        == "rule: native bf16, 128-token class x 64 x 256 = 2,097,152 MACs < 2^24"
    )
    for tokens in (1, 110, 5632, 10**6):
        assert prec.rule(EMULATED, 576, 1536, tokens).precision == "fp32"
    # the threshold: a size class whose MLP matmul has exactly 2^24 multiply-adds takes bf16, the one below does not
    assert prec.rule(NATIVE, 64, 256, 1024).precision == "bf16" and prec.rule(NATIVE, 64, 256, 512).precision == "fp32"
    assert prec.rule(NATIVE, 64, 256, 600) == prec.rule(NATIVE, 64, 256, 1024)  # same size class, same choice
    cuda = prec.Hardware("cuda", "NVIDIA H100", True, "NVIDIA H100")
    assert prec.rule(cuda, 64, 256, 1).precision == "bf16"
    assert prec.rule(prec.Hardware("cuda", "Tesla T4", False), 64, 256, 10**6).precision == "fp32"


def test_auto_is_the_rule_on_this_machines_hardware_nothing_is_timed(monkeypatch) -> None:
    """No measurement: the same hardware and shape give the same choice however busy the machine is."""
    monkeypatch.setattr(prec, "cpu_hardware", lambda: NATIVE)
    assert [choose("auto", CPU, 64, 256, t).precision for t in (110, 5632)] == ["fp32", "bf16"]
    monkeypatch.setattr(prec, "cpu_hardware", lambda: EMULATED)
    assert [choose("auto", CPU, 64, 256, t).precision for t in (110, 5632)] == ["fp32", "fp32"]
    assert not [n for n in dir(prec) if "measure" in n.lower() and callable(getattr(prec, n))]


def test_the_choice_is_decided_once_per_machine_and_recorded(tmp_path, monkeypatch) -> None:
    """The first process records its decision under the state dir; later ones read it back (even if the
    rule would now say otherwise); a record from other hardware or another rule version is replaced."""
    monkeypatch.setattr(prec, "cpu_hardware", lambda: NATIVE)
    first = choose("auto", CPU, 576, 1536, 128, tmp_path)
    assert first.precision == "bf16" and first.reason.startswith("rule: native bf16")
    record = json.loads((tmp_path / prec.RECORD_FILE).read_text())
    assert record == {
        "rule": prec.RULE_VERSION,
        "hardware": {"device": "cpu", "name": "AMD EPYC", "native_bf16": True, "detail": "AVX512; avx512_bf16"},
        "choices": {"cpu:576x1536@128": {"precision": "bf16", "reason": first.reason}},
    }
    monkeypatch.setattr(prec, "rule", lambda *a: PrefillPrecision("fp32", "a rule that changed its mind"))
    again = choose("auto", CPU, 576, 1536, 100, tmp_path)  # same size class: read back, not decided again
    assert again.precision == "bf16" and again.reason == f"recorded in {tmp_path / prec.RECORD_FILE}: {first.reason}"
    small = choose("auto", CPU, 576, 1536, 16, tmp_path)  # another shape: decided now and added
    assert small.reason == "a rule that changed its mind"
    assert set(json.loads((tmp_path / prec.RECORD_FILE).read_text())["choices"]) == {
        "cpu:576x1536@128",
        "cpu:576x1536@32",
    }
    monkeypatch.undo()
    monkeypatch.setattr(prec, "cpu_hardware", lambda: EMULATED)  # the state dir moved to another machine
    moved = choose("auto", CPU, 576, 1536, 128, tmp_path)
    assert moved.precision == "fp32" and moved.reason == "rule: no native bf16 on this CPU"
    assert json.loads((tmp_path / prec.RECORD_FILE).read_text())["hardware"]["name"] == "Intel Xeon"
    (tmp_path / prec.RECORD_FILE).write_text("{not json")  # a damaged record is decided again
    assert choose("auto", CPU, 576, 1536, 128, tmp_path).reason == "rule: no native bf16 on this CPU"


def test_size_classes_round_up_to_a_power_of_two_within_bounds() -> None:
    assert [prec.size_class(t) for t in (1, 32, 33, 110, 5632, 10**6)] == [32, 32, 64, 128, 4096, 4096]


def test_this_machine_is_read_from_its_cpu_flags() -> None:
    hw = prec.cpu_hardware()
    flags = set(open("/proc/cpuinfo").read().split())
    assert hw.device == "cpu" and hw.native_bf16 == bool(flags & set(prec.CPU_BF16_FLAGS))
    assert choose("auto", CPU, 64, 256, 5632) == prec.rule(hw, 64, 256, 5632)


def test_validation_config_reads_and_checks_prefill_precision() -> None:
    assert ValidationConfig().prefill_precision == "auto"
    assert from_dict(ValidationConfig, {"prefill_precision": "fp32"}, "validation").prefill_precision == "fp32"
    with pytest.raises(ConfigError, match="prefill_precision"):
        ValidationConfig(prefill_precision="fp16")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="bf16_prefill"):  # the old boolean is gone, not silently ignored
        from_dict(ValidationConfig, {"bf16_prefill": True}, "validation")


def test_recompute_states_runs_the_chosen_precision_and_rechecks_bf16_failures_in_float32() -> None:
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

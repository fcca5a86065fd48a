"""The real LM on chain (issue 12): configs/lm_task.toml, made small (2 prompts x 4 samples per inner step:
a quarter of the rollouts), run by `scripts.demo.run_network` with 2 honest trainers, the inflated_rewards
cheater and 2 validators as separate processes, 2 rounds of LoRA GRPO on SmolLM2-135M-Instruct with every
check in force (full mode, the shipped file's own): round 1 builds on the adapters round 0 trained. The
shipped size is what `concord bench lm` and `concord demo --task-file configs/lm_task.toml` run.

One run per module (about a minute and a half here); each test asserts one part of what it left."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from own_devnet import NetworkRun, network_run

from concord.client import chain
from concord.client.chain import Role
from concord.client.content.model_store import LMAdaptersConfig, fetch_model
from concord.client.digest import Digest
from concord.client.engine.lm import SMOLLM2_135M, file_sha256, gguf_path
from scripts.demo import NetworkPlan, demo_nodes

ROUNDS = 2
TASK_FILE = Path(__file__).resolve().parents[1] / "configs" / "lm_task.toml"


def small_task(path: Path) -> Path:
    """The shipped LM task file with 2 prompts x 4 samples per inner step (its other terms as shipped)."""
    text = TASK_FILE.read_text()
    for old, new in [("prompts_per_step = 4", "prompts_per_step = 2"), ("group_size = 8", "group_size = 4")]:
        assert old in text, old
        text = text.replace(old, new)
    path.write_text(text)
    return path


pytestmark = [pytest.mark.slow, pytest.mark.e2e]


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NetworkRun]:
    nodes = demo_nodes(honest=2, cheat="inflated_rewards", validators=2)
    state = tmp_path_factory.mktemp("lm-network")
    plan = NetworkPlan(small_task(state / "lm_task.toml"), ROUNDS, nodes, timeout_s=900.0, live=False)
    with network_run(state, plan) as run:
        yield run


def test_the_cheater_is_rejected_by_the_rewards_check_and_slashed(network: NetworkRun):
    (cheater,) = network.outcome.cheaters
    logs = Path(network.net.state_dir) / "logs"
    for spec in network.plan.nodes:
        if spec.role != Role.VALIDATOR:
            continue
        lines = [json.loads(x) for x in (logs / f"{spec.name}.log").read_text().splitlines() if x.startswith("{")]
        rejected = [x for x in lines if x.get("event") == "rejected"]
        assert [(x["round"], x["check"], x["trainer"].lower()) for x in rejected] == [
            (r, "rewards", cheater.lower()) for r in range(ROUNDS)
        ]
    for r in range(ROUNDS):
        (slash,) = network.of(chain.SubmissionRejected, round=r)
        assert slash.trainer == cheater and slash.slashed > 0
    assert network.outcome.cheater_slashed and network.outcome.bounties_paid


def test_honest_trainers_are_paid_and_money_is_conserved(network: NetworkRun):
    honest = [a for a in network.addresses(Role.TRAINER) if a not in network.outcome.cheaters]
    for r in range(ROUNDS):
        paid = {e.trainer for e in network.of(chain.SubmissionRewarded, round=r)}
        assert paid == set(honest)
    assert network.outcome.conservation.holds


def test_round_models_are_adapters_on_one_base_put_in_ipfs_once(network: NetworkRun, tmp_path: Path):
    c, task_id = network.client.concord, network.outcome.task_id
    digests = [Digest.parse(c.model_digest(task_id, m).digest) for m in range(ROUNDS + 1)]
    assert len(set(digests)) == ROUNDS + 1  # every round accepted someone: the adapters moved
    models = [fetch_model(network.store, d, tmp_path / "models", 1 << 24) for d in digests]
    configs = [m.config for m in models]
    assert all(isinstance(cfg, LMAdaptersConfig) for cfg in configs)
    base = configs[0].base  # type: ignore[union-attr]
    assert all(cfg.base == base for cfg in configs)  # type: ignore[union-attr]
    assert base.sha256 == file_sha256(gguf_path(SMOLLM2_135M)).hex()  # the shipped GGUF, by its bytes
    assert all(cfg.weights_sha256 == str(SMOLLM2_135M.weights_sha256) for cfg in configs)  # type: ignore[union-attr]
    assert models[0].manifest.parent is None
    for r in range(ROUNDS):
        assert models[r + 1].manifest.parent == digests[r]
        moved = sum(float((models[r + 1].state[n] - models[r].state[n]).norm()) for n in models[r].state)
        assert moved > 0
    assert sum(t.numel() for t in models[0].state.values()) == 460_800  # rank 8 on q_proj, v_proj of 30 layers


def test_both_validators_revealed_the_same_model(network: NetworkRun):
    for r in range(ROUNDS):
        votes = {e.validator: e.next_model_digest for e in network.of(chain.Revealed, round=r)}
        assert sorted(votes) == sorted(network.addresses(Role.VALIDATOR))
        assert len(set(votes.values())) == 1


def test_the_last_model_exports_as_a_merged_transformers_model(network: NetworkRun, tmp_path: Path):
    from transformers import AutoModelForCausalLM

    from concord.client.content.task_spec import fetch_task_spec
    from concord.client.engine import lm
    from concord.client.engine.lm_rollout import attach_adapters, load_adapter_state
    from concord.client.model_export import export_model, verify_export
    from concord.client.runtime import paths
    from concord.client.runtime.lm_work import ADAPTERS_FILE

    c, task_id = network.client.concord, network.outcome.task_id
    digest = Digest.parse(c.model_digest(task_id, ROUNDS).digest)
    spec_digest = c.task_params(task_id).spec_digest
    out = tmp_path / "merged"
    result = export_model(network.store, task_id, ROUNDS, digest, out, spec_digest=spec_digest)
    assert result.kind == "lm-adapters" and result.tensors == 120
    assert {"model.safetensors", "config.json", "tokenizer.json", ADAPTERS_FILE} <= set(result.files)
    assert verify_export(out, digest) == digest

    # the merged model computes what the base with the round's adapters computes
    spec = fetch_task_spec(network.store, spec_digest)
    adapters = fetch_model(network.store, digest, tmp_path / "models", 1 << 24).state
    base = lm.load(SMOLLM2_135M, paths.models_dir())
    peft_model = attach_adapters(base.model, spec.task.adapter)  # type: ignore[union-attr]
    load_adapter_state(peft_model, adapters)
    merged = AutoModelForCausalLM.from_pretrained(str(out)).eval()
    ids = torch.tensor([base.tokenizer.encode("What is 3 + 4? Give only the final answer.")])
    with torch.no_grad():
        want, got = peft_model(ids).logits, merged(ids).logits
    assert float((want - got).abs().max()) < 1e-3
    assert any(float(t.abs().max()) > 0 for n, t in adapters.items() if "lora_B" in n)  # trained, not the base

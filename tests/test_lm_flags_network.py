"""Row flags on the LM (issue 24 item 5), against real Anvil + js-ipfs + SmolLM2-135M with LoRA and real TOPLOC.

One round of a small LM task (configs/lm_task.toml with 2 prompts x 4 samples x 2 inner steps) in sampled mode,
two trainers and two validators stepped in turn in this process (validator.node.step): an honest one whose own
sample holds every row (row_fraction 1, so its catch is certain here), and the lab's `lazy` one, which samples
no row (a validator whose own sample missed the fault). Trainer #1 edits one token of one rollout (the LM's
hardest row-level cheat: one row of 16 changed, every cheap check passes). The honest validator flags that row
on chain; the lazy one re-checks exactly the flagged row, finds the fault again and rejects too, so both reject
(a strict majority: slashed), the honest trainer is paid by both, and both reveal the same next model. The
flag window (commitSeconds / 2 = 450 s here) is never waited out: it closes once both validators flagged.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from own_devnet import FAST, assert_flagged_round_settled, devnet_node, step_round_to_finality

from concord.client.chain import Flagged, Phase, Role, keys
from concord.client.initiator import load_task_file, publish_task
from concord.client.runtime.connect import connect_node
from concord.client.runtime.task import load_task_context, round_base
from concord.validator import consensus as vcons
from concord.validator import context as vctx
from concord.validator import node as vnode
from concord.validator import store as vstore
from concord.validator.flags import ROW, FlagItem
from scripts.adversaries import validator_cheats as cheats
from scripts.adversaries.lm_cheats import LMCheatContext, edited_tokens
from scripts.harness import enrol

pytestmark = pytest.mark.slow  # integration (real Anvil + js-ipfs, one process): about 2 minutes here

TOKEN = 10**18
STAKE = 100 * TOKEN
HONEST_T, CHEAT_T, HONEST_V, LAZY_V = 1, 2, 4, 5
LM_TOML = Path(__file__).resolve().parents[1] / "configs" / "lm_task.toml"
SAMPLED = """
[validation]
mode = "sampled"
row_fraction = 1.0
replay_steps = 0
prefill_precision = "fp32"
"""


def addr(account: int) -> str:
    return keys.devnet_account(account).address


def small_lm_task() -> str:
    """The default LM task file, made small (2 prompts x 4 samples per step, one round, two validators) and
    sampled (every row, no replay: the honest validator's catch is certain, the round cheap)."""
    text = LM_TOML.read_text()
    for old, new in [
        ("prompts_per_step = 4", "prompts_per_step = 2"),
        ("group_size = 8", "group_size = 4"),
        ("max_rounds = 3", "max_rounds = 1"),
        ("min_validators = 1", "min_validators = 2"),
    ]:
        assert old in text, old
        text = text.replace(old, new)
    return text + SAMPLED


def test_a_row_one_honest_validator_flags_on_the_lm_is_rejected_by_both(chain_env, ipfs, tmp_path):
    client = chain_env.client
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        (tmp_path / "task.toml").write_text(small_lm_task())

        def cfg(account: int, role: str, task_id: int = 0):
            url, state = chain_env.anvil.url, tmp_path / f"n{account}"
            return devnet_node(
                role, url, client.deployment, ipfs.api, state, account, task_id, **FAST, ipfs_timeout=2.0
            )

        initiator = connect_node(cfg(0, "initiator"))
        spec = load_task_file(tmp_path / "task.toml")
        assert spec.spec.validation.mode == "sampled"
        task_id = publish_task(client, initiator.signer, initiator.store, spec).task_id
        lazy = cheats.CheatingValidator(cheats.VALIDATOR_CHEATS["lazy"])
        hooks = {HONEST_V: vnode.HONEST, LAZY_V: lazy}
        vals = [
            vnode.connect_validator(vctx.ValidatorConfig(cfg(a, "validator", task_id)), h) for a, h in hooks.items()
        ]
        assert all(v.task.workload.row_flags for v in vals)
        for v in vals:
            vcons.ensure_enrolled(v)
        signers = {a: chain_env.signer(a) for a in (HONEST_T, CHEAT_T)}
        for s in signers.values():
            enrol(client, s, Role.TRAINER, STAKE, task_id)
        for v in vals:  # submit phase: each commits its seed share
            vnode.step(v)

        trainer = connect_node(cfg(HONEST_T, "trainer", task_id))
        ctx = load_task_context(trainer, task_id)
        work, base = ctx.workload, round_base(ctx, trainer.store, 0)
        grpo = ctx.spec.task.grpo
        honest = work.train(base, task_id, 0, addr(HONEST_T), 0)
        cheat_ctx = LMCheatContext(work.rollouts, base, base, grpo, task_id, 0, addr(CHEAT_T), addr(HONEST_T))
        bundles = {HONEST_T: honest, CHEAT_T: edited_tokens(cheat_ctx)}
        for account, bundle in bundles.items():
            digest = work.put(trainer.store, bundle)
            client.concord.submit(
                signers[account], task_id, 0, 0, digest.bytes, bytes(bundle.proof_root), bundle.work_units
            )
        assert client.concord.phase_of(task_id, 0) == Phase.COMMIT  # closed early: every trainer and share is in

        step_round_to_finality(client, vals, task_id)
    finally:
        torch.set_num_threads(threads)

    flags = {
        e.validator.lower(): [FlagItem.from_word(w) for w in e.items]
        for e in client.concord.events(client.deployment.block_number, "latest", ["Flagged"])
        if isinstance(e, Flagged) and e.task_id == task_id
    }
    (item,) = flags[addr(HONEST_V).lower()]  # the edited row: row 0 of step 0's first group
    assert (item.submission, item.kind, item.step, item.row) == (1, ROW, 0, 0)
    assert flags[addr(LAZY_V).lower()] == []
    verdicts = {
        a: {x.index: x for x in vstore.load_verdicts(vctx.task_dir(tmp_path / f"n{a}", task_id))}
        for a in (HONEST_V, LAZY_V)
    }
    for a in (HONEST_V, LAZY_V):
        assert verdicts[a][0].accepted, a
        assert not verdicts[a][1].accepted and verdicts[a][1].failed_check == item.check_name, (a, verdicts[a][1])
    lazy_dir = vctx.task_dir(tmp_path / f"n{LAZY_V}", task_id)
    assert_flagged_round_settled(
        client, task_id, lazy_dir, verdicts[LAZY_V][1].evidence_digest, addr(HONEST_V), addr(CHEAT_T), addr(HONEST_T)
    )

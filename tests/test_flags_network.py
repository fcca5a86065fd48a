"""One honest validator suffices (issue 21), against real Anvil + js-ipfs + torch.

A round of the small task in sampled mode with two trainers and two validators that run
`concord.validator.node.step` in turn in this process: an honest one, and a `lazy` one (the lab's hook that samples
no row and no step, as a validator whose own sample happened to miss the fault). Trainer #1 submits
proofs of random bytes (consistent proof root): only a sampled row sees them. The honest validator's sample
fails, it flags the row on chain; the lazy one, which accepted on its own sample, re-checks exactly the
flagged row, finds the fault again and rejects too. So the cheater is rejected by both (a strict majority:
slashed), the honest trainer paid by both, and the two validators commit the same next model.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
from own_devnet import FAST, assert_flagged_round_settled, devnet_node, step_round_to_finality

from concord.client import chain
from concord.client.chain import Flagged, Phase, Role, keys
from concord.client.content.submission import put_submission
from concord.client.digest import Digest
from concord.client.engine.bundle import Bundle, make_bundle, proofs_root
from concord.client.engine.grpo import pin_determinism
from concord.client.initiator import load_task_file, publish_task
from concord.client.runtime.connect import connect_node
from concord.client.runtime.task import load_task_context, model_for_round
from concord.validator import consensus as vcons
from concord.validator import context as vctx
from concord.validator import node as vnode
from concord.validator import store as vstore
from concord.validator.flags import MAX_FLAGS, ROW, FlagItem
from scripts.adversaries import validator_cheats as cheats
from scripts.harness import enrol

TOKEN = 10**18
STAKE = 100 * TOKEN
TASK_TOML = (Path(__file__).parent / "data" / "small_task.toml").read_text()
HONEST_T, CHEAT_T, HONEST_V, LAZY_V = 1, 2, 4, 5


def addr(account: int) -> str:
    return keys.devnet_account(account).address


def random_proofs(bundle: Bundle) -> Bundle:
    """Every proof replaced by random bytes of its length, the proof root recomputed (so the cheap checks pass)."""
    rng = np.random.default_rng(7)
    proofs = tuple(tuple(tuple(rng.bytes(len(p)) for p in r) for r in step) for step in bundle.proofs)
    return dataclasses.replace(bundle, proofs=proofs, proof_root=proofs_root(proofs))


def play_round(chain_env, ipfs, tmp_path: Path, validators: dict[int, vnode.ValidatorHooks], cheat: bool) -> int:
    """Round 0 of the small task (sampled) with trainers HONEST_T and CHEAT_T (random proofs when ``cheat``,
    else honest) and ``validators`` (account -> hooks) stepped in turn until it is finalized; the task id."""
    client = chain_env.client
    pin_determinism(1)
    (tmp_path / "task.toml").write_text(TASK_TOML.format(inner_steps=2, max_rounds=1, min_validators=2))

    def cfg(account: int, role: str, task_id: int = 0):
        url, state = chain_env.anvil.url, tmp_path / f"n{account}"
        return devnet_node(role, url, client.deployment, ipfs.api, state, account, task_id, **FAST, ipfs_timeout=2.0)

    initiator = connect_node(cfg(0, "initiator"))
    spec = load_task_file(tmp_path / "task.toml")
    assert spec.spec.validation.mode == "sampled"
    task_id = publish_task(client, initiator.signer, initiator.store, spec).task_id
    vals = [
        vnode.connect_validator(vctx.ValidatorConfig(cfg(a, "validator", task_id)), h) for a, h in validators.items()
    ]
    for v in vals:
        vcons.ensure_enrolled(v)
    signers = {a: chain_env.signer(a) for a in (HONEST_T, CHEAT_T)}
    for s in signers.values():
        enrol(client, s, Role.TRAINER, STAKE, task_id)
    for v in vals:  # submit phase: each commits its seed share
        vnode.step(v)
    assert client.concord.seed_info(task_id, 0).shares_committed == (1 << len(vals)) - 1

    trainer = connect_node(cfg(HONEST_T, "trainer", task_id))
    ctx = load_task_context(trainer, task_id)
    policy0 = model_for_round(ctx, trainer.store, 0)
    second = make_bundle(policy0, ctx.env, ctx.task, task_id, 0, addr(CHEAT_T))
    bundles = {
        HONEST_T: make_bundle(policy0, ctx.env, ctx.task, task_id, 0, addr(HONEST_T)),
        CHEAT_T: random_proofs(second) if cheat else second,
    }
    for account, bundle in bundles.items():
        digest, _ = put_submission(trainer.store, bundle)
        client.concord.submit(
            signers[account], task_id, 0, 0, Digest.parse(digest).bytes, bytes(bundle.proof_root), bundle.work_units
        )
    assert client.concord.phase_of(task_id, 0) == Phase.COMMIT  # closed early: every trainer and share is in

    step_round_to_finality(client, vals, task_id)
    return task_id


def round_flags(client: chain.ChainClient, task_id: int) -> dict[str, list[FlagItem]]:
    return {
        e.validator.lower(): [FlagItem.from_word(w) for w in e.items]
        for e in client.concord.events(client.deployment.block_number, "latest", ["Flagged"])
        if isinstance(e, Flagged) and e.task_id == task_id
    }


def test_a_fault_one_honest_validator_flags_is_rejected_by_every_honest_validator(chain_env, ipfs, tmp_path):
    client = chain_env.client
    lazy = cheats.CheatingValidator(cheats.VALIDATOR_CHEATS["lazy"])
    task_id = play_round(chain_env, ipfs, tmp_path, {HONEST_V: vnode.HONEST, LAZY_V: lazy}, cheat=True)

    # the honest validator flagged one row of the cheater's submission (index 1); the lazy one flagged nothing
    flags = round_flags(client, task_id)
    honest_flags = flags[addr(HONEST_V).lower()]
    assert len(honest_flags) == 1 and honest_flags[0].submission == 1 and honest_flags[0].kind == ROW
    assert flags[addr(LAZY_V).lower()] == []

    verdicts = {
        a: {x.index: x for x in vstore.load_verdicts(vctx.task_dir(tmp_path / f"n{a}", task_id))}
        for a in (HONEST_V, LAZY_V)
    }
    for a in (HONEST_V, LAZY_V):
        assert verdicts[a][0].accepted, a
        assert not verdicts[a][1].accepted and verdicts[a][1].failed_check == "toploc", (a, verdicts[a][1])
    lazy_dir = vctx.task_dir(tmp_path / f"n{LAZY_V}", task_id)
    assert_flagged_round_settled(
        client, task_id, lazy_dir, verdicts[LAZY_V][1].evidence_digest, addr(HONEST_V), addr(CHEAT_T), addr(HONEST_T)
    )


def test_false_flags_cost_one_bounded_recheck_and_change_no_verdict(chain_env, ipfs, tmp_path, caplog):
    """The lab's false flagger flags MAX_FLAGS made-up rows of the two honest submissions; the honest validator
    re-checks exactly those rows (its own sample did not cover them), finds nothing, and both trainers are paid
    by both validators' votes."""
    client = chain_env.client
    liar = cheats.CheatingValidator(cheats.VALIDATOR_CHEATS["false_flags"])
    with caplog.at_level(logging.INFO, logger="concord.validator"):
        task_id = play_round(chain_env, ipfs, tmp_path, {HONEST_V: vnode.HONEST, LAZY_V: liar}, cheat=False)
    flags = round_flags(client, task_id)
    assert len(flags[addr(LAZY_V).lower()]) == MAX_FLAGS and flags[addr(HONEST_V).lower()] == []
    rechecked = [r for r in caplog.records if "re-checked, none holds" in r.getMessage()]
    assert rechecked, "the honest validator re-checked nothing"
    verdicts = {x.index: x for x in vstore.load_verdicts(vctx.task_dir(tmp_path / f"n{HONEST_V}", task_id))}
    assert all(x.accepted for x in verdicts.values()) and len(verdicts) == 2
    events = client.concord.events(client.deployment.block_number, "latest")
    assert not [e for e in events if isinstance(e, chain.SubmissionRejected) and e.task_id == task_id]
    paid = sorted(e.trainer for e in events if isinstance(e, chain.SubmissionRewarded) and e.task_id == task_id)
    assert paid == sorted([addr(HONEST_T), addr(CHEAT_T)])

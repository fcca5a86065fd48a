"""A sampled round on a devnet (real Anvil, js-ipfs, torch): the validator node waits for the round's
check seed (fixed on chain after the submit phase closed), draws its sample from it and its address,
fetches only the inner states that sample needs, replays inner steps alone, and catches a trainer
whose end state and delta training did not produce while paying the honest one."""

from __future__ import annotations

import dataclasses
import json
import threading

import torch
from own_devnet import devnet_node
from task_terms import CFG, STAKE, node_task

from concord.client import chain
from concord.client.chain import CheckSeedFixed, Role, SubmissionRejected, SubmissionRewarded, keys
from concord.client.content.store import Store
from concord.client.content.submission import put_submission
from concord.client.engine.bundle import make_bundle
from concord.client.engine.config import ValidationConfig
from concord.client.engine.envs import make_env
from concord.client.engine.grpo import pin_determinism
from concord.client.engine.model import build_policy
from concord.client.initiator import publish_task
from concord.validator import consensus as vcons
from concord.validator import context as vctx
from concord.validator import node as vnode
from concord.validator import store as vstore
from concord.validator.sampling import draw_sample
from scripts import harness
from scripts.harness import enrol

INITIATOR, HONEST, CHEATER, VALIDATOR = 0, 1, 2, 4
# 2 of the 16 rows get the prefill checks; both inner steps are replayed alone (from the committed
# inner states), so an end state that training did not produce is caught every time
SAMPLED = ValidationConfig(mode="sampled", row_fraction=0.125, replay_steps=2)


def test_sampled_round_catches_a_forged_end_state_and_pays_the_honest_trainer(anvil, deployed, ipfs, tmp_path) -> None:
    client = chain.connect(anvil.url, deployed.deployment)
    snap = client.rpc.call("evm_snapshot")
    stop = threading.Event()
    thread: threading.Thread | None = None
    errors: list[BaseException] = []
    try:
        pin_determinism(1)
        store = Store(ipfs.api, tmp_path / "cache", timeout=5.0)
        signer = lambda i: client.signer(keys.devnet_account(i))  # noqa: E731
        base = node_task(max_rounds=1, min_validators=1)
        task = dataclasses.replace(base, spec=dataclasses.replace(base.spec, validation=SAMPLED))
        task_id = publish_task(client, signer(INITIATOR), store, task).task_id
        for i in (HONEST, CHEATER):
            enrol(client, i, Role.TRAINER, STAKE, task_id)
        node = devnet_node(
            "validator", anvil.url, deployed.deployment, ipfs.api, tmp_path / "val", VALIDATOR, task_id,
            poll_interval=0.1, heartbeat=1.0, ipfs_timeout=5.0,
        )  # fmt: skip
        cfg = vctx.ValidatorConfig(node, rounds=1)
        vcons.ensure_enrolled(vnode.connect_validator(cfg))

        env, policy0 = make_env(CFG.env), build_policy(CFG.model)
        addr = {i: keys.devnet_account(i).address for i in (HONEST, CHEATER, VALIDATOR)}
        honest = make_bundle(policy0, env, CFG, task_id, 0, addr[HONEST])
        trained = make_bundle(policy0, env, CFG, task_id, 0, addr[CHEATER])
        # a consistent cheater: honest rollouts, proofs and inner state 1, a random theta_H committed as
        # state 2 and delta = theta_H - theta_base (so the cheap link holds; only replaying step 1 sees it)
        torch.manual_seed(0)
        base_params = {k: p.detach().float() for k, p in policy0.named_parameters()}
        end = dict(trained.states[1])
        for k, t in trained.delta.items():
            end["param." + k] = base_params[k] + torch.randn_like(t) * t.std()
        delta = {k: end["param." + k] - base_params[k] for k in trained.delta}
        cheat = dataclasses.replace(trained, delta=delta, states=(trained.states[0], end))
        digests = {}
        for i, b in ((HONEST, honest), (CHEATER, cheat)):
            digests[i], _ = put_submission(store, b)
            client.concord.submit(signer(i), task_id, 0, 0, digests[i].bytes, bytes(b.proof_root), b.work_units)

        def run() -> None:
            try:
                vnode.run_validator(cfg, stop)
            except Exception as e:  # reported by wait_for below
                errors.append(e)

        thread = threading.Thread(target=run, name="validator")
        thread.start()
        harness.wait_for(
            "round 0 to finalize",
            lambda: client.concord.task_state(task_id).finalized_rounds >= 1,
            120,
            alive=lambda: f"validator failed: {errors[0]!r}" if errors else None,
            poll=0.2,
        )
        events = [
            e for e in client.concord.events(deployed.deployment.block_number) if getattr(e, "task_id", -1) == task_id
        ]
        seeds = [e for e in events if isinstance(e, CheckSeedFixed)]
        assert len(seeds) == 1 and seeds[0].round == 0
        assert seeds[0].seed == client.concord.check_seed(task_id, 0)
        assert [e.trainer.lower() for e in events if isinstance(e, SubmissionRejected)] == [addr[CHEATER].lower()]
        assert [e.trainer.lower() for e in events if isinstance(e, SubmissionRewarded)] == [addr[HONEST].lower()]

        # the verdicts followed this validator's own sample of each submission
        folder = vctx.task_dir(tmp_path / "val", task_id)
        verdicts = {x.index: x for x in vstore.load_verdicts(folder)}
        assert (verdicts[0].accepted, verdicts[1].accepted, verdicts[1].failed_check) == (
            True,
            False,
            "training_replay",
        )
        evidence = json.loads(vstore.evidence_path(folder, verdicts[1].evidence_digest).read_text())
        sample = draw_sample(seeds[0].seed, addr[VALIDATOR], digests[CHEATER], 2, 8, SAMPLED)
        toploc = [c for c in evidence["checks"] if c["name"] == "toploc"]
        assert sum(int(c["evidence"]["rollouts"]) for c in toploc) == sample.row_count == 2  # of 16 rollouts
    finally:
        stop.set()
        if thread is not None:
            thread.join(timeout=60)
        client.rpc.call("evm_revert", snap)

"""An asynchronous round through a real validator (issue 23): asyncLevel 1, real Anvil + IPFS + torch + toploc.

Two trainers submit round 0 on model 0, then round 1 on model 0 too (round 1 opens while round 0 is being
verified: the async window), before model 1 exists. The honest validator (the node's own step loop) verifies
round 1's submissions under their own base model (model 0: under model 1 their replay would fail) and builds
model 2 from model 1 with the stale deltas rebased onto it (validator.next_model.stale_bases loads model 0).
The on-chain model 2 is recomputed here from IPFS alone: the outer step with staleness 1 and model 0 as base,
and it differs from the outer step that would take the deltas as fresh.
"""

from __future__ import annotations

import dataclasses
import time

import pytest
from task_terms import STAKE, node_task

from concord.client import chain
from concord.client.chain import Phase, Role, keys
from concord.client.content.model_store import put_model
from concord.client.content.store import Store
from concord.client.digest import Digest
from concord.client.engine.grpo import pin_determinism
from concord.client.initiator import publish_task
from concord.client.runtime.config import NodeConfig
from concord.client.runtime.connect import Node
from concord.client.runtime.display import Display
from concord.client.runtime.task import final_model_digest, load_task_context, phase_now
from concord.client.trainer import prepare_submission, submit_round
from concord.validator import consensus as vcons
from concord.validator import context as vctx
from concord.validator import fetch as vfetch
from concord.validator import node as vnode
from concord.validator.aggregate import outer_step
from scripts.harness import enrol

pytestmark = [pytest.mark.slow, pytest.mark.integration]

INITIATOR, TRAINERS, VALIDATOR = 0, (1, 2), 4
DISPLAY = Display("test", json_logs=True)


def test_a_stale_round_is_verified_on_its_base_and_rebased_onto_the_current_model(
    anvil, deployed, ipfs, tmp_path
) -> None:
    task = node_task(max_rounds=2, min_validators=1)
    task = dataclasses.replace(task, params=dataclasses.replace(task.params, async_level=1))
    assert task.spec.task.outer.staleness_rebase > 0  # the default rule is the one under test
    client = chain.connect(anvil.url, deployed.deployment)
    snap = client.rpc.call("evm_snapshot")
    try:
        pin_determinism(1)
        signer = lambda i: client.signer(keys.devnet_account(i))  # noqa: E731
        task_id = publish_task(client, signer(INITIATOR), Store(ipfs.api, tmp_path / "init"), task).task_id
        nodes = {
            i: Node(client, signer(i), Store(ipfs.api, tmp_path / f"cache-{i}"), tmp_path / f"t{i}") for i in TRAINERS
        }
        for n in nodes.values():
            enrol(client, n.signer, Role.TRAINER, STAKE)
            client.concord.join(n.signer, task_id)
        ctxs = {i: load_task_context(n, task_id) for i, n in nodes.items()}
        vn = Node(client, signer(VALIDATOR), Store(ipfs.api, tmp_path / "cache-v"), tmp_path / "v")
        v = vctx.Validator(
            vctx.ValidatorConfig(NodeConfig("validator", anvil.url, client.deployment, ipfs.api, task_id)),
            vn,
            load_task_context(vn, task_id),
            vnode.HONEST,
        )
        vcons.ensure_enrolled(v)

        # rounds 0 and 1, both on model 0 (round 1 named base 0 whether or not model 1 is final by then)
        digests: dict[int, list[str]] = {0: [], 1: []}
        vfetch.backfill_submissions(v)
        for round_ in (0, 1):
            for _ in range(40):  # the validator works through round 0 until round 1 takes submissions
                if phase_now(client, task_id, round_) == Phase.SUBMIT:
                    break
                vnode.step(v)
            for i in TRAINERS:
                prep = prepare_submission(nodes[i], ctxs[i], round_, 0, DISPLAY)
                assert submit_round(nodes[i], ctxs[i], prep, DISPLAY) is not None
                digests[round_].append(str(Digest.parse(prep.digest)))
        subs = [e for e in client.concord.events(0, "latest", ["Submitted"]) if e.task_id == task_id]
        assert sorted((e.round, e.base_round) for e in subs) == [(0, 0), (0, 0), (1, 0), (1, 0)]

        vfetch.backfill_submissions(v)  # every Submitted event, round 1's included
        deadline = time.monotonic() + 240
        while client.concord.task_state(task_id).finalized_rounds < 2 and time.monotonic() < deadline:
            vnode.step(v)
            time.sleep(0.5)
        assert client.concord.task_state(task_id).finalized_rounds == 2
        assert sorted((k, x.accepted) for k, x in v.verdicts.items()) == [
            ((r, i), True) for r in (0, 1) for i in (0, 1)
        ]

        # model 2 from IPFS alone: model 1 + the two round-1 deltas, staleness 1, rebased with model 0
        store, work, cfg = v.store, v.task.workload, task.spec.task.outer
        model = {m: work.model_state(store, final_model_digest(v.task, m)) for m in (0, 1)}
        deltas = {d: work.fetch_delta(store, d) for d in digests[1]}
        stale = dict.fromkeys(deltas, 1)
        bases = {d: dict(model[0].state) for d in deltas}
        state, momentum = outer_step(model[1].state, deltas, model[1].outer_state or {}, cfg, stale, bases)
        expected = put_model(store, state, model[1].config, momentum, parent_digest=final_model_digest(v.task, 1))
        assert final_model_digest(v.task, 2) == expected
        fresh, fresh_m = outer_step(model[1].state, deltas, model[1].outer_state or {}, cfg, dict.fromkeys(deltas, 0))
        as_fresh = put_model(store, fresh, model[1].config, fresh_m, parent_digest=final_model_digest(v.task, 1))
        assert as_fresh != expected  # the rule acted: the stale deltas were rebased, not taken as fresh
    finally:
        client.rpc.call("evm_revert", snap)

"""Cheating trainers (issue 5) against the honest validator, with real Anvil + js-ipfs + torch + toploc.

One task (asyncLevel 0, one validator) is driven through round 0 for real: three trainers submit
through the trainer node's own functions, the validator verifies, commits, reveals, finalizes, so
model 1 is final and round 1 is open. In round 1 the trainer node prepares every bundle- and
upload-level cheat with `prepare_submission(..., CheatingTrainer(cheat))` (the hooks
`python -m scripts.adversaries.trainer run --cheat MODE` runs) and the validator's
`verify_submission` judges it from a Submitted record; the chain-level cheats (base_outside_window,
copied_bundle, replayed_bundle) go on chain and are judged from their real Submitted events.
Every mode must be rejected by the check its registry entry names.
"""

from __future__ import annotations

import dataclasses

import pytest
from own_devnet import FAST, devnet_node
from task_terms import STAKE, node_task

from concord.client import chain
from concord.client.chain import ContractError, Phase, Role, keys
from concord.client.content.manifest import parse_canonical
from concord.client.content.store import ContentNotFound, Store
from concord.client.digest import Digest
from concord.client.engine.grpo import pin_determinism
from concord.client.initiator import publish_task
from concord.client.runtime.config import NodeConfig
from concord.client.runtime.connect import Node
from concord.client.runtime.display import Display
from concord.client.runtime.task import TaskContext, load_task_context, phase_now
from concord.client.trainer import Prepared, prepare_submission, submit_round
from concord.validator import consensus as vcons
from concord.validator import context as vctx
from concord.validator import fetch as vfetch
from concord.validator import judge as vjudge
from concord.validator import node as vnode
from scripts.adversaries.trainer_cheats import CHEATS, CheatingTrainer, cheat_context
from scripts.harness import enrol

INITIATOR, TRAINER, OTHER, COPIER, VALIDATOR = 0, 1, 2, 3, 4
TASK = node_task(max_rounds=3, min_validators=1)
CHAIN_LEVEL = ("base_outside_window", "copied_bundle", "replayed_bundle")
IN_PROCESS = sorted(set(CHEATS) - set(CHAIN_LEVEL))
DISPLAY = Display("test", json_logs=True)
ROLLOUTS = 8  # per inner step: 2 prompts x 4 samples
EVIDENCE = {  # what the published evidence must show, beyond the failed check
    **{f"altered_token_{w}": {"rejected_rollouts": 1, "rejected_tokens": 1} for w in ("first", "middle", "last")},
    "foreign_model_proofs": {"step": 0, "rejected": ROLLOUTS},
    "stale_model": {"step": 0, "rejected": ROLLOUTS},
    "zero_proofs": {"step": 0, "rejected": ROLLOUTS},
    "random_proofs": {"step": 0, "rejected": ROLLOUTS},
    "proofs_one_short": {"step": 1, "rejected": 1},
    "wrong_prompts": {"step": 1, "index_mismatches": 0, "rows_altered": ROLLOUTS},
    "inflated_rewards": {"claimed_mean": 1.0},
    "malformed_manifest": {"field": "manifest.version", "reason": "unknown field"},
    "oversized_bundle": {"field": "stats.inner_steps", "reason": "over the task's limit of 2"},
    "unavailable_manifest": {"field": "manifest"},
    "padded_delta_shards": {"field": "delta[1]"},  # the first of the extra shards, refused before download
    "delta_shard_metadata": {"field": "delta[0].size"},  # the canonical size, refused before download
}


@dataclasses.dataclass
class Net:
    client: chain.ChainClient
    task_id: int
    trainers: dict[int, Node]
    ctxs: dict[int, TaskContext]
    v: vctx.Validator

    def prepare(self, who: int, round_: int, hooks: CheatingTrainer | None = None) -> Prepared:
        if hooks is None:
            return prepare_submission(self.trainers[who], self.ctxs[who], round_, round_, DISPLAY)
        return prepare_submission(self.trainers[who], self.ctxs[who], round_, round_, DISPLAY, hooks)

    def claim(self, who: int, hooks: CheatingTrainer, prep: Prepared) -> Prepared | None:
        return hooks.claim(self.trainers[who], self.ctxs[who], prep)

    def submit(self, who: int, prep: Prepared) -> chain.Submitted:
        receipt = submit_round(self.trainers[who], self.ctxs[who], prep, DISPLAY)
        assert receipt is not None
        events = [
            e
            for e in self.client.concord.events(receipt.block, receipt.block, ["Submitted"])
            if e.task_id == self.task_id
        ]
        assert len(events) == 1
        return events[0]


def fake_submitted(net: Net, who: int, index: int, prep: Prepared) -> chain.Submitted:
    """The event submitting ``prep`` would emit (only the validator's reading of it is under test)."""
    meta = chain.EventMeta(0, "0x" + "00" * 32, index)
    return chain.Submitted(
        meta,
        net.task_id,
        prep.round,
        net.trainers[who].address,
        index,
        prep.base_round,
        Digest.parse(prep.digest).bytes,
        prep.proof_root,
        prep.work_units,
    )


@pytest.fixture(scope="module")
def net(anvil, deployed, ipfs, tmp_path_factory) -> Net:
    tmp = tmp_path_factory.mktemp("cheats")
    client = chain.connect(anvil.url, deployed.deployment)
    snap = client.rpc.call("evm_snapshot")
    try:
        pin_determinism(1)
        signer = lambda i: client.signer(keys.devnet_account(i))  # noqa: E731
        task_id = publish_task(client, signer(INITIATOR), Store(ipfs.api, tmp / "init"), TASK).task_id
        trainers = {
            i: Node(client, signer(i), Store(ipfs.api, tmp / f"cache-{i}", timeout=1.0, retries=1), tmp / f"t{i}")
            for i in (TRAINER, OTHER, COPIER)
        }
        for i in trainers:
            enrol(client, trainers[i].signer, Role.TRAINER, STAKE)
        ctxs = {i: load_task_context(n, task_id) for i, n in trainers.items()}
        vn = Node(client, signer(VALIDATOR), Store(ipfs.api, tmp / "cache-v", timeout=1.0, retries=1), tmp / "v")
        v = vctx.Validator(
            vctx.ValidatorConfig(NodeConfig("validator", anvil.url, client.deployment, ipfs.api, task_id)),
            vn,
            load_task_context(vn, task_id),
            vnode.HONEST,
        )
        vcons.ensure_enrolled(v)
        net = Net(client, task_id, trainers, ctxs, v)

        # round 0, honest: two trainers submit, the validator settles it -> model 1 final, round 1 open
        for i in (TRAINER, OTHER):
            client.concord.join(trainers[i].signer, task_id)
        for i in (TRAINER, OTHER):
            net.submit(i, net.prepare(i, 0))
        vfetch.backfill_submissions(v)
        for _ in range(8):
            if client.concord.task_state(task_id).finalized_rounds >= 1:
                break
            vnode.step(v)
        assert client.concord.latest_model(task_id).model == 1
        assert [x.accepted for x in v.verdicts.values()] == [True, True]
        client.concord.join(trainers[COPIER].signer, task_id)  # from round 1 on
        assert phase_now(client, task_id, 1) == Phase.SUBMIT
        yield net
    finally:
        client.rpc.call("evm_revert", snap)


def test_honest_round_1_accepted(net):
    """The control: an honest node in the same round, same validator -> accepted.

    Not TRAINER: its honest round-1 manifest must stay out of IPFS until unavailable_manifest
    (which withholds exactly that manifest) has been judged."""
    prep = net.prepare(OTHER, 1)
    verdict = vjudge.verify_submission(net.v, fake_submitted(net, OTHER, 99, prep))
    assert (verdict.accepted, verdict.failed_check) == (True, "")


@pytest.mark.parametrize("mode", IN_PROCESS)
def test_bundle_level_cheat_rejected(net, mode):
    cheat = CHEATS[mode]
    assert cheat.acts(1, net.ctxs[TRAINER].params.async_level)
    hooks = CheatingTrainer(cheat)
    prep = net.prepare(TRAINER, 1, hooks)
    assert hooks.cheated == {1}
    if mode == "unavailable_manifest":
        with pytest.raises(ContentNotFound):
            net.v.store.get_manifest(prep.digest)
    if mode == "withheld_leaf":  # same delta bytes as earlier modes: a validator holding them (sha256-checked)
        for cached in net.v.store.cache_dir.iterdir():  # has the content; withholding works on one that does not
            cached.unlink()
    assert net.claim(TRAINER, hooks, prep) == prep  # no chain-level cheat: the claim is the upload's
    verdict = vjudge.verify_submission(net.v, fake_submitted(net, TRAINER, 100 + IN_PROCESS.index(mode), prep))
    print(f"\n{mode}: failed_check={verdict.failed_check}")
    assert not verdict.accepted
    assert verdict.failed_check == cheat.caught_by
    doc = parse_canonical(net.v.store.get_manifest(verdict.evidence_digest))
    assert doc["failed_check"] == cheat.caught_by and doc["trainer"] == net.trainers[TRAINER].address.lower()
    ev = doc["evidence"]
    assert {k: ev[k] for k in EVIDENCE.get(mode, {})} == EVIDENCE.get(mode, {})
    if mode == "work_units_off_by_one":
        assert ev["claimed_work_units"] == ev["recomputed_work_units"] + 1 == prep.work_units
    if mode == "delta_scaled_1_01":
        assert ev["rel_l2"] == pytest.approx(0.01, rel=1e-3)


def test_window_cheats_are_honest_before_their_first_round(net):
    """stale_model and base_outside_window need a model older than the window: round 0 is honest."""
    assert [m for m, c in sorted(CHEATS.items()) if not c.acts(0, 0)] == [
        "base_outside_window",
        "replayed_bundle",
        "stale_model",
    ]
    assert [m for m in ("base_outside_window", "replayed_bundle", "stale_model") if CHEATS[m].acts(2, 2)] == [
        "replayed_bundle"
    ]  # asyncLevel 2: the window modes start at round 3
    hooks = CheatingTrainer(CHEATS["stale_model"])
    prep = prepare_submission(net.trainers[TRAINER], net.ctxs[TRAINER], 0, 0, DISPLAY, hooks)
    assert net.claim(TRAINER, hooks, prep) == prep and hooks.cheated == set()


def test_chain_level_cheats(net):
    """Round 1 on chain: out-of-window base refused by the contract; a copy and a replay land and are rejected."""
    c, t = net.trainers[COPIER], net.trainers[TRAINER]

    outside = CheatingTrainer(CHEATS["base_outside_window"])
    out = net.claim(COPIER, outside, net.prepare(COPIER, 1, outside))
    assert (out.base_round, outside.cheated) == (0, {1})
    with pytest.raises(ContractError) as refused:
        submit_round(c, net.ctxs[COPIER], out, DISPLAY)
    assert refused.value.name == "BaseRoundOutOfWindow"

    copy = CheatingTrainer(CHEATS["copied_bundle"])
    copier = net.prepare(COPIER, 1, copy)
    assert net.claim(COPIER, copy, copier) is None  # nobody submitted round 1 yet: wait
    assert copy.cheated == set()
    original = net.submit(OTHER, net.prepare(OTHER, 1))
    copied = net.claim(COPIER, copy, copier)
    assert (copied.digest, copied.proof_root, copied.work_units, copy.cheated) == (
        Digest.parse(original.bundle_digest),
        original.proof_root,
        original.work_units,
        {1},
    )
    copy_event = net.submit(COPIER, copied)

    replay = CheatingTrainer(CHEATS["replayed_bundle"])
    replayer = net.prepare(TRAINER, 1, replay)
    replayed = net.claim(TRAINER, replay, replayer)
    mine0 = [
        e
        for e in net.client.concord.events(net.client.deployment.block_number, "latest", ["Submitted"])
        if e.task_id == net.task_id and e.round == 0 and e.trainer == t.address
    ][0]
    assert (replayed.digest, replayed.base_round, replay.cheated) == (Digest.parse(mine0.bundle_digest), 1, {1})
    replay_event = net.submit(TRAINER, replayed)

    vfetch.record_submissions(net.v, [original, copy_event, replay_event])
    verdicts = {e.trainer: vjudge.verify_submission(net.v, e) for e in (original, copy_event, replay_event)}
    assert [(x.accepted, x.failed_check) for x in verdicts.values()] == [
        (True, ""),
        (False, CHEATS["copied_bundle"].caught_by),
        (False, CHEATS["replayed_bundle"].caught_by),
    ]
    assert CHEATS["base_outside_window"].caught_by == "contract: BaseRoundOutOfWindow"


def test_cheat_context_reads_the_node(net):
    cc = cheat_context(net.trainers[TRAINER], net.ctxs[TRAINER], 1, 1)
    assert (cc.round, cc.base_round, cc.async_level, cc.trainer) == (1, 1, 0, net.trainers[TRAINER].address)
    assert cc.model(0) is not cc.policy


def test_trainer_loop_submits_the_cheat_and_logs_it(chain_env, ipfs, tmp_path, caplog):
    """run_trainer with the work_units_off_by_one hooks: honest + 1 work units on chain and in the manifest;
    the prepared and submitted log lines carry them, and the round's cheat line names the mode with cheated=True."""
    import logging
    import threading

    from concord.client.content.submission import fetch_submission
    from concord.client.trainer import TrainerConfig, run_trainer

    store = Store(ipfs.api, tmp_path / "cache", timeout=2.0)
    task_id = publish_task(chain_env.client, chain_env.signer(INITIATOR), store, TASK).task_id
    cfg = TrainerConfig(
        devnet_node(
            "trainer", chain_env.anvil.url, chain_env.client.deployment, ipfs.api, tmp_path / "t", 5, task_id, **FAST
        ),
        rounds=1,
    )
    hooks = CheatingTrainer(CHEATS["work_units_off_by_one"])
    stop = threading.Event()
    timer = threading.Timer(120, stop.set)
    timer.start()
    try:
        with caplog.at_level(logging.INFO, logger="concord.trainer"):
            run = run_trainer(cfg, stop, hooks)
    finally:
        timer.cancel()
    assert [s.round for s in run.submitted] == [0]
    [event] = [
        e
        for e in chain_env.client.concord.events(chain_env.client.deployment.block_number, "latest", ["Submitted"])
        if e.task_id == task_id
    ]
    bundle = fetch_submission(store, event.bundle_digest.hex(), TASK.spec.limits)
    assert event.work_units == bundle.work_units == sum(int(b.lengths.sum()) for b in bundle.batches) + 1
    logged = {r.fields["event"]: r.fields for r in caplog.records if hasattr(r, "fields")}
    for name in ("prepared", "submitted"):
        assert logged[name]["work_units"] == event.work_units
    assert [
        (r.name, r.fields["round"], r.fields["cheat"], r.fields["cheated"])
        for r in caplog.records
        if getattr(r, "fields", {}).get("event") == "cheat"
    ] == [("concord.trainer.cheat", 0, "work_units_off_by_one", True)]
    assert hooks.cheated == {0}

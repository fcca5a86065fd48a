"""Faults the nodes must survive, against real Anvil + js-ipfs + torch (issues 4 and 5, fault tolerance).

Not repeated here (tests/test_validator_node.py covers them): a validator SIGKILLed after its
commit while the commit phase is still open and restarted in the reveal phase reveals its plan,
is not slashed, and the round settles by the honest majority (scripts.drills has the same
scenario as a drill for `concord bench attacks`); a trainer stopped cleanly after its
submission does not resubmit. Added here:

* a trainer process SIGKILLed twice mid-round (right after a submission while its round is
  still open, and while it generates the next one) resumes from chain state, submits every
  round exactly once, and is paid exactly once per round;
* a validator SIGKILLed between commit and reveal that stays down past the reveal deadline:
  the round voids by the rules (too few reveals: no trainer paid or slashed, no fee, the
  non-revealer slashed, the pool back in the budget), and the restarted validator goes on
  with the next round, which settles normally;
* the nodes' own IPFS daemon down: a trainer that cannot upload and a validator that cannot
  fetch say so (the API address in the log line), retry, and carry on when it returns; the
  honest submission is accepted, not rejected for the validator's outage.

Through scripts.drills (each returns a DrillResult, also a row of the attack bench):

* a trainer SIGKILLed during its upload (files in IPFS, manifest not yet): nothing is
  submitted for it; restarted, it submits the round once and is paid once;
* the IPFS daemon SIGKILLed mid-round and restarted on the same repo 10 s later (its stale
  repo lock cleared): both nodes log the outage, retry, both honest submissions are accepted;
* Anvil frozen (SIGSTOP) for 5 s while a trainer submits and a validator follows: one submit,
  one commit, one reveal, each sender's nonces used once and in order;
* a reverted transaction is printed by the `concord` CLI with its custom error's name.

After every scenario: token conservation (protocol balance = escrow + stakes + credited), no
honest node slashed, no reward paid twice.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from concord.client import chain
from concord.client.chain import Role
from concord.client.runtime import procs
from concord.client.runtime.connect import connect_node
from concord.client.runtime.task import load_task_context, model_for_round
from concord.client.trainer import TrainerConfig, run_trainer
from concord.validator import consensus as vcons
from concord.validator import context as vctx
from concord.validator import node as vnode
from concord.validator import shares
from concord.validator import store as vstore
from scripts import devnet
from scripts import drills as drills
from scripts.drills import (
    PEER,
    STAKE,
    VAL_A,
    VAL_B,
    VICTIM,
    IpfsDaemon,
    NodeProcess,
    NodeThread,
    any_failed,
    events,
    node_argv,
    node_cfg,
)
from scripts.harness import TOKEN, conservation, enrol, wait_for

SLASH = 80 * TOKEN


# ----------------------------------------------------------------------------- helpers


def publish(client, ipfs_api: str, tmp: Path, rounds: int, min_validators: int) -> int:
    return drills.publish(client, ipfs_api, tmp, rounds, min_validators)


def assert_conserved(client) -> None:
    """DESIGN 3 invariants: the protocol's token balance is exactly what it owes, and so is each task's escrow."""
    cons = conservation(client)
    assert cons.holds, cons.problems()


def assert_drill(result: drills.DrillResult) -> None:
    """The three checks every scenario ends with, plus the drill's own expectations (in ``ok``)."""
    assert result.conservation_ok, result
    assert result.honest_slashed == (), result
    assert result.paid_twice == (), result
    assert result.ok, result.detail


@pytest.fixture
def node_processes() -> Iterator[list[NodeProcess]]:
    started: list[NodeProcess] = []
    try:
        yield started
    finally:
        for p in started:
            p.kill()


@pytest.fixture
def node_threads() -> Iterator[list[NodeThread]]:
    started: list[NodeThread] = []
    try:
        yield started
    finally:
        for t in started:
            t.stop.set()
        for t in started:
            t.thread.join(timeout=60)


# ----------------------------------------------------------------------------- (a) trainer SIGKILL


@pytest.mark.slow
@pytest.mark.e2e
def test_trainer_sigkilled_mid_round_resumes_and_never_submits_twice(
    chain_env, ipfs, tmp_path: Path, node_processes, node_threads
):
    client, rounds = chain_env.client, 3
    task_id = publish(client, ipfs.api, tmp_path, rounds, min_validators=1)
    victim = enrol(client, VICTIM, Role.TRAINER, STAKE, task_id)  # both joined: a round waits for both
    other = enrol(client, PEER, Role.TRAINER, STAKE, task_id)
    enrol(client, VAL_A, Role.VALIDATOR, STAKE, task_id)

    argv = node_argv("concord.client.trainer", client, ipfs.api, tmp_path, task_id, VICTIM, "victim", rounds)
    first = NodeProcess(argv)
    node_processes.append(first)
    wait_for("the victim's round 0 submission", lambda: first.saw("submitted", round=0), alive=any_failed(first))
    # round 0 is still taking submissions (the peer has not submitted): kill the trainer now
    assert client.concord.phase_of(task_id, 0) == chain.Phase.SUBMIT
    first.kill()

    second = NodeProcess(argv)  # restart: chain says round 0 is done; it must wait for round 1
    node_processes.append(second)
    validator = NodeThread(
        "validator",
        lambda stop: vnode.run_validator(
            vctx.ValidatorConfig(
                node_cfg(client, ipfs.api, tmp_path, task_id, VAL_A, "validator", "validator"), rounds=rounds
            ),
            stop,
        ),
    )
    peer = NodeThread(
        "peer",
        lambda stop: run_trainer(
            TrainerConfig(node_cfg(client, ipfs.api, tmp_path, task_id, PEER, "peer"), rounds=rounds), stop
        ),
    )
    node_threads += [validator, peer]
    alive = any_failed(second, validator, peer)
    # round 0 is done on chain, so the only round this process ever generates is round 1
    wait_for(
        "the restarted victim to start generating round 1",
        lambda: any(x.get("step") == "generating + training" for x in list(second.lines)),
        alive=alive,
    )
    second.kill()  # killed mid-round 1 (whatever it had sent stays on chain)

    third = NodeProcess(argv)
    node_processes.append(third)
    alive = any_failed(third, validator, peer)
    wait_for(
        "all rounds to finalize",
        lambda: client.concord.task_state(task_id).finalized_rounds >= rounds,
        timeout=150,
        alive=alive,
    )
    third.proc.wait(timeout=60)
    assert third.proc.returncode == 0, "".join(third.raw[-10:])
    validator.join()
    peer.join()

    # each start read its last submitted round from chain state
    assert [x["last_submitted"] for x in second.lines if x.get("event") == "started"] == [0]
    (third_start,) = [x for x in third.lines if x.get("event") == "started"]
    assert third_start["last_submitted"] == (1 if second.saw("submitted", round=1) else 0)
    subs = [(e.round, e.trainer) for e in events(client, task_id, "Submitted")]
    assert sorted(subs) == sorted((r, a) for r in range(rounds) for a in (victim, other))  # once each, never twice
    paid = [(e.round, e.trainer) for e in events(client, task_id, "SubmissionRewarded")]
    assert sorted(paid) == sorted(subs)
    assert events(client, task_id, "SubmissionRejected") == [] and events(client, task_id, "ValidatorSlashed") == []
    assert not any(e.is_void for e in events(client, task_id, "RoundFinalized"))
    reward = {e.trainer: 0 for e in events(client, task_id, "SubmissionRewarded")}
    for e in events(client, task_id, "SubmissionRewarded"):
        reward[e.trainer] += e.reward
    assert client.concord.balance_of(victim) == reward[victim] > 0
    assert client.concord.node_info(victim).stake == STAKE
    assert_conserved(client)


# ----------------------------------------------------------------------------- (b) validator down past the reveal


@pytest.mark.slow
@pytest.mark.e2e
def test_validator_down_past_the_reveal_deadline_voids_the_round_and_resumes(
    chain_env, ipfs, tmp_path: Path, node_processes, node_threads
):
    from concord.client.content.submission import put_submission
    from concord.client.engine.bundle import make_bundle

    client, rounds = chain_env.client, 2
    task_id = publish(client, ipfs.api, tmp_path, rounds, min_validators=2)
    trainer = chain_env.signer(PEER)
    chain_env.enrol(trainer, Role.TRAINER, STAKE, task_id)
    a_addr = enrol(client, VAL_A, Role.VALIDATOR, STAKE, task_id)
    b_cfg = vctx.ValidatorConfig(
        node_cfg(client, ipfs.api, tmp_path, task_id, VAL_B, "val-b", "validator"), rounds=rounds
    )
    vb = vnode.connect_validator(b_cfg)
    vcons.ensure_enrolled(vb)
    b_addr = chain_env.signer(VAL_B).address
    # B's node starts only after A's commit: its operator plays B's round-0 seed share and (empty) flag by
    # hand from B's state dir, so the submit phase closes and A need not wait for the flag window's end
    shares.commit_share(vb.concord, vb.signer, vb.task_dir, task_id, 0)
    node = connect_node(node_cfg(client, ipfs.api, tmp_path, task_id, PEER, "trainer"))
    ctx = load_task_context(node, task_id)

    def submit(round_: int) -> None:  # an honest trainer's round (asyncLevel 0: on model round_)
        policy = model_for_round(ctx, node.store, round_)
        bundle = make_bundle(policy, ctx.env, ctx.task, task_id, round_, trainer.address, round_)
        digest, _ = put_submission(node.store, bundle)
        client.concord.submit(
            trainer, task_id, round_, round_, digest.bytes, bytes(bundle.proof_root), bundle.work_units
        )

    argv = node_argv("concord.validator.node", client, ipfs.api, tmp_path, task_id, VAL_A, "val-a", rounds)
    a1 = NodeProcess(argv)
    node_processes.append(a1)
    wait_for("validator A to start", lambda: a1.saw("start"), alive=any_failed(a1))
    submit(0)
    shares.reveal_share(vb.concord, vb.signer, vb.task_dir, task_id, 0)
    wait_for("the check seed", lambda: client.concord.seed_info(task_id, 0).is_fixed, alive=any_failed(a1))
    client.concord.flag(vb.signer, task_id, 0, [])
    wait_for(
        "validator A to commit round 0",
        lambda: client.concord.commit_status(task_id, 0, a_addr).committed,
        alive=any_failed(a1),
    )
    a1.kill()  # between its commit and its reveal
    plan = json.loads(vstore.plan_path(vctx.task_dir(tmp_path / "val-a", task_id), 0).read_text())

    b = NodeThread("validator-b", lambda stop: vnode.run_validator(b_cfg, stop))
    node_threads.append(b)
    wait_for(
        "validator B to reveal round 0",
        lambda: client.concord.commit_status(task_id, 0, b_addr).revealed,
        alive=any_failed(b),
    )
    assert client.concord.phase_of(task_id, 0) == chain.Phase.REVEAL  # still waiting for A
    assert_conserved(client)
    chain_env.warp(601)  # A stays down past the reveal deadline
    wait_for("round 0 to settle", lambda: client.concord.task_state(task_id).finalized_rounds >= 1, alive=any_failed(b))

    (fin0,) = [e for e in events(client, task_id, "RoundFinalized") if e.round == 0]
    assert fin0.is_void  # 1 reveal < minValidators 2
    assert client.concord.model_digest(task_id, 1).digest == client.concord.model_digest(task_id, 0).digest
    assert [(e.round, e.validator, e.amount) for e in events(client, task_id, "ValidatorSlashed")] == [
        (0, a_addr, SLASH)
    ]
    for name in ("SubmissionRewarded", "SubmissionRejected", "ValidatorPaid", "BountyPaid"):
        assert events(client, task_id, name) == [], name  # void: no trainer paid or slashed, no fee
    assert client.concord.node_info(trainer.address).stake == STAKE
    assert client.concord.node_info(b_addr).stake == STAKE
    assert client.concord.balance_of(b_addr) == 0
    assert_conserved(client)

    a2 = NodeProcess(argv)  # restart after the void round
    node_processes.append(a2)
    wait_for(
        "round 1 to open", lambda: client.concord.phase_of(task_id, 1) == chain.Phase.SUBMIT, alive=any_failed(a2, b)
    )
    submit(1)
    wait_for(
        "round 1 to finalize",
        lambda: client.concord.task_state(task_id).finalized_rounds >= 2,
        timeout=120,
        alive=any_failed(a2, b),
    )
    a2.proc.wait(timeout=60)
    assert a2.proc.returncode == 0, "".join(a2.raw[-10:])
    b.join()

    a_revealed = [e for e in events(client, task_id, "Revealed") if e.validator == a_addr]
    assert [e.round for e in a_revealed] == [1]  # round 0's plan was never revealed late
    assert [e.round for e in events(client, task_id, "Committed") if e.validator == a_addr] == [0, 1]
    assert json.loads(vstore.plan_path(vctx.task_dir(tmp_path / "val-a", task_id), 0).read_text()) == plan
    (fin1,) = [e for e in events(client, task_id, "RoundFinalized") if e.round == 1]
    assert not fin1.is_void
    assert [(e.round, e.trainer) for e in events(client, task_id, "SubmissionRewarded")] == [(1, trainer.address)]
    fees = sorted((e.round, e.validator) for e in events(client, task_id, "ValidatorPaid"))
    assert fees == sorted([(1, a_addr), (1, b_addr)])  # each paid once, for the round that settled
    assert client.concord.balance_of(trainer.address) == 300 * TOKEN
    assert client.concord.balance_of(b_addr) == 30 * TOKEN
    assert len(events(client, task_id, "ValidatorSlashed")) == 1
    assert_conserved(client)


# ----------------------------------------------------------------------------- (c) IPFS daemon down


@pytest.fixture
def own_ipfs(tmp_path: Path) -> Iterator[IpfsDaemon]:
    """A js-ipfs daemon of this test's own, which the test stops (or kills) and restarts on the same repo."""
    node = IpfsDaemon.start(tmp_path)
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture
def warnings_seen() -> Iterator[drills.Records]:
    with drills.warnings_recorded() as handler:
        yield handler


@pytest.mark.slow
def test_ipfs_down_nodes_retry_and_the_honest_submission_is_accepted(
    chain_env, own_ipfs, tmp_path: Path, node_threads, warnings_seen
):
    client, api = chain_env.client, own_ipfs.api
    task_id = publish(client, api, tmp_path, 1, min_validators=1)
    trainer_addr = enrol(client, PEER, Role.TRAINER, STAKE, task_id)
    t_cfg = TrainerConfig(node_cfg(client, api, tmp_path, task_id, PEER, "trainer"), rounds=1)
    v_cfg = vctx.ValidatorConfig(node_cfg(client, api, tmp_path, task_id, VAL_A, "validator", "validator"), rounds=1)
    vcons.ensure_enrolled(vnode.connect_validator(v_cfg))
    for cfg in (t_cfg.node, v_cfg.node):  # both nodes ran before: spec and model 0 sit in their caches
        n = connect_node(cfg)
        model_for_round(load_task_context(n, task_id), n.store, 0)

    # the trainer: its daemon dies before it can upload round 0
    own_ipfs.stop()
    t = NodeThread("trainer", lambda stop: run_trainer(t_cfg, stop))
    node_threads.append(t)
    wait_for("the trainer to report IPFS down", lambda: warnings_seen.saw("concord.trainer", api), alive=any_failed(t))
    assert events(client, task_id, "Submitted") == []
    own_ipfs.restart(tmp_path / "ipfs-restart.log")
    wait_for("the trainer's submission", lambda: len(events(client, task_id, "Submitted")) == 1, alive=any_failed(t))
    t.join()
    assert [s.round for s in t.result.submitted] == [0]

    # the validator: its daemon dies before it fetches the submission
    own_ipfs.stop()
    v = NodeThread("validator", lambda stop: vnode.run_validator(v_cfg, stop))
    node_threads.append(v)
    wait_for(
        "the validator to report IPFS down", lambda: warnings_seen.saw("concord.validator", api), alive=any_failed(v)
    )
    assert client.concord.commit_status(task_id, 0, chain_env.signer(VAL_A).address).committed is False
    own_ipfs.restart(tmp_path / "ipfs-restart.log")
    wait_for(
        "round 0 to finalize",
        lambda: client.concord.task_state(task_id).finalized_rounds >= 1,
        timeout=120,
        alive=any_failed(v),
    )
    v.join()

    (verdict,) = vstore.load_verdicts(vctx.task_dir(tmp_path / "validator", task_id))
    assert verdict.accepted  # the validator's own outage is no verdict on the trainer
    assert [(e.round, e.trainer) for e in events(client, task_id, "SubmissionRewarded")] == [(0, trainer_addr)]
    assert events(client, task_id, "SubmissionRejected") == [] and events(client, task_id, "ValidatorSlashed") == []
    assert client.concord.balance_of(trainer_addr) == 300 * TOKEN
    assert_conserved(client)


# ----------------------------------------------------------------------------- (d) scripts.drills


@pytest.mark.slow
@pytest.mark.e2e
def test_trainer_sigkilled_during_its_upload_submits_the_round_once(chain_env, ipfs, tmp_path: Path):
    result = drills.drill_trainer_killed_during_upload(chain_env.client, ipfs.api, tmp_path)
    assert_drill(result)
    facts = result.facts
    assert facts["manifest_after_kill"] is False  # files went up, the manifest naming them did not
    assert facts["restart_last_submitted"] == -1  # chain state: nothing was submitted before the kill
    assert len(facts["submitted"]) == 1 and facts["rewarded"] == facts["submitted"]


@pytest.mark.slow
def test_ipfs_sigkilled_and_restarted_on_its_repo_after_10s(chain_env, own_ipfs, tmp_path: Path):
    result = drills.drill_ipfs_sigkilled(chain_env.client, own_ipfs, tmp_path, outage=10.0)
    assert_drill(result)
    facts = result.facts
    assert facts["lock_left"] is True  # kill -9 left js-ipfs's lock; restart_ipfs cleared it
    assert facts["down_s"] >= 10
    assert facts["trainer_retries"] >= 1 and facts["validator_retries"] >= 1


@pytest.mark.slow
@pytest.mark.e2e
def test_anvil_frozen_for_5s_every_transaction_is_sent_once(chain_env, ipfs, tmp_path: Path):
    result = drills.drill_anvil_frozen(chain_env.client, chain_env.anvil.daemon, ipfs.api, tmp_path, freeze=5.0)
    assert_drill(result)
    assert result.facts["calls"] == {"trainer": {"submit": 1}, "validator": {"commit": 1, "reveal": 1}}
    assert result.facts["submit_after_thaw_s"] > 0  # its submit was held up by the freeze, then went once


@pytest.mark.e2e
def test_cli_prints_the_custom_error_of_a_reverted_transaction(chain_env, ipfs, tmp_path: Path):
    result = drills.drill_revert_named_by_cli(chain_env.client, ipfs.api, tmp_path)
    assert_drill(result)
    assert result.facts["exit_code"] == 1 and result.facts["close_exit_code"] == 1
    assert "holds 0 CDT in its wallet" in result.facts["refused"]  # refused before any transaction (issue 25)
    printed = result.facts["printed"]
    assert printed.startswith("NotInitiator(") and "use the key that published" in printed


def test_a_stale_ipfs_repo_lock_is_cleared_only_when_its_owner_is_dead(tmp_path: Path):
    lock = tmp_path / "repo" / devnet.REPO_LOCK
    lock.mkdir(parents=True)  # what proper-lockfile leaves: a directory
    owner, _ = procs.start("sleeper", ["sleep", "60"], tmp_path / "sleep.log")
    try:
        with pytest.raises(devnet.RepoLocked):
            devnet.clear_stale_repo_lock(tmp_path / "repo", owner)
        assert lock.is_dir()
    finally:
        procs.stop(owner)
    assert devnet.clear_stale_repo_lock(tmp_path / "repo", owner) is True
    assert not lock.exists()
    assert devnet.clear_stale_repo_lock(tmp_path / "repo", owner) is False

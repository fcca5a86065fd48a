"""One IPFS peer per node on a chain that runs on a clock (issue 23, items 1 and 4), with real daemons:
Anvil mining a block every second (and each transaction at once), Helia peers in a full mesh
(scripts.devnet.start_peers), real trainer and validator nodes (threads of this process, each with
its own peer), the small task.

- A round with one trainer that trains and one that joined and stays stopped: the submit phase ends
  by its deadline with no transaction from anyone, the round settles, the trainer and the validator
  are paid, tokens are conserved. The submission crossed from the trainer's own peer to the
  validator's (the initiator's peer never held it), and the validator's peer holds only the inner
  states its sample needed, never all of them.
- A round model put by the two validators that computed it is fetched by one trainer; with both
  validators' peers stopped, another trainer still gets it, from that trainer's peer.
- Churn: a trainer's peer SIGKILLed with its submission on chain and restarted 4 s later still serves
  it; the round settles with the trainer and the validator paid.
- Churn: a validator process SIGKILLed right after its commit and restarted on its state directory
  reveals its on-disk plan before the reveal deadline; the round settles, everyone paid.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import torch

from concord.client import chain
from concord.client.chain import ChainClient, Role
from concord.client.content.manifest import SubmissionManifest, cid_for_digest, decode_manifest
from concord.client.content.model_store import fetch_model, put_model
from concord.client.content.store import Store
from concord.client.engine.config import ModelConfig
from concord.client.engine.model import build_policy, policy_state
from concord.client.runtime import procs
from concord.client.runtime.config import NodeConfig
from concord.client.runtime.procs import Daemon
from concord.client.trainer import TrainerConfig, run_trainer
from concord.validator import context as vctx
from concord.validator import node as vnode
from scripts import devnet, drills
from scripts.harness import TOKEN, Ledger, conservation, enrol, wait_for

pytestmark = pytest.mark.integration  # daemons of this module's own (conftest's DAEMON_FIXTURES lists the shared ones)

PHASE_S = 20  # each phase's deadline: the stopped trainer costs the round this much, once
CHURN_PHASE_S = 45  # the churn test's phases (each closes early once every joined node acted)
RESTART_PHASE_S = 90  # the restarted validator's test: a process start (imports) fits in a phase at load 30
INNER_STEPS = 6  # a sample reads at most 5 of the 6 inner states (validator.sampling.states_needed)


@dataclass(frozen=True)
class ClockedNet:
    client: ChainClient
    peers: dict[str, devnet.Peer]
    tmp: Path


def held_locally(peer: devnet.Peer, cid: str) -> bool:
    """Whether ``peer``'s own store holds ``cid`` (block/stat offline=true: no peer is asked)."""
    r = requests.post(f"{peer.api_url}/api/v0/block/stat", params={"arg": cid, "offline": "true"}, timeout=5)
    if r.ok:
        return True
    assert "not in this node's store" in r.json()["Message"], r.text
    return False


@pytest.fixture(scope="module")
def clocked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClockedNet]:
    from concord.client.chain import deploy

    tmp = tmp_path_factory.mktemp("clocked")
    started: list[Daemon] = []
    try:
        port = procs.free_port()
        started.append(devnet.start_anvil(port, tmp / "anvil.log", 10, block_time=1, mixed=True))
        url = f"http://127.0.0.1:{port}"
        result = deploy.deploy_devnet(url, 10, 1_000_000 * TOKEN)
        names = ["initiator", "trainer", "stopped-trainer", "validator"]
        peers = devnet.start_peers(tmp / "ipfs", names, started=started)
        yield ClockedNet(chain.connect(url, result.deployment), {p.name: p for p in peers}, tmp)
    finally:
        procs.stop_all(started)


def test_a_stopped_trainer_costs_one_deadline_and_the_submission_crosses_from_the_trainers_peer(clocked) -> None:
    client, peers, tmp = clocked.client, clocked.peers, clocked.tmp
    task_id = drills.publish(
        client, peers["initiator"].api, tmp, 1, min_validators=1, phase_seconds=PHASE_S, inner_steps=INNER_STEPS
    )
    trainer = enrol(client, drills.PEER, Role.TRAINER, drills.STAKE, task_id)
    stopped = enrol(client, drills.VICTIM, Role.TRAINER, drills.STAKE, task_id)  # joined, never runs
    validator = enrol(client, drills.VAL_A, Role.VALIDATOR, drills.STAKE, task_id)
    first_block = client.rpc.block_number()
    nodes = drills.Nodes()
    try:
        tcfg = TrainerConfig(drills.node_cfg(client, peers["trainer"].api, tmp, task_id, drills.PEER, "trainer"), 1)
        t = nodes.thread("trainer", lambda stop: run_trainer(tcfg, stop))
        v = drills.validator_thread(nodes, client, peers["validator"].api, tmp, task_id, drills.VAL_A, "validator")
        started = time.monotonic()
        # nobody sends a transaction for the stopped trainer: the chain's clock ends its submit phase
        wait_for(
            "round 0 to settle",
            lambda: drills.settled(client, task_id),
            timeout=4 * PHASE_S + 60,
            alive=drills.any_failed(t, v),
        )
        took = time.monotonic() - started
        t.join()
        v.join()
    finally:
        nodes.close()
    assert PHASE_S - 2 <= took < 3 * PHASE_S + 30, took  # waited out one deadline, not a stall
    assert client.rpc.block_number() - first_block > PHASE_S  # blocks came from the clock, not from transactions

    events = client.concord.events(client.deployment.block_number, "latest")
    ledger = Ledger.of(events, task_id)
    assert not ledger.void
    assert ledger.reward[trainer] > 0 and ledger.fee[validator] + ledger.bounty[validator] > 0  # honest: paid
    assert ledger.slashed == {} and stopped not in ledger.reward
    assert conservation(client).holds, conservation(client).problems()

    (sub,) = [e for e in events if isinstance(e, chain.Submitted) and e.task_id == task_id]
    assert sub.trainer == trainer
    manifest_cid = cid_for_digest(sub.bundle_digest)
    manifest = decode_manifest(Store(peers["trainer"].api, None).get_manifest(sub.bundle_digest))
    assert isinstance(manifest, SubmissionManifest) and len(manifest.states) == INNER_STEPS
    states = [ref.cid for ref in manifest.states]
    # published to the trainer's own peer, fetched by the validator's over bitswap; never via the initiator's
    assert held_locally(peers["trainer"], manifest_cid) and all(held_locally(peers["trainer"], c) for c in states)
    assert held_locally(peers["validator"], manifest_cid)
    assert not held_locally(peers["initiator"], manifest_cid)
    assert not any(held_locally(peers["initiator"], c) for c in states)
    assert not held_locally(peers["stopped-trainer"], manifest_cid)
    # the validator fetched only what its sample reads: state H always, never all H of them
    fetched = [k for k, c in enumerate(states, start=1) if held_locally(peers["validator"], c)]
    assert INNER_STEPS in fetched and len(fetched) < INNER_STEPS, fetched


def test_a_round_model_reaches_a_trainer_from_another_trainer_when_the_validators_peers_are_down(
    tmp_path: Path,
) -> None:
    started: list[Daemon] = []
    try:
        names = ["validator-1", "validator-2", "trainer-1", "trainer-2"]
        peers = {p.name: p for p in devnet.start_peers(tmp_path / "ipfs", names, started=started)}
        cfg = ModelConfig(vocab_size=64, d_model=128, n_layers=4, n_heads=4, max_seq_len=64, seed=3)
        state = policy_state(build_policy(cfg))
        # both validators computed the same model: the same bytes, the same CIDs, on each one's own peer
        digests = {put_model(Store(peers[v].api, None), state, cfg, None, None) for v in ("validator-1", "validator-2")}
        (digest,) = digests
        got_1 = fetch_model(Store(peers["trainer-1"].api, None, timeout=10.0), digest, tmp_path / "c1", 1 << 26)
        by_pid = {d.pid: d for d in started}
        for v in ("validator-1", "validator-2"):
            assert procs.stop(by_pid[peers[v].pid])
        t0 = time.monotonic()
        got_2 = fetch_model(Store(peers["trainer-2"].api, None, timeout=10.0), digest, tmp_path / "c2", 1 << 26)
        assert time.monotonic() - t0 < 10.0
        for got in (got_1, got_2):
            assert got.state.keys() == state.keys() and all(torch.equal(got.state[k], state[k]) for k in state)
        assert held_locally(peers["trainer-2"], cid_for_digest(digest))
    finally:
        procs.stop_all(started)


def test_a_trainers_peer_sigkilled_after_its_submission_and_restarted_still_serves_it(clocked) -> None:
    """Churn: the trainer's own peer dies (SIGKILL) once its submission is uploaded and comes back 4 s
    after the submission is on chain, on its repo and ports. The validator's peer redials it (the mesh's
    swarm/connect), the validator's pending fetch gets the blocks, the round settles on the clock with
    the submission accepted: the trainer and the validator paid, nobody slashed, tokens conserved.
    The validator's IPFS request timeout is a node's default (30 s): with the drills' 5 s, a request
    sent while the peer is down times out before the peer is back, and the trainer is rejected
    ("fetch failed") although it came back well within the submission's deadline (seen here)."""
    client, peers, tmp = clocked.client, clocked.peers, clocked.tmp / "churn"
    # phases long enough for a restart on a loaded 2-core machine (a Node start takes seconds there)
    task_id = drills.publish(client, peers["initiator"].api, tmp, 1, min_validators=1, phase_seconds=CHURN_PHASE_S)
    trainer = enrol(client, drills.SPARE, Role.TRAINER, drills.STAKE, task_id)
    validator = enrol(client, drills.VAL_B, Role.VALIDATOR, drills.STAKE, task_id)
    peer = peers["stopped-trainer"]  # a peer of the mesh no earlier test's node used
    digest, submit = drills.submit_honest(client, peer.api, tmp, task_id, drills.SPARE, 0)
    (daemon,) = [d for d in procs.owned() if d.pid == peer.pid]
    nodes = drills.Nodes()
    again: Daemon | None = None
    try:
        # a validator as `concord validator run` has it: each IPFS request waits up to 30 s for its block
        vnode_cfg = drills.node_cfg(
            client, peers["validator"].api, tmp, task_id, drills.VAL_B, "validator", "validator"
        )
        vcfg = vctx.ValidatorConfig(dataclasses.replace(vnode_cfg, ipfs_timeout=NodeConfig.ipfs_timeout), rounds=1)
        v = nodes.thread("validator", lambda stop: vnode.run_validator(vcfg, stop))
        os.killpg(daemon.pid, signal.SIGKILL)
        wait_for("the trainer's peer to die", lambda: not procs.alive(daemon.pid), timeout=10)
        submit()  # on chain while the only peer holding it is down
        time.sleep(4.0)
        again, proc = procs.start(devnet.PEER_DAEMON, daemon.argv, tmp / "restarted.log")
        procs.wait_ready(again, proc, lambda: devnet.ipfs_ready(peer.api_url), 60)
        assert devnet.helia_swarm_addr(peer.api_url) == peer.swarm  # same repo, same peer ID
        wait_for(
            "round 0 to settle",
            lambda: drills.settled(client, task_id),
            timeout=4 * CHURN_PHASE_S + 60,
            alive=drills.any_failed(v),
        )
        v.join()
    finally:
        nodes.close()
        if again is not None:
            procs.stop(again)
    ledger = Ledger.of(client.concord.events(client.deployment.block_number, "latest"), task_id)
    assert not ledger.void and ledger.reward[trainer] > 0, ledger
    assert ledger.fee[validator] + ledger.bounty[validator] > 0 and ledger.slashed == {}, ledger
    assert conservation(client).holds, conservation(client).problems()
    assert held_locally(peers["validator"], cid_for_digest(digest))


def test_a_validator_killed_after_its_commit_and_restarted_reveals_from_its_state_dir(clocked) -> None:
    """Churn: the validator (a process, on its own peer) is SIGKILLed after its commit is on chain and
    before it reveals, and restarted on its state directory. The restarted process reveals exactly the plan it wrote
    before committing, before the reveal deadline, and the round settles by the chain's clock, not
    void: the trainer and the validator paid, nobody slashed, every task's escrow whole. (Without the
    restart the round goes void at the reveal deadline: its only validator never reveals.)"""
    from concord.client.chain import Phase
    from concord.client.digest import Digest
    from concord.validator import store as vstore

    client, peers, tmp = clocked.client, clocked.peers, clocked.tmp / "reveal"
    task_id = drills.publish(client, peers["initiator"].api, tmp, 1, min_validators=1, phase_seconds=RESTART_PHASE_S)
    trainer = enrol(client, drills.PEER, Role.TRAINER, drills.STAKE, task_id)
    validator = enrol(client, drills.VAL_A, Role.VALIDATOR, drills.STAKE, task_id)
    _, submit = drills.submit_honest(client, peers["trainer"].api, tmp, task_id, drills.PEER, 0)
    argv = drills.node_argv(
        "concord.validator.node", client, peers["validator"].api, tmp, task_id, drills.VAL_A, "validator", 1
    )
    # the crash between commit and reveal: the lab's no_reveal validator commits and never reveals, so the
    # kill below cannot race a reveal (an honest process killed on seeing its commit could reveal first)
    i = argv.index("concord.validator.node")
    crashing = [*argv[:i], "scripts.adversaries.validator", *argv[i + 1 :], "--cheat", "no_reveal"]
    nodes = drills.Nodes()
    try:
        first = nodes.process(crashing, name="validator")
        submit()  # the only trainer: the submit phase closes at once
        wait_for(
            "the validator to commit",
            lambda: client.concord.commit_status(task_id, 0, validator).committed,
            timeout=RESTART_PHASE_S + 30,
            alive=drills.any_failed(first),
        )
        first.kill()
        plan = json.loads(vstore.plan_path(vctx.task_dir(tmp / "validator", task_id), 0).read_text())
        assert client.concord.phase_of(task_id, 0) == Phase.REVEAL  # its reveal is all the round waits for
        assert not client.concord.commit_status(task_id, 0, validator).revealed
        second = nodes.process(argv, name="validator (restarted)")
        wait_for(
            "round 0 to settle",
            lambda: drills.settled(client, task_id),
            timeout=RESTART_PHASE_S + 30,
            alive=drills.any_failed(second),
        )
        assert second.finish() == 0, second.raw[-5:]
    finally:
        nodes.close()
    events = client.concord.events(client.deployment.block_number, "latest")
    (revealed,) = [e for e in events if isinstance(e, chain.Revealed) and e.task_id == task_id]
    assert revealed.validator == validator
    assert Digest.parse(revealed.next_model_digest) == Digest.parse(plan["next_model_digest"])  # its on-disk plan
    ledger = Ledger.of(events, task_id)
    assert not ledger.void and ledger.reward[trainer] > 0, ledger
    assert ledger.fee[validator] + ledger.bounty[validator] > 0 and ledger.slashed == {}, ledger
    assert conservation(client).holds, conservation(client).problems()

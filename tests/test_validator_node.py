"""The validator node against real Anvil + js-ipfs + torch (issue 4): verdicts with published evidence,
commit/reveal surviving a kill between them, two validators agreeing on the next model, status --json.

One scenario runs once per module (2 rounds, 3 trainers submitting through the SDK, validator A as
a real process that is SIGKILLed after its commit and restarted, validator B in a thread); the
tests below each assert one part of what it left on chain, in IPFS and on disk.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from own_devnet import devnet_node
from task_terms import CFG, STAKE, node_task

from concord.client import chain
from concord.client.chain import Role, keys
from concord.client.content.manifest import parse_canonical
from concord.client.content.model_store import fetch_model, put_model
from concord.client.content.store import Store
from concord.client.content.submission import put_submission
from concord.client.digest import Digest
from concord.client.engine.bundle import Bundle, claimed_mean_reward, make_bundle
from concord.client.engine.envs import make_env
from concord.client.engine.grpo import pin_determinism
from concord.client.engine.model import build_policy, load_policy_state, policy_state
from concord.client.initiator import publish_task
from concord.client.runtime.config import NodeConfig
from concord.validator import consensus as vcons
from concord.validator import context as vctx
from concord.validator import judge as vjudge
from concord.validator import node as vnode
from concord.validator import shares
from concord.validator import store as vstore
from concord.validator.aggregate import outer_step
from scripts import REPO_ROOT, harness
from scripts.harness import enrol

INITIATOR, HONEST, CHEATER, COPIER, VAL_A, VAL_B = 0, 1, 2, 3, 4, 5
TASK = node_task(max_rounds=2, min_validators=2)
PARAMS = TASK.params


def wait_for(
    what: str,
    pred: Callable[[], bool],
    timeout: float = 90.0,
    proc: subprocess.Popen | None = None,
    errors: list | None = None,
) -> None:
    """harness.wait_for, ended early when validator A's process exits or validator B's thread fails."""

    def problem() -> str | None:
        if proc is not None and proc.poll() is not None:
            return f"validator process exited with {proc.returncode}"
        return f"validator thread failed: {errors[0]!r}" if errors else None

    harness.wait_for(what, pred, timeout, alive=problem, poll=0.2)


@dataclass
class Scenario:
    client: chain.ChainClient
    store: Store
    task_id: int
    events: list
    dir_a: Path
    dir_b: Path
    devnet_json: Path
    honest: Bundle
    honest_digest: Digest
    plan_before_kill: dict
    log_a: Path


def start_validator_a(devnet_json: Path, task_id: int, state_dir: Path, log_path: Path) -> subprocess.Popen:
    argv = [
        sys.executable,
        "-m",
        "concord.validator.node",
        "run",
        "--task",
        str(task_id),
        "--devnet",
        str(devnet_json),
        "--state-dir",
        str(state_dir),
        "--devnet-account",
        str(VAL_A),
        "--rounds",
        "2",
        "--withdraw",
        "--json-logs",
        "--poll-interval",
        "0.1",
    ]
    with open(log_path, "ab") as out:
        return subprocess.Popen(argv, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT)


def stop_process(proc: subprocess.Popen | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.kill()
        proc.wait(timeout=10)


def submit_bundle(client, signer, task_id: int, bundle: Bundle, digest: Digest) -> None:
    client.concord.submit(
        signer, task_id, bundle.round, bundle.base_round, digest.bytes, bytes(bundle.proof_root), bundle.work_units
    )


def inflated(bundle: Bundle) -> Bundle:
    """The default demo cheat: the last inner step's rewards claimed 0.25 higher (claims kept consistent)."""
    last = bundle.batches[-1]
    batches = bundle.batches[:-1] + (dataclasses.replace(last, rewards=last.rewards + 0.25),)
    return dataclasses.replace(bundle, batches=batches, mean_reward=claimed_mean_reward(batches))


@pytest.fixture(scope="module")
def scenario(anvil, deployed, ipfs, tmp_path_factory) -> Scenario:
    tmp = tmp_path_factory.mktemp("validator")
    client = chain.connect(anvil.url, deployed.deployment)
    snap = client.rpc.call("evm_snapshot")
    proc: subprocess.Popen | None = None
    stop_b = threading.Event()
    thread: threading.Thread | None = None
    try:
        pin_determinism(1)
        store = Store(ipfs.api, tmp / "cache", timeout=5.0)
        signer = lambda i: client.signer(keys.devnet_account(i))  # noqa: E731
        task_id = publish_task(client, signer(INITIATOR), store, TASK).task_id
        for i in (HONEST, CHEATER, COPIER):
            enrol(client, i, Role.TRAINER, STAKE, task_id)

        devnet_json = tmp / "devnet.json"
        devnet_json.write_text(
            json.dumps(
                {
                    "rpc_url": anvil.url,
                    "chain_id": deployed.deployment.chain_id,
                    "ipfs_api": ipfs.api,
                    "ipfs_api_url": ipfs.api_url,
                    "state_dir": str(tmp),
                    "deployment": deployed.deployment.to_json(),
                    "token": deployed.deployment.token,
                    "accounts": deployed.accounts,
                    "daemons": [],
                }
            )
        )
        dir_a, dir_b, log_a = tmp / "val-a", tmp / "val-b", tmp / "val-a.log"
        timing = {"poll_interval": 0.1, "heartbeat": 1.0, "ipfs_timeout": 5.0}
        node_b = devnet_node("validator", anvil.url, deployed.deployment, ipfs.api, dir_b, VAL_B, task_id, **timing)
        cfg_b = vctx.ValidatorConfig(node_b, rounds=2)
        vb = vnode.connect_validator(cfg_b)
        vcons.ensure_enrolled(vb)  # B joined: the commit phase waits for it
        # B's node is not running yet: its operator plays B's round-0 seed share by hand (the submit phase
        # closes early only with every joined validator's share in), from B's state dir, so the node B
        # starts later finds it revealed
        shares.commit_share(vb.concord, vb.signer, vb.task_dir, task_id, 0)

        proc = start_validator_a(devnet_json, task_id, dir_a, log_a)
        wait_for(
            "validator A to join",
            lambda: client.concord.member_info(task_id, keys.devnet_account(VAL_A).address).joined,
            proc=proc,
        )

        # round 0: honest, inflated rewards, a copy of the honest digest (indexes 0, 1, 2)
        env, policy0 = make_env(CFG.env), build_policy(CFG.model)
        addr = {i: keys.devnet_account(i).address for i in (HONEST, CHEATER, COPIER, VAL_A, VAL_B)}
        honest = make_bundle(policy0, env, CFG, task_id, 0, addr[HONEST])
        honest_digest, _ = put_submission(store, honest)
        cheat = inflated(make_bundle(policy0, env, CFG, task_id, 0, addr[CHEATER]))
        cheat_digest, _ = put_submission(store, cheat)
        submit_bundle(client, signer(HONEST), task_id, honest, honest_digest)
        submit_bundle(client, signer(CHEATER), task_id, cheat, cheat_digest)
        submit_bundle(client, signer(COPIER), task_id, honest, honest_digest)
        shares.reveal_share(vb.concord, vb.signer, vb.task_dir, task_id, 0)
        wait_for("the check seed", lambda: client.concord.seed_info(task_id, 0).is_fixed, proc=proc)
        client.concord.flag(vb.signer, task_id, 0, [])  # B has nothing to flag yet: A need not wait for flagEnd

        # A commits, then dies before it can reveal (B has not committed, so the commit phase is still open)
        wait_for(
            "validator A to commit", lambda: client.concord.commit_status(task_id, 0, addr[VAL_A]).committed, proc=proc
        )
        stop_process(proc)
        plan_file = vstore.plan_path(vctx.task_dir(dir_a, task_id), 0)
        plan_before_kill = json.loads(plan_file.read_text())

        errors: list = []

        def run_b() -> None:
            try:
                vnode.run_validator(cfg_b, stop_b)
            except Exception as e:  # reported by wait_for / the assertion below
                errors.append(e)

        thread = threading.Thread(target=run_b, name="validator-b")
        thread.start()
        wait_for(
            "validator B to reveal",
            lambda: client.concord.commit_status(task_id, 0, addr[VAL_B]).revealed,
            errors=errors,
        )
        proc = start_validator_a(devnet_json, task_id, dir_a, log_a)  # restart: must reveal its plan
        wait_for(
            "round 0 to finalize",
            lambda: client.concord.task_state(task_id).finalized_rounds >= 1,
            proc=proc,
            errors=errors,
        )

        # round 1: the slashed trainers leave; the honest one trains on model 1 fetched from IPFS
        for i in (CHEATER, COPIER):
            client.concord.leave(signer(i), task_id)
        md = client.concord.model_digest(task_id, 1)
        model1 = fetch_model(store, md.digest, tmp / "models", 1 << 30)
        policy1 = build_policy(model1.config)
        load_policy_state(policy1, model1.state)
        wait_for("round 1 to open", lambda: client.concord.current_round(task_id) == 1)
        b1 = make_bundle(policy1, env, CFG, task_id, 1, addr[HONEST])
        d1, _ = put_submission(store, b1)
        submit_bundle(client, signer(HONEST), task_id, b1, d1)
        wait_for(
            "round 1 to finalize",
            lambda: client.concord.task_state(task_id).finalized_rounds >= 2,
            proc=proc,
            errors=errors,
        )
        proc.wait(timeout=60)
        assert proc.returncode == 0, log_a.read_text()[-3000:]
        thread.join(timeout=60)
        assert not thread.is_alive() and not errors, errors
        events = [
            e
            for e in client.concord.events(deployed.deployment.block_number, "latest")
            if getattr(e, "task_id", task_id) == task_id
        ]
        yield Scenario(
            client, store, task_id, events, dir_a, dir_b, devnet_json, honest, honest_digest, plan_before_kill, log_a
        )
    finally:
        stop_b.set()
        stop_process(proc)
        if thread is not None:
            thread.join(timeout=30)
        client.rpc.call("evm_revert", snap)


def of(scenario: Scenario, cls, **match) -> list:
    return [e for e in scenario.events if isinstance(e, cls) and all(getattr(e, k) == v for k, v in match.items())]


@pytest.mark.e2e
def test_honest_accepted_cheater_and_copier_rejected(scenario):
    rejected = {e.index: e for e in of(scenario, chain.SubmissionRejected, round=0)}
    rewarded = {e.index: e for e in of(scenario, chain.SubmissionRewarded, round=0)}
    assert sorted(rejected) == [1, 2] and sorted(rewarded) == [0]
    assert rewarded[0].reward == PARAMS.trainer_reward_per_round  # the only accepted work
    assert all(e.slashed == PARAMS.slash_amount for e in rejected.values())
    bounties = of(scenario, chain.BountyPaid, round=0)
    assert sum(e.amount for e in bounties) == 2 * PARAMS.slash_amount * PARAMS.bounty_bps // 10_000
    assert {e.validator for e in bounties} == {keys.devnet_account(i).address for i in (VAL_A, VAL_B)}
    assert of(scenario, chain.ValidatorSlashed) == []  # the restarted validator revealed in time


@pytest.mark.e2e
def test_rejections_carry_evidence_published_to_ipfs(scenario, ipfs, tmp_path):
    fresh = Store(ipfs.api, tmp_path / "empty-cache", timeout=5.0)  # nothing local: every byte from IPFS
    for state_dir in (scenario.dir_a, scenario.dir_b):
        verdicts = {
            v.index: v for v in vstore.load_verdicts(vctx.task_dir(state_dir, scenario.task_id)) if v.round == 0
        }
        assert verdicts[0].accepted and verdicts[0].evidence_digest is None
        assert (verdicts[1].failed_check, verdicts[2].failed_check) == ("rewards", "claim.trainer")
        cheat = parse_canonical(fresh.get_manifest(verdicts[1].evidence_digest))
        assert cheat["kind"] == vstore.EVIDENCE_KIND and cheat["failed_check"] == "rewards"
        assert (cheat["round"], cheat["index"], cheat["trainer"]) == (
            0,
            1,
            keys.devnet_account(CHEATER).address.lower(),
        )
        assert cheat["evidence"]["step"] == 1 and cheat["evidence"]["mismatched"] == CFG.grpo.rollouts_per_step
        assert cheat["evidence"]["claimed_mean"] == pytest.approx(cheat["evidence"]["recomputed_mean"] + 0.25)
        copy = parse_canonical(fresh.get_manifest(verdicts[2].evidence_digest))
        assert copy["evidence"] == {
            "field": "trainer",
            "on_chain": keys.devnet_account(COPIER).address.lower(),
            "in_manifest": keys.devnet_account(HONEST).address.lower(),
        }
        stored = vstore.evidence_path(vctx.task_dir(state_dir, scenario.task_id), verdicts[1].evidence_digest)
        assert parse_canonical(stored.read_bytes()) == cheat
    log_lines = [json.loads(line) for line in scenario.log_a.read_text().splitlines() if line.startswith("{")]
    assert {x["evidence"] for x in log_lines if x.get("event") == "rejected"} == {
        str(v.evidence_digest)
        for v in vstore.load_verdicts(vctx.task_dir(scenario.dir_a, scenario.task_id))
        if not v.accepted and v.round == 0
    }


@pytest.mark.e2e
def test_restarted_validator_reveals_what_it_committed(scenario):
    a = keys.devnet_account(VAL_A).address
    committed = of(scenario, chain.Committed, round=0, validator=a)
    revealed = of(scenario, chain.Revealed, round=0, validator=a)
    assert len(committed) == 1 and len(revealed) == 1  # never committed twice
    plan = scenario.plan_before_kill
    assert str(Digest.parse(committed[0].commitment)) == plan["commitment"]  # plans keep 0x + 64 hex
    assert str(Digest.parse(revealed[0].next_model_digest)) == plan["next_model_digest"]
    assert list(revealed[0].reject_words) == [int(w) for w in plan["reject_words"]] == [0b110]
    after = json.loads(vstore.plan_path(vctx.task_dir(scenario.dir_a, scenario.task_id), 0).read_text())
    assert after == plan  # the restart did not re-plan
    starts = [
        x
        for x in map(json.loads, filter(lambda s: s.startswith("{"), scenario.log_a.read_text().splitlines()))
        if x.get("event") == "start"
    ]
    assert len(starts) == 2


@pytest.mark.e2e
def test_validators_agree_on_the_next_model(scenario, tmp_path):
    for round_ in (0, 1):
        digests = {e.validator: e.next_model_digest for e in of(scenario, chain.Revealed, round=round_)}
        assert len(digests) == 2 and len(set(digests.values())) == 1
        final = of(scenario, chain.RoundFinalized, round=round_)[0]
        assert not final.is_void and final.next_model_digest == next(iter(digests.values()))
    # model 1 is exactly DiLoCo over the one accepted delta, stored the documented way
    m0 = Digest.parse(scenario.client.concord.model_digest(scenario.task_id, 0).digest)
    state, momentum = outer_step(
        policy_state(build_policy(CFG.model)), {scenario.honest_digest: scenario.honest.delta}, {}, CFG.outer
    )
    want = put_model(scenario.store, state, CFG.model, momentum, parent_digest=m0)
    assert Digest.parse(of(scenario, chain.RoundFinalized, round=0)[0].next_model_digest) == want
    m1, m2 = (Digest.parse(scenario.client.concord.model_digest(scenario.task_id, m).digest) for m in (1, 2))
    assert m1 == want and m2 != m1
    fetched = fetch_model(scenario.store, m2, tmp_path / "models", 1 << 30)
    assert fetched.manifest.parent == m1 and fetched.outer_state is not None
    assert any(not torch.equal(fetched.state[n], state[n]) for n in state)


@pytest.mark.e2e
def test_withdraw_pays_out_the_restarted_validator(scenario):
    a = keys.devnet_account(VAL_A).address
    fees = sum(e.fee for e in of(scenario, chain.ValidatorPaid, validator=a))
    bounty = sum(e.amount for e in of(scenario, chain.BountyPaid, validator=a))
    assert (
        fees == 2 * PARAMS.validator_fee_per_round // 2 and bounty == PARAMS.slash_amount * PARAMS.bounty_bps // 10_000
    )
    withdrawn = [e for e in scenario.client.concord.events(0, "latest", ["Withdrawn"]) if e.account == a]
    assert sum(e.amount for e in withdrawn) == fees + bounty
    assert scenario.client.concord.balance_of(a) == 0


@pytest.mark.e2e
def test_status_json_reports_the_rounds(scenario, capsys):
    from concord.client import status

    rc = status.main(
        [
            str(scenario.task_id),
            "--devnet",
            str(scenario.devnet_json),
            "--validator-state",
            str(scenario.dir_a),
            "--validator-state",
            str(scenario.dir_b),
            "--json",
        ]
    )
    assert rc == 0
    doc = json.loads(capsys.readouterr().out)
    (task,) = doc["tasks"]
    assert task["finalized_rounds"] == 2 and task["model"]["index"] == 2
    r0 = task["rounds"][0]
    assert r0["phase"] == "finalized" and r0["reveals"] == 2
    assert [s["verdict"] for s in r0["submissions"]] == ["accepted", "rejected", "rejected"]
    assert [len(s.get("evidence", [])) for s in r0["submissions"]] == [0, 2, 2]
    assert {e["failed_check"] for e in r0["submissions"][1]["evidence"]} == {"rewards"}
    digests = [
        task["model"]["digest"],
        *(s["bundle_digest"] for s in r0["submissions"]),
        *(e["evidence"] for s in r0["submissions"] for e in s.get("evidence", [])),
    ]
    assert len(digests) == 8 and all(d == str(Digest.parse(d)) for d in digests)  # one text form: 0x + 64 hex
    assert sum(s["amount"] for s in r0["slashes"]) == 2 * PARAMS.slash_amount
    assert task["rounds"][1]["submissions"][0]["verdict"] == "accepted"
    t = doc["totals"]
    assert t["token_balance"] == t["escrow"] + t["staked"] + t["credited"]
    assert (
        status.main(
            [str(scenario.task_id), "--devnet", str(scenario.devnet_json), "--validator-state", str(scenario.dir_a)]
        )
        == 0
    )
    table = capsys.readouterr().out
    assert "conservation ok" in table and table.count("rejected") == 2


# ----------------------------------------------------------------------------- refusals before any check runs


def fake_submitted(
    task_id: int, round_: int, index: int, trainer: str, base_round: int, digest: Digest | str, bundle: Bundle | None
) -> chain.Submitted:
    """The event a trainer's submit would emit (only the validator's reading of it is under test here)."""
    meta = chain.EventMeta(0, "0x" + "00" * 32, index)
    root = bytes(bundle.proof_root) if bundle is not None else bytes(32)
    units = bundle.work_units if bundle is not None else 1
    return chain.Submitted(meta, task_id, round_, trainer, index, base_round, Digest.parse(digest).bytes, root, units)


def test_unavailable_oversize_and_wrong_base_round_are_rejected_with_evidence(chain_env, ipfs, tmp_path):
    from concord.client.runtime.connect import Node
    from concord.client.runtime.task import load_task_context

    pin_determinism(1)
    client = chain_env.client
    store = Store(ipfs.api, tmp_path / "cache", timeout=1.0, retries=1)
    task_id = publish_task(client, chain_env.signer(INITIATOR), store, TASK).task_id
    node = Node(client, chain_env.signer(VAL_A), store, tmp_path / "val")
    v = vctx.Validator(
        vctx.ValidatorConfig(NodeConfig("validator", chain_env.anvil.url, client.deployment, ipfs.api, task_id)),
        node,
        load_task_context(node, task_id),
        vnode.HONEST,
    )
    trainer = keys.devnet_account(HONEST).address
    env, policy0 = make_env(CFG.env), build_policy(CFG.model)

    missing = fake_submitted(task_id, 0, 0, trainer, 0, "ab" * 32, None)  # nobody stored it
    big_cfg = dataclasses.replace(CFG, grpo=dataclasses.replace(CFG.grpo, inner_steps=3))
    big = make_bundle(policy0, env, big_cfg, task_id, 0, trainer)
    big_digest, _ = put_submission(store, big)
    oversize = fake_submitted(task_id, 0, 1, trainer, 0, big_digest, big)
    later = make_bundle(policy0, env, CFG, task_id, 1, trainer, base_round=1)  # claims model 1 as its base
    later_digest, _ = put_submission(store, later)
    wrong_base = fake_submitted(task_id, 1, 0, trainer, 0, later_digest, later)  # chain says base 0

    started = time.monotonic()
    got = {
        name: vjudge.verify_submission(v, sub)
        for name, sub in [("missing", missing), ("oversize", oversize), ("wrong_base", wrong_base)]
    }
    assert time.monotonic() - started < 30
    assert {k: (x.accepted, x.failed_check) for k, x in got.items()} == {
        "missing": (False, "fetch"),
        "oversize": (False, "fetch"),
        "wrong_base": (False, "claim.base_round"),
    }
    docs = {k: parse_canonical(store.get_manifest(x.evidence_digest)) for k, x in got.items()}
    assert docs["missing"]["evidence"]["field"] == "manifest" and "not found" in docs["missing"]["evidence"]["reason"]
    assert docs["oversize"]["evidence"]["field"] == "stats.inner_steps"
    assert docs["oversize"]["detail"].endswith("(got 3)")
    assert docs["wrong_base"]["evidence"] == {"field": "base_round", "on_chain": "0", "in_manifest": "1"}
    # verdicts persist: a restarted validator reads them back instead of checking again
    assert {(x.round, x.index): x for x in vstore.load_verdicts(v.task_dir)} == {
        (x.round, x.index): x for x in got.values()
    }

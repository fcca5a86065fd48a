"""Cheating validators (issue 5) against real Anvil + js-ipfs + torch: each `--cheat` mode, played as the
honest node's hooks (CheatingValidator), does what scripts/adversaries/validator_cheats.py says, and the
rules of docs/PROTOCOL.md take from it what `expected_loss` says.

One round runs once per module. Three trainers submit through the SDK: an honest bundle (#0),
the same kind of bundle with inflated rewards (#1) and a digest nobody stored (#2). Seven
validators run `concord.validator.node.step` in turn in this process, two honest and one per cheat:
copy_reveal copies the first honest validator's commitment and replays its reveal; no_reveal and
copy_reveal keep the reveal phase open until its deadline, which the test warps past.

A second, chain-only scenario (submissions nobody stored) covers a copier whose source withholds
its own reveal, and two rounds: validators slashed below the stake minimum top up and go on.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from own_devnet import FAST, devnet_node

from concord.client import chain
from concord.client.chain import Phase, Role, keys
from concord.client.content.model_store import put_model
from concord.client.content.submission import put_submission
from concord.client.digest import Digest
from concord.client.engine.bundle import Bundle, claimed_mean_reward, make_bundle
from concord.client.engine.grpo import pin_determinism
from concord.client.initiator import load_task_file, publish_task
from concord.client.runtime.config import NodeConfig
from concord.client.runtime.connect import connect_node
from concord.client.runtime.task import load_task_context, model_for_round
from concord.validator import consensus as vcons
from concord.validator import context as vctx
from concord.validator import fetch as vfetch
from concord.validator import node as vnode
from concord.validator import store as vstore
from concord.validator.aggregate import outer_step
from scripts.adversaries import validator as lab_validator
from scripts.adversaries import validator_cheats as cheats
from scripts.harness import conservation, enrol

TOKEN = 10**18
STAKE, SLASH, FEE, REWARD, BOUNTY = 100 * TOKEN, 80 * TOKEN, 60 * TOKEN, 300 * TOKEN, 40 * TOKEN
TASK_TOML = (Path(__file__).parent / "data" / "small_task.toml").read_text()
HONEST_T, INFLATED_T, MISSING_T = 1, 2, 3  # trainer accounts (submission indexes 0, 1, 2)
VALIDATORS = {
    0: None,
    4: None,
    5: "reject_honest",
    6: "accept_cheat",
    7: "wrong_model",
    8: "no_reveal",
    9: "copy_reveal",
}  # account -> cheat; account 0 also creates the task
H1, H2 = 0, 4


def addr(account: int) -> str:
    return keys.devnet_account(account).address


def hooks(cheat: str | None) -> vnode.ValidatorHooks:
    """What `python -m scripts.adversaries.validator run --cheat MODE` runs (None: the honest node's)."""
    return vnode.HONEST if cheat is None else cheats.CheatingValidator(cheats.VALIDATOR_CHEATS[cheat])


@dataclass
class Round:
    client: chain.ChainClient
    task_id: int
    events: list
    state_dirs: dict[int, Path]
    model0: Digest
    honest_model: Digest  # DiLoCo over the honest delta
    cheat_model: Digest  # DiLoCo over the honest and the inflated deltas (the missing one left out)
    cheat_log: list[str]

    def of(self, cls, **match) -> list:
        return [e for e in self.events if isinstance(e, cls) and all(getattr(e, k) == v for k, v in match.items())]

    def paid(self, cls, account: int) -> int:
        return sum(getattr(e, "fee", getattr(e, "amount", 0)) for e in self.of(cls, validator=addr(account)))


def inflate_rewards(bundle: Bundle) -> Bundle:
    """A cheating trainer's bundle: every reward claimed 0.25 higher (claims kept consistent)."""
    batches = tuple(dataclasses.replace(b, rewards=b.rewards + 0.25) for b in bundle.batches)
    return dataclasses.replace(bundle, batches=batches, mean_reward=claimed_mean_reward(batches))


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture(scope="module")
def round0(anvil, deployed, ipfs, tmp_path_factory) -> Iterator[Round]:
    tmp = tmp_path_factory.mktemp("cheats")
    client = chain.connect(anvil.url, deployed.deployment)
    snap = client.rpc.call("evm_snapshot")
    lines = Lines()
    cheat_log = logging.getLogger("concord.validator.cheat")
    level = cheat_log.level
    cheat_log.setLevel(logging.INFO)  # whatever level an earlier test in this process left on a parent
    cheat_log.addHandler(lines)
    try:
        pin_determinism(1)

        def cfg(account: int, name: str, role: str, task_id: int = 0) -> NodeConfig:
            url, deployment = anvil.url, deployed.deployment
            return devnet_node(role, url, deployment, ipfs.api, tmp / name, account, task_id, **FAST, ipfs_timeout=1.0)

        (tmp / "task.toml").write_text(TASK_TOML.format(inner_steps=2, max_rounds=1, min_validators=2))
        initiator = connect_node(cfg(0, "initiator", "initiator"))
        task_id = publish_task(
            initiator.client, initiator.signer, initiator.store, load_task_file(tmp / "task.toml")
        ).task_id

        vals = []
        for account, cheat in VALIDATORS.items():
            v = vnode.connect_validator(
                vctx.ValidatorConfig(cfg(account, f"val-{account}", "validator", task_id)), hooks(cheat)
            )
            vcons.ensure_enrolled(v)
            vals.append(v)

        trainer = connect_node(cfg(HONEST_T, "trainer", "trainer", task_id))
        ctx = load_task_context(trainer, task_id)
        policy0 = model_for_round(ctx, trainer.store, 0)
        honest = make_bundle(policy0, ctx.env, ctx.task, task_id, 0, addr(HONEST_T))
        inflated = inflate_rewards(make_bundle(policy0, ctx.env, ctx.task, task_id, 0, addr(INFLATED_T)))
        honest_digest, _ = put_submission(trainer.store, honest)
        inflated_digest, _ = put_submission(trainer.store, inflated)
        submissions = [
            (HONEST_T, honest_digest, honest),
            (INFLATED_T, inflated_digest, inflated),
            (MISSING_T, "ab" * 32, None),
        ]
        signers = {account: client.signer(keys.devnet_account(account)) for account, _, _ in submissions}
        for s in signers.values():  # all three joined first: the submit phase waits for each
            enrol(client, s, Role.TRAINER, STAKE, task_id)
        for v in vals:  # and for each validator's seed share
            vnode.step(v)
        for account, digest, bundle in submissions:
            root, units = (bytes(bundle.proof_root), bundle.work_units) if bundle else (bytes(32), 1)
            client.concord.submit(signers[account], task_id, 0, 0, Digest.parse(digest).bytes, root, units)
        assert client.concord.phase_of(task_id, 0) == Phase.COMMIT
        for v in vals:
            vfetch.backfill_submissions(v)
        copier = vals[-1]
        # share reveals (the last fixes the seed), flags, commits (each waits until every validator flagged:
        # the first honest validator is stepped last, so it is the last to flag and the first to commit, and
        # the copier copies it), reveals, and spare passes (each step idempotent)
        for _ in range(10):
            for v in vals[1:] + vals[:1]:
                vnode.step(v)
        assert client.concord.phase_of(task_id, 0) == Phase.REVEAL  # no_reveal and copy_reveal hold it open
        assert (client.concord.round_info(task_id, 0).commits, client.concord.round_info(task_id, 0).reveals) == (7, 5)
        assert "reveal_error" in json.loads(cheats._record_path(copier, 0).read_text())
        client.rpc.call("evm_increaseTime", hex(601))
        client.rpc.call("evm_mine")
        vnode.step(vals[0])  # an honest validator finalizes
        assert client.concord.task_state(task_id).finalized_rounds == 1

        m0 = Digest.parse(client.concord.model_digest(task_id, 0).digest)
        base = ctx.workload.model_state(trainer.store, m0)

        def diloco(deltas: dict) -> Digest:
            state, momentum = outer_step(base.state, deltas, base.outer_state or {}, ctx.task.outer)
            return put_model(trainer.store, state, base.config, momentum, parent_digest=m0)

        events = [
            e
            for e in client.concord.events(deployed.deployment.block_number, "latest")
            if getattr(e, "task_id", task_id) == task_id
        ]
        yield Round(
            client,
            task_id,
            events,
            {a: tmp / f"val-{a}" for a in VALIDATORS},
            m0,
            diloco({honest_digest: honest.delta}),
            diloco({honest_digest: honest.delta, inflated_digest: inflated.delta}),
            lines.lines,
        )
    finally:
        cheat_log.removeHandler(lines)
        cheat_log.setLevel(level)
        client.rpc.call("evm_revert", snap)


def revealed(r: Round, account: int) -> chain.Revealed | None:
    found = r.of(chain.Revealed, validator=addr(account))
    return found[0] if found else None


def plan(r: Round, account: int) -> dict:
    return json.loads(vstore.plan_path(vctx.task_dir(r.state_dirs[account], r.task_id), 0).read_text())


# ----------------------------------------------------------------------------- the registry and the flag


def test_registry_names_the_eight_modes_each_with_one_line_doc_and_loss():
    assert sorted(cheats.VALIDATOR_CHEATS) == [
        "accept_cheat",
        "copy_reveal",
        "false_flags",
        "lazy",
        "no_reveal",
        "reject_honest",
        "withhold_share",
        "wrong_model",
    ]
    for name, c in cheats.VALIDATOR_CHEATS.items():
        assert c.name == name and c != cheats.ValidatorCheat(name, c.doc, c.expected_loss)  # changes something
        assert isinstance(hooks(name), vnode.ValidatorHooks)
        assert c.doc and c.expected_loss and "\n" not in c.doc + c.expected_loss
    with pytest.raises(dataclasses.FrozenInstanceError):
        cheats.VALIDATOR_CHEATS["no_reveal"].skip_reveal = False  # type: ignore[misc]


def test_unknown_cheat_is_refused_by_the_lab_cli_and_the_library_has_no_cheat_flag(capsys):
    with pytest.raises(SystemExit) as exit_:
        lab_validator.main(["run", "--task", "1", "--cheat", "bribe"])
    assert exit_.value.code == 2 and "invalid choice: 'bribe'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        vnode.main(["run", "--task", "1", "--cheat", "no_reveal"])
    assert exit_.value.code == 2 and "unrecognized arguments: --cheat no_reveal" in capsys.readouterr().err


# ----------------------------------------------------------------------------- copy_reveal: the copied one withholds
# (before the module's round: its snapshot is reverted only when the module ends, so a chain_env test
# after the first use of `round0` would see its registrations)


def test_copier_of_a_withholding_validator_replays_another_reveal_and_both_restake_and_are_slashed_each_round(
    chain_env, ipfs, tmp_path, monkeypatch
):
    """The copier copies no_reveal's commitment (it committed first), so there is no copied reveal to replay:
    after the grace it replays the honest validator's reveal, which reverts too. Slashed below the task
    minimum, both top their stake up before the next round's commit and are slashed again."""
    monkeypatch.setattr(cheats, "COPY_GRACE_S", 0.0)
    client = chain_env.client
    (tmp_path / "task.toml").write_text(TASK_TOML.format(inner_steps=2, max_rounds=2, min_validators=1))

    def cfg(account: int, role: str, task_id: int = 0) -> NodeConfig:
        url, state_dir = chain_env.anvil.url, tmp_path / f"n{account}"
        return devnet_node(role, url, client.deployment, ipfs.api, state_dir, account, task_id, ipfs_timeout=1.0)

    initiator = connect_node(cfg(0, "initiator"))
    task_id = publish_task(client, initiator.signer, initiator.store, load_task_file(tmp_path / "task.toml")).task_id
    trainer = chain_env.signer(HONEST_T)
    chain_env.enrol(trainer, Role.TRAINER, STAKE, task_id)
    vals = {
        a: vnode.connect_validator(vctx.ValidatorConfig(cfg(a, "validator", task_id)), hooks(m))
        for a, m in [(H2, None), (9, "copy_reveal"), (8, "no_reveal")]
    }  # stepped in this order: no_reveal is the last to flag, so the first to commit (every commit waits for all flags)
    for v in vals.values():
        vcons.ensure_enrolled(v)
    for round_ in range(2):
        assert client.concord.phase_of(task_id, round_) == Phase.SUBMIT
        for v in vals.values():  # seed shares: the submit phase closes once every validator's is in
            vnode.step(v)
        client.concord.submit(trainer, task_id, round_, round_, bytes.fromhex(f"{round_ + 1:02x}" * 32), bytes(32), 1)
        # share reveals (the last fixes the seed), flags, then commits in the order stepped
        for _ in range(5):
            for v in vals.values():
                vfetch.backfill_submissions(v)
                vnode.step(v)
        assert client.concord.round_info(task_id, round_).reveals == 1  # only the honest one
        chain_env.warp(601)
        vnode.step(vals[H2])
        assert client.concord.task_state(task_id).finalized_rounds == round_ + 1
        client.token.approve(trainer, client.concord.address, SLASH)  # its missing bundle was slashed
        client.concord.add_stake(trainer, SLASH)

    events = [
        e
        for e in client.concord.events(client.deployment.block_number, "latest")
        if getattr(e, "task_id", task_id) == task_id
    ]
    commits = {(e.round, e.validator): e.commitment for e in events if isinstance(e, chain.Committed)}
    for round_ in range(2):
        assert commits[(round_, addr(9))] == commits[(round_, addr(8))] != commits[(round_, addr(H2))]
        record = json.loads(cheats._record_path(vals[9], round_).read_text())
        assert (record["copied_from"], record["replayed"], record["reveal_error"]) == (
            addr(8),
            addr(H2),
            "RevealDoesNotMatchCommit",
        )
    slashed = sorted((e.round, e.validator, e.amount) for e in events if isinstance(e, chain.ValidatorSlashed))
    assert slashed == sorted((r, addr(a), SLASH) for r in range(2) for a in (8, 9))
    assert [e.validator for e in events if isinstance(e, chain.Revealed)] == [addr(H2), addr(H2)]
    assert [(e.round, e.fee) for e in events if isinstance(e, chain.ValidatorPaid)] == [(0, FEE), (1, FEE)]
    for a in (8, 9):  # topped up to 100 before round 1, slashed 80 again
        assert client.concord.node_info(addr(a)).stake == STAKE - SLASH
        assert [e.amount for e in events if isinstance(e, chain.StakeAdded) and e.node == addr(a)] == [SLASH]
    assert conservation(client).holds


# ----------------------------------------------------------------------------- the honest outcome


def test_the_honest_majority_decides_the_round(round0):
    r = round0
    assert [(e.index, e.reward) for e in r.of(chain.SubmissionRewarded)] == [(0, REWARD)]
    assert sorted((e.index, e.slashed) for e in r.of(chain.SubmissionRejected)) == [(1, SLASH), (2, SLASH)]
    (final,) = r.of(chain.RoundFinalized)
    assert not final.is_void and Digest.parse(final.next_model_digest) == r.honest_model
    for account in (H1, H2):
        assert Digest.parse(revealed(r, account).next_model_digest) == r.honest_model
        assert list(revealed(r, account).reject_words) == [0b110]
        assert r.paid(chain.ValidatorPaid, account) == FEE // 2  # the two honest share the fee
        assert r.paid(chain.BountyPaid, account) == 2 * BOUNTY // 4  # 4 rejecters of each rejected trainer
        assert r.client.concord.node_info(addr(account)).stake == STAKE
    assert conservation(r.client).holds


# ----------------------------------------------------------------------------- each cheat and what it lost


def test_reject_honest_votes_reject_on_the_honest_submission_and_loses_its_fee_share(round0):
    r, me = round0, 5
    verdicts = {x.index: x.accepted for x in vstore.load_verdicts(vctx.task_dir(r.state_dirs[me], r.task_id))}
    assert verdicts == {0: True, 1: False, 2: False}  # it found #0 honest ...
    rev = revealed(r, me)
    assert list(rev.reject_words) == [0b111]  # ... and voted reject on it
    assert Digest.parse(rev.next_model_digest) == r.model0  # its model leaves #0 out: model stays
    assert r.paid(chain.ValidatorPaid, me) == 0
    assert r.paid(chain.BountyPaid, me) == 2 * BOUNTY // 4  # it did reject the two bad ones
    assert r.client.concord.node_info(addr(me)).stake == STAKE


def test_accept_cheat_votes_accept_on_bad_submissions_and_builds_their_deltas_in(round0):
    r, me = round0, 6
    verdicts = {x.index: x.accepted for x in vstore.load_verdicts(vctx.task_dir(r.state_dirs[me], r.task_id))}
    assert verdicts == {0: True, 1: False, 2: False}  # it found #1 and #2 bad ...
    rev = revealed(r, me)
    assert list(rev.reject_words) == [0]  # ... and voted accept on both
    assert Digest.parse(rev.next_model_digest) == r.cheat_model != r.honest_model  # #1's delta in, #2 unfetchable: out
    assert any("left out of the model" in line for line in r.cheat_log)
    assert r.paid(chain.ValidatorPaid, me) == 0 and r.paid(chain.BountyPaid, me) == 0
    assert r.client.concord.node_info(addr(me)).stake == STAKE


def test_wrong_model_votes_the_honest_bitmap_with_a_junk_digest_and_loses_its_fee_share(round0):
    r, me = round0, 7
    rev = revealed(r, me)
    assert list(rev.reject_words) == [0b110]
    assert Digest.parse(rev.next_model_digest) == cheats.VALIDATOR_CHEATS["wrong_model"].next_model(r.honest_model)
    assert Digest.parse(rev.next_model_digest) not in (r.honest_model, r.model0)
    assert r.paid(chain.ValidatorPaid, me) == 0
    assert r.paid(chain.BountyPaid, me) == 2 * BOUNTY // 4
    assert r.client.concord.node_info(addr(me)).stake == STAKE


def test_no_reveal_commits_its_honest_vote_never_reveals_and_is_slashed(round0):
    r, me = round0, 8
    p = plan(r, me)
    assert (p["rejected"], Digest.parse(p["next_model_digest"])) == ([1, 2], r.honest_model)  # an honest plan ...
    (committed,) = r.of(chain.Committed, validator=addr(me))
    assert Digest.parse(committed.commitment) == Digest.parse(p["commitment"])
    assert revealed(r, me) is None  # ... never revealed
    assert [e.amount for e in r.of(chain.ValidatorSlashed, validator=addr(me))] == [SLASH]
    assert r.client.concord.node_info(addr(me)).stake == STAKE - SLASH
    assert r.paid(chain.ValidatorPaid, me) == 0 and r.paid(chain.BountyPaid, me) == 0


def test_copy_reveal_copies_a_commitment_its_replayed_reveal_reverts_and_it_is_slashed(round0):
    r, me = round0, 9
    (mine,) = r.of(chain.Committed, validator=addr(me))
    (source,) = r.of(chain.Committed, validator=addr(H1))
    assert mine.commitment == source.commitment and mine.meta.block_number > source.meta.block_number
    record = json.loads((vctx.task_dir(r.state_dirs[me], r.task_id) / "cheat" / "r000000.json").read_text())
    assert record == {
        "copied_from": addr(H1),
        "commitment": source.commitment.hex(),
        "commit_error": "",
        "replayed": addr(H1),
        "reveal_error": "RevealDoesNotMatchCommit",
    }
    assert any("RevealDoesNotMatchCommit" in line for line in r.cheat_log)
    assert not (vctx.task_dir(r.state_dirs[me], r.task_id) / "verdicts").exists()  # it verified nothing
    assert revealed(r, me) is None
    assert sorted(e.validator for e in r.of(chain.ValidatorSlashed)) == sorted([addr(8), addr(me)])
    assert [e.amount for e in r.of(chain.ValidatorSlashed, validator=addr(me))] == [SLASH]
    assert r.client.concord.node_info(addr(me)).stake == STAKE - SLASH
    assert r.of(chain.ValidatorSlashed, validator=addr(H1)) == []  # the copied one is not
    assert r.paid(chain.ValidatorPaid, H1) == FEE // 2

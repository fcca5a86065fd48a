"""The late-fetch rule (issue 23; docs/PROTOCOL.md "A submission's fetch time"): a submission's content is
the trainer's fault only once its whole fetch deadline has passed, counted from submitEnd (from shareEnd for
inner states fetched after the check seed), so a validator's commit bound never ends a fetch before that;
and a task file whose commit phase has no room for it is refused before anything is published.

The round: a real Anvil and js-ipfs; the validator reads IPFS through scripts.drills.DripProxy, which holds
the honest late submission's proofs block past the bound of before this rule (yet within the block's own
deadline) and drips the withholder's files forever; a third trainer's forged proofs, served at once, are
flagged in the flag window while the late content is still on its way.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pytest

from concord.client.chain import Role
from concord.client.content.submission import (
    FETCH_MARGIN_S,
    content_due_s,
    content_window_s,
    min_commit_seconds,
    put_submission,
)
from concord.client.content.task_spec import TaskSpecError
from concord.client.digest import Digest
from concord.client.initiator import load_task_file, rule_min_commit_seconds
from concord.validator.consensus import commit_bound
from scripts import drills
from scripts.adversaries import trainer_cheats as cheats

ROOT = Path(__file__).resolve().parents[1]
# lm_task.toml too (it takes a minute to parse): tests/test_task_spec_digests loads it through load_task_file
SHIPPED = ("default_task.toml", "attacks_task.toml")
VALIDATOR_TIMEOUT_S = 40.0  # the round's validator waits this long for a block (its fetch deadline ~41 s)
HOLD_S = 35.0  # the late submission's proofs block: past the old bound (~30 s), within its deadline


def old_bound_offset(commit_seconds: int) -> float:
    """Sampled mode before the rule: flagEnd - max(1, commit_seconds / 16), seconds after submitEnd."""
    return commit_seconds // 2 - max(1.0, commit_seconds / 16)


def forged_proofs(client, ipfs_api: str, tmp: Path, task_id: int, account: int):
    """Round 0 with every proof zeroed (scripts.adversaries.trainer_cheats.zero_proofs: claims resealed, so
    only a sampled row check catches it, and any sample does); returns a function that submits it."""
    from concord.client.engine.bundle import make_bundle

    node = drills.connect_node(drills.node_cfg(client, ipfs_api, tmp, task_id, account, f"sdk-trainer-{account}"))
    ctx = drills.load_task_context(node, task_id)
    model = drills.model_for_round(ctx, node.store, 0)
    bundle = cheats.zero_proofs(make_bundle(model, ctx.env, ctx.task, task_id, 0, node.address, 0), None)
    digest, _ = put_submission(node.store, bundle)
    claim = (Digest.parse(digest).bytes, bytes(bundle.proof_root), bundle.work_units)
    return lambda: client.concord.submit(node.signer, task_id, 0, 0, *claim)


def test_commit_bound_waits_for_the_fetch_deadline_and_keeps_the_last_quarter() -> None:
    window = 33.3
    # sampled, states apart: from shareEnd (+20 at 80 s), past the flag window's bound of before (+35)
    assert commit_bound(True, True, 1000.0, 80, window) == pytest.approx(1000 + 20 + window + FETCH_MARGIN_S)
    assert old_bound_offset(80) < 20 + window
    # a long commit phase: the flag window's bound of before already covers the deadline
    assert commit_bound(True, True, 1000.0, 600, window) == 1000 + 300 - 600 / 16
    # sampled without states apart (the LM): from submitEnd
    assert commit_bound(True, False, 1000.0, 120, window) == pytest.approx(1000 + 60 - 7.5)
    assert commit_bound(True, False, 1000.0, 60, window) == pytest.approx(1000 + window + FETCH_MARGIN_S)
    # full mode: the last quarter, as before (a published task always has room: phase_room)
    assert commit_bound(False, False, 1000.0, 80, window) == 1000 + 60
    # a phase too short (only a task put on chain past the CLI): capped, the commit still lands
    assert commit_bound(True, True, 1000.0, 40, window) == 1000 + 30
    assert commit_bound(False, False, 1000.0, 40, window) == 1000 + 30


def test_min_commit_seconds_is_the_least_phase_that_fits() -> None:
    limits = load_task_file(ROOT / "configs" / "default_task.toml").spec.limits
    window = content_window_s(limits)
    for apart in (True, False):
        need = min_commit_seconds(limits, apart)
        assert content_due_s(need, apart, window) <= need * 3 / 4
        assert content_due_s(need - 1, apart, window) > (need - 1) * 3 / 4
    assert min_commit_seconds(limits, True) == 73 and min_commit_seconds(limits, False) == 49


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_task_files_hold_the_rule(name: str) -> None:
    tf = load_task_file(ROOT / "configs" / name)
    assert tf.params.commit_seconds >= rule_min_commit_seconds(tf.spec)


def test_a_commit_phase_too_short_for_the_rule_is_refused_naming_the_field(tmp_path: Path) -> None:
    text = (ROOT / "configs" / "default_task.toml").read_text().replace("commit_seconds = 80", "commit_seconds = 72")
    path = tmp_path / "short.toml"
    path.write_text(text)
    with pytest.raises(TaskSpecError) as err:
        load_task_file(path)
    message = str(err.value)
    assert "[chain] commit_seconds: 72 s" in message and "at least 73" in message and "33.3 s" in message
    path.write_text(text.replace("commit_seconds = 72", "commit_seconds = 73"))
    assert load_task_file(path).params.commit_seconds == 73


@pytest.mark.slow
def test_a_late_slow_honest_submission_is_paid_and_a_withholder_slashed(chain_env, ipfs, tmp_path: Path) -> None:
    """The honest trainer submits last (its Submitted block closes the submit phase) and its proofs reach the
    validator HOLD_S later, after the flag window: accepted (no flag possible, its own sample checked) and
    paid. The withholder's files never arrive: rejected at `fetch` once its deadline passed, and slashed.
    The forger, fetched at once, is flagged at the flag moment (the late ones still out) and slashed."""
    from concord.validator import context as vctx
    from concord.validator import node as vnode
    from concord.validator import store as vstore

    client, tmp = chain_env.client, tmp_path
    nodes = drills.Nodes()
    proxy = drills.DripProxy(f"http://127.0.0.1:{drills._api_port(ipfs.api)}")
    try:
        task_id = drills.publish(client, ipfs.api, tmp, 1, min_validators=1, phase_seconds=60)
        commit_s = client.concord.task_params(task_id).commit_seconds
        assert commit_s < 80  # the rule's minimum: a bound of before would cut the held block
        withholder = drills.enrol(client, drills.VICTIM, Role.TRAINER, drills.STAKE, task_id)
        late = drills.enrol(client, drills.PEER, Role.TRAINER, drills.STAKE, task_id)
        forger = drills.enrol(client, drills.HONEST_2, Role.TRAINER, drills.STAKE, task_id)
        validator = drills.enrol(client, drills.VAL_A, Role.VALIDATOR, drills.STAKE, task_id)

        def held_upload(store, bundle) -> str:
            digest, manifest = put_submission(store, bundle)
            proxy.held[manifest.proofs.cid] = HOLD_S
            return str(digest)

        def withheld_upload(store, bundle) -> str:
            digest, manifest = put_submission(store, bundle)
            proxy.slow.update([manifest.proofs.cid] + [ref.cid for ref in manifest.delta])
            return str(digest)

        _, submit_withholder = drills.submit_with(client, ipfs.api, tmp, task_id, drills.VICTIM, 0, withheld_upload)
        _, submit_late = drills.submit_with(client, ipfs.api, tmp, task_id, drills.PEER, 0, held_upload)
        submit_forger = forged_proofs(client, ipfs.api, tmp, task_id, drills.HONEST_2)
        drills.warm_caches(client, proxy.api, tmp, task_id, drills.VAL_A, "validator", "validator")
        base = drills.node_cfg(client, proxy.api, tmp, task_id, drills.VAL_A, "validator", "validator")
        cfg = vctx.ValidatorConfig(dataclasses.replace(base, ipfs_timeout=VALIDATOR_TIMEOUT_S), rounds=1)
        v = nodes.thread("validator", lambda stop: vnode.run_validator(cfg, stop))
        drills.wait_for(
            "the validator's seed share",
            lambda: client.concord.seed_info(task_id, 0).shares_committed != 0,
            timeout=60,
            alive=v.failed,
        )
        submit_withholder()
        submit_forger()
        submit_late()  # the last trainer: this block closes the submit phase
        submitted = time.monotonic()
        info = client.concord.round_info(task_id, 0)
        assert info.submissions == 3 and info.phase.name == "COMMIT", info
        times = drills.verdict_times(
            [tmp / "validator"], task_id, submitted, lambda: drills.settled(client, task_id), timeout=150
        )
        assert drills.settled(client, task_id), "round 0 did not settle"
        v.join()
        subs = {e.trainer: e.index for e in drills.events(client, task_id, "Submitted")}
        verdicts = {x.index: x for x in vstore.load_verdicts(vctx.task_dir(tmp / "validator", task_id))}
        assert verdicts[subs[late]].accepted, verdicts[subs[late]]
        bad = verdicts[subs[withholder]]
        assert not bad.accepted and bad.failed_check == "fetch", bad
        # judged after the bound of before (which would have rejected it) and after the flag window
        late_s = times[("validator", subs[late])]
        assert old_bound_offset(commit_s) < HOLD_S <= late_s, (late_s, commit_s)
        assert late_s > commit_s // 2, late_s
        forged = verdicts[subs[forger]]
        assert not forged.accepted and forged.flags, forged
        # its flag went out in the window, while the late content was still coming (one Flagged event)
        (flagged,) = [e for e in drills.events(client, task_id, "Flagged") if e.round == 0]
        assert flagged.validator.lower() == validator.lower() and list(flagged.items) == list(forged.flags), flagged
        rejected = drills.events(client, task_id, "SubmissionRejected")
        assert sorted(e.trainer for e in rejected) == sorted([withholder, forger]), rejected
        assert all(e.slashed > 0 for e in rejected), rejected
        paid = [e.trainer for e in drills.events(client, task_id, "SubmissionRewarded")]
        assert paid == [late], paid
        (fin,) = [e for e in drills.events(client, task_id, "RoundFinalized") if e.round == 0]
        assert not fin.is_void
        assert drills.conservation(client).holds
    finally:
        nodes.close()
        proxy.close()

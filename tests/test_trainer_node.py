"""Task publishing and the trainer node against real Anvil + js-ipfs + torch (client.initiator, client.trainer)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import requests
from own_devnet import FAST, devnet_node

from concord.client import chain
from concord.client.content.submission import fetch_submission
from concord.client.digest import Digest
from concord.client.engine.bundle import proof_root
from concord.client.engine.config import DEFAULT_TASK
from concord.client.initiator import UNPUBLISHED, TaskSpecError, load_task_file, publish_task
from concord.client.initiator import main as task_main
from concord.client.runtime.config import NodeConfig
from concord.client.runtime.connect import connect_node
from concord.client.runtime.events import EventFollower
from concord.client.runtime.seed import commit_share, new_share, reveal_share, wait_for_seed
from concord.client.runtime.task import load_task_context, model_for_round
from concord.client.trainer import Prepared, TrainerConfig, run_trainer, submit_round
from scripts.adversaries.trainer_cheats import inflate_rewards
from scripts.harness import wait_for

REPO = Path(__file__).resolve().parent.parent
DEFAULT_TOML = REPO / "configs" / "default_task.toml"
INITIATOR, TRAINER, OTHER_TRAINER, CLI_TRAINER = 0, 3, 4, 5

SMALL_TOML = (
    (Path(__file__).parent / "data" / "small_task.toml")
    .read_text()
    .format(inner_steps=1, max_rounds=5, min_validators=1)
)


def _write(tmp_path: Path, text: str, name: str = "task.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _conn_args(chain_env, ipfs, tmp_path: Path) -> list[str]:
    dep = chain_env.client.deployment.save(tmp_path / "deployment.json")
    return ["--rpc-url", chain_env.anvil.url, "--deployment", str(dep), "--ipfs-api", ipfs.api]


def _node_cfg(chain_env, ipfs, tmp_path: Path, task_id: int, account: int, name: str) -> NodeConfig:
    url, deployment = chain_env.anvil.url, chain_env.client.deployment
    return devnet_node("trainer", url, deployment, ipfs.api, tmp_path / name, account, task_id, **FAST)


def _publish_small(chain_env, ipfs, tmp_path: Path) -> int:
    cfg = _node_cfg(chain_env, ipfs, tmp_path, 0, INITIATOR, "initiator")
    node = connect_node(cfg)
    return publish_task(node.client, node.signer, node.store, load_task_file(_write(tmp_path, SMALL_TOML))).task_id


def _submitted(client, task_id: int, trainer: str) -> list[chain.Submitted]:
    return [
        e
        for e in client.concord.events(client.deployment.block_number, names=["Submitted"])
        if e.task_id == task_id and e.trainer == trainer
    ]


def _stop_after(seconds: float) -> threading.Event:
    stop = threading.Event()
    timer = threading.Timer(seconds, stop.set)
    timer.daemon = True
    timer.start()
    return stop


# ----------------------------------------------------------------------------- task files


def test_default_task_toml_is_the_engine_default_task():
    task_file = load_task_file(DEFAULT_TOML)
    assert task_file.spec.task == DEFAULT_TASK
    params = task_file.params
    assert (params.trainer_reward_per_round, params.slash_amount) == (300 * 10**18, 80 * 10**18)
    assert task_file.budget == params.per_round * params.max_rounds == 20 * 360 * 10**18
    assert params.max_work_units == DEFAULT_TASK.max_work_units and params.spec_digest == UNPUBLISHED


def test_every_bad_field_is_named_at_once(tmp_path: Path):
    text = (
        SMALL_TOML.replace("lr = 3e-3", "lr = -1.0")
        .replace("bounty_bps = 5000", "bounty_bps = 20000")
        .replace("submit_seconds = 600\n", "")
        .replace('env_id = "sort"', 'env_id = "chess"')
        .replace("slash_amount = 80", 'slash_amount = "eighty"')
    )
    with pytest.raises(TaskSpecError) as info:
        load_task_file(_write(tmp_path, text))
    named = {(e.section, e.key) for e in info.value.errors}
    assert named == {
        ("grpo", "lr"),
        ("env", "env_id"),
        ("chain", "bounty_bps"),
        ("chain", "submit_seconds"),
        ("chain", "slash_amount"),
    }


def _ipfs_objects(ipfs) -> int:
    return int(requests.post(f"{ipfs.api_url}/api/v0/repo/stat", timeout=10).json()["NumObjects"])


def test_publish_with_a_bad_field_changes_nothing(chain_env, ipfs, tmp_path: Path, capsys):
    client = chain_env.client
    me = chain_env.signer(INITIATOR).address
    before = (
        client.concord.task_count(),
        client.token.balance_of(me),
        client.token.allowance(me, client.concord.address),
        _ipfs_objects(ipfs),
    )
    bad = _write(tmp_path, SMALL_TOML.replace("min_validators = 1", "min_validators = 0"))
    rc = task_main(["publish", str(bad), "--devnet-account", str(INITIATOR), *_conn_args(chain_env, ipfs, tmp_path)])
    assert rc == 2
    assert "[chain] min_validators: must be in [1, 255], got 0" in capsys.readouterr().err
    # chain-dependent check (the initiator cannot afford the budget) also fails before any upload
    rc = task_main(
        [
            "publish",
            str(_write(tmp_path, SMALL_TOML, "ok.toml")),
            "--budget",
            "5000000",
            "--devnet-account",
            str(INITIATOR),
            *_conn_args(chain_env, ipfs, tmp_path),
        ]
    )
    assert rc == 2
    err = capsys.readouterr().err
    assert "[chain] budget:" in err and "holds" in err
    after = (
        client.concord.task_count(),
        client.token.balance_of(me),
        client.token.allowance(me, client.concord.address),
        _ipfs_objects(ipfs),
    )
    assert after == before


def test_publish_creates_the_task_from_the_file(chain_env, ipfs, tmp_path: Path, capsys):
    client = chain_env.client
    rc = task_main(
        [
            "publish",
            str(_write(tmp_path, SMALL_TOML)),
            "--json",
            "--devnet-account",
            str(INITIATOR),
            *_conn_args(chain_env, ipfs, tmp_path),
        ]
    )
    assert rc == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    params = client.concord.task_params(out["task_id"])
    task_file = load_task_file(tmp_path / "task.toml")
    assert out["spec_digest"].startswith("0x") and out["initial_model_digest"].startswith("0x")  # the one text form
    assert params == dataclasses.replace(
        task_file.params,
        spec_digest=Digest.parse(out["spec_digest"]).bytes,
        initial_model_digest=Digest.parse(out["initial_model_digest"]).bytes,
    )
    assert params.max_work_units == task_file.spec.task.max_work_units > 0
    assert out["budget"] == 5 * 360 * 10**18
    # a node reads the spec back by the on-chain digest, and model 0 by its digest
    node = connect_node(_node_cfg(chain_env, ipfs, tmp_path, out["task_id"], TRAINER, "reader"))
    ctx = load_task_context(node, out["task_id"])
    assert str(ctx.spec.digest()) == out["spec_digest"] and ctx.task.grpo.prompts_per_step == 4
    policy = model_for_round(ctx, node.store, 0)
    assert model_for_round(ctx, node.store, 0) is policy  # cached by digest
    assert sum(p.numel() for p in policy.parameters()) > 0


# ----------------------------------------------------------------------------- the trainer node


def test_trainer_submits_a_round_and_never_twice(chain_env, ipfs, tmp_path: Path):
    client = chain_env.client
    task_id = _publish_small(chain_env, ipfs, tmp_path)
    # a second joined trainer keeps round 0's submit phase open after ours
    chain_env.enrol(chain_env.signer(OTHER_TRAINER), chain.Role.TRAINER, 100 * 10**18, task_id)
    cfg = TrainerConfig(_node_cfg(chain_env, ipfs, tmp_path, task_id, TRAINER, "trainer"), rounds=1)
    run = run_trainer(cfg, _stop_after(120))
    me = run.address
    assert [s.round for s in run.submitted] == [0] and run.submitted[0].base_round == 0

    events = _submitted(client, task_id, me)
    assert len(events) == 1
    ev = events[0]
    assert (ev.round, ev.base_round, Digest.parse(ev.bundle_digest)) == (0, 0, run.submitted[0].digest)
    node = connect_node(cfg.node)
    ctx = load_task_context(node, task_id)
    bundle = fetch_submission(node.store, ev.bundle_digest.hex(), ctx.spec.limits)
    assert bundle.proof_root == ev.proof_root == proof_root(bundle)
    assert (bundle.trainer.lower(), bundle.round, bundle.work_units) == (me.lower(), 0, ev.work_units)
    assert bundle.work_units == sum(int(b.mask.sum()) for b in bundle.batches) > 0
    assert client.concord.phase_of(task_id, 0) == chain.Phase.SUBMIT

    # restart: chain state says round 0 is done; the node waits for round 1 instead of resubmitting
    again = run_trainer(cfg, _stop_after(4))
    assert again.submitted == [] and again.missed == []
    # even handed round 0's bundle directly, the node checks chain state and sends nothing
    prep = Prepared(0, 0, Digest.parse(ev.bundle_digest), ev.proof_root, ev.work_units, 0.0, 16, 0.0)
    from concord.client.runtime.display import Display

    assert submit_round(node, ctx, prep, Display("t", json_logs=True)) is None
    assert len(_submitted(client, task_id, me)) == 1
    assert client.concord.member_info(task_id, me).last_submit_round == 0
    # the event follower persisted its cursor: a restart resumes after the last block it handled
    follower = EventFollower(node, task_id)
    assert follower.cursor >= ev.meta.block_number


def test_cheat_inflates_claimed_rewards(chain_env, ipfs, tmp_path: Path):
    task_id = _publish_small(chain_env, ipfs, tmp_path)
    node = connect_node(_node_cfg(chain_env, ipfs, tmp_path, task_id, TRAINER, "cheater"))
    ctx = load_task_context(node, task_id)
    from concord.client.engine.bundle import make_bundle

    honest = make_bundle(model_for_round(ctx, node.store, 0), ctx.env, ctx.task, task_id, 0, node.address, 0)
    cheat = inflate_rewards(honest)
    assert honest.mean_reward < 1.0 and cheat.mean_reward == 1.0
    assert all(bool((b.rewards == 1.0).all()) for b in cheat.batches)
    assert cheat.proof_root == honest.proof_root and cheat.work_units == honest.work_units


@pytest.mark.e2e
def test_trainer_cli_json_logs_and_sigterm(chain_env, ipfs, tmp_path: Path):
    """The CLI as a process: JSON log lines, a submission, and SIGTERM ends it cleanly (exit 0)."""
    import signal

    task_id = _publish_small(chain_env, ipfs, tmp_path)
    argv = [
        sys.executable,
        "-m",
        "concord.client.trainer",
        "run",
        "--task",
        str(task_id),
        "--devnet-account",
        str(CLI_TRAINER),
        "--state-dir",
        str(tmp_path / "cli"),
        "--json-logs",
        "--poll-interval",
        "0.05",
        *_conn_args(chain_env, ipfs, tmp_path),
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONCORD_")}
    proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[dict] = []
    try:
        for raw in proc.stdout:  # until the submission (the process then waits for model 1)
            lines.append(json.loads(raw))
            if lines[-1].get("event") == "submitted":
                break
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err[-2000:]
    lines += [json.loads(line) for line in out.splitlines()]
    submitted = [x for x in lines if x.get("event") == "submitted"]
    assert len(submitted) == 1 and submitted[0]["round"] == 0
    me = chain_env.signer(CLI_TRAINER).address
    (ev,) = _submitted(chain_env.client, task_id, me)
    assert submitted[0]["digest"] == str(Digest.parse(ev.bundle_digest)) and submitted[0]["tx"] == ev.meta.tx_hash
    assert any(x.get("event") == "registered" for x in lines)
    assert lines[-1]["event"] == "stopped" and lines[-1]["submitted"] == [0]


def test_rounds_pipeline_up_to_async_level(chain_env, ipfs, tmp_path: Path):
    """asyncLevel 1: round 1 is generated on model 0 while round 0 is verified; round 2 builds on model 1."""
    from concord.client.content.model_store import put_model

    client = chain_env.client
    cfg0 = _node_cfg(chain_env, ipfs, tmp_path, 0, INITIATOR, "initiator")
    init = connect_node(cfg0)
    text = SMALL_TOML.replace("async_level = 0", "async_level = 1")
    task_id = publish_task(init.client, init.signer, init.store, load_task_file(_write(tmp_path, text))).task_id
    validator = chain_env.signer(6)
    chain_env.enrol(validator, chain.Role.VALIDATOR, 100 * 10**18, task_id)
    # the stand-in validator's seed shares: a submit phase closes early only with every share in
    shares = {r: new_share() for r in range(2)}
    commit_share(client.concord, validator, task_id, 0, shares[0])

    cfg = TrainerConfig(_node_cfg(chain_env, ipfs, tmp_path, task_id, TRAINER, "trainer"), rounds=3)
    result: dict = {}
    worker = threading.Thread(target=lambda: result.update(run=run_trainer(cfg, _stop_after(120))), daemon=True)
    worker.start()
    me = chain_env.signer(TRAINER).address
    wait_for("rounds 0 and 1 submitted", lambda: len(_submitted(client, task_id, me)) >= 2, 60, poll=0.1)
    assert client.concord.latest_model(task_id).model == 0  # round 1 did not wait for round 0's verdict
    commit_share(client.concord, validator, task_id, 1, shares[1])  # closes round 1: round 2 may open

    # a stand-in validator accepts round 0 and publishes model 1 (model 0 nudged)
    ctx = load_task_context(init, task_id)
    base = {k: v.clone() for k, v in model_for_round(ctx, init.store, 0).state_dict().items()}
    model1 = put_model(
        init.store, {k: v + 0.01 for k, v in base.items()}, ctx.task.model, None, ctx.params.initial_model_digest
    )
    words, salt = chain.reject_words([], 1), b"\x01" * 32
    reveal_share(client.concord, validator, task_id, 0, shares[0])  # the one share: fixes the seed
    wait_for_seed(client.concord, client.rpc, validator, task_id, 0)
    client.concord.commit(
        validator, task_id, 0, chain.commit_hash(task_id, 0, words, model1.bytes, salt, validator.address)
    )
    client.concord.reveal(validator, task_id, 0, words, model1.bytes, salt)
    client.concord.finalize_all(validator, task_id, 0)
    worker.join(timeout=90)
    assert not worker.is_alive()
    run = result["run"]
    assert [(s.round, s.base_round) for s in run.submitted] == [(0, 0), (1, 0), (2, 1)]
    assert [(e.round, e.base_round) for e in _submitted(client, task_id, me)] == [(0, 0), (1, 0), (2, 1)]
    assert client.concord.balance_of(me) == 300 * 10**18  # round 0 accepted: the whole trainer reward


def test_node_config_from_devnet_json_and_flags(tmp_path: Path):
    import argparse

    from concord.client.runtime.config import NodeConfigError, add_node_args, node_config

    dep = chain.Deployment(31337, "0x" + "11" * 20, "0x" + "22" * 20, 3, "0x" + "33" * 20).to_json()  # reaches nothing
    net = {
        "rpc_url": "http://127.0.0.1:1",
        "chain_id": 31337,
        "ipfs_api": "/ip4/127.0.0.1/tcp/2/http",
        "ipfs_api_url": "http://127.0.0.1:2",
        "state_dir": str(tmp_path),
        "deployment": dep,
        "token": dep["token"],
        "accounts": [],
    }
    (tmp_path / "devnet.json").write_text(json.dumps(net))
    p = argparse.ArgumentParser()
    add_node_args(p)
    cfg = node_config(
        p.parse_args(["--task", "7", "--devnet", str(tmp_path), "--ipfs-api", "/ip4/10.0.0.1/tcp/5001/http"]),
        "validator",
    )
    assert (cfg.rpc_url, cfg.ipfs_api, cfg.task_id, cfg.deployment.block_number) == (
        "http://127.0.0.1:1",
        "/ip4/10.0.0.1/tcp/5001/http",
        7,
        3,
    )
    with pytest.raises(NodeConfigError, match="--deployment"):
        node_config(p.parse_args(["--task", "7", "--rpc-url", "http://x:1"]), "trainer")
    with pytest.raises(NodeConfigError, match="--devnet"):
        node_config(p.parse_args(["--task", "7", "--devnet", str(tmp_path / "nope.json")]), "trainer")


def test_task_close_then_reclaim_from_the_cli(chain_env, ipfs, tmp_path: Path, capsys):
    """A budget-limited task has an exit: close (round 0 still in flight: reclaim refused), let round 0
    settle void (nobody plays), reclaim everything; a stranger cannot close it."""
    client = chain_env.client
    toml = SMALL_TOML.replace("max_rounds = 5", "max_rounds = 0")
    rc = task_main(
        [
            "publish",
            str(_write(tmp_path, toml)),
            "--json",
            "--budget",
            "1000",
            "--devnet-account",
            str(INITIATOR),
            *_conn_args(chain_env, ipfs, tmp_path),
        ]
    )
    assert rc == 0, capsys.readouterr().err
    task_id = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["task_id"]
    conn = ["--task", str(task_id), "--json", *_conn_args(chain_env, ipfs, tmp_path)]
    assert task_main(["close", "--devnet-account", str(TRAINER), *conn]) == 1
    assert "NotInitiator" in capsys.readouterr().err
    assert task_main(["close", "--devnet-account", str(INITIATOR), *conn]) == 0
    assert json.loads(capsys.readouterr().out)["closed"] is True
    assert task_main(["reclaim", "--devnet-account", str(INITIATOR), *conn]) == 1
    assert "TaskNotOver" in capsys.readouterr().err
    info = client.concord.round_info(task_id, 0)
    chain_env.client.rpc.call("evm_setNextBlockTimestamp", info.reveal_end + 1)
    signer = chain_env.signer(INITIATOR)
    client.concord.finalize_all(signer, task_id, 0)
    before = client.concord.balance_of(signer.address)
    assert task_main(["reclaim", "--devnet-account", str(INITIATOR), *conn]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["reclaimed"] == 1000 * 10**18 and out["balance"] == before + out["reclaimed"]
    assert client.concord.task_escrow(task_id).held == 0

"""The lifecycle commands against the session devnet (issue 14): a trainer and a validator leave, unbond and
withdraw; an initiator shows, tops up, closes, reclaims and withdraws; `concord model export` writes a
directory that loads back (tiny: our loader; hf: transformers) and re-digests. Every refusal is one line
with the fix, exit 1 (2 for a bad flag), and changes nothing on chain or on disk.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from task_terms import CHAIN_PARAMS, STAKE, TOKEN

from concord.client.chain import Role
from concord.client.cli import main as cli_main
from concord.client.content.model_store import put_model
from concord.client.content.store import Store
from concord.client.engine.config import ModelConfig
from concord.client.engine.model import build_policy, policy_state
from concord.client.model_export import load_export, verify_export
from concord.client.runtime.config import ENV_VARS
from concord.client.runtime.tiny_work import CONFIG_FILE, WEIGHTS_FILE

INITIATOR, TRAINER, VALIDATOR = 0, 3, 4
UNBOND_DELAY = 60  # client.chain.deploy.DEVNET_UNBOND_DELAY


@pytest.fixture(autouse=True)
def quiet_env(monkeypatch: pytest.MonkeyPatch):
    for names in ENV_VARS.values():
        for name in names:
            monkeypatch.delenv(name, raising=False)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        root.removeHandler(h)
    for h in handlers:
        root.addHandler(h)
    root.setLevel(level)


@pytest.fixture
def net(chain_env, ipfs, tmp_path: Path):
    """The session devnet at a fresh snapshot, with a `concord` runner for any of its accounts."""
    dep = chain_env.client.deployment.save(tmp_path / "deployment.json")
    conn = ["--rpc-url", chain_env.anvil.url, "--deployment", str(dep), "--ipfs-api", ipfs.api]

    def concord(*argv: str, account: int | None = None, json_out: bool = False, capsys=None):
        args = [*argv, *conn, *(["--devnet-account", str(account)] if account is not None else [])]
        args += ["--json"] if json_out else []
        try:
            rc = cli_main(args)
        except SystemExit as e:
            rc = int(e.code or 0)
        out, err = capsys.readouterr()
        assert "Traceback" not in err, err
        if rc == 0 and json_out:
            return rc, json.loads(out), err
        return rc, out, err

    return chain_env, concord


def _refused(result: tuple, *words: str, rc: int = 1) -> str:
    code, out, err = result
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == rc and not out, (code, out, err)
    if rc == 1:
        assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert all(w in err for w in words), err
    return err


def test_a_trainer_leaves_unbonds_and_withdraws(net, capsys) -> None:
    env, concord = net
    c, t = env.client.concord, env.client.token
    task = env.create_task(env.signer(INITIATOR), CHAIN_PARAMS, 10 * CHAIN_PARAMS.per_round)
    me = env.signer(TRAINER).address
    env.enrol(env.signer(TRAINER), Role.TRAINER, STAKE, task)
    env.enrol(env.signer(VALIDATOR), Role.VALIDATOR, STAKE, task)
    addrs = [me, env.signer(VALIDATOR).address]

    def unchanged(result: tuple, *words: str, rc: int = 1) -> None:
        before = env.snapshot_state(task, addrs)
        _refused(result, *words, rc=rc)
        assert env.snapshot_state(task, addrs) == before

    # joined: no unbond; the other role's command and an unknown task are refused before any transaction
    before = env.snapshot_state(task, addrs)
    unchanged(concord("trainer", "unbond", account=TRAINER, capsys=capsys), "PendingWork", "leave every task first")
    unchanged(
        concord("validator", "leave", "--task", str(task), account=TRAINER, capsys=capsys), "registered as a trainer"
    )
    unchanged(concord("trainer", "leave", "--task", "99", account=TRAINER, capsys=capsys), "UnknownTask")
    unchanged(concord("trainer", "unbond", "--amount", "1.5base", account=TRAINER, capsys=capsys), "--amount", rc=2)
    unchanged(concord("trainer", "unbond", "--amount", "-3", account=TRAINER, capsys=capsys), "--amount", rc=2)
    unchanged(concord("trainer", "leave", account=TRAINER, capsys=capsys), "--task", rc=2)
    assert env.snapshot_state(task, addrs) == before

    rc, out, _ = concord("trainer", "leave", "--task", str(task), account=TRAINER, capsys=capsys)
    assert rc == 0 and f"{me} left task {task}" in out
    assert not c.member_info(task, me).joined and c.node_info(me).joined_tasks == 0
    unchanged(concord("trainer", "leave", "--task", str(task), account=TRAINER, capsys=capsys), "NotJoined")
    unchanged(concord("trainer", "unbond", "--complete", account=TRAINER, capsys=capsys), "NothingUnbonding")
    unchanged(concord("trainer", "unbond", "--amount", "101", account=TRAINER, capsys=capsys), "UnbondExceedsStake")

    rc, out, _ = concord("trainer", "unbond", "--amount", "40", account=TRAINER, json_out=True, capsys=capsys)
    assert rc == 0 and out["requested"] == 40 * TOKEN and out["symbol"] == "CDT"
    info = c.node_info(me)
    assert (info.stake, info.unbonding) == (STAKE, 40 * TOKEN) and out["unbond_at"] == info.unbond_at
    unchanged(concord("trainer", "unbond", "--complete", account=TRAINER, capsys=capsys), "UnbondNotReady")
    env.warp(UNBOND_DELAY + 1)
    rc, out, _ = concord("trainer", "unbond", "--complete", account=TRAINER, capsys=capsys)
    assert rc == 0 and "40 CDT unbonded and credited (stake 60 CDT, balance 40 CDT)" in out, out
    assert c.node_info(me).stake == 60 * TOKEN and c.balance_of(me) == 40 * TOKEN

    unchanged(concord("trainer", "withdraw", "--amount", "41", account=TRAINER, capsys=capsys), "InsufficientBalance")
    wallet = t.balance_of(me)
    rc, out, _ = concord("trainer", "withdraw", "--amount", "2.5", account=TRAINER, capsys=capsys)
    assert rc == 0 and "withdrew 2.5 CDT" in out and t.balance_of(me) == wallet + 25 * TOKEN // 10
    rc, out, _ = concord("trainer", "withdraw", account=TRAINER, json_out=True, capsys=capsys)
    assert rc == 0 and out["withdrawn"] == 375 * TOKEN // 10 and out["balance"] == 0
    assert t.balance_of(me) == wallet + 40 * TOKEN
    rc, out, _ = concord("trainer", "withdraw", account=TRAINER, capsys=capsys)
    assert rc == 0 and "nothing to withdraw (balance 0 CDT)" in out

    # the validator: leave once its work is final (none yet), unbond all of its free stake
    v = env.signer(VALIDATOR).address
    assert concord("validator", "leave", "--task", str(task), account=VALIDATOR, capsys=capsys)[0] == 0
    rc, out, _ = concord("validator", "unbond", account=VALIDATOR, capsys=capsys)
    assert rc == 0 and "unbonding 100 CDT (in all 100 CDT of 100 CDT)" in out and "validator unbond --complete" in out
    assert c.node_info(v).unbonding == STAKE
    unchanged(concord("validator", "unbond", account=VALIDATOR, capsys=capsys), "unbonding already")


def test_an_initiator_shows_tops_up_closes_reclaims_and_withdraws(net, capsys) -> None:
    env, concord = net
    c = env.client.concord
    budget = 3 * CHAIN_PARAMS.per_round
    task = env.create_task(env.signer(INITIATOR), CHAIN_PARAMS, budget)
    me, other = env.signer(INITIATOR).address, env.signer(TRAINER).address

    rc, shown, _ = concord("task", "show", "--task", str(task), json_out=True, capsys=capsys)  # no key needed
    state = c.task_state(task)
    assert rc == 0 and shown["initiator"] == me and shown["budget"] == state.budget and shown["closed"] is False
    assert shown["trainer_reward_per_round"] == 300 * TOKEN and shown["symbol"] == "CDT" and shown["decimals"] == 18
    assert shown["held"] == budget and shown["held"] == shown["budget"] + shown["reserved"]
    rc, text, _ = concord("task", "show", "--task", str(task), capsys=capsys)
    assert rc == 0 and "300 CDT to trainers, 60 CDT to validators" in text and f"initiator {me}" in text
    _refused(concord("task", "show", "--task", "77", capsys=capsys), "UnknownTask(taskId=77)", "no task with that id")

    before = env.snapshot_state(task, [me, other])
    _refused(concord("task", "top-up", "--task", str(task), "--amount", "lots", account=INITIATOR, capsys=capsys), rc=2)
    _refused(concord("task", "top-up", "--task", str(task), "--amount", "0", account=INITIATOR, capsys=capsys), rc=2)
    _refused(
        concord("task", "top-up", "--task", str(task), "--amount", "2000000", account=INITIATOR, capsys=capsys),
        "--amount: top-up of 2000000 CDT but",
    )
    _refused(concord("task", "close", "--task", str(task), account=TRAINER, capsys=capsys), "NotInitiator", "initiator")
    _refused(concord("task", "reclaim", "--task", str(task), account=INITIATOR, capsys=capsys), "TaskNotOver")
    assert env.snapshot_state(task, [me, other]) == before

    rc, out, _ = concord("task", "top-up", "--task", str(task), "--amount", "12.5", account=TRAINER, capsys=capsys)
    assert rc == 0 and f"topped up by 12.5 CDT to {(state.budget + 125 * TOKEN // 10) / TOKEN:g} CDT" in out, out
    assert c.task_state(task).budget == state.budget + 125 * TOKEN // 10  # anyone may top a task up

    rc, out, _ = concord("task", "close", "--task", str(task), account=INITIATOR, capsys=capsys)
    assert rc == 0 and "closed" in out and c.task_state(task).closed
    _refused(concord("task", "close", "--task", str(task), account=INITIATOR, capsys=capsys), "TaskIsClosed")
    _refused(
        concord("task", "top-up", "--task", str(task), "--amount", "1", account=INITIATOR, capsys=capsys),
        "TaskIsClosed",
    )
    # the round in flight settles (void: nobody played), then the budget comes back
    env.warp(3 * 600 + 1)
    for r in range(c.task_state(task).head_round + 1):
        c.finalize_all(env.signer(INITIATOR), task, r)
    left = c.task_state(task).budget
    rc, out, _ = concord("task", "reclaim", "--task", str(task), account=INITIATOR, json_out=True, capsys=capsys)
    assert rc == 0 and out["reclaimed"] == left == budget + 125 * TOKEN // 10 and out["balance"] == left
    wallet = env.client.token.balance_of(me)
    rc, out, _ = concord("task", "withdraw", account=INITIATOR, capsys=capsys)
    assert rc == 0 and f"withdrew {left / TOKEN:g} CDT" in out
    assert env.client.token.balance_of(me) == wallet + left and c.balance_of(me) == 0


# ============================================================================ model export


def _task_with_model(env, store: Store, cfg: ModelConfig) -> tuple[int, dict[str, torch.Tensor], bytes]:
    state = policy_state(build_policy(cfg))
    digest = put_model(store, state, cfg, None, None)
    params = dataclasses.replace(CHAIN_PARAMS, initial_model_digest=digest.bytes)
    return env.create_task(env.signer(INITIATOR), params, CHAIN_PARAMS.per_round), state, digest.bytes


def test_model_export_writes_a_directory_that_loads_back_and_re_digests(
    net, store: Store, tmp_path: Path, capsys
) -> None:
    env, concord = net
    cfg = ModelConfig(vocab_size=16, d_model=16, n_layers=1, n_heads=2, max_seq_len=16, seed=7)
    task, state, digest = _task_with_model(env, store, cfg)
    out_dir = tmp_path / "export" / "m0"
    rc, out, _ = concord("model", "export", "0", str(out_dir), "--task", str(task), json_out=True, capsys=capsys)
    assert rc == 0 and out["digest"] == "0x" + digest.hex() and out["kind"] == "tiny" and out["tensors"] == len(state)
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(out["files"])
    loaded, loaded_cfg, _ = load_export(out_dir)
    assert loaded_cfg == cfg and loaded.keys() == state.keys()
    assert all(torch.equal(loaded[k], state[k]) for k in state)
    assert json.loads((out_dir / CONFIG_FILE).read_text())["model_type"] == "concord-tiny"
    assert verify_export(out_dir).bytes == digest
    rc, text, _ = concord_verify(out_dir, capsys)
    assert rc == 0 and digest.hex() in text

    # a changed weight no longer re-digests
    weights = load_file(str(out_dir / WEIGHTS_FILE))
    name = sorted(weights)[0]
    weights[name] = weights[name] + 1e-3
    save_file(weights, str(out_dir / WEIGHTS_FILE), metadata={"format": "pt"})
    rc, _, err = concord_verify(out_dir, capsys)
    assert rc == 1 and "model.safetensors: the weights do not re-digest" in err

    # refusals: not final, a non-empty DIR, an unknown task; nothing written
    listing = sorted(p.name for p in out_dir.iterdir())
    _refused(
        concord("model", "export", "1", str(tmp_path / "m1"), "--task", str(task), capsys=capsys), "ROUND", "not final"
    )
    _refused(
        concord("model", "export", "0", str(out_dir), "--task", str(task), capsys=capsys),
        "DIR",
        "not an empty directory",
    )
    _refused(concord("model", "export", "0", str(tmp_path / "m9"), "--task", "99", capsys=capsys), "UnknownTask")
    _refused(concord("model", "export", "x", str(tmp_path / "m9"), "--task", str(task), capsys=capsys), "ROUND", rc=2)
    assert not (tmp_path / "m1").exists() and not (tmp_path / "m9").exists()
    assert sorted(p.name for p in out_dir.iterdir()) == listing
    assert [p.name for p in (tmp_path / "export").iterdir()] == ["m0"]  # no temporary sibling left


def concord_verify(directory: Path, capsys) -> tuple[int, str, str]:
    rc = cli_main(["model", "verify", str(directory)])
    out, err = capsys.readouterr()
    return rc, out, err


def test_an_hf_model_exports_for_transformers(net, store: Store, tmp_path: Path, capsys) -> None:
    from transformers import AutoModelForCausalLM

    env, concord = net
    cfg = ModelConfig(vocab_size=32, d_model=16, n_layers=1, n_heads=2, max_seq_len=16, seed=3, kind="hf")
    task, _, digest = _task_with_model(env, store, cfg)
    rc, out, _ = concord(
        "model", "export", "0", str(tmp_path / "hf"), "--task", str(task), json_out=True, capsys=capsys
    )
    assert rc == 0 and out["kind"] == "hf" and out["digest"] == "0x" + digest.hex()
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "hf", local_files_only=True).float().eval()
    ours = build_policy(cfg)
    tokens = torch.tensor([[1, 5, 7, 9, 2]])
    with torch.no_grad():
        assert torch.allclose(loaded(tokens).logits, ours(tokens).logits, atol=1e-6)


def test_stake_flags_are_tokens_on_chain(net, store: Store, ipfs, tmp_path: Path) -> None:
    """`--stake 150` registers 150 tokens (the validator's enrolment, the path `validator run --stake` takes)."""
    from own_devnet import devnet_node
    from task_terms import node_task

    from concord.client.initiator import publish_task
    from concord.client.units import parse_amount
    from concord.validator import consensus as vcons
    from concord.validator import context as vctx
    from concord.validator import node as vnode

    env, _ = net
    task = publish_task(env.client, env.signer(INITIATOR), store, node_task(max_rounds=2, min_validators=1)).task_id
    cfg = devnet_node("validator", env.anvil.url, env.client.deployment, ipfs.api, tmp_path / "v", VALIDATOR, task)
    v = vnode.connect_validator(vctx.ValidatorConfig(cfg, stake=parse_amount("150", "--stake")))
    vcons.ensure_enrolled(v)
    info = env.client.concord.node_info(v.me)
    assert info.role == Role.VALIDATOR and info.stake == 150 * TOKEN
    assert env.client.concord.member_info(task, v.me).joined


def test_an_hf_directory_model_exports_with_its_tokenizer(net, store: Store, tmp_path: Path, capsys) -> None:
    """A task built on a local Hugging Face directory (model.hf_path): the export carries its config and
    tokenizer, and transformers loads both back."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

    env, concord = net
    source = tmp_path / "source-model"
    base = ModelConfig(vocab_size=32, d_model=16, n_layers=1, n_heads=2, max_seq_len=16, seed=5, kind="hf")
    build_policy(base).hf.save_pretrained(source)  # type: ignore[attr-defined]
    words = Tokenizer(models.WordLevel({f"w{i}": i for i in range(32)} | {"[UNK]": 0}, unk_token="[UNK]"))
    words.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=words, unk_token="[UNK]").save_pretrained(source)
    cfg = dataclasses.replace(base, hf_path=str(source))
    task, state, digest = _task_with_model(env, store, cfg)
    rc, out, _ = concord("model", "export", "0", str(tmp_path / "x"), "--task", str(task), json_out=True, capsys=capsys)
    assert rc == 0 and "tokenizer.json" in out["files"] and "tokenizer_config.json" in out["files"]
    tokenizer = PreTrainedTokenizerFast.from_pretrained(tmp_path / "x", local_files_only=True)
    assert tokenizer("w3 w7 w9")["input_ids"] == [3, 7, 9]
    auto = [AutoTokenizer.from_pretrained(d, local_files_only=True) for d in (source, tmp_path / "x")]
    assert auto[0]("w3 w7 w9")["input_ids"] == auto[1]("w3 w7 w9")["input_ids"]  # what transformers picks, alike
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "x", local_files_only=True).float().eval()
    ours = build_policy(cfg)
    tokens = torch.tensor([[3, 7, 9]])
    with torch.no_grad():
        assert torch.allclose(loaded(tokens).logits, ours(tokens).logits, atol=1e-6)
    assert verify_export(tmp_path / "x").bytes == digest

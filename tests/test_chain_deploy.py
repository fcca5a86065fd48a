"""`concord deploy` / scripts/deploy.py: deploys to an RPC URL with a keystore key (password
from the environment, never argv) and writes the deployment JSON the nodes read."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from concord.client import chain
from concord.client import deploy as deploy_cli
from concord.client.chain import deploy, keys
from scripts import REPO_ROOT
from scripts import build_artifacts as solc


def _code(rpc: chain.Rpc, address: str) -> bytes:
    return bytes.fromhex(rpc.call("eth_getCode", address, "latest")[2:])


def test_deploy_main_with_keystore_writes_the_deployment_json(
    fresh_anvil, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    account = keys.devnet_account(2)
    store = keys.write_keystore(account, tmp_path / "deployer.json", "s3cret", kdf_iterations=2)
    monkeypatch.setenv(keys.PASSWORD_ENV, "s3cret")
    monkeypatch.delenv(keys.PRIVATE_KEY_ENV, raising=False)
    out = tmp_path / "deployment.json"
    assert (
        deploy_cli.main(
            ["--rpc-url", fresh_anvil.url, "--keystore", str(store), "--out", str(out), "--unbond-delay", "120"]
        )
        == 0
    )
    dep = chain.Deployment.load(out)
    assert set(json.loads(out.read_text())) == {"chain_id", "concord", "token", "block_number", "deployer"}
    assert dep.chain_id == 31337 and dep.deployer == account.address
    client = chain.connect(fresh_anvil.url, dep)
    assert client.concord.token() == dep.token and client.concord.unbond_delay() == 120
    assert client.token.symbol() == "CDT"
    # Same length as the compiled runtime (the bytes differ only where immutables are filled in).
    assert len(_code(client.rpc, dep.concord)) == len(solc.compile_contracts()["Concord"].runtime)
    assert client.rpc.block_number() >= dep.block_number > 0


def test_deploy_reuses_an_existing_token(fresh_anvil) -> None:
    first = deploy.deploy(fresh_anvil.url, keys.devnet_account(0))
    second = deploy.deploy(fresh_anvil.url, keys.devnet_account(0), token=first.token)
    assert second.token == first.token and second.concord != first.concord
    assert chain.connect(fresh_anvil.url, second).concord.token() == first.token


def test_deploy_refuses_a_key_on_the_command_line(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        deploy_cli.main(
            ["--rpc-url", "http://127.0.0.1:1", "--private-key", "0x" + "11" * 32, "--out", str(tmp_path / "d")]
        )


def test_deploy_script_without_a_key_says_how_to_give_one(tmp_path: Path) -> None:
    env = {k: v for k, v in __import__("os").environ.items() if k not in (keys.PRIVATE_KEY_ENV, keys.PASSWORD_ENV)}
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "scripts" / "deploy.py"),
            "--rpc-url",
            "http://127.0.0.1:1",
            "--out",
            str(tmp_path / "d.json"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert "CONCORD_PRIVATE_KEY" in proc.stderr and "--keystore" in proc.stderr


def test_connect_refuses_a_deployment_for_another_chain(fresh_anvil) -> None:
    dep = deploy.deploy(fresh_anvil.url, keys.devnet_account(0))
    wrong = chain.Deployment(1, dep.concord, dep.token, dep.block_number, dep.deployer)
    with pytest.raises(chain.WrongChain) as exc:
        chain.connect(fresh_anvil.url, wrong)
    assert (exc.value.expected, exc.value.actual) == (1, 31337)

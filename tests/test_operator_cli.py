"""What an operator types (issue 14): token amounts, the node TOML under env vars under flags, the
keystore's password, `--log-level`, clean one-line errors for bad URLs and keys, and `concord doctor`
(all green on a devnet; a red line with the fix for a dead RPC, a wrong password, another chain, no code).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from eth_account import Account

from concord.client import trainer
from concord.client.chain import Deployment, keys
from concord.client.cli import main as cli_main
from concord.client.runtime import procs
from concord.client.runtime.config import ENV_VARS, NodeConfigError, node_config, node_keys, parse_layered
from concord.client.runtime.display import LOG_LEVEL_ENV, setup_logging
from concord.client.runtime.parsers import status_parser
from concord.client.units import AmountError, TokenAmount, amount_arg, format_amount, parse_amount
from concord.validator import node as vnode

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "configs" / "node.example.toml"
TOKEN = 10**18


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        root.removeHandler(h)
    for h in handlers:
        root.addHandler(h)
    root.setLevel(level)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No operator env var leaks in from the machine running the tests, nor out of them: each is first
    set through monkeypatch (which records its value, or its absence) and then deleted, so what a test
    or the CLI under test writes to os.environ (`concord --log-level` sets $CONCORD_LOG_LEVEL, which
    every node process started later would inherit) is undone at teardown."""
    names = [name for group in ENV_VARS.values() for name in group]
    for name in (*names, keys.PASSWORD_ENV, keys.PRIVATE_KEY_ENV, LOG_LEVEL_ENV):
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    return monkeypatch


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        rc = cli_main(argv)
    except SystemExit as e:  # argparse: usage + `error: argument ...`, status 2
        rc = int(e.code or 0)
    out, err = capsys.readouterr()
    return rc, out, err


# ============================================================================ amounts (client.units)


@pytest.mark.parametrize(
    ("text", "units"),
    [
        ("10", 10 * TOKEN),
        ("2.5", 25 * TOKEN // 10),
        (" 7 ", 7 * TOKEN),
        ("1_000", 1000 * TOKEN),
        (".5", TOKEN // 2),
        ("0.000000000000000001", 1),
        ("1000base", 1000),
        ("1000 BASE", 1000),
        ("1_000base", 1000),
        (12, 12 * TOKEN),  # an int from a TOML file: whole tokens
    ],
)
def test_amounts_are_whole_tokens_unless_marked_base(text: str | int, units: int) -> None:
    assert parse_amount(text, "--stake").units(18) == units


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "not a non-negative decimal number"),
        ("-1", "not a non-negative decimal number"),
        ("1e18", "not a non-negative decimal number"),
        ("ten", "not a non-negative decimal number"),
        ("0x10", "not a non-negative decimal number"),
        ("1.5base", "base units are whole numbers"),
        ("base", "not a non-negative decimal number"),
        ("0", "must be more than 0"),
        ("0base", "must be more than 0"),
        ("nan", "not a non-negative decimal number"),
        (1.5, "expected a number of tokens"),
        (True, "expected a number of tokens"),
    ],
)
def test_bad_amounts_name_the_field(text, problem: str) -> None:
    with pytest.raises(AmountError) as info:
        parse_amount(text, "--amount")
    assert info.value.field == "--amount" and problem in info.value.problem
    assert str(info.value).startswith("--amount: ") and "1000base" in str(info.value)


def test_an_amount_finer_than_the_token_or_too_large_is_refused_when_scaled() -> None:
    fine = parse_amount("0.0000001", "--stake")
    assert fine.units(18) == 10**11
    with pytest.raises(AmountError, match="more than 6 decimals"):
        fine.units(6)
    with pytest.raises(AmountError, match="maximum"):
        parse_amount("100", "budget").units(18, maximum=10 * TOKEN)
    assert parse_amount("0", "budget", allow_zero=True).units(18) == 0


def test_format_amount_prints_exact_whole_tokens_and_parses_back() -> None:
    assert format_amount(25 * TOKEN // 10, 18, "CDT") == "2.5 CDT"
    assert format_amount(0) == "0" and format_amount(1) == "0.000000000000000001"
    assert format_amount(-3 * TOKEN, 18, "CDT") == "-3 CDT"
    assert format_amount(1234567, 6, "USDC") == "1.234567 USDC"
    rng = random.Random(14)
    for _ in range(500):
        units, decimals = rng.randrange(1, 10**30), rng.choice([0, 6, 8, 18])
        assert parse_amount(format_amount(units, decimals), "x").units(decimals) == units


def test_amount_flags_exit_2_naming_the_flag(capsys) -> None:
    p = argparse.ArgumentParser(prog="p")
    p.add_argument("--stake", type=amount_arg("--stake"))
    assert p.parse_args(["--stake", "2.5"]).stake == TokenAmount(Decimal("2.5"), False, "2.5", "--stake")
    with pytest.raises(SystemExit) as info:
        p.parse_args(["--stake", "lots"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "argument --stake: not a non-negative decimal number, got 'lots'" in err


# ============================================================================ the node TOML, env vars, flags


def _toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "node.toml"
    path.write_text(text)
    return path


BASE_TOML = """
rpc_url = "http://file.example:8545"
deployment = "dep.json"
ipfs_api = "/ip4/127.0.0.1/tcp/5001/http"
keystore = "keys/node.json"
task = 3
poll_interval = 0.5

[trainer]
stake = "150"
threads = 2

[validator]
stake = "90"
withdraw = true
"""


def test_a_file_supplies_every_setting_and_its_role_table(tmp_path: Path, clean_env) -> None:
    path = _toml(tmp_path, BASE_TOML)
    args = parse_layered(trainer.build_parser(), ["run", "--config", str(path)])
    assert args.task == 3  # a required flag, from the file
    assert args.rpc_url == "http://file.example:8545" and args.poll_interval == 0.5
    assert args.keystore == tmp_path / "keys" / "node.json"  # relative to the file
    assert args.stake.units(18) == 150 * TOKEN and args.threads == 2  # [trainer]
    v = parse_layered(vnode.build_parser(), ["run", "--config", str(path)])
    assert v.stake.units(18) == 90 * TOKEN and v.withdraw is True and v.task == 3  # [validator]


def test_precedence_is_flag_then_env_then_file_then_default(tmp_path: Path, clean_env) -> None:
    path = _toml(tmp_path, BASE_TOML)
    argv = ["run", "--config", str(path)]
    p = trainer.build_parser
    assert parse_layered(p(), ["run", "--task", "1"]).rpc_url is None  # the default (then the devnet JSON)
    assert parse_layered(p(), argv).rpc_url == "http://file.example:8545"  # file
    env = {"ETH_RPC_URL": "http://eth-env:1"}
    assert parse_layered(p(), argv, env).rpc_url == "http://eth-env:1"  # env over file
    env["CONCORD_RPC_URL"] = "http://concord-env:1"
    assert parse_layered(p(), argv, env).rpc_url == "http://concord-env:1"  # ours over Foundry's
    flag = parse_layered(p(), [*argv, "--rpc-url", "http://flag:1", "--threads", "5"], env)
    assert flag.rpc_url == "http://flag:1" and flag.threads == 5  # flag over everything
    ks = parse_layered(p(), argv, {"ETH_KEYSTORE": "/abs/key.json", "ETH_PASSWORD": "/abs/pw"})
    assert ks.keystore == Path("/abs/key.json") and ks.password_file == Path("/abs/pw")


def test_env_vars_apply_without_a_file(tmp_path: Path, clean_env) -> None:
    dep = Deployment(31337, "0x" + "11" * 20, "0x" + "22" * 20, 1, "0x" + "33" * 20).save(tmp_path / "d.json")
    env = {
        "ETH_RPC_URL": "http://127.0.0.1:9",
        "CONCORD_DEPLOYMENT": str(dep),
        "CONCORD_IPFS_API": "/ip4/127.0.0.1/tcp/9/http",
    }
    cfg = node_config(parse_layered(trainer.build_parser(), ["run", "--task", "2"], env), "trainer")
    assert (cfg.rpc_url, cfg.ipfs_api, cfg.deployment.chain_id, cfg.task_id) == (
        "http://127.0.0.1:9",
        "/ip4/127.0.0.1/tcp/9/http",
        31337,
        2,
    )


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ('rpc_ur = "http://x:1"', "rpc_ur: unknown key"),
        ("[trainer]\nstak = 3", "[trainer] stak: unknown key"),
        ("[validator]\nthreadz = 3", "[validator] threadz: unknown key"),  # another role's table is checked too
        ("[gpu]\nx = 1", "[gpu]: unknown table"),
        ("poll_interval = -1", "poll_interval: must be in (0, 3600]"),
        ('json_logs = "yes"', "json_logs: expected true or false"),
        ("task = 0", "task: must be >= 1"),
        ("[trainer]\nstake = -5", "[trainer] stake: not a non-negative decimal number"),
        ("task = [1, 2]", "task: expected a string or a number"),
        ("rpc_url = ", "not TOML"),
    ],
)
def test_a_bad_file_is_refused_naming_file_and_key(tmp_path: Path, text: str, named: str, capsys, clean_env) -> None:
    path = _toml(tmp_path, text)
    rc, _, err = run_cli(["trainer", "run", "--config", str(path), "--state-dir", str(tmp_path / "st")], capsys)
    assert rc == 2 and "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert f"--config: {path}: " in line and named in line, err
    assert not (tmp_path / "st").exists()


def test_a_missing_file_and_a_bad_env_value_are_named(tmp_path: Path, capsys, clean_env) -> None:
    rc, _, err = run_cli(["trainer", "run", "--config", str(tmp_path / "none.toml")], capsys)
    assert rc == 2 and f"{tmp_path / 'none.toml'}: cannot read it" in err
    clean_env.setenv("ETH_KEYSTORE", "")  # empty: as if unset
    clean_env.setenv("CONCORD_RPC_URL", "localhost:8545")
    rc, _, err = run_cli(["validator", "withdraw", "--deployment", str(tmp_path / "d.json")], capsys)
    assert rc == 1 and "$CONCORD_RPC_URL" in err and "'localhost:8545'" in err and "Traceback" not in err


def test_an_error_names_the_source_of_the_bad_value(tmp_path: Path, capsys, clean_env) -> None:
    """Flag, env var or TOML table key: the error names the one the bad value came from (issue 22)."""
    path = _toml(tmp_path, 'rpc_url = "http://ok.example:1"\n[trainer]\nrpc_url = "localhost:8545"\n')
    dep = ["--deployment", str(tmp_path / "d.json")]
    rc, _, err = run_cli(["trainer", "withdraw", "--config", str(path), *dep], capsys)
    assert rc == 1 and f"--config {path}: [trainer] rpc_url: " in err and "'localhost:8545'" in err, err
    clean_env.setenv("CONCORD_RPC_URL", "localhost:8546")
    rc, _, err = run_cli(["trainer", "withdraw", "--config", str(path), *dep], capsys)
    assert rc == 1 and "$CONCORD_RPC_URL: " in err and "[trainer]" not in err, err
    rc, _, err = run_cli(["trainer", "withdraw", "--config", str(path), *dep, "--rpc-url", "localhost:8547"], capsys)
    assert rc == 1 and "--rpc-url: " in err and "$CONCORD_RPC_URL" not in err, err


def test_task_is_required_from_the_flag_or_the_file(tmp_path: Path, capsys, clean_env) -> None:
    rc, _, err = run_cli(["trainer", "run", "--rpc-url", "http://127.0.0.1:1"], capsys)
    assert rc == 2 and "required: --task (or task = N in the --config TOML)" in err, err
    path = _toml(tmp_path, "task = 3\n")  # the file's task does not override a positional of `concord status`
    assert parse_layered(status_parser(), ["5", "--config", str(path)]).task == 5


def test_the_example_file_is_valid_for_every_node_command(clean_env) -> None:
    for build, role in ((trainer.build_parser, "trainer"), (vnode.build_parser, "validator")):
        args = parse_layered(build(), ["run", "--config", str(EXAMPLE)])
        assert args.task == 1 and args.rpc_url == "http://127.0.0.1:8545"
        assert args.password_file == EXAMPLE.parent / "keys" / "node.password", role
        lifecycle_args = parse_layered(build(), ["withdraw", "--config", str(EXAMPLE)])
        assert not hasattr(lifecycle_args, "task") and lifecycle_args.keystore == EXAMPLE.parent / "keys" / "node.json"


def test_every_flag_of_every_node_command_is_a_known_key() -> None:
    """node_keys() (what a TOML may hold) covers the flags of every node command, so none is refused."""
    flags: set[str] = set()
    for build in (trainer.build_parser, vnode.build_parser):
        for sub in (a for a in build()._actions if isinstance(a, argparse._SubParsersAction)):
            for p in sub.choices.values():
                flags |= {
                    a.dest for a in p._actions if a.option_strings and a.dest not in ("help", "amount", "complete")
                }
    flags.discard("json")  # per invocation, not a node setting
    assert flags - node_keys() == set()


# ============================================================================ keystore passwords


def _keystore(tmp_path: Path, password: str = "right") -> tuple[Path, str]:
    account = Account.create()
    return keys.write_keystore(account, tmp_path / "node.json", password, kdf_iterations=2), account.address


def test_password_file_then_env_then_prompt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, address = _keystore(tmp_path)
    (tmp_path / "pw").write_text("right\n")  # Foundry's password files end with a newline
    assert keys.load_key(path, env={}, password_file=tmp_path / "pw").address == address
    env = {keys.PASSWORD_ENV: "wrong"}
    assert keys.load_key(path, env=env, password_file=tmp_path / "pw").address == address  # the file first
    asked: list[str] = []
    monkeypatch.setattr(keys.getpass, "getpass", lambda prompt: asked.append(prompt) or "right")
    assert keys.load_key(path, env={}, interactive=True).address == address
    assert asked and str(path) in asked[0]
    with pytest.raises(keys.MissingPassword, match="--password-file"):
        keys.load_key(path, env={}, interactive=False)
    with pytest.raises(keys.BadPasswordFile) as info:
        keys.load_key(path, env={}, password_file=tmp_path / "absent")
    assert "absent" in str(info.value)
    with pytest.raises(keys.BadKeystore, match="no such file"):  # refused before any prompt
        keys.load_key(tmp_path / "nokey.json", env={}, interactive=True)
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(keys.BadKeystore, match="not an encrypted key file"):
        keys.load_key(tmp_path / "list.json", env=env)


def test_node_config_checks_the_password_file_exists(tmp_path: Path, clean_env) -> None:
    dep = Deployment(31337, "0x" + "11" * 20, "0x" + "22" * 20, 1, "0x" + "33" * 20).save(tmp_path / "d.json")
    conn = ["--rpc-url", "http://127.0.0.1:9", "--deployment", str(dep), "--ipfs-api", "/ip4/127.0.0.1/tcp/9/http"]
    args = parse_layered(trainer.build_parser(), ["withdraw", *conn, "--password-file", str(tmp_path / "no")])
    with pytest.raises(NodeConfigError) as info:
        node_config(args, "trainer")
    assert info.value.flag == "--password-file"


# ============================================================================ --log-level


def test_log_level_is_global_and_reaches_setup_logging(capsys, clean_env, restore_logging) -> None:
    rc, _, err = run_cli(["--log-level", "error", "keys", "address"], capsys)  # no key: exits 1 after parsing
    assert rc == 1 and os.environ[LOG_LEVEL_ENV] == "error" and "no signing key" in err
    setup_logging(False, logging.INFO)
    assert logging.getLogger().level == logging.ERROR
    clean_env.setenv(LOG_LEVEL_ENV, "debug")
    setup_logging(True, logging.WARNING)
    assert logging.getLogger().level == logging.DEBUG
    rc, _, err = run_cli(["--log-level", "loud", "doctor"], capsys)
    assert rc == 2 and "argument --log-level: invalid choice: 'loud'" in err


# ============================================================================ bad URLs, dead endpoints: one line

BAD_RPC = [
    "ws//127.0.0.1:8545",
    "127.0.0.1:8545",
    "localhost",
    "garbage url",
    "http://",
    "ftp://host:1",
    "http://h:99999",
]
COMMANDS = [
    ["trainer", "run", "--task", "1"],
    ["trainer", "unbond"],
    ["validator", "leave", "--task", "1"],
    ["task", "show", "--task", "1"],
    ["model", "export", "0", "{tmp}/out", "--task", "1"],
]


@pytest.fixture
def conn(tmp_path: Path) -> list[str]:
    dep = Deployment(31337, "0x" + "11" * 20, "0x" + "22" * 20, 1, "0x" + "33" * 20).save(tmp_path / "dep.json")
    port = procs.free_port()
    return [
        *("--rpc-url", f"http://127.0.0.1:{port}"),
        *("--deployment", str(dep)),
        *("--ipfs-api", f"/ip4/127.0.0.1/tcp/{port}/http"),
        *("--state-dir", str(tmp_path / "state")),
        *("--devnet-account", "1"),
    ]


@pytest.mark.parametrize("url", BAD_RPC)
@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_a_malformed_rpc_url_is_one_line_naming_it(
    url: str, command: list[str], conn: list[str], tmp_path: Path, capsys, clean_env, restore_logging
) -> None:
    argv = [a.replace("{tmp}", str(tmp_path)) for a in command] + conn + ["--rpc-url", url]
    rc, out, err = run_cli(argv, capsys)
    lines = [line for line in err.splitlines() if line.strip()]  # a node's log line too: no wrapping off a terminal
    assert rc == 1 and len(lines) == 1 and "Traceback" not in err and out == "", err
    assert "--rpc-url" in lines[0] and repr(url) in lines[0] and "e.g. http://127.0.0.1:8545" in lines[0], err
    assert not (tmp_path / "state").exists() and not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", COMMANDS[1:], ids=lambda c: " ".join(c[:2]))
def test_an_unreachable_rpc_is_one_short_line_with_the_fix(
    command: list[str], conn: list[str], tmp_path: Path, capsys, clean_env, restore_logging
) -> None:
    argv = [a.replace("{tmp}", str(tmp_path)) for a in command] + conn
    rc, out, err = run_cli(argv, capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 1 and len(lines) == 1 and out == "", err
    assert (
        lines[0].startswith("error: cannot reach the chain RPC at http://127.0.0.1:")
        and "Connection refused" in lines[0]
    )
    assert "--rpc-url" in lines[0] and "urllib3" not in lines[0] and len(lines[0]) < 250
    assert not (tmp_path / "state").exists() and not (tmp_path / "out").exists()


# ============================================================================ doctor (a devnet the session starts)


def _doctor(argv: list[str], capsys) -> tuple[int, dict[str, dict], str]:
    rc, out, _ = run_cli(["doctor", *argv, "--json"], capsys)
    checks = {c["name"]: c for c in json.loads(out)["checks"]}
    rc_text, text, _ = run_cli(["doctor", *argv], capsys)
    assert rc_text == rc
    return rc, checks, text


@pytest.fixture
def devnet_conn(anvil, deployed, ipfs, tmp_path: Path) -> list[str]:
    dep = deployed.deployment.save(tmp_path / "deployment.json")
    return ["--rpc-url", anvil.url, "--deployment", str(dep), "--ipfs-api", ipfs.api]


NAMES = ["python", "torch", "toploc", "config", "rpc", "chain id", "deployment", "ipfs", "key"]


def test_doctor_is_all_green_on_a_devnet(
    devnet_conn: list[str], tmp_path: Path, capsys, clean_env, restore_logging
) -> None:
    rc, checks, text = _doctor([*devnet_conn, "--devnet-account", "1"], capsys)
    assert rc == 0 and list(checks) == NAMES and all(c["ok"] for c in checks.values()), checks
    lines = text.strip().splitlines()
    assert (
        len(lines) == len(NAMES) + 1 and all(line.startswith("ok ") for line in lines[:-1]) and lines[-1] == "all green"
    )
    assert "chain 31337" in checks["rpc"]["detail"] and "CDT" in checks["deployment"]["detail"]
    assert keys.devnet_account(1).address in checks["key"]["detail"] and "wallet 1000000 CDT" in checks["key"]["detail"]
    # the same through a keystore, its password from a file, the connection from a node TOML
    path, address = _keystore(tmp_path)
    (tmp_path / "pw").write_text("right")
    toml = _toml(
        tmp_path,
        "\n".join(
            f'{a[2:].replace("-", "_")} = "{b}"' for a, b in zip(devnet_conn[::2], devnet_conn[1::2], strict=True)
        ),
    )
    rc, checks, _ = _doctor(
        ["--config", str(toml), "--keystore", str(path), "--password-file", str(tmp_path / "pw")], capsys
    )
    key = checks["key"]
    assert address in key["detail"] and f"keystore {path}" in key["detail"], checks
    # a new key holds nothing on the devnet: the one red line says so and names the command that funds it
    assert rc == 1 and [n for n, c in checks.items() if not c["ok"]] == ["key"], checks
    assert "no ETH for gas and no CDT" in key["detail"] and key["fix"] == f"concord devnet fund {address}"


def test_doctor_names_each_red_line_with_its_fix(
    devnet_conn: list[str], deployed, tmp_path: Path, capsys, clean_env, restore_logging
) -> None:
    path, _ = _keystore(tmp_path)
    (tmp_path / "pw").write_text("wrong")
    rc, checks, text = _doctor([*devnet_conn, "--keystore", str(path), "--password-file", str(tmp_path / "pw")], capsys)
    assert rc == 1 and [n for n, c in checks.items() if not c["ok"]] == ["key"], checks
    assert "wrong password" in checks["key"]["detail"] and "--password-file" in checks["key"]["fix"]
    assert any(line.startswith("FAIL key") and "-> fix:" in line for line in text.splitlines()), text

    dead = list(devnet_conn)
    dead[1] = f"http://127.0.0.1:{procs.free_port()}"
    rc, checks, text = _doctor([*dead, "--devnet-account", "1"], capsys)
    red = [n for n, c in checks.items() if not c["ok"]]
    assert rc == 1 and red == ["rpc", "chain id", "deployment"], checks
    assert "Connection refused" in checks["rpc"]["detail"] and "--rpc-url" in checks["rpc"]["fix"]
    assert text.strip().splitlines()[-1] == "3 check(s) failed"

    other_chain = Deployment.from_json({**deployed.deployment.to_json(), "chain_id": 1}).save(tmp_path / "c1.json")
    no_code = Deployment.from_json({**deployed.deployment.to_json(), "concord": "0x" + "ab" * 20}).save(
        tmp_path / "nc.json"
    )
    for dep, name, words in ((other_chain, "chain id", "chain 1"), (no_code, "deployment", "no contract code")):
        argv = [*devnet_conn, "--deployment", str(dep), "--devnet-account", "1"]
        rc, checks, _ = _doctor(argv, capsys)
        red = [n for n, c in checks.items() if not c["ok"]]
        assert rc == 1 and red[0] == name and words in checks[name]["detail"] and checks[name]["fix"], checks
    dead_ipfs = [*devnet_conn, "--ipfs-api", f"/ip4/127.0.0.1/tcp/{procs.free_port()}/http", "--devnet-account", "1"]
    rc, checks, _ = _doctor(dead_ipfs, capsys)
    assert (
        rc == 1 and [n for n, c in checks.items() if not c["ok"]] == ["ipfs"] and "--ipfs-api" in checks["ipfs"]["fix"]
    )


def test_keys_new_and_address_take_a_password_file_or_a_prompt(
    tmp_path: Path, capsys, clean_env, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "pw").write_text("s3cret\n")
    rc, out, _ = run_cli(
        ["keys", "new", "--out", str(tmp_path / "k.json"), "--password-file", str(tmp_path / "pw")], capsys
    )
    address = out.strip()
    assert rc == 0 and (tmp_path / "k.json").stat().st_mode & 0o777 == 0o600
    rc, out, _ = run_cli(
        ["keys", "address", "--keystore", str(tmp_path / "k.json"), "--password-file", str(tmp_path / "pw")], capsys
    )
    assert rc == 0 and out.strip() == address
    monkeypatch.setattr(keys.sys.stdin, "isatty", lambda: True)
    answers = iter(["one", "two"])
    monkeypatch.setattr(keys.getpass, "getpass", lambda prompt: next(answers))
    rc, out, err = run_cli(["keys", "new", "--out", str(tmp_path / "k2.json")], capsys)
    assert rc == 1 and "the two passwords differ; nothing written" in err and not (tmp_path / "k2.json").exists()
    monkeypatch.setattr(keys.getpass, "getpass", lambda prompt: "s3cret")
    rc, out, _ = run_cli(["keys", "address", "--keystore", str(tmp_path / "k.json")], capsys)  # asked on the terminal
    assert rc == 0 and out.strip() == address


@pytest.mark.parametrize("url", ["localhost:8545", "garbage", "http://", "ws//h:1", "http://h:70000"])
def test_deploy_and_the_sdk_name_a_malformed_rpc_url(url: str, tmp_path: Path, capsys, clean_env) -> None:
    from concord.client.chain import BadRpcUrl, Rpc

    with pytest.raises(BadRpcUrl) as info:
        Rpc(url)
    assert info.value.url == url
    clean_env.setenv(keys.PRIVATE_KEY_ENV, "0x" + "11" * 32)
    rc, out, err = run_cli(["deploy", "--rpc-url", url, "--out", str(tmp_path / "dep.json")], capsys)
    lines = err.strip().splitlines()
    assert rc == 1 and len(lines) == 1 and lines[0].startswith(f"error: RPC URL {url!r}: ") and "Traceback" not in err
    assert not (tmp_path / "dep.json").exists()
    clean_env.setenv("ETH_RPC_URL", url)  # the same from Foundry's env var
    rc, _, err = run_cli(["deploy", "--out", str(tmp_path / "dep.json")], capsys)
    assert rc == 1 and f"RPC URL {url!r}" in err


def test_a_bad_key_or_another_chain_is_one_line_with_the_fix(
    devnet_conn: list[str], deployed, tmp_path: Path, capsys, clean_env, restore_logging
) -> None:
    path, _ = _keystore(tmp_path)
    (tmp_path / "pw").write_text("wrong")
    (tmp_path / "garbage.json").write_text("{not json")
    other_chain = Deployment.from_json({**deployed.deployment.to_json(), "chain_id": 5}).save(tmp_path / "c5.json")
    cases = [
        (["--keystore", str(path), "--password-file", str(tmp_path / "pw")], "wrong password", "--password-file"),
        (
            ["--keystore", str(tmp_path / "garbage.json"), "--password-file", str(tmp_path / "pw")],
            "JSONDecodeError",
            "--keystore",
        ),
        (["--keystore", str(path)], "needs its password", "--password-file"),  # no password anywhere, no terminal
        (["--deployment", str(other_chain), "--devnet-account", "1"], "deployment is for chain 5", "--rpc-url"),
    ]
    for extra, problem, fix in cases:
        for command in (["trainer", "withdraw"], ["validator", "unbond"], ["task", "close", "--task", "1"]):
            rc, out, err = run_cli([*command, *devnet_conn, *extra, "--state-dir", str(tmp_path / "st")], capsys)
            lines = err.strip().splitlines()
            assert rc == 1 and out == "" and len(lines) == 1 and problem in lines[0] and fix in lines[0], (command, err)
    assert not (tmp_path / "st").exists()


def test_status_reads_the_rpc_from_the_env_or_a_node_toml(
    devnet_conn: list[str], deployed, tmp_path: Path, capsys, clean_env
) -> None:
    rpc, dep = devnet_conn[1], devnet_conn[3]
    clean_env.setenv("ETH_RPC_URL", rpc)
    clean_env.setenv("CONCORD_DEPLOYMENT", dep)
    rc, out, _ = run_cli(["status", "--json"], capsys)
    assert rc == 0 and json.loads(out)["concord"] == deployed.deployment.concord
    clean_env.delenv("ETH_RPC_URL")
    clean_env.delenv("CONCORD_DEPLOYMENT")
    toml = _toml(
        tmp_path, f'rpc_url = "{rpc}"\ndeployment = "{dep}"\nthreads = 2\n'
    )  # threads: a node key, unused here
    rc, out, _ = run_cli(["status", "--config", str(toml), "--json"], capsys)
    assert rc == 0 and json.loads(out)["chain_id"] == 31337
    # env over the file: a dead RPC. A process of its own: what its stderr shows without pytest's log handlers
    env = {**os.environ, "ETH_RPC_URL": f"http://127.0.0.1:{procs.free_port()}"}
    done = subprocess.run(
        [sys.executable, "-m", "concord.client.cli", "status", "--config", str(toml)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: cannot reach the chain RPC at"), (
        lines
    )


@pytest.mark.parametrize("role", ["trainer", "validator"])
def test_a_node_runs_from_a_toml_alone(
    role: str, devnet_conn: list[str], tmp_path: Path, capsys, clean_env, restore_logging
) -> None:
    """`concord ROLE run --config node.toml`: connection, key and task all from the file, as far as the chain
    answers (task 99 does not exist: the node names it and stops, exit 1)."""
    settings = dict(zip(devnet_conn[::2], devnet_conn[1::2], strict=True))
    toml = _toml(
        tmp_path,
        "\n".join(f'{flag[2:].replace("-", "_")} = "{value}"' for flag, value in settings.items())
        + f'\ndevnet_account = 2\nstate_dir = "state"\ntask = 99\n[{role}]\nstake = "150"\n',
    )
    rc, out, err = run_cli([role, "run", "--config", str(toml)], capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 1 and len(lines) == 1 and "99" in lines[0] and "task" in lines[0].lower(), err

"""Key loading: keystore (password from env) or env key; never argv, never echoed."""

from __future__ import annotations

from pathlib import Path

import pytest
from eth_account import Account

from concord.client.chain import keys
from concord.client.chain.rpc import Rpc, Signer

SECRET = "0x" + "4c" * 32
SECRET_ADDRESS = Account.from_key(SECRET).address


def test_keystore_round_trip_gives_the_same_address(tmp_path: Path) -> None:
    path = keys.write_keystore(Account.from_key(SECRET), tmp_path / "node.json", "pw-1", kdf_iterations=2)
    account = keys.load_key(path, env={keys.PASSWORD_ENV: "pw-1"})
    assert account.address == SECRET_ADDRESS
    assert path.stat().st_mode & 0o777 == 0o600
    assert SECRET[2:] not in path.read_text()  # encrypted at rest


def test_keystore_with_wrong_password_is_refused(tmp_path: Path) -> None:
    path = keys.write_keystore(Account.from_key(SECRET), tmp_path / "node.json", "right", kdf_iterations=2)
    with pytest.raises(keys.BadKeystore) as exc:
        keys.load_key(path, env={keys.PASSWORD_ENV: "wrong"})
    assert exc.value.keystore == path


def test_keystore_without_password_env_names_the_variable(tmp_path: Path) -> None:
    path = keys.write_keystore(Account.from_key(SECRET), tmp_path / "node.json", "pw", kdf_iterations=2)
    with pytest.raises(keys.MissingPassword) as exc:
        keys.load_key(path, env={})
    assert exc.value.env_var == "CONCORD_KEYSTORE_PASSWORD"
    assert "CONCORD_KEYSTORE_PASSWORD" in str(exc.value)


def test_missing_keystore_file_is_a_bad_keystore(tmp_path: Path) -> None:
    with pytest.raises(keys.BadKeystore):
        keys.load_key(tmp_path / "absent.json", env={keys.PASSWORD_ENV: "pw"})


def test_env_key_is_loaded_and_keystore_takes_precedence(tmp_path: Path) -> None:
    assert keys.load_key(env={keys.PRIVATE_KEY_ENV: SECRET}).address == SECRET_ADDRESS
    other = Account.from_key("0x" + "11" * 32)
    path = keys.write_keystore(other, tmp_path / "k.json", "pw", kdf_iterations=2)
    env = {keys.PRIVATE_KEY_ENV: SECRET, keys.PASSWORD_ENV: "pw"}
    assert keys.load_key(path, env=env).address == other.address


def test_bad_env_key_error_does_not_echo_the_value() -> None:
    bad = "0x" + "zz" * 32
    with pytest.raises(keys.BadPrivateKey) as exc:
        keys.load_key(env={keys.PRIVATE_KEY_ENV: bad})
    assert bad not in str(exc.value) and "zz" not in str(exc.value)
    with pytest.raises(keys.BadPrivateKey):
        keys.load_key(env={keys.PRIVATE_KEY_ENV: "0x1234"})


def test_no_key_at_all_names_both_ways() -> None:
    with pytest.raises(keys.MissingKey) as exc:
        keys.load_key(env={})
    assert "CONCORD_PRIVATE_KEY" in str(exc.value) and "--keystore" in str(exc.value)


def test_signer_repr_shows_address_not_key() -> None:
    signer = Signer(Rpc("http://127.0.0.1:1"), Account.from_key(SECRET))
    assert repr(signer) == f"Signer({SECRET_ADDRESS})"
    assert SECRET[2:] not in repr(signer.__dict__)  # the key lives only in a closure


def test_devnet_accounts_are_anvils_defaults() -> None:
    # The first two addresses anvil prints for its default mnemonic.
    accounts = keys.devnet_accounts(2)
    assert accounts[0].address == "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
    assert accounts[1].address == "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"


def test_keys_cli_creates_a_keystore_and_reads_its_address(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv(keys.PASSWORD_ENV, "pw")
    out = tmp_path / "node.json"
    assert keys.main(["new", "--out", str(out)]) == 0
    created = capsys.readouterr().out.strip()
    assert keys.main(["address", "--keystore", str(out)]) == 0
    assert capsys.readouterr().out.strip() == created
    assert keys.main(["new", "--out", str(out)]) == 1  # never overwrites a key
    monkeypatch.delenv(keys.PASSWORD_ENV)
    assert keys.main(["new", "--out", str(tmp_path / "other.json")]) == 1
    assert "CONCORD_KEYSTORE_PASSWORD" in capsys.readouterr().err

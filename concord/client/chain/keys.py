"""Where a node's signing key comes from.

A key is read from an encrypted eth-account keystore file or from an env var holding the raw
key; never from a command-line argument, since argv is world-readable in /proc and lands in
shell history. A keystore's password comes from the first of: a password file (`--password-file`,
Foundry's convention: the file's text without its trailing newline), $CONCORD_KEYSTORE_PASSWORD,
a hidden prompt on the terminal (only when stdin is a TTY). Keys are never logged: the account
objects returned here are eth-account ``LocalAccount``s, whose repr shows no secret.
"""

from __future__ import annotations

import getpass
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import cast

from eth_account import Account
from eth_account.signers.local import LocalAccount

# eth-account's Account methods are ``combomethod``s, which erase their signatures to
# ``Callable[..., Any]``: the casts below restore the return type eth-account declares (and
# casts itself, in ``Account.create``).

PASSWORD_ENV = "CONCORD_KEYSTORE_PASSWORD"
PRIVATE_KEY_ENV = "CONCORD_PRIVATE_KEY"

# Anvil's well-known default mnemonic. Its keys are public: devnet only.
DEVNET_MNEMONIC = "test test test test test test test test test test test junk"
DEVNET_PATH = "m/44'/60'/0'/0/{}"


class KeyLoadError(Exception):
    """Base for key-loading failures."""


class MissingKey(KeyLoadError):
    """No keystore path was given and the private-key env var is unset."""

    def __init__(self, env_var: str) -> None:
        super().__init__(
            f"no signing key: pass --keystore PATH (or set $ETH_KEYSTORE), set ${env_var}, "
            "or on a local devnet --devnet-account N"
        )
        self.env_var = env_var


class MissingPassword(KeyLoadError):
    """A keystore file was given but no password: no password file, the env var unset, no terminal."""

    def __init__(self, keystore: Path, env_var: str) -> None:
        super().__init__(
            f"keystore {keystore} needs its password: pass --password-file FILE, set ${env_var}, "
            "or run in a terminal to be asked"
        )
        self.keystore = keystore
        self.env_var = env_var


class BadPasswordFile(KeyLoadError):
    """The password file cannot be read (its text is never echoed)."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"cannot read the password file {path}: {reason}; fix --password-file")
        self.path, self.reason = path, reason


class BadKeystore(KeyLoadError):
    """The keystore file is missing, unreadable, or the password does not decrypt it."""

    def __init__(self, keystore: Path, reason: str) -> None:
        super().__init__(f"cannot use keystore {keystore}: {reason}")
        self.keystore = keystore
        self.reason = reason


class BadPrivateKey(KeyLoadError):
    """The private-key env var does not hold a 32-byte hex key (the value is not echoed)."""

    def __init__(self, env_var: str) -> None:
        super().__init__(f"${env_var} is not a 32-byte hex private key")
        self.env_var = env_var


def from_keystore(path: Path, password: str) -> LocalAccount:
    """Decrypt an eth-account (Web3 Secret Storage v3) keystore file."""
    try:
        blob = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise BadKeystore(Path(path), type(exc).__name__) from None
    try:
        secret = Account.decrypt(blob, password)
    except ValueError:
        raise BadKeystore(Path(path), "wrong password or corrupt file") from None
    except (KeyError, TypeError) as exc:  # JSON, but not a keystore (no "crypto", a list, ...)
        raise BadKeystore(Path(path), f"not an encrypted key file ({type(exc).__name__}: {exc})") from None
    return cast(LocalAccount, Account.from_key(secret))


def from_private_key_hex(value: str, env_var: str = PRIVATE_KEY_ENV) -> LocalAccount:
    """Parse a hex private key; the error names the env var, never the value."""
    text = value.strip()
    body = text[2:] if text.startswith(("0x", "0X")) else text
    if len(body) != 64:
        raise BadPrivateKey(env_var)
    try:
        return cast(LocalAccount, Account.from_key(bytes.fromhex(body)))
    except ValueError:
        raise BadPrivateKey(env_var) from None


def keystore_password(
    keystore: Path,
    password_file: Path | None = None,
    env: Mapping[str, str] | None = None,
    interactive: bool | None = None,
) -> str:
    """A keystore's password: the password file, else $CONCORD_KEYSTORE_PASSWORD, else a hidden prompt
    when ``interactive`` (default: stdin is a terminal); MissingPassword otherwise."""
    env = os.environ if env is None else env
    if password_file is not None:
        try:
            return Path(password_file).read_text().rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            raise BadPasswordFile(Path(password_file), getattr(exc, "strerror", None) or type(exc).__name__) from None
    if PASSWORD_ENV in env:
        return env[PASSWORD_ENV]
    if interactive if interactive is not None else sys.stdin.isatty():
        return getpass.getpass(f"password of keystore {keystore}: ")
    raise MissingPassword(Path(keystore), PASSWORD_ENV)


def load_key(
    keystore: Path | None = None,
    env: Mapping[str, str] | None = None,
    password_file: Path | None = None,
    interactive: bool | None = None,
) -> LocalAccount:
    """The node's key: the keystore if one is given (password: keystore_password), else the env key."""
    env = os.environ if env is None else env
    if keystore is not None:
        if not Path(keystore).is_file():  # before any prompt: asking for a password of nothing helps no one
            raise BadKeystore(Path(keystore), "no such file")
        return from_keystore(Path(keystore), keystore_password(Path(keystore), password_file, env, interactive))
    raw = env.get(PRIVATE_KEY_ENV)
    if not raw:
        raise MissingKey(PRIVATE_KEY_ENV)
    return from_private_key_hex(raw)


def write_keystore(account: LocalAccount, path: Path, password: str, kdf_iterations: int | None = None) -> Path:
    """Encrypt a key into a keystore file readable only by its owner.

    ``kdf_iterations`` lowers the scrypt/pbkdf2 cost for tests; production leaves the default.
    """
    blob = Account.encrypt(account.key, password, kdf="pbkdf2", iterations=kdf_iterations)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(blob, fh)
    return path


def devnet_account(index: int) -> LocalAccount:
    """Anvil's default account ``index`` (public keys: for the devnet only)."""
    Account.enable_unaudited_hdwallet_features()
    return cast(LocalAccount, Account.from_mnemonic(DEVNET_MNEMONIC, account_path=DEVNET_PATH.format(index)))


def devnet_accounts(count: int) -> list[LocalAccount]:
    """The first ``count`` anvil default accounts, in anvil's order."""
    return [devnet_account(i) for i in range(count)]


def main(argv: list[str] | None = None) -> int:
    """`concord keys new --out PATH` / `concord keys address [--keystore PATH]`; the password from
    --password-file, $CONCORD_KEYSTORE_PASSWORD or a hidden prompt (twice for a new key)."""
    import argparse

    p = argparse.ArgumentParser(prog="concord keys", description="create or inspect a node keystore")
    sub = p.add_subparsers(dest="action", required=True)
    new = sub.add_parser("new", help="new random key in an encrypted keystore file (mode 0600)")
    new.add_argument("--out", type=Path, required=True)
    show = sub.add_parser("address", help="the address of the configured key (keystore or env)")
    show.add_argument("--keystore", type=Path, default=None)
    for q in (new, show):
        q.add_argument("--password-file", type=Path, default=None, help="file holding the keystore's password")
    args = p.parse_args(argv)
    try:
        if args.action == "new":
            if args.out.exists():
                print(f"error: {args.out} exists; refusing to overwrite a key", file=sys.stderr)
                return 1
            password = keystore_password(args.out, args.password_file)
            if args.password_file is None and PASSWORD_ENV not in os.environ:  # typed: type it twice
                if getpass.getpass("the same password again: ") != password:
                    raise BadKeystore(args.out, "the two passwords differ; nothing written")
            if not password:
                raise BadKeystore(args.out, "an empty password; nothing written")
            account = Account.create()
            write_keystore(account, args.out, password)
        else:
            account = load_key(args.keystore, password_file=args.password_file)
    except KeyLoadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(account.address)
    return 0

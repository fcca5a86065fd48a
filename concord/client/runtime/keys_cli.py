"""`concord keys new | address`: make a node keystore, or show the address of the configured key.

The key and its password come from where every node command reads them (docs/OPERATORS.md "The key"):
`--keystore` or $CONCORD_KEYSTORE / $ETH_KEYSTORE, `--password-file` or $CONCORD_PASSWORD_FILE /
$ETH_PASSWORD, then $CONCORD_KEYSTORE_PASSWORD, then a hidden prompt; without a keystore,
$CONCORD_PRIVATE_KEY. An error names the flag or the env var the bad value came from.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from concord.client.runtime.config import layered


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="concord keys", description="create or inspect a node keystore")
    sub = p.add_subparsers(dest="action", required=True)
    new = sub.add_parser("new", help="new random key in an encrypted keystore file (mode 0600)")
    new.add_argument("--out", type=Path, required=True, help="the keystore file to write (must not exist)")
    show = sub.add_parser("address", help="the address of the configured key (keystore or env)")
    show.add_argument("--keystore", type=Path, default=None, help="keystore file [env: CONCORD_KEYSTORE, ETH_KEYSTORE]")
    for q in (new, show):
        q.add_argument(
            "--password-file",
            type=Path,
            default=None,
            help="file holding the keystore's password [env: CONCORD_PASSWORD_FILE, ETH_PASSWORD]",
        )
    layered(new, "password_file")
    layered(show, "keystore", "password_file")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from concord.client.chain import keys
    from concord.client.runtime.config import parse_layered, setting_name

    args = parse_layered(parser(), argv)
    password_flag = setting_name(args, "password_file", "--password-file")
    try:
        if args.password_file is not None and not Path(args.password_file).is_file():
            raise keys.BadPasswordFile(Path(args.password_file), "not a file")
        if args.action == "new":
            if args.out.exists():
                print(f"error: --out: {args.out} exists; refusing to overwrite a key", file=sys.stderr)
                return 1
            password = keys.keystore_password(args.out, args.password_file)
            if args.password_file is None and keys.PASSWORD_ENV not in os.environ:  # typed: type it twice
                if getpass.getpass("the same password again: ") != password:
                    raise keys.BadKeystore(args.out, "the two passwords differ; nothing written")
            if not password:
                raise keys.BadKeystore(args.out, "an empty password; nothing written")
            from eth_account import Account

            account = Account.create()
            keys.write_keystore(account, args.out, password)
        else:
            keystore_flag = setting_name(args, "keystore", "--keystore")
            if args.keystore is not None and not Path(args.keystore).is_file():
                print(f"error: {keystore_flag}: {args.keystore} is not a file", file=sys.stderr)
                return 1
            account = keys.load_key(args.keystore, password_file=args.password_file)
    except keys.BadPasswordFile as exc:
        message = str(exc).replace("fix --password-file", f"fix {password_flag}")
        print(f"error: {message}", file=sys.stderr)
        return 1
    except keys.KeyLoadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(account.address)
    return 0

"""`concord deploy --rpc-url URL [--keystore PATH] --out FILE [--token ADDR]`: deploy the protocol to any RPC
URL and write the deployment JSON (client.chain.deploy does the work; the devnet uses the same path).

The key comes from the keystore (password in $CONCORD_KEYSTORE_PASSWORD) or $CONCORD_PRIVATE_KEY, never argv.
Without --token a DevToken (mintable test ERC-20) is deployed as the protocol token. The parser lives in
client.runtime.parsers, so `--help` answers without loading web3.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from concord.client import chain
from concord.client.chain import artifacts as packaged
from concord.client.chain import keys
from concord.client.chain.deploy import DEFAULT_UNBOND_DELAY, deploy
from concord.client.chain.rpc import check_rpc_url
from concord.client.runtime.parsers import deploy_parser


def main(argv: Sequence[str] | None = None) -> int:
    """`concord deploy` / scripts/deploy.py."""
    args = deploy_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        check_rpc_url(args.rpc_url)  # a malformed URL is named before the key is asked for
        account = keys.load_key(args.keystore, password_file=args.password_file)
        unbond_delay = DEFAULT_UNBOND_DELAY if args.unbond_delay is None else args.unbond_delay
        deployment = deploy(args.rpc_url, account, args.token, unbond_delay, args.out)
    except (keys.KeyLoadError, chain.ChainError, packaged.ArtifactsMissing) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(
        f"Concord {deployment.concord} token {deployment.token} on chain {deployment.chain_id} "
        f"(block {deployment.block_number}) -> {args.out}"
    )
    return 0

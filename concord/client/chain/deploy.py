"""Deploy the protocol to any RPC URL and write the deployment JSON; the devnet uses the same path.

`concord deploy --rpc-url URL [--keystore PATH] --out FILE [--token ADDR]`: the key comes from
the keystore (password in $CONCORD_KEYSTORE_PASSWORD) or $CONCORD_PRIVATE_KEY, never argv.
Without --token a DevToken (mintable test ERC-20) is deployed as the protocol token.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from eth_account.signers.local import LocalAccount
from eth_utils.address import to_checksum_address

from concord.client import chain
from concord.client.chain import Deployment, Rpc, Signer, keys
from concord.client.chain import artifacts as packaged
from concord.client.chain.artifacts import Artifact, is_constructor

DEFAULT_UNBOND_DELAY = 7 * 24 * 3600  # seconds a node waits between unbond and its stake's return
log = logging.getLogger(__name__)

DEVNET_UNBOND_DELAY = 60


class UnknownConstructor(Exception):
    """The Concord constructor takes an argument this deployer does not know how to fill."""

    def __init__(self, name: str, inputs: list[str]) -> None:
        super().__init__(
            f"Concord constructor argument {name!r} is unknown (inputs {inputs}): update client/chain/deploy.py"
        )
        self.name = name


@dataclass(frozen=True)
class DevnetResult:
    deployment: Deployment
    accounts: list[str]


def _ctor_args(art: Artifact, values: dict[str, object]) -> list[object]:
    """Constructor arguments by name (leading underscores and case ignored), so the deployer
    follows the contract's signature; UnknownConstructor for a parameter it has no value for."""
    inputs = next((e["inputs"] for e in art.abi if is_constructor(e)), [])
    names = [p["name"].strip("_").lower() for p in inputs]
    missing = [n for n in names if n not in values]
    if missing:
        raise UnknownConstructor(missing[0], names)
    return [values[n] for n in names]


def deploy(
    rpc_url: str,
    account: LocalAccount,
    token: str | None = None,
    unbond_delay: int = DEFAULT_UNBOND_DELAY,
    out: Path | None = None,
    artifacts: dict[str, Artifact] | None = None,
) -> Deployment:
    """Deploy Concord and its two modules (and a DevToken unless ``token`` is given); write ``out`` if given."""
    artifacts = packaged.load() if artifacts is None else artifacts
    rpc = Rpc(rpc_url)
    signer = Signer(rpc, account, chain.error_decoder(artifacts))
    if token is None:
        token_art = artifacts[chain.DEV_TOKEN]
        owner = signer.address
        token, _ = chain.deploy_contract(
            signer, token_art, *_ctor_args(token_art, {"owner": owner, "initialowner": owner, "minter": owner})
        )
        log.info("deployed DevToken at %s", token)
    token = to_checksum_address(token)
    # Concord's modules first (each bound to the token), then Concord naming them: the protocol
    # does not fit one creation's init code, so Concord cannot deploy them itself.
    modules: dict[str, object] = {}
    for key, name in (("settlement", chain.SETTLEMENT), ("seed", chain.SEED)):
        module_art = artifacts[name]
        modules[key], _ = chain.deploy_contract(signer, module_art, *_ctor_args(module_art, {"token": token}))
        log.info("deployed %s at %s", name, modules[key])
    concord_art = artifacts[chain.CONCORD]
    address, receipt = chain.deploy_contract(
        signer,
        concord_art,
        *_ctor_args(
            concord_art,
            {
                "token": token,
                "unbonddelay": unbond_delay,
                "owner": signer.address,
                "initialowner": signer.address,
                **modules,
            },
        ),
    )
    deployment = Deployment(signer.chain_id, address, to_checksum_address(token), receipt.block_number, signer.address)
    if out is not None:
        deployment.save(out)
    return deployment


def deploy_devnet(
    rpc_url: str,
    accounts: int,
    mint: int,
    unbond_delay: int = DEVNET_UNBOND_DELAY,
    artifacts: dict[str, Artifact] | None = None,
) -> DevnetResult:
    """Deploy with anvil account 0, then mint ``mint`` DevTokens to each of the first ``accounts``."""
    artifacts = packaged.load() if artifacts is None else artifacts
    deployer = keys.devnet_account(0)
    deployment = deploy(rpc_url, deployer, None, unbond_delay, None, artifacts)
    client = chain.connect(rpc_url, deployment, artifacts)
    signer = client.signer(deployer)
    funded: list[str] = [a.address for a in keys.devnet_accounts(accounts)]
    pending = [client.token.contract.send(signer, "mint", addr, mint) for addr in funded]
    signer.wait_all(pending)
    return DevnetResult(deployment, funded)

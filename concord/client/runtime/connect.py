"""A node's connections: the contracts, its key, its content store, its state directory.

    connect_node(cfg) -> Node   Node(client, signer, store, state_dir); key from keystore/env/devnet index
                                (= connect_chain(cfg), which writes nothing, then open_node: the dirs)

Keys never come from argv: a keystore file (password from --password-file, $CONCORD_KEYSTORE_PASSWORD
or a hidden prompt), the $CONCORD_PRIVATE_KEY env var, or (devnet only, chain id 31337) the index of one of Anvil's
public default accounts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from eth_account.signers.local import LocalAccount

from concord.client import chain
from concord.client.chain import ChainClient, Signer, keys
from concord.client.content.store import Store
from concord.client.runtime import paths
from concord.client.runtime.config import (
    ANVIL_CHAIN_ID,
    NodeConfig,
    NodeConfigError,
)


@dataclass(frozen=True)
class Node:
    client: ChainClient
    signer: Signer
    store: Store
    state_dir: Path

    @property
    def address(self) -> str:
        return self.signer.address


def load_account(cfg: NodeConfig, chain_id: int) -> LocalAccount:
    """The node's key: a public devnet account (Anvil only), else keystore/env via client.chain.keys."""
    if cfg.devnet_account is not None:
        if chain_id != ANVIL_CHAIN_ID:
            raise NodeConfigError(
                "--devnet-account", f"public devnet keys only on chain {ANVIL_CHAIN_ID}, this is chain {chain_id}"
            )
        return keys.devnet_account(cfg.devnet_account)
    return keys.load_key(cfg.keystore, password_file=cfg.password_file)


def connect_node(cfg: NodeConfig) -> Node:
    """Bind the contracts, load the key, open the store (cache under the state dir)."""
    client, signer = connect_chain(cfg)
    return open_node(cfg, client, signer)


def connect_chain(cfg: NodeConfig) -> tuple[ChainClient, Signer]:
    """The contracts and the node's signer; nothing is written (publish checks everything before disk)."""
    client = chain.connect(cfg.rpc_url, cfg.deployment)
    return client, client.signer(load_account(cfg, cfg.deployment.chain_id))


def deployment_id(client: ChainClient) -> paths.DeploymentId:
    """The deployment ``client`` talks to, with the hash of its deployment block (one RPC call)."""
    dep = client.deployment
    block = client.rpc.call("eth_getBlockByNumber", hex(dep.block_number), False)
    if not isinstance(block, dict) or not isinstance(block.get("hash"), str):
        raise NodeConfigError(
            "--deployment", f"block {dep.block_number} (the deployment's) is not on chain {dep.chain_id}"
        )
    return paths.DeploymentId(dep.chain_id, dep.concord, dep.block_number, block["hash"])


def open_node(cfg: NodeConfig, client: ChainClient, signer: Signer) -> Node:
    """Create the state dir and open the store under it. The default dir is keyed by the deployment
    (<home>/nodes/<deployment key>/<role>-<address>); any dir is bound to its deployment by a marker, and
    one that holds another deployment's state is refused (NodeConfigError naming --state-dir)."""
    ident = deployment_id(client)
    default = paths.nodes_dir() / ident.key() / f"{cfg.role}-{signer.address}"
    state_dir = Path(cfg.state_dir) if cfg.state_dir else default
    try:
        paths.bind_state_dir(state_dir, ident)
    except paths.StateDirInUse as e:
        raise NodeConfigError("--state-dir", str(e)) from None
    store = Store(cfg.ipfs_api, state_dir / "ipfs-cache", timeout=cfg.ipfs_timeout)
    return Node(client, signer, store, state_dir)

"""The network file: where a node finds the chain, the deployment and the IPFS API, in one JSON.

`concord devnet up` writes it (with more keys: PIDs, accounts, which nodes ignore); any
operator can write one by hand for a public network. Nodes read only the keys below.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class NetworkFile:
    rpc_url: str
    chain_id: int
    ipfs_api: str  # Kubo RPC multiaddr (or http://host:port)
    deployment: dict[str, Any]  # client.chain.Deployment.to_json()

    @staticmethod
    def from_json(obj: dict[str, Any]) -> NetworkFile:
        """The node-facing keys of a network (or devnet) JSON; KeyError/TypeError when one is missing."""
        return NetworkFile(
            rpc_url=str(obj["rpc_url"]),
            chain_id=int(obj["chain_id"]),
            ipfs_api=str(obj["ipfs_api"]),
            deployment=dict(obj["deployment"]),
        )

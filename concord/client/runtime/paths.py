"""Where a node keeps its state when no directory is given: a per-user location, never the checkout.

    $CONCORD_HOME                      if set
    $XDG_STATE_HOME/concord            else, if XDG_STATE_HOME is set
    ~/.local/state/concord             else

Under it: nodes/<deployment>/<role>-<address>/ (a node's cursor, caches, verdicts; <deployment> is
DeploymentId.key(): chain id, Concord address and the hash of its deployment block, so a restarted devnet
at the same addresses gets directories of its own), devnet/ (the local
devnet's state file, `devnet.json`, which also serves as the default network file) and models/
(pretrained base models dequantized once, shared by every node of the user: client/engine/lm.py).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

HOME_ENV = "CONCORD_HOME"
NETWORK_FILE = "devnet.json"


def home() -> Path:
    """The per-user state root (see the module doc for the order)."""
    if os.environ.get(HOME_ENV):
        return Path(os.environ[HOME_ENV]).expanduser()
    xdg = os.environ.get("XDG_STATE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "state"
    return base / "concord"


def nodes_dir() -> Path:
    """Default parent of every node's state dir: <home>/nodes/<role>-<address>."""
    return home() / "nodes"


def models_dir() -> Path:
    """The cache of pretrained base models (client.engine.lm.load's cache_dir)."""
    return home() / "models"


def devnet_dir() -> Path:
    """Default state dir of `concord devnet up`."""
    return home() / "devnet"


def default_network_file() -> Path:
    """The network file a node reads when neither --devnet nor --rpc-url is given."""
    return devnet_dir() / NETWORK_FILE


# ----------------------------------------------------------------------------- state directories of one deployment

DEPLOYMENT_MARKER = "deployment-id.json"  # in every node state dir: the deployment its files belong to


@dataclass(frozen=True)
class DeploymentId:
    """One deployment of the protocol: the chain, the Concord address and its deployment block's hash (a
    devnet started again deploys at the same address on the same chain id, in another block 0..n)."""

    chain_id: int
    concord: str
    block_number: int
    block_hash: str  # "0x" + 64 hex

    def key(self) -> str:
        """A directory name: chain-31337-e7f1725e-3f2a9c41 (chain id, address and block hash prefixes)."""
        return f"chain-{self.chain_id}-{self.concord.lower()[2:10]}-{self.block_hash.lower()[2:10]}"

    def describe(self) -> str:
        return f"chain {self.chain_id}, Concord {self.concord} deployed in block {self.block_number} {self.block_hash}"

    def same(self, other: DeploymentId) -> bool:
        return (
            self.chain_id == other.chain_id
            and self.concord.lower() == other.concord.lower()
            and self.block_hash.lower() == other.block_hash.lower()
        )

    @staticmethod
    def from_json(obj: dict[str, Any]) -> DeploymentId:
        return DeploymentId(int(obj["chain_id"]), str(obj["concord"]), int(obj["block_number"]), str(obj["block_hash"]))


class StateDirInUse(ValueError):
    """A state directory that holds another deployment's files."""

    def __init__(self, state_dir: Path, theirs: DeploymentId, ours: DeploymentId) -> None:
        super().__init__(
            f"{state_dir} holds the state of another deployment ({theirs.describe()}), not of this one "
            f"({ours.describe()}): pass another --state-dir, or remove that one"
        )
        self.state_dir, self.theirs, self.ours = state_dir, theirs, ours


def read_deployment_marker(state_dir: Path) -> DeploymentId | None:
    """The deployment a node state dir belongs to; None when it has no (readable) marker."""
    try:
        return DeploymentId.from_json(json.loads((Path(state_dir) / DEPLOYMENT_MARKER).read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def bind_state_dir(state_dir: Path, ident: DeploymentId) -> None:
    """Create ``state_dir`` for deployment ``ident`` (its marker written once); StateDirInUse when it
    already belongs to another deployment, whose cursor and verdicts must not be taken for this one's."""
    state_dir = Path(state_dir)
    theirs = read_deployment_marker(state_dir)
    if theirs is not None and not theirs.same(ident):
        raise StateDirInUse(state_dir, theirs, ident)
    state_dir.mkdir(parents=True, exist_ok=True)
    if theirs is None:
        (state_dir / DEPLOYMENT_MARKER).write_text(json.dumps(asdict(ident), indent=1) + "\n")

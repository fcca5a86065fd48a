"""Where a node keeps its state when no directory is given: a per-user location, never the checkout.

    $CONCORD_HOME                      if set
    $XDG_STATE_HOME/concord            else, if XDG_STATE_HOME is set
    ~/.local/state/concord             else

Under it: nodes/<role>-<address>/ (a node's cursor, caches, verdicts), devnet/ (the local
devnet's state file, `devnet.json`, which also serves as the default network file) and models/
(pretrained base models dequantized once, shared by every node of the user: client/engine/lm.py).
"""

from __future__ import annotations

import os
from pathlib import Path

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

#!/usr/bin/env python3
"""Start or stop the local devnet (same code as `concord devnet`).

    scripts/devnet.py up [--anvil-port 8545 --ipfs-port 5001]   |   scripts/devnet.py down
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from client.devnet import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())

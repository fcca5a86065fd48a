#!/usr/bin/env python3
"""Deploy the Concord contracts to any RPC URL (same code as `concord deploy`).

CONCORD_KEYSTORE_PASSWORD=... scripts/deploy.py --rpc-url URL --keystore key.json --out deployment.json
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from concord.client.deploy import main

if __name__ == "__main__":
    raise SystemExit(main())

"""The lab: the demo, benchmarks, fault drills, adversaries, simulation and the devnet.

The lab imports anything; nothing in the library (client/, validator/) imports the lab.
It runs from a repository checkout: `concord demo`, `concord bench ...` and `concord devnet`
find it next to the installed package (see client/cli.py).
"""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
NODE_BIN = REPO_ROOT / "node_modules" / ".bin"

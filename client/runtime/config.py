"""Node configuration: the flags every node takes, the network file, state directories.

add_node_args(parser)                  the flags every node takes (--devnet, --rpc-url, --task, ...)
node_config(args, role) -> NodeConfig  flags (+ the network JSON) -> a frozen config, validated once here
positive_int, non_negative_int, positive_seconds, load_deployment, load_devnet_json
                                       argparse types and file loaders that name the bad flag
"""

from __future__ import annotations

import argparse
import json
import re
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from client.chain import Deployment, keys
from client.content.store import api_multiaddr
from client.runtime import paths
from client.runtime.network import NetworkFile

ANVIL_CHAIN_ID = 31337


class NodeConfigError(ValueError):
    """A node flag or the devnet JSON is missing or wrong; names the flag."""

    def __init__(self, flag: str, problem: str) -> None:
        super().__init__(f"{flag}: {problem}")
        self.flag, self.problem = flag, problem


# ----------------------------------------------------------------------------- config


@dataclass(frozen=True)
class NodeConfig:
    """Where a node connects and keeps its state. Never holds a key."""

    role: str  # "trainer" | "validator" (names the default state dir)
    rpc_url: str
    deployment: Deployment
    ipfs_api: str  # Kubo RPC multiaddr (or http://host:port)
    task_id: int  # 0 for commands that are not about one task
    state_dir: Path | None = None  # None: <per-user home>/nodes/<role>-<address> (client.runtime.paths)
    keystore: Path | None = None  # else $CONCORD_PRIVATE_KEY
    devnet_account: int | None = None  # index of a public Anvil account (chain 31337 only)
    json_logs: bool = False
    poll_interval: float = 0.25  # seconds between eth_blockNumber polls
    heartbeat: float = 2.0  # seconds without a block before an idle tick
    ipfs_timeout: float = 30.0


def add_node_args(p: argparse.ArgumentParser, with_task: bool = True) -> None:
    """The flags every node takes. Connection flags override what the devnet JSON says."""
    if with_task:
        p.add_argument("--task", type=positive_int, required=True, help="task id")
    p.add_argument(
        "--devnet",
        type=Path,
        default=None,
        help=f"devnet JSON (RPC URL, deployment, IPFS API); default {paths.default_network_file()} "
        "when --rpc-url is not given",
    )
    p.add_argument("--rpc-url", default=None, help="any EVM JSON-RPC endpoint")
    p.add_argument("--deployment", type=Path, default=None, help="deployment JSON (with --rpc-url)")
    p.add_argument("--ipfs-api", default=None, help="Kubo RPC API multiaddr, e.g. /ip4/127.0.0.1/tcp/5001/http")
    p.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help=f"node state (cursor, caches); default {paths.nodes_dir()}/ROLE-ADDR",
    )
    p.add_argument(
        "--keystore",
        type=Path,
        default=None,
        help=f"encrypted key file (password in ${keys.PASSWORD_ENV}); else ${keys.PRIVATE_KEY_ENV}",
    )
    p.add_argument(
        "--devnet-account",
        type=non_negative_int,
        default=None,
        help="use Anvil's public default account N (devnet only)",
    )
    p.add_argument("--json-logs", action="store_true", help="one JSON object per log line on stdout")
    p.add_argument("--poll-interval", type=positive_seconds, default=0.25, help="seconds between new-block polls")


# argparse types: a bad value exits with `error: argument --flag: ...` before anything runs.


def _int_at_least(text: str, lo: int) -> int:
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < lo:
        raise argparse.ArgumentTypeError(f"must be >= {lo}, got {value}")
    return value


def positive_int(text: str) -> int:
    return _int_at_least(text, 1)


def non_negative_int(text: str) -> int:
    return _int_at_least(text, 0)


def positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not 0 < value <= 3600:  # NaN fails too
        raise argparse.ArgumentTypeError(f"must be in (0, 3600] seconds, got {text}")
    return value


_MULTIADDR = re.compile(r"/(ip4|ip6|dns|dns4|dns6)/[^/\s]+/tcp/(\d{1,5})(/https?)?")
# Flags some commands add on top of add_node_args: (lowest value, what it counts).
_COUNT_FLAGS = {"rounds": (1, "rounds"), "stake": (0, "base units"), "threads": (1, "threads")}


def _check_rpc_url(url: str) -> str:
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as e:  # e.g. a port out of 0..65535
        raise NodeConfigError("--rpc-url", f"{url!r}: {e}") from None
    if parts.scheme not in ("http", "https", "ws", "wss") or not parts.hostname:
        raise NodeConfigError("--rpc-url", f"expected http(s)://host[:port] or ws(s)://..., got {url!r}")
    if port == 0:
        raise NodeConfigError("--rpc-url", f"port 0 in {url!r}")
    return url


def _check_ipfs_api(api: str) -> str:
    try:
        addr = api_multiaddr(api)
    except ValueError as e:
        raise NodeConfigError("--ipfs-api", str(e)) from None
    m = _MULTIADDR.fullmatch(addr)
    if m is None or not 1 <= int(m.group(2)) <= 65535:
        raise NodeConfigError(
            "--ipfs-api", f"expected /ip4/HOST/tcp/PORT/http (port 1..65535) or http://host:port, got {api!r}"
        )
    return api


def load_deployment(path: Path, flag: str = "--deployment") -> Deployment:
    """A deployment JSON file; NodeConfigError naming ``flag`` when it is missing or malformed."""
    try:
        return Deployment.load(path)
    except OSError as e:
        raise NodeConfigError(flag, f"cannot read {path}: {e.strerror}") from None
    except (ValueError, KeyError, TypeError) as e:  # not JSON, a missing key, a bad address
        raise NodeConfigError(flag, f"{path} is not a deployment JSON: {type(e).__name__}: {e}") from None


def load_devnet_json(path: Path) -> NetworkFile:
    """The devnet JSON `concord devnet up` writes; NodeConfigError("--devnet") when missing or malformed."""
    path = Path(path)
    path = path / paths.NETWORK_FILE if path.is_dir() else path
    if not path.exists():
        raise NodeConfigError("--devnet", f"{path} does not exist: run `concord devnet up` or pass --rpc-url")
    try:
        net = NetworkFile.from_json(json.loads(path.read_text()))
        Deployment.from_json(net.deployment)
    except OSError as e:
        raise NodeConfigError("--devnet", f"cannot read {path}: {e.strerror}") from None
    except (ValueError, KeyError, TypeError) as e:
        raise NodeConfigError("--devnet", f"{path} is not a devnet JSON: {type(e).__name__}: {e}") from None
    return net


def node_config(args: argparse.Namespace, role: str) -> NodeConfig:
    """Resolve flags + devnet JSON into a NodeConfig (NodeConfigError names the missing flag)."""
    net: NetworkFile | None = None
    devnet_path = args.devnet
    if devnet_path is None and args.rpc_url is None:
        devnet_path = paths.default_network_file()
    for name, (lo, what) in _COUNT_FLAGS.items():  # trainer/validator extras, checked before any connection
        value = getattr(args, name, None)
        if value is not None and value < lo:
            raise NodeConfigError(f"--{name}", f"must be >= {lo} {what}, got {value}")
    if getattr(args, "keystore", None) is not None and not Path(args.keystore).is_file():
        raise NodeConfigError("--keystore", f"{args.keystore} is not a file")
    if devnet_path is not None:
        net = load_devnet_json(devnet_path)
    rpc_url = args.rpc_url or (net.rpc_url if net else None)
    ipfs_api = args.ipfs_api or (net.ipfs_api if net else None)
    if args.rpc_url is not None:
        _check_rpc_url(args.rpc_url)
    if args.ipfs_api is not None:
        _check_ipfs_api(args.ipfs_api)
    if args.deployment is not None:
        deployment = load_deployment(args.deployment)
    elif net is not None:
        deployment = Deployment.from_json(net.deployment)
    else:
        raise NodeConfigError("--deployment", "needed with --rpc-url (or pass --devnet)")
    if ipfs_api is None:
        raise NodeConfigError("--ipfs-api", "needed with --rpc-url (or pass --devnet)")
    if rpc_url is None:  # not reached: without --rpc-url the devnet JSON supplies it
        raise NodeConfigError("--rpc-url", "needed without --devnet")
    task_id = getattr(args, "task", 0)
    if task_id < 0 or (task_id == 0 and hasattr(args, "task")):
        raise NodeConfigError("--task", f"task ids start at 1, got {task_id}")
    return NodeConfig(
        role=role,
        rpc_url=rpc_url,
        deployment=deployment,
        ipfs_api=ipfs_api,
        task_id=task_id,
        state_dir=args.state_dir,
        keystore=args.keystore,
        devnet_account=args.devnet_account,
        json_logs=args.json_logs,
        poll_interval=args.poll_interval,
    )

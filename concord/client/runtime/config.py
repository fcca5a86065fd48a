"""Node configuration: the flags every node takes, a node TOML, env vars, the network file.

add_node_args(parser)                  the flags every node takes (--devnet, --rpc-url, --task, --config, ...)
parse_layered(parser, argv) -> args    argv over env vars over the --config TOML over defaults (the env and
                                       TOML layers typed by pydantic-settings: client.runtime.settings)
node_config(args, role) -> NodeConfig  flags (+ the network JSON) -> a frozen config, validated once here
positive_int, non_negative_int, positive_seconds, load_deployment, load_devnet_json
                                       argparse types and file loaders that name the bad flag

Where a setting comes from, first match wins (docs/OPERATORS.md):

    1. the command-line flag                       --rpc-url http://...
    2. its environment variable (ENV_VARS)         $CONCORD_RPC_URL, else $ETH_RPC_URL
    3. the node TOML given with --config           rpc_url = "http://..."   ([trainer] / [validator] / [task]
                                                   tables override the top level for that command)
    4. the network JSON (--devnet, or the default devnet's) for rpc_url, ipfs_api and the deployment
    5. the flag's default

Every key of the TOML is a flag's name (`rpc_url` or `rpc-url`); an unknown key is an error naming it.
Relative paths in the TOML are relative to the TOML's own directory. An error names where the bad value
came from: `$CONCORD_RPC_URL`, `--config node.toml: [validator] rpc_url`, `--rpc-url`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from concord.client.runtime import paths
from concord.client.runtime.network import NetworkFile

if TYPE_CHECKING:
    from concord.client.chain import Deployment

# This module builds every node command's parser: it imports no web3, IPFS client or torch at module
# level, so `concord ... --help` answers at once (tests/test_operator_cli.py times it); the chain SDK
# is imported where a value is checked or a file loaded.
PASSWORD_ENV = "CONCORD_KEYSTORE_PASSWORD"  # = client.chain.keys.PASSWORD_ENV (a test pins them equal)
PRIVATE_KEY_ENV = "CONCORD_PRIVATE_KEY"  # = client.chain.keys.PRIVATE_KEY_ENV

ANVIL_CHAIN_ID = 31337
TASK_NOT_GIVEN = 0  # --task's default: no task id is 0, so 0 means neither the flag nor the TOML gave one


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
    password_file: Path | None = None  # the keystore's password (else $CONCORD_KEYSTORE_PASSWORD, else a prompt)
    devnet_account: int | None = None  # index of a public Anvil account (chain 31337 only)
    json_logs: bool = False
    poll_interval: float = 0.25  # seconds between eth_blockNumber polls
    heartbeat: float = 2.0  # seconds without a block before an idle tick
    ipfs_timeout: float = 30.0


LAYERED = "layered_settings"  # a parser default: the settings its flags take from env vars and the TOML


def layered(p: argparse.ArgumentParser, *dests: str) -> None:
    """Let parse_layered fill these flags of ``p`` from env vars and the node TOML (argparse's own
    set_defaults records them, so the chosen subcommand's set reaches the namespace)."""
    p.set_defaults(**{LAYERED: frozenset(p.get_default(LAYERED) or ()) | set(dests)})


def add_node_args(p: argparse.ArgumentParser, with_task: bool = True) -> None:
    """The flags every node takes. Connection flags override what the devnet JSON says."""
    layered(p, *(["task"] if with_task else []), "devnet", "rpc_url", "deployment", "ipfs_api", "state_dir")
    layered(p, "keystore", "password_file", "devnet_account", "json_logs", "poll_interval", "config")
    if with_task:  # required: parse_layered refuses TASK_NOT_GIVEN once the TOML had its say
        p.add_argument(
            "--task", type=positive_int, default=TASK_NOT_GIVEN, help="task id (required, or task = N in --config)"
        )
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
        help=f"node state (cursor, caches); default {paths.nodes_dir()}/DEPLOYMENT/ROLE-ADDR",
    )
    p.add_argument(
        "--keystore",
        type=Path,
        default=None,
        help="encrypted key file [env: CONCORD_KEYSTORE, ETH_KEYSTORE]; its password from --password-file, "
        f"${PASSWORD_ENV} or a prompt; without a keystore the key is ${PRIVATE_KEY_ENV}",
    )
    p.add_argument(
        "--password-file",
        type=Path,
        default=None,
        help="file holding the keystore's password [env: CONCORD_PASSWORD_FILE, ETH_PASSWORD]",
    )
    p.add_argument(
        "--devnet-account",
        type=non_negative_int,
        default=None,
        help="use Anvil's public default account N (devnet only)",
    )
    p.add_argument("--json-logs", action="store_true", help="one JSON object per log line on stdout")
    p.add_argument("--poll-interval", type=positive_seconds, default=0.25, help="seconds between new-block polls")
    p.add_argument(
        CONFIG_FLAG,
        type=Path,
        default=None,
        metavar="NODE.toml",
        help="node TOML: any of these flags by name (rpc_url = ...); flags and env vars override it",
    )


# ----------------------------------------------------------------------------- layers: flag > env > TOML > default

CONFIG_FLAG = "--config"
# setting (argparse dest) -> its environment variables, the first set one wins (Foundry's names last).
ENV_VARS: dict[str, tuple[str, ...]] = {
    "rpc_url": ("CONCORD_RPC_URL", "ETH_RPC_URL"),
    "keystore": ("CONCORD_KEYSTORE", "ETH_KEYSTORE"),
    "password_file": ("CONCORD_PASSWORD_FILE", "ETH_PASSWORD"),
    "ipfs_api": ("CONCORD_IPFS_API",),
    "deployment": ("CONCORD_DEPLOYMENT",),
}
# A node TOML may hold one table per command group; it overrides the top level for that group.
TABLES = ("trainer", "validator", "task")


class ConfigFileError(NodeConfigError):
    """The node TOML cannot be read, or one of its keys is unknown or has a bad value (named with its table)."""

    def __init__(self, path: Path, key: str, problem: str) -> None:
        super().__init__(CONFIG_FLAG, f"{path}: {key}: {problem}" if key else f"{path}: {problem}")
        self.path, self.key = path, key


def read_toml_tables(path: Path) -> dict[str, dict[str, Any]]:
    """The node TOML's top level (under "") and its command tables (TABLES); ConfigFileError names the file,
    or the unknown table."""
    try:
        data = tomllib.loads(Path(path).read_text())
    except OSError as e:
        raise ConfigFileError(path, "", f"cannot read it: {e.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigFileError(path, "", f"not TOML: {e}") from None
    out: dict[str, dict[str, Any]] = {"": {k: v for k, v in data.items() if not isinstance(v, dict)}}
    for key, value in data.items():
        if isinstance(value, dict) and key not in TABLES:
            raise ConfigFileError(path, f"[{key}]", f"unknown table (known: {', '.join(TABLES)})")
        if isinstance(value, dict):
            out[key] = value
    return out


def node_keys() -> set[str]:
    """Every key a node TOML may hold (client.runtime.settings.NodeFile: the node flags' names and those of
    --rounds, --stake, ...)."""
    from concord.client.runtime.settings import NodeFile

    return set(NodeFile.model_fields)


def _given(argv: Sequence[str], dests: Iterable[str]) -> set[str]:
    """The settings argv sets itself: a --flag or --flag=value word (or a unique prefix, as argparse allows)."""
    options = {"--" + dest.replace("_", "-"): dest for dest in dests}
    given = set()
    for word in argv:
        if word == "--":
            break
        name = word.split("=", 1)[0]
        exact = [dest for option, dest in options.items() if option == name]
        match = exact or [dest for option, dest in options.items() if name.startswith("--") and option.startswith(name)]
        given |= set(match) if len(match) == 1 else set()
    return given


def parse_layered(
    parser: argparse.ArgumentParser, argv: Sequence[str] | None, env: Mapping[str, str] | None = None
) -> argparse.Namespace:
    """``parser.parse_args(argv)`` with the settings argv leaves out taken from the env vars (ENV_VARS),
    then from the --config TOML (top level and the command's table), then the flags' defaults
    (client.runtime.settings types each layer with pydantic-settings). A bad file or value exits as a bad
    flag does (status 2), naming the env var, or the file, table and key."""
    argv = list(argv) if argv is not None else sys.argv[1:]
    env = os.environ if env is None else env
    args = parser.parse_args(argv)  # --help exits here, before any layer is read
    settable: frozenset[str] = getattr(args, LAYERED, frozenset())
    if hasattr(args, LAYERED):
        delattr(args, LAYERED)
    given = _given(argv, settable)
    path = getattr(args, "config", None)
    layers: dict[str, tuple[Any, str]] = {}
    if path is not None or any(env.get(name) for names in ENV_VARS.values() for name in names):
        from concord.client.runtime import settings  # pydantic-settings: only when there is something to layer

        table = (parser.prog.split() + ["", ""])[1]  # "concord trainer" -> "trainer"
        try:
            layers = {**(settings.file_layer(Path(path), table) if path is not None else {}), **settings.env_layer(env)}
        except NodeConfigError as e:
            parser.error(str(e))
    sources = {dest: source for dest, (_, source) in layers.items() if dest in settable and dest not in given}
    for dest in sources:
        setattr(args, dest, layers[dest][0])
    if getattr(args, "task", None) == TASK_NOT_GIVEN:
        parser.error(f"the following arguments are required: --task (or task = N in the {CONFIG_FLAG} TOML)")
    setattr(args, SOURCES, sources)
    return args


SOURCES = "setting_sources"  # parse_layered's record on the namespace: dest -> "$VAR" or "--config F: [t] key"


def setting_name(args: argparse.Namespace, dest: str, flag: str) -> str:
    """Where the value of ``dest`` came from, for an error message: the env var (``$CONCORD_RPC_URL``) or the
    TOML key (``--config node.toml: rpc_url``) that set it, else the flag itself."""
    return str(getattr(args, SOURCES, {}).get(dest, flag))


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
_COUNT_FLAGS = {"rounds": (1, "rounds"), "threads": (1, "threads")}  # --stake: client.units checks it


def _check_rpc_url(url: str, name: str = "--rpc-url") -> str:
    from concord.client.chain.rpc import BadRpcUrl, check_rpc_url

    try:
        return check_rpc_url(url)  # the chain SDK's rule (client.chain.rpc), named as the flag here
    except BadRpcUrl as e:
        raise NodeConfigError(
            name,
            f"{e.problem}: expected http(s)://host[:port] or ws(s)://host[:port] (e.g. http://127.0.0.1:8545), "
            f"got {url!r}",
        ) from None


def checked_rpc_url(args: argparse.Namespace) -> str:
    """``args.rpc_url`` checked (client.chain.rpc's rule); NodeConfigError names its flag, env var or TOML key."""
    return _check_rpc_url(args.rpc_url, setting_name(args, "rpc_url", "--rpc-url"))


def _check_ipfs_api(api: str, name: str = "--ipfs-api") -> str:
    from concord.client.content.store import api_multiaddr

    try:
        addr = api_multiaddr(api)
    except ValueError as e:
        raise NodeConfigError(name, str(e)) from None
    m = _MULTIADDR.fullmatch(addr)
    if m is None or not 1 <= int(m.group(2)) <= 65535:
        raise NodeConfigError(
            name, f"expected /ip4/HOST/tcp/PORT/http (port 1..65535) or http://host:port, got {api!r}"
        )
    return api


def load_deployment(path: Path, flag: str = "--deployment") -> Deployment:
    """A deployment JSON file; NodeConfigError naming ``flag`` when it is missing or malformed."""
    from concord.client.chain import Deployment

    try:
        return Deployment.load(path)
    except OSError as e:
        raise NodeConfigError(flag, f"cannot read {path}: {e.strerror}") from None
    except (ValueError, KeyError, TypeError) as e:  # not JSON, a missing key, a bad address
        raise NodeConfigError(flag, f"{path} is not a deployment JSON: {type(e).__name__}: {e}") from None


def load_devnet_json(path: Path) -> NetworkFile:
    """The devnet JSON `concord devnet up` writes; NodeConfigError("--devnet") when missing or malformed."""
    from concord.client.chain import Deployment

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
    from concord.client.chain import Deployment

    net: NetworkFile | None = None
    devnet_path = args.devnet
    if devnet_path is None and args.rpc_url is None:
        devnet_path = paths.default_network_file()
    for name, (lo, what) in _COUNT_FLAGS.items():  # trainer/validator extras, checked before any connection
        value = getattr(args, name, None)
        if value is not None and value < lo:
            raise NodeConfigError(f"--{name}", f"must be >= {lo} {what}, got {value}")
    if getattr(args, "keystore", None) is not None and not Path(args.keystore).is_file():
        raise NodeConfigError(setting_name(args, "keystore", "--keystore"), f"{args.keystore} is not a file")
    if getattr(args, "password_file", None) is not None and not Path(args.password_file).is_file():
        raise NodeConfigError(
            setting_name(args, "password_file", "--password-file"), f"{args.password_file} is not a file"
        )
    if devnet_path is not None:
        net = load_devnet_json(devnet_path)
    rpc_url = args.rpc_url or (net.rpc_url if net else None)
    ipfs_api = args.ipfs_api or (net.ipfs_api if net else None)
    if args.rpc_url is not None:
        _check_rpc_url(args.rpc_url, setting_name(args, "rpc_url", "--rpc-url"))
    if args.ipfs_api is not None:
        _check_ipfs_api(args.ipfs_api, setting_name(args, "ipfs_api", "--ipfs-api"))
    if args.deployment is not None:
        deployment = load_deployment(args.deployment, setting_name(args, "deployment", "--deployment"))
    elif net is not None:
        deployment = Deployment.from_json(net.deployment)
    else:
        raise NodeConfigError("--deployment", "needed with --rpc-url (or pass --devnet)")
    if ipfs_api is None:
        raise NodeConfigError("--ipfs-api", "needed with --rpc-url (or pass --devnet)")
    if rpc_url is None:  # not reached: without --rpc-url the devnet JSON supplies it
        raise NodeConfigError("--rpc-url", "needed without --devnet")
    task_id = getattr(args, "task", 0)
    if task_id == TASK_NOT_GIVEN and hasattr(args, "task"):
        raise NodeConfigError("--task", f"required (or task = N in the {CONFIG_FLAG} TOML)")
    if task_id < 0:
        raise NodeConfigError("--task", f"task ids start at 1, got {task_id}")
    return NodeConfig(
        role=role,
        rpc_url=rpc_url,
        deployment=deployment,
        ipfs_api=ipfs_api,
        task_id=task_id,
        state_dir=args.state_dir,
        keystore=args.keystore,
        password_file=getattr(args, "password_file", None),
        devnet_account=args.devnet_account,
        json_logs=args.json_logs,
        poll_interval=args.poll_interval,
    )


# ----------------------------------------------------------------------------- device (LM tasks)


def add_device_arg(p: argparse.ArgumentParser) -> None:
    layered(p, "device")
    p.add_argument(
        "--device",
        default="cpu",
        help="where an LM task's model runs: cpu, cuda or cuda:N (bf16 where the device runs it natively)",
    )


def check_device(device: str) -> None:
    """NodeConfigError naming --device unless it is cpu, or a CUDA device this machine has."""
    import torch

    if device == "cpu":
        return
    if device != "cuda" and not (device.startswith("cuda:") and device[5:].isdigit()):
        raise NodeConfigError("--device", f"expected cpu, cuda or cuda:N, got {device!r}")
    if not torch.cuda.is_available():
        raise NodeConfigError("--device", f"{device}: this machine has no CUDA device (torch {torch.__version__})")
    index = int(device[5:]) if ":" in device else 0
    if index >= torch.cuda.device_count():
        raise NodeConfigError("--device", f"{device}: this machine has {torch.cuda.device_count()} CUDA device(s)")

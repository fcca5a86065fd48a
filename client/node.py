"""The runtime both nodes (trainer, validator) share: config, connections, the task, models, events, logs.

API (kept small and stable; the validator node is written against it):

    add_node_args(parser)                 the flags every node takes (--devnet, --rpc-url, --task, ...)
    node_config(args, role) -> NodeConfig  flags (+ the devnet JSON) -> a frozen config
    connect_node(cfg) -> Node             Node(client, signer, store, state_dir); key from keystore/env/devnet index
                                          (= connect_chain(cfg), which writes nothing, then open_node: the dirs)
    positive_int, non_negative_int, positive_seconds, load_deployment, load_devnet_json
                                          argparse types and file loaders that name the bad flag
    load_task_context(node, task_id) -> TaskContext
                                          on-chain params + the spec fetched by its on-chain digest + env
    fetch_round_model(ctx, store, m) -> FetchedModel   model m by its on-chain digest (must be final)
    model_for_round(ctx, store, m) -> torch policy     the same as a policy, cached by digest (read only!)
    current_round_now(client, task), phase_now(client, task, r)   views as of the pending block
    EventFollower(node, task_id).follow(stop) -> Iterator[Tick]
                                          one Tick per new block (this task's events in it) and a
                                          heartbeat tick when no block came (phases move with time)
    setup_logging(json_logs), fields(**kv), Display   logs (rich or one JSON object per line), status panel
    shutdown_event() -> threading.Event   set on SIGINT/SIGTERM; nodes finish the step they are in and return

Keys never come from argv: a keystore file (password in $CONCORD_KEYSTORE_PASSWORD), the
$CONCORD_PRIVATE_KEY env var, or (devnet only, chain id 31337) the index of one of Anvil's
public default accounts.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import logging
import re
import signal
import sys
import threading
import urllib.parse
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from client import chain, devnet, keys
from client.chain import ChainClient, ConcordEvent, Deployment, Phase, Signer, TaskParams
from client.config import TaskConfig
from client.envs import Env, make_env
from client.model import build_policy, load_policy_state
from client.model_store import FetchedModel, fetch_model
from client.store import Store, api_multiaddr
from client.task_spec import TaskSpecManifest, fetch_task_spec

log = logging.getLogger(__name__)

ANVIL_CHAIN_ID = 31337
DEFAULT_DEVNET_JSON = devnet.DEFAULT_STATE_DIR / devnet.STATE_FILE
DEFAULT_NODES_DIR = devnet.REPO_ROOT / ".concord"
MODEL_SLACK_BYTES = 1 << 20


# ----------------------------------------------------------------------------- errors

class NodeConfigError(ValueError):
    """A node flag or the devnet JSON is missing or wrong; names the flag."""

    def __init__(self, flag: str, problem: str) -> None:
        super().__init__(f"{flag}: {problem}")
        self.flag, self.problem = flag, problem


class UnknownTask(ValueError):
    def __init__(self, task_id: int, task_count: int) -> None:
        super().__init__(f"task {task_id} does not exist (the contract has tasks 1..{task_count})")
        self.task_id, self.task_count = task_id, task_count


class ModelNotFinal(RuntimeError):
    def __init__(self, task_id: int, model: int) -> None:
        super().__init__(f"task {task_id}: model {model} is not final yet")
        self.task_id, self.model = task_id, model


class ModelConfigMismatch(ValueError):
    """A model manifest's architecture differs from the task spec's (the digest names the model)."""

    def __init__(self, digest: str, expected: object, got: object) -> None:
        super().__init__(f"model {digest}: config {got} differs from the task spec's {expected}")
        self.digest, self.expected, self.got = digest, expected, got


# ----------------------------------------------------------------------------- config

@dataclass(frozen=True)
class NodeConfig:
    """Where a node connects and keeps its state. Never holds a key."""

    role: str                         # "trainer" | "validator" (names the default state dir)
    rpc_url: str
    deployment: Deployment
    ipfs_api: str                     # Kubo RPC multiaddr (or http://host:port)
    task_id: int                      # 0 for commands that are not about one task
    state_dir: Path | None = None     # None: .concord/<role>-<address>
    keystore: Path | None = None      # else $CONCORD_PRIVATE_KEY
    devnet_account: int | None = None  # index of a public Anvil account (chain 31337 only)
    json_logs: bool = False
    poll_interval: float = 0.25       # seconds between eth_blockNumber polls
    heartbeat: float = 2.0            # seconds without a block before an idle tick
    ipfs_timeout: float = 30.0


def add_node_args(p: argparse.ArgumentParser, with_task: bool = True) -> None:
    """The flags every node takes. Connection flags override what the devnet JSON says."""
    if with_task:
        p.add_argument("--task", type=positive_int, required=True, help="task id")
    p.add_argument("--devnet", type=Path, default=None,
                   help=f"devnet JSON (RPC URL, deployment, IPFS API); default {DEFAULT_DEVNET_JSON} "
                        "when --rpc-url is not given")
    p.add_argument("--rpc-url", default=None, help="any EVM JSON-RPC endpoint")
    p.add_argument("--deployment", type=Path, default=None, help="deployment JSON (with --rpc-url)")
    p.add_argument("--ipfs-api", default=None, help="Kubo RPC API multiaddr, e.g. /ip4/127.0.0.1/tcp/5001/http")
    p.add_argument("--state-dir", type=Path, default=None, help="node state (cursor, caches); default .concord/ROLE-ADDR")
    p.add_argument("--keystore", type=Path, default=None,
                   help=f"encrypted key file (password in ${keys.PASSWORD_ENV}); else ${keys.PRIVATE_KEY_ENV}")
    p.add_argument("--devnet-account", type=non_negative_int, default=None,
                   help="use Anvil's public default account N (devnet only)")
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
    if not 0 < value <= 3600:   # NaN fails too
        raise argparse.ArgumentTypeError(f"must be in (0, 3600] seconds, got {text}")
    return value


_MULTIADDR = re.compile(r"/(ip4|ip6|dns|dns4|dns6)/[^/\s]+/tcp/(\d{1,5})(/https?)?")
# Flags some commands add on top of add_node_args: (lowest value, what it counts).
_COUNT_FLAGS = {"rounds": (1, "rounds"), "stake": (0, "base units"), "threads": (1, "threads")}


def _check_rpc_url(url: str) -> str:
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as e:   # e.g. a port out of 0..65535
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
        raise NodeConfigError("--ipfs-api", f"expected /ip4/HOST/tcp/PORT/http (port 1..65535) or "
                                            f"http://host:port, got {api!r}")
    return api


def load_deployment(path: Path, flag: str = "--deployment") -> Deployment:
    """A deployment JSON file; NodeConfigError naming ``flag`` when it is missing or malformed."""
    try:
        return Deployment.load(path)
    except OSError as e:
        raise NodeConfigError(flag, f"cannot read {path}: {e.strerror}") from None
    except (ValueError, KeyError, TypeError) as e:   # not JSON, a missing key, a bad address
        raise NodeConfigError(flag, f"{path} is not a deployment JSON: {type(e).__name__}: {e}") from None


def load_devnet_json(path: Path) -> devnet.Devnet:
    """The devnet JSON `concord devnet up` writes; NodeConfigError("--devnet") when missing or malformed."""
    path = Path(path)
    path = path / devnet.STATE_FILE if path.is_dir() else path
    if not path.exists():
        raise NodeConfigError("--devnet", f"{path} does not exist: run `concord devnet up` or pass --rpc-url")
    try:
        net = devnet.Devnet.from_json(json.loads(path.read_text()))
        Deployment.from_json(net.deployment)
    except OSError as e:
        raise NodeConfigError("--devnet", f"cannot read {path}: {e.strerror}") from None
    except (ValueError, KeyError, TypeError) as e:
        raise NodeConfigError("--devnet", f"{path} is not a devnet JSON: {type(e).__name__}: {e}") from None
    return net


def node_config(args: argparse.Namespace, role: str) -> NodeConfig:
    """Resolve flags + devnet JSON into a NodeConfig (NodeConfigError names the missing flag)."""
    net: devnet.Devnet | None = None
    devnet_path = args.devnet
    if devnet_path is None and args.rpc_url is None:
        devnet_path = DEFAULT_DEVNET_JSON
    for name, (lo, what) in _COUNT_FLAGS.items():   # trainer/validator extras, checked before any connection
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
    task_id = getattr(args, "task", 0)
    if task_id < 0 or (task_id == 0 and hasattr(args, "task")):
        raise NodeConfigError("--task", f"task ids start at 1, got {task_id}")
    return NodeConfig(role=role, rpc_url=rpc_url, deployment=deployment, ipfs_api=ipfs_api, task_id=task_id,
                      state_dir=args.state_dir, keystore=args.keystore, devnet_account=args.devnet_account,
                      json_logs=args.json_logs, poll_interval=args.poll_interval)


# ----------------------------------------------------------------------------- connections

@dataclass(frozen=True)
class Node:
    client: ChainClient
    signer: Signer
    store: Store
    state_dir: Path

    @property
    def address(self) -> str:
        return self.signer.address


def load_account(cfg: NodeConfig, chain_id: int):
    """The node's key: a public devnet account (Anvil only), else keystore/env via client.keys."""
    if cfg.devnet_account is not None:
        if chain_id != ANVIL_CHAIN_ID:
            raise NodeConfigError("--devnet-account", f"public devnet keys only on chain {ANVIL_CHAIN_ID}, "
                                                      f"this is chain {chain_id}")
        return keys.devnet_account(cfg.devnet_account)
    return keys.load_key(cfg.keystore)


def connect_node(cfg: NodeConfig) -> Node:
    """Bind the contracts, load the key, open the store (cache under the state dir)."""
    client, signer = connect_chain(cfg)
    return open_node(cfg, client, signer)


def connect_chain(cfg: NodeConfig) -> tuple[ChainClient, Signer]:
    """The contracts and the node's signer; nothing is written (publish checks everything before disk)."""
    client = chain.connect(cfg.rpc_url, cfg.deployment)
    return client, client.signer(load_account(cfg, cfg.deployment.chain_id))


def open_node(cfg: NodeConfig, client: ChainClient, signer: Signer) -> Node:
    """Create the state dir and open the store under it."""
    state_dir = Path(cfg.state_dir) if cfg.state_dir else DEFAULT_NODES_DIR / f"{cfg.role}-{signer.address}"
    state_dir.mkdir(parents=True, exist_ok=True)
    store = Store(cfg.ipfs_api, state_dir / "ipfs-cache", timeout=cfg.ipfs_timeout)
    return Node(client, signer, store, state_dir)


# ----------------------------------------------------------------------------- the task and its models

class ModelCache:
    """Policies by model digest (state: an LRU of built modules). Returned policies are shared: don't train them."""

    def __init__(self, cache_dir: Path, max_bytes: int, keep: int = 4) -> None:
        self.cache_dir = Path(cache_dir)
        self.max_bytes = max_bytes
        self.keep = keep
        self._entries: OrderedDict[str, tuple[FetchedModel, torch.nn.Module]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, store: Store, digest: str) -> tuple[FetchedModel, torch.nn.Module]:
        digest = digest.removeprefix("0x")
        with self._lock:
            if digest in self._entries:
                self._entries.move_to_end(digest)
                return self._entries[digest]
        fetched = fetch_model(store, digest, self.cache_dir, self.max_bytes)
        policy = build_policy(fetched.config)
        load_policy_state(policy, {k: v.float() for k, v in fetched.state.items()})
        with self._lock:
            self._entries[digest] = (fetched, policy)
            while len(self._entries) > self.keep:
                self._entries.popitem(last=False)
        return fetched, policy


@dataclass(frozen=True)
class TaskContext:
    """A task as a node sees it: on-chain params, the spec behind params.spec_digest, the env."""

    task_id: int
    params: TaskParams
    spec: TaskSpecManifest
    env: Env
    client: ChainClient = field(repr=False)
    models: ModelCache = field(repr=False)

    @property
    def task(self) -> TaskConfig:
        return self.spec.task

    @property
    def spec_digest(self) -> str:
        return self.params.spec_digest.hex()


def load_task_context(node: Node, task_id: int) -> TaskContext:
    """Read the task's params, fetch and check its spec by the on-chain digest, build its env."""
    concord = node.client.concord
    count = concord.task_count()
    if not 1 <= task_id <= count:
        raise UnknownTask(task_id, count)
    params = concord.task_params(task_id)
    spec = fetch_task_spec(node.store, params.spec_digest.hex())
    max_model_bytes = 2 * spec.limits.max_delta_bytes + MODEL_SLACK_BYTES   # weights + outer state
    models = ModelCache(node.state_dir / "models", max_model_bytes)
    return TaskContext(task_id, params, spec, make_env(spec.task.env), node.client, models)


def fetch_round_model(ctx: TaskContext, store: Store, model: int) -> FetchedModel:
    """Model ``model`` of the task (0 = initial) by its on-chain digest; ModelNotFinal if not fixed yet."""
    return _round_model(ctx, store, model)[0]


def model_for_round(ctx: TaskContext, store: Store, model: int) -> torch.nn.Module:
    """Model ``model`` as a policy, cached by digest. Shared: clone before changing it."""
    return _round_model(ctx, store, model)[1]


def _round_model(ctx: TaskContext, store: Store, model: int) -> tuple[FetchedModel, torch.nn.Module]:
    md = ctx.client.concord.model_digest(ctx.task_id, model)
    if not md.is_final:
        raise ModelNotFinal(ctx.task_id, model)
    fetched, policy = ctx.models.get(store, md.digest.hex())
    if fetched.config != ctx.task.model:
        raise ModelConfigMismatch(md.digest.hex(), ctx.task.model, fetched.config)
    return fetched, policy


# ----------------------------------------------------------------------------- views "now"
# Phases are decided by block timestamps. On a chain that mines only on transactions the
# latest block can be minutes old; a transaction sent now executes in the pending block, so
# "can I act now?" is asked of the pending block.

def current_round_now(client: ChainClient, task_id: int) -> int:
    """The newest round as a transaction sent now would see it."""
    return client.concord.contract.call("currentRound", task_id, block="pending")[0]


def phase_now(client: ChainClient, task_id: int, round_: int) -> Phase:
    return Phase(client.concord.contract.call("phaseOf", task_id, round_, block="pending")[0])


# ----------------------------------------------------------------------------- events

@dataclass(frozen=True)
class Tick:
    """What changed since the last tick: the new head and this task's events in the new blocks."""

    block: int
    timestamp: int
    events: tuple[ConcordEvent, ...]


def _for_task(event: ConcordEvent, task_id: int) -> bool:
    return getattr(event, "task_id", task_id) == task_id


class EventFollower:
    """Follows new blocks with eth_getLogs; the cursor (last block handled) is persisted in the state dir.

    A block is handled once the consumer asks for the next tick, so after a crash the
    events of the block being handled are seen again (nodes act on chain state, so that is safe).
    """

    def __init__(self, node: Node, task_id: int, poll_interval: float = 0.25, heartbeat: float = 2.0,
                 start_block: int | None = None) -> None:
        self.concord = node.client.concord
        self.rpc = node.client.rpc
        self.task_id = task_id
        self.poll_interval = poll_interval
        self.heartbeat = heartbeat
        self.path = node.state_dir / f"cursor-task{task_id}.json"
        default = node.client.deployment.block_number - 1 if start_block is None else start_block - 1
        self.cursor = self._load(default)

    def _load(self, default: int) -> int:
        if not self.path.exists():
            return default
        try:
            return int(json.loads(self.path.read_text())["block"])
        except (ValueError, KeyError, json.JSONDecodeError) as e:
            log.warning("cursor file %s unreadable (%s); starting from block %d", self.path, e, default + 1)
            return default

    def _save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"block": self.cursor}))
        tmp.replace(self.path)

    def poll(self) -> Tick | None:
        """The next tick if a block arrived since the cursor, else None."""
        head = self.rpc.block_number()
        if head <= self.cursor:
            return None
        events = self.concord.events(self.cursor + 1, head)
        mine = tuple(e for e in events if _for_task(e, self.task_id))
        return Tick(head, self.rpc.block_timestamp(head), mine)

    def follow(self, stop: threading.Event) -> Iterator[Tick]:
        """Ticks until ``stop`` is set: one per batch of new blocks, or a heartbeat when none came."""
        idle = 0.0
        while not stop.is_set():
            tick = self.poll()
            if tick is None and idle < self.heartbeat:
                stop.wait(self.poll_interval)
                idle += self.poll_interval
                continue
            idle = 0.0
            if tick is None:
                tick = Tick(self.cursor, self.rpc.block_timestamp("latest"), ())
            yield tick
            if tick.block > self.cursor:
                self.cursor = tick.block
                self._save()


# ----------------------------------------------------------------------------- logging and display

_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


def fields(**kv: Any) -> dict:
    """``extra=`` for a log call: structured fields (become JSON keys with --json-logs)."""
    return {"fields": kv}


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return str(value)


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts, level, logger, msg, plus the record's ``fields``."""

    def format(self, record: logging.LogRecord) -> str:
        obj = {"ts": dt.datetime.fromtimestamp(record.created, dt.timezone.utc).isoformat(timespec="milliseconds"),
               "level": record.levelname.lower(), "logger": record.name, "msg": record.getMessage()}
        obj.update({k: _jsonable(v) for k, v in getattr(record, "fields", {}).items()})
        if record.exc_info:
            obj["exc"] = self.formatException(record.exc_info)
        return json.dumps(obj, separators=(",", ":"))


@functools.cache
def _console():
    """One rich console on stderr for log lines and the live panel (two would overwrite each other)."""
    from rich.console import Console

    return Console(stderr=True)


def setup_logging(json_logs: bool, level: int = logging.INFO) -> None:
    """Human logs through rich on stderr, or JSON lines on stdout; quiets HTTP client chatter."""
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    if json_logs:
        handler: logging.Handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(JsonFormatter())
    else:
        from rich.logging import RichHandler

        handler = RichHandler(console=_console(), show_path=False, rich_tracebacks=False, log_time_format="%H:%M:%S")
        handler.setFormatter(logging.Formatter("%(message)s"))
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("urllib3", "httpx", "httpcore", "ipfshttpclient"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


class Display:
    """A live status panel (rich) of the node's current fields; with JSON logs a `status` line per update."""

    def __init__(self, title: str, json_logs: bool) -> None:
        self.title = title
        self.json_logs = json_logs
        self.state: dict[str, Any] = {}
        self._live = None
        self._log = logging.getLogger(f"concord.status.{title}")

    def __enter__(self) -> Display:
        if not self.json_logs and sys.stderr.isatty():
            from rich.live import Live

            self._live = Live(self._render(), console=_console(), refresh_per_second=4, transient=False)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(None, None, None)
            self._live = None

    def _render(self):
        from rich.table import Table

        table = Table(title=self.title, show_header=False, expand=False)
        table.add_column("field", style="bold cyan")
        table.add_column("value")
        for k, v in self.state.items():
            table.add_row(k, str(_jsonable(v)))
        return table

    def update(self, **kv: Any) -> None:
        changed = {k: v for k, v in kv.items() if self.state.get(k) != v}
        if not changed:
            return
        self.state.update(changed)
        if self._live is not None:
            self._live.update(self._render())
        elif self.json_logs:
            self._log.info("status", extra=fields(status=True, **changed))


# ----------------------------------------------------------------------------- shutdown

def shutdown_event(stop: threading.Event | None = None) -> threading.Event:
    """An event set by SIGINT, SIGTERM or SIGHUP (main thread only); a second signal interrupts at once.
    A node starts no processes of its own, so finishing its step and returning leaves nothing behind."""
    stop = threading.Event() if stop is None else stop

    def handle(signum: int, _frame: object) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        log.info("%s: finishing the current step, then stopping", signal.Signals(signum).name)
        stop.set()

    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, handle)
    return stop

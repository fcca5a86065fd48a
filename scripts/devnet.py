"""The local devnet: Anvil on a clock + one IPFS peer per node on 127.0.0.1, the contracts deployed,
tokens minted.

``up`` writes everything a node needs into ``<state_dir>/devnet.json`` (RPC URL, chain id,
addresses, the initiator's IPFS API multiaddr, every node's IPFS peer, PIDs); ``down`` stops
exactly the PIDs recorded there (``add_peers`` records the peers it adds). Any failure on the way
up stops what was started and raises one ``ProcError`` line naming the fix.

The chain (issue 23): Anvil mines a block every ``block_time`` seconds (default 1 s) and also
each transaction at once (``--mixed-mining``), so phase deadlines pass on the clock, as on a real
chain, without any node sending a transaction; ``block_time=None`` (`--block-time 0`) is the old
mine-per-transaction chain, where time moves only when someone transacts.

The IPFS network (issue 23): every node (the initiator, each trainer, each validator) has its own
Helia peer (scripts/ipfs_node/server.mjs: libp2p TCP + bitswap behind the Kubo-RPC subset the store
speaks), its repo under ``<state_dir>/ipfs/<name>``, API and swarm on free loopback ports. The peers
form a full mesh (``connect_mesh``: every peer dials every other and redials it when lost), so a
block is one bitswap hop from wherever it is held: what a node publishes stays on its own peer
until someone asks for it. See ``connect_mesh`` for what replaces the mesh at 100 nodes.

A wide-area network on one machine (issue 23, `concord devnet up --netns`): every IPFS peer runs in
its own Linux network namespace (scripts/netns.py), joined by a veth to one bridge, its link
rate-limited both ways with tbf (the initiator's and validators' 1000 Mbit/s, every other node's
(the trainers') alternating 100 and 20 Mbit/s: bench network's mix); API and swarm on its
namespace's address, ports 5001 and 4001 inside every namespace. Anvil listens on 127.0.0.1 and on
the bridge's address (``rpc_url``), so the chain is reached from every namespace and from the root
one. A node runs inside its peer's namespace with `ip netns exec <peer netns> concord trainer run
--devnet <state>/devnet.json --ipfs-api <peer api> ...` (the state file names both), or from the
root namespace, which reaches every peer's API over the bridge. The namespaces' tag is in the
state file: ``down`` stops the daemons by PID, then removes the namespaces, veths, qdiscs and the
bridge (netns.cleanup); a failed or interrupted ``up`` removes them too.

`concord devnet up` is the one command that leaves processes running when it ends, on
purpose: they belong to the state file and ``down`` stops them. Ctrl-C, SIGTERM or SIGHUP
before the devnet is complete stop what was started and leave no state file (never half a devnet).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import logging
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import requests

from concord.client.runtime import paths, procs
from concord.client.runtime.procs import Daemon, ProcError
from concord.client.units import AmountError, TokenAmount, amount_arg, format_amount, parse_amount
from scripts import NODE_BIN, REPO_ROOT, netns

log = logging.getLogger(__name__)

DEFAULT_STATE_DIR = paths.devnet_dir()  # per-user ($CONCORD_HOME/devnet); --state-dir overrides
STATE_FILE = paths.NETWORK_FILE  # the devnet JSON is also the nodes' network file
ANVIL_NATIVE = REPO_ROOT / "node_modules" / "@foundry-rs" / "anvil-linux-amd64" / "bin" / "anvil"
DEVNET_MINT = 1_000_000 * 10**18  # DevToken minted to each default account


class DevnetRunning(ProcError):
    def __init__(self, state_file: Path, pids: list[int]) -> None:
        super().__init__(f"a devnet is already running (pids {pids}, {state_file}): run `concord devnet down` first")
        self.state_file, self.pids = state_file, pids


class NoDevnet(ProcError):
    def __init__(self, state_file: Path) -> None:
        super().__init__(f"no devnet state at {state_file}: run `concord devnet up` first")
        self.state_file = state_file


DEFAULT_BLOCK_TIME = 1.0  # seconds per block on the devnet's clock (None: mine per transaction only)
INITIATOR_PEER = "initiator"  # the IPFS peer ``up`` always starts, on Ports.ipfs_api (Devnet.ipfs_api)


@dataclass(frozen=True)
class Ports:
    anvil: int = 8545
    ipfs_api: int = 5001  # the initiator's IPFS peer (every other peer's API port is a free one)
    ipfs_gateway: int = 8081  # js-ipfs only (start_ipfs, the tests' shared daemon); Helia peers serve none
    ipfs_grpc: int = 5003  # js-ipfs only, as ipfs_gateway
    ipfs_swarm: int = 0  # the initiator's swarm port (0: a free one)


@dataclass(frozen=True)
class Devnet:
    """What ``up`` started; serialized as the devnet JSON file."""

    rpc_url: str
    chain_id: int
    ipfs_api: str  # multiaddr for ipfshttpclient.Client
    ipfs_api_url: str  # http://127.0.0.1:P
    state_dir: str
    deployment: dict  # client.chain.deploy.Deployment.to_json()
    token: str  # DevToken address
    accounts: list[str]  # default accounts funded with ETH and DevToken
    daemons: list[dict] = field(default_factory=list)
    peers: dict = field(default_factory=dict)  # node name -> Peer.to_json(): each node's own IPFS peer
    block_time: float | None = None  # seconds per block (None: mine per transaction)
    netns: str = ""  # `up --netns`: the tag of its namespaces and bridge (scripts.netns; "" without)

    def to_json(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_json(obj: dict) -> Devnet:
        return Devnet(**obj)

    def daemon_list(self) -> list[Daemon]:
        return [Daemon.from_json(d) for d in self.daemons]

    def peer(self, name: str) -> Peer:
        """Node ``name``'s own IPFS peer (``up(peers=...)`` or ``add_peers``)."""
        if name not in self.peers:
            raise NoPeer(name, sorted(self.peers))
        return Peer.from_json(self.peers[name])


class NoPeer(ProcError):
    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(f"the devnet has no IPFS peer for node {name!r} (it has {known}): add it with add_peers")
        self.name, self.known = name, known


# ----------------------------------------------------------------------------- daemons


def anvil_binary() -> Path:
    """The native anvil binary (the npm `.bin/anvil` is a node wrapper that would outlive a kill)."""
    return procs.find_binary("anvil", [ANVIL_NATIVE, NODE_BIN / "anvil"])


def jsipfs_binary() -> Path:
    return procs.find_binary("jsipfs", [NODE_BIN / "jsipfs"])


def rpc_ready(url: str) -> bool:
    try:
        r = requests.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}, timeout=1)
        return r.ok and "result" in r.json()
    except (requests.RequestException, ValueError):
        return False


def ipfs_ready(api_url: str) -> bool:
    try:
        return requests.post(f"{api_url}/api/v0/id", timeout=1).ok
    except requests.RequestException:
        return False


def start_ready(
    name: str,
    argv: Sequence[str],
    log_path: Path,
    ready: Callable[[], bool],
    timeout: float,
    env: Mapping[str, str] | None = None,
) -> Daemon:
    """``argv`` started as daemon ``name`` (procs.start) and waited on until ``ready()``; stopped
    again if it never gets there (or the wait is interrupted)."""
    daemon, proc = procs.start(name, argv, log_path, env=env)
    try:
        procs.wait_ready(daemon, proc, ready, timeout)
    except BaseException:
        procs.stop(daemon)
        raise
    return daemon


def start_anvil(
    port: int,
    log_path: Path,
    accounts: int = 10,
    block_time: float | None = None,
    timeout: float = 20.0,
    extra_args: Sequence[str] = (),
    mixed: bool = False,
    also_on: str | None = None,
) -> Daemon:
    """Anvil on 127.0.0.1:port (and ``also_on``:port: a namespace bridge's address), ready to answer
    eth_chainId. ``block_time``: a block every that many seconds (interval mining; with ``mixed``,
    each transaction is also mined at once)."""
    procs.require_free(port, "anvil", "--anvil-port")
    hosts = "127.0.0.1" if also_on is None else f"127.0.0.1,{also_on}"
    argv = [str(anvil_binary()), "--host", hosts, "--port", str(port), "--accounts", str(accounts)]
    if block_time is not None:
        argv += ["--block-time", f"{block_time:g}"]
        if mixed:
            argv.append("--mixed-mining")
    argv += list(extra_args)
    return start_ready("anvil", argv, log_path, lambda: rpc_ready(f"http://127.0.0.1:{port}"), timeout)


def ipfs_config(ports: Ports) -> dict:
    """js-ipfs init config: loopback only, no bootstrap, no discovery.

    Swarm listens nowhere: the daemon runs --offline (a single-node store), and in this
    npm tree libp2p's TCP transport rejects every swarm address (mafmt/multiaddr version
    split), which with any swarm address configured aborts the start-up.
    """
    return {
        "Addresses": {
            "Swarm": [],
            "Announce": [],
            "NoAnnounce": [],
            "API": f"/ip4/127.0.0.1/tcp/{ports.ipfs_api}",
            "Gateway": f"/ip4/127.0.0.1/tcp/{ports.ipfs_gateway}",
            "RPC": f"/ip4/127.0.0.1/tcp/{ports.ipfs_grpc}",
            "Delegates": [],
        },
        "Bootstrap": [],
        "Discovery": {"MDNS": {"Enabled": False}, "webRTCStar": {"Enabled": False}},
        "Swarm": {"DisableNatPortMap": True},
    }


def start_ipfs(repo: Path, ports: Ports, log_path: Path, timeout: float = 60.0) -> Daemon:
    """A fresh js-ipfs repo at ``repo`` and its daemon, ready to answer /api/v0/id."""
    for port, what, flag in [
        (ports.ipfs_api, "the IPFS API", "--ipfs-port"),
        (ports.ipfs_gateway, "the IPFS gateway", "--ipfs-gateway-port"),
        (ports.ipfs_grpc, "the IPFS gRPC API", "--ipfs-grpc-port"),
    ]:
        procs.require_free(port, what, flag)
    binary = jsipfs_binary()
    if repo.exists():
        shutil.rmtree(repo)  # an old repo would keep its old ports: --init-config only applies on init
    repo.parent.mkdir(parents=True, exist_ok=True)
    cfg = repo.parent / f"{repo.name}-config.json"
    cfg.write_text(json.dumps(ipfs_config(ports), indent=2))
    argv = [
        str(binary),
        "daemon",
        "--init-config",
        str(cfg),
        "--init-profile",
        "test",
        "--offline",
        "--enable-preload=false",
    ]
    api_url = f"http://127.0.0.1:{ports.ipfs_api}"
    return start_ready("ipfs", argv, log_path, lambda: ipfs_ready(api_url), timeout, env={"IPFS_PATH": str(repo)})


REPO_LOCK = "repo.lock"  # js-ipfs (proper-lockfile): a directory whose mtime the holder refreshes every 10 s


class RepoLocked(ProcError):
    def __init__(self, repo: Path, owner: Daemon) -> None:
        super().__init__(f"IPFS repo {repo} is still held by {owner.name} pid {owner.pid}: stop it first")
        self.repo, self.owner = repo, owner


def clear_stale_repo_lock(repo: Path, owner: Daemon) -> bool:
    """Remove ``repo``'s js-ipfs lock when ``owner`` (the daemon that held it) is dead; True if removed.

    A SIGKILLed js-ipfs leaves its lock behind, and the lock only counts as stale 20 s after
    its last refresh, so a prompt restart on the same repo would be refused. The lock is
    removed only when ``owner`` was started on this repo and its PID (checked with its start
    time, so a recycled PID does not count) is gone; a live owner raises RepoLocked. The caller
    vouches that ``owner`` is the daemon it started on ``repo``.
    """
    lock = Path(repo) / REPO_LOCK
    if not lock.exists():
        return False
    if procs.is_ours(owner):
        raise RepoLocked(Path(repo), owner)
    if lock.is_dir():
        shutil.rmtree(lock)
    else:
        lock.unlink()
    log.warning("removed the stale lock %s left by %s pid %d (no longer running)", lock, owner.name, owner.pid)
    return True


def restart_ipfs(repo: Path, previous: Daemon, api_url: str, log_path: Path, timeout: float = 60.0) -> Daemon:
    """Start js-ipfs again on its existing ``repo`` (same config, ports and content) after ``previous``
    stopped or was killed; a lock the dead daemon left behind is cleared first."""
    clear_stale_repo_lock(repo, previous)
    return start_ready(
        "ipfs", previous.argv, log_path, lambda: ipfs_ready(api_url), timeout, env={"IPFS_PATH": str(repo)}
    )


# ----------------------------------------------------------------------------- a Helia peer per node (issue 23)
# scripts/ipfs_node/server.mjs: a Helia 7 node (libp2p TCP + bitswap) behind the Kubo-RPC subset the
# store speaks, for one IPFS peer per trainer, validator or initiator (js-ipfs 0.66.1 runs offline only).
# Its header says what it serves. Not wired into `up` yet: these are the building blocks.

HELIA_SERVER = REPO_ROOT / "scripts" / "ipfs_node" / "server.mjs"


class PeerAddressError(ProcError):
    def __init__(self, text: str) -> None:
        super().__init__(f"IPFS peer {text!r}: expected a multiaddr /ip4/HOST/tcp/PORT/p2p/<peer id>")
        self.text = text


def node_binary() -> Path:
    return procs.find_binary("node")


def helia_argv(
    repo: Path, api_port: int, swarm_port: int, peers: Sequence[str] = (), host: str = "127.0.0.1"
) -> list[str]:
    """The command line of a Helia peer: API and swarm on ``host`` (a network namespace's address
    in scripts/netns.py, else loopback), the peers it dials (and redials)."""
    for peer in peers:
        parts = peer.strip("/").split("/")
        if len(parts) != 6 or parts[0] not in ("ip4", "ip6", "dns4") or parts[2] != "tcp" or parts[4] != "p2p":
            raise PeerAddressError(peer)
    argv = [
        str(node_binary()),
        str(HELIA_SERVER),
        "--repo",
        str(repo),
        "--api",
        f"/ip4/{host}/tcp/{api_port}",
        "--swarm",
        f"/ip4/{host}/tcp/{swarm_port}",
    ]
    for peer in peers:
        argv += ["--peer", peer]
    return argv


def start_helia(
    repo: Path,
    api_port: int,
    swarm_port: int,
    peers: Sequence[str] = (),
    log_path: Path | None = None,
    timeout: float = 60.0,
    host: str = "127.0.0.1",
    wrap: Sequence[str] = (),
) -> Daemon:
    """A Helia peer on ``repo`` (created if new; kept, with its peer ID and blocks, if not), ready to
    answer /api/v0/id. ``peers``: swarm multiaddrs ending in /p2p/<id> (``helia_swarm_addr``).
    ``host``: the address its API and swarm listen on. ``wrap``: a command it runs under, e.g.
    ``ip netns exec NS`` (scripts/netns.py); its ports then live in that namespace, not checked here."""
    if not wrap:
        procs.require_free(api_port, "the IPFS API", "--ipfs-port", host)
        procs.require_free(swarm_port, "the IPFS swarm", "--ipfs-swarm-port", host)
    argv = [*wrap, *helia_argv(repo, api_port, swarm_port, peers, host)]
    repo.mkdir(parents=True, exist_ok=True)
    log_path = repo.parent / f"{repo.name}.log" if log_path is None else log_path
    api_url = f"http://{host}:{api_port}"
    return start_ready("helia", argv, log_path, lambda: ipfs_ready(api_url), timeout)


def helia_swarm_addr(api_url: str, timeout: float = 5.0, host: str = "127.0.0.1") -> str:
    """The swarm multiaddr (with /p2p/<peer id>) another peer dials to reach the node at ``api_url``
    (its address on ``host``)."""
    r = requests.post(f"{api_url}/api/v0/id", timeout=timeout)
    r.raise_for_status()
    addrs = [a for a in r.json()["Addresses"] if a.startswith(f"/ip4/{host}/tcp/")]
    if not addrs:
        raise PeerAddressError(f"{api_url} lists no {host} swarm address: {r.json()['Addresses']}")
    return str(addrs[0])


def swarm_connect(api_url: str, peer: str, timeout: float = 10.0) -> None:
    """Connect the node at ``api_url`` to ``peer`` now (Kubo's swarm/connect); it redials it if lost."""
    params = {"arg": peer, "timeout": f"{int(timeout * 1000)}ms"}
    r = requests.post(f"{api_url}/api/v0/swarm/connect", params=params, timeout=timeout + 2)
    if not r.ok:
        raise ProcError(f"IPFS API {api_url}: swarm/connect {peer} failed: {r.text[:200]}")


def swarm_peers(api_url: str, timeout: float = 5.0) -> list[str]:
    """Peer IDs the node at ``api_url`` is connected to."""
    r = requests.post(f"{api_url}/api/v0/swarm/peers", timeout=timeout)
    r.raise_for_status()
    return [str(p["Peer"]) for p in r.json()["Peers"]]


# ----------------------------------------------------------------------------- one peer per node, in a mesh


@dataclass(frozen=True)
class Peer:
    """One node's own IPFS peer: how its node talks to it (``api``) and how other peers dial it (``swarm``)."""

    name: str  # the node it belongs to (INITIATOR_PEER, "trainer-1", "validator-2", ...)
    api: str  # /ip4/127.0.0.1/tcp/P/http: what the node's --ipfs-api (and Store) takes
    api_url: str  # http://127.0.0.1:P
    swarm: str  # /ip4/127.0.0.1/tcp/S/p2p/<peer id>
    repo: str  # its repo (blocks, pins, its key: a restart on it keeps the peer ID)
    pid: int
    netns: str = ""  # `up --netns`: the network namespace it (and its node, if run there) lives in

    @property
    def peer_id(self) -> str:
        return self.swarm.rsplit("/", 1)[1]

    def to_json(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_json(obj: dict) -> Peer:
        return Peer(**obj)


def free_ports(count: int, taken: Sequence[int] = ()) -> list[int]:
    """``count`` distinct ports the OS says are free now, none of ``taken`` (the kernel may hand out a
    port twice in a row once its socket is closed; two peers must not be given the same one)."""
    out: list[int] = []
    while len(out) < count:
        port = procs.free_port()
        if port not in out and port not in taken:
            out.append(port)
    return out


PEER_DAEMON = "ipfs"  # the daemon name of every node's IPFS peer (as the one js-ipfs daemon was called)
MESH_TIMEOUT_S = 30.0  # every peer connected to every other, after the last one answers its API


def _connect_until(peer: Peer, other: Peer, deadline: float) -> None:
    """``swarm_connect`` peer -> other, tried again until ``deadline``: when two peers dial each other at
    the same moment, libp2p may reset one of the two connections (ECONNRESET), a race and not a fault."""
    while True:
        try:
            swarm_connect(peer.api_url, other.swarm, timeout=max(1.0, min(10.0, deadline - time.monotonic())))
            return
        except (ProcError, requests.RequestException) as err:
            if time.monotonic() >= deadline:
                raise ProcError(f"IPFS peer {peer.name}: could not connect to {other.name}: {err}") from err
            log.info("IPFS peer %s -> %s: %s; trying again", peer.name, other.name, err)
            time.sleep(0.3)


def connect_mesh(peers: Sequence[Peer], timeout: float = MESH_TIMEOUT_S) -> None:
    """Connect every peer to every other (``swarm_connect`` both ways: each then redials the other when
    the link drops or the other restarts on its repo) and wait until each sees all the others.

    Topology: a full mesh, n(n-1)/2 TCP connections. Right for the devnet's handful of nodes: a block
    is one bitswap hop from any peer that holds it, and a want reaches every holder at once. At 100
    nodes a full mesh is ~5,000 connections and every want is broadcast to 99 peers, so the mesh gives
    way to a bounded degree: each peer dials the task's bootstrap peers (the initiator's and the
    validators' peers, listed in the task spec or on chain beside each validator's registration) and
    keeps ~8-16 connections; it finds who holds a CID through a DHT (libp2p kad-dht provider records:
    a trainer announces its submission's root, a validator or a trainer that fetched a round model
    announces that model) or a rendezvous point per task, and dials the holder for that fetch only.
    Bitswap then asks the connected holders, not the whole network."""
    deadline = time.monotonic() + timeout
    for peer in peers:
        for other in peers:
            if other.name != peer.name:
                _connect_until(peer, other, deadline)
    for peer in peers:
        want = {o.peer_id for o in peers if o.name != peer.name}
        while not want <= set(swarm_peers(peer.api_url)):
            if time.monotonic() >= deadline:
                missing = sorted(want - set(swarm_peers(peer.api_url)))
                raise ProcError(
                    f"IPFS peer {peer.name} ({peer.api_url}) not connected to {missing} after {timeout:.0f}s"
                )
            time.sleep(0.1)


def start_peers(
    root: Path,
    names: Sequence[str],
    api_ports: Mapping[str, int] | None = None,
    swarm_ports: Mapping[str, int] | None = None,
    started: list[Daemon] | None = None,
    mesh_with: Sequence[Peer] = (),
    timeout: float = 60.0,
    log_paths: Mapping[str, Path] | None = None,
) -> list[Peer]:
    """A Helia peer for each of ``names`` (repo ``root/<name>``, log ``root/<name>.log`` unless
    ``log_paths`` names another), started at once, each ready to answer its API, then joined in a full
    mesh with each other and ``mesh_with`` (peers already running); returned in the order of ``names``.
    Each runs as a daemon named PEER_DAEMON.

    Ports: ``api_ports`` / ``swarm_ports`` by name where given (checked free: a busy one is a PortBusy
    naming --ipfs-port or --ipfs-swarm-port), the rest distinct free ports. ``started``: each daemon is
    appended as soon as it exists and the caller stops them (all or nothing is the caller's); without
    it, a failure (or a signal) stops every peer this call started before it raises."""
    if len(set(names)) != len(names):
        raise ProcError(f"IPFS peer names must be distinct, got {list(names)}")
    api_ports, swarm_ports = dict(api_ports or {}), dict(swarm_ports or {})
    for name, port in api_ports.items():
        procs.require_free(port, f"the IPFS API of {name}", "--ipfs-port")
    for name, port in swarm_ports.items():
        procs.require_free(port, f"the IPFS swarm of {name}", "--ipfs-swarm-port")
    taken = [*api_ports.values(), *swarm_ports.values()]
    spare = iter(free_ports(2 * len(names), taken))
    ours: list[Daemon] = []
    try:
        launched = []
        for name in names:
            repo = Path(root) / name
            repo.mkdir(parents=True, exist_ok=True)
            api_port = api_ports.get(name) or next(spare)
            swarm_port = swarm_ports.get(name) or next(spare)
            argv = helia_argv(repo, api_port, swarm_port)
            log_path = (log_paths or {}).get(name, Path(root) / f"{name}.log")
            daemon, proc = procs.start(PEER_DAEMON, argv, log_path)
            ours.append(daemon)
            if started is not None:
                started.append(daemon)
            launched.append((name, repo, api_port, daemon, proc))
        peers = []
        for name, repo, api_port, daemon, proc in launched:
            url = f"http://127.0.0.1:{api_port}"
            procs.wait_ready(daemon, proc, functools.partial(ipfs_ready, url), timeout)
            api = f"/ip4/127.0.0.1/tcp/{api_port}/http"
            peers.append(Peer(name, api, url, helia_swarm_addr(url), str(repo), daemon.pid))
        connect_mesh([*mesh_with, *peers])
        return peers
    except BaseException:
        if started is None:
            with procs.signals_ignored():
                procs.stop_all(ours)
        raise


def add_peers(state_dir: Path, names: Sequence[str]) -> Devnet:
    """Give each node of ``names`` that has none yet its own IPFS peer on the running devnet at
    ``state_dir``, meshed with the peers already there, and record them in its state file (``down``
    stops them). All or nothing: a failure or a signal stops the peers this call started and leaves
    the state file as it was. Returns the devnet as now recorded."""
    state_dir = Path(state_dir).resolve()
    net = load(state_dir)
    new = [n for n in dict.fromkeys(names) if n not in net.peers]
    if not new:
        return net
    if net.netns:
        raise ProcError(
            f"the --netns devnet at {state_dir} has peers {sorted(net.peers)}, not {new}: a --netns devnet's "
            "peers are all started by `up` (--peer NAME)"
        )
    running = [Peer.from_json(p) for p in net.peers.values()]
    added: list[Daemon] = []
    try:
        peers = start_peers(state_dir / "ipfs", new, started=added, mesh_with=running)
        net = dataclasses.replace(
            net,
            daemons=[*net.daemons, *(d.to_json() for d in added)],
            peers={**net.peers, **{p.name: p.to_json() for p in peers}},
        )
        write_state(net)
        return net
    except BaseException:
        with procs.signals_ignored():
            procs.stop_all(added)
        raise


# ----------------------------------------------------------------------------- namespaces (`up --netns`)


API_PORT = 5001  # every namespace has its own ports: the same numbers on every node
SWARM_PORT = 4001
VALIDATOR_MBIT = 1000.0
TRAINER_MBIT = (100.0, 20.0)


@dataclass(frozen=True)
class NetnsPeer:
    """One node of the network: its namespace and its own Helia daemon."""

    node: netns.Node
    role: str  # "validator" or "trainer"
    api: str  # /ip4/A/tcp/5001/http: what Store and --ipfs-api take
    api_url: str  # http://A:5001
    swarm: str  # /ip4/A/tcp/4001/p2p/<id>
    daemon: procs.Daemon


def build_network(
    net: netns.Network,
    work: Path,
    roles: Sequence[tuple[str, str, float]],
    both_ways: bool = True,
    connect_timeout: float = 60.0,
) -> dict[str, NetnsPeer]:
    """One namespace and Helia daemon per ``(name, role, mbit)``, full mesh (each daemon dials every
    one started before it; connections carry both ways), waited on until every daemon sees every
    other. Returns the peers by name: the extension point for node processes (run them with
    ``net.run``/``net.start`` on ``peer.node``, ``--ipfs-api peer.api``, the chain at ``net.gateway``)."""
    nodes = [
        (net.add(name, upload_mbit=mbit, download_mbit=mbit if both_ways else None), role) for name, role, mbit in roles
    ]

    def start(node: netns.Node, role: str) -> NetnsPeer:
        log_path = work / f"{node.name}.log"
        daemon = start_helia(
            work / node.name,
            API_PORT,
            SWARM_PORT,
            (),
            log_path,
            120.0,
            host=node.address,
            wrap=node.wrap,
        )
        net.track(daemon)
        url = f"http://{node.address}:{API_PORT}"
        swarm = helia_swarm_addr(url, host=node.address)
        return NetnsPeer(node, role, f"/ip4/{node.address}/tcp/{API_PORT}/http", url, swarm, daemon)

    with ThreadPoolExecutor(max_workers=len(nodes)) as pool:  # the daemons start at once, not one by one
        started = [pool.submit(start, node, role) for node, role in nodes]
        peers = {f.result().node.name: f.result() for f in started}
    order = list(peers.values())
    for i, p in enumerate(order):  # each dials every one before it (and keeps redialing it)
        for q in order[:i]:
            swarm_connect(p.api_url, q.swarm)
    deadline = time.monotonic() + connect_timeout
    for p in peers.values():
        while len(set(swarm_peers(p.api_url))) < len(peers) - 1:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{p.node.name} sees {swarm_peers(p.api_url)} of {len(peers) - 1} peers")
            time.sleep(0.2)
    return peers


def roles_of(trainers: int, validators: int, validator_mbit: float, trainer_mbit: Sequence[float]) -> list:
    out = [(f"v{i}", "validator", validator_mbit) for i in range(validators)]
    out += [(f"t{i}", "trainer", trainer_mbit[i % len(trainer_mbit)]) for i in range(trainers)]
    return out


def link_mbit(names: Sequence[str]) -> list[tuple[str, str, float]]:
    """(name, role, Mbit/s) of each peer's link, both ways: the initiator's and the validators' (names
    starting "validator") at VALIDATOR_MBIT, every other node's (the trainers') at
    TRAINER_MBIT in turn (1000; 100, 20, 100, ...)."""
    out, trainers = [], 0
    for name in names:
        if name == INITIATOR_PEER or name.startswith("validator"):
            out.append((name, "validator", VALIDATOR_MBIT))
        else:
            out.append((name, "trainer", TRAINER_MBIT[trainers % len(TRAINER_MBIT)]))
            trainers += 1
    return out


def check_netns_names(names: Sequence[str]) -> None:
    """A namespace is named after its peer (``<tag>-<name>``): ProcError for a name that cannot be one."""
    for name in names:
        if not name or not all(c.isalnum() or c in "-_" for c in name) or len(name) > 40:
            raise ProcError(f"--peer {name!r}: with --netns a peer's name is 1-40 letters, digits, - or _")


def open_network() -> netns.Network:
    """A fresh bridge for `up --netns` (nothing else yet); ProcError where namespaces are refused."""
    try:
        return netns.Network().open()
    except netns.NetnsError as e:
        raise ProcError(f"--netns: {e}") from e


def start_netns_peers(network: netns.Network, root: Path, names: Sequence[str], started: list[Daemon]) -> list[Peer]:
    """A namespace with a rate-limited link (``link_mbit``) and a Helia peer in it for each of ``names``
    (repo ``root/<name>``, log ``root/<name>.log``), in a full mesh: bench network's builder
    (build_network), one seam for namespaced peers. Each daemon is appended to
    ``started`` (also on a failure: the caller stops them and closes ``network``)."""
    check_netns_names(names)
    try:
        built = build_network(network, root, link_mbit(names))
    except (RuntimeError, netns.NetnsError, requests.RequestException) as e:
        raise ProcError(f"--netns: the IPFS peers did not come up in their namespaces: {e}") from e
    finally:
        started += [d for d in network.daemons if d not in started]
    return [
        Peer(n, built[n].api, built[n].api_url, built[n].swarm, str(root / n), built[n].daemon.pid, built[n].node.netns)
        for n in names
    ]


# ----------------------------------------------------------------------------- up / down


def state_file(state_dir: Path) -> Path:
    return Path(state_dir) / STATE_FILE


def load(state_dir: Path = DEFAULT_STATE_DIR) -> Devnet:
    path = state_file(state_dir)
    if not path.exists():
        raise NoDevnet(path)
    return Devnet.from_json(json.loads(path.read_text()))


def _refuse_if_running(state_dir: Path) -> None:
    path = state_file(state_dir)
    if not path.exists():
        return
    live = [d.pid for d in Devnet.from_json(json.loads(path.read_text())).daemon_list() if procs.is_ours(d)]
    if live:
        raise DevnetRunning(path, live)


def tcp_port(text: str) -> int:
    """argparse type: a TCP port 1..65535 (a bad one exits naming the flag, before anything starts)."""
    try:
        port = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"must be in 1..65535, got {port}")
    return port


def write_state(net: Devnet) -> None:
    """The devnet JSON, replaced whole (a reader never sees half a file)."""
    path = state_file(Path(net.state_dir))
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(net.to_json(), indent=2) + "\n")
    tmp.replace(path)


def block_seconds(text: str) -> float | None:
    """argparse type of --block-time: seconds > 0, or 0 for mine-per-transaction (None)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if value != value or value < 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be >= 0 seconds (0: mine per transaction), got {text}")
    return None if value == 0 else value


def up(
    state_dir: Path = DEFAULT_STATE_DIR,
    ports: Ports = Ports(),
    accounts: int = 10,
    block_time: float | None = DEFAULT_BLOCK_TIME,
    hand_over: bool = False,
    peers: Sequence[str] = (),
    use_netns: bool = False,
) -> Devnet:
    """Start anvil (a block every ``block_time`` s, and each transaction at once; None: per transaction
    only) and the IPFS peers (the initiator's on ``ports.ipfs_api``, one more per name of ``peers``, in a
    full mesh), deploy the contracts and the DevToken, mint, write the state file. ``use_netns``: each
    peer in its own network namespace on a bridge, its link rate-limited (module doc; ``ports.ipfs_api``
    and ``ports.ipfs_swarm`` then unused: 5001 and 4001 in every namespace), the chain on the bridge too.

    All or nothing: an error, Ctrl-C or SIGTERM on the way up stops whatever it started and
    leaves no state file. ``hand_over``: once complete, the daemons belong to the state file
    (``down`` stops them) instead of to this process, so ``procs.no_orphans`` leaves them running.
    """
    from concord.client.chain import deploy  # deferred: deploy compiles the contracts

    if block_time is not None and not block_time > 0:
        raise ProcError(f"--block-time must be > 0 seconds (or none: mine per transaction), got {block_time}")
    names = [INITIATOR_PEER, *dict.fromkeys(n for n in peers if n != INITIATOR_PEER)]
    state_dir = Path(state_dir).resolve()
    _refuse_if_running(state_dir)
    anvil_binary()
    node_binary()  # both binaries checked before anything starts
    if use_netns:
        check_netns_names(names)
    state_dir.mkdir(parents=True, exist_ok=True)
    started: list[Daemon] = []
    before = {d.pid for d in procs.owned()}
    wrote_state = False
    network: netns.Network | None = None
    try:
        network = open_network() if use_netns else None
        gateway = None if network is None else network.gateway
        log_path = state_dir / "anvil.log"
        started.append(start_anvil(ports.anvil, log_path, accounts, block_time, mixed=True, also_on=gateway))
        ipfs_root = state_dir / "ipfs"
        if ipfs_root.exists():
            shutil.rmtree(ipfs_root)  # a new devnet, new peers: no blocks or peer IDs of an earlier chain
        if network is None:
            swarm = {INITIATOR_PEER: ports.ipfs_swarm} if ports.ipfs_swarm else {}
            logs = {INITIATOR_PEER: state_dir / "ipfs.log"}  # where the one js-ipfs daemon logged
            api_ports = {INITIATOR_PEER: ports.ipfs_api}
            started_peers = start_peers(ipfs_root, names, api_ports, swarm, started, log_paths=logs)
        else:
            ipfs_root.mkdir(parents=True)
            started_peers = start_netns_peers(network, ipfs_root, names, started)
        initiator = started_peers[0]
        rpc_url = f"http://{gateway or '127.0.0.1'}:{ports.anvil}"
        result = deploy.deploy_devnet(rpc_url, accounts, DEVNET_MINT)
        devnet = Devnet(
            rpc_url=rpc_url,
            chain_id=result.deployment.chain_id,
            ipfs_api=initiator.api,
            ipfs_api_url=initiator.api_url,
            state_dir=str(state_dir),
            deployment=result.deployment.to_json(),
            token=result.deployment.token,
            accounts=result.accounts,
            daemons=[d.to_json() for d in started],
            peers={p.name: p.to_json() for p in started_peers},
            block_time=block_time,
            netns="" if network is None else network.tag,
        )
        wrote_state = True
        write_state(devnet)
        (state_dir / "deployment.json").write_text(json.dumps(result.deployment.to_json(), indent=2) + "\n")
        if hand_over:
            procs.disown(*started)
        return devnet
    except BaseException:
        with procs.signals_ignored():  # a second signal must not leave half a devnet
            # ``started`` misses a daemon whose start a signal interrupted; procs has it on record.
            fresh = [d for d in procs.owned() if d.pid not in before and d not in started]
            procs.stop_all([*started, *fresh])
            # return only once the ports asked for are released too (a caller may start again at once)
            held = {"anvil": [ports.anvil], PEER_DAEMON: [ports.ipfs_api]}
            ours = sorted({p for d in [*started, *fresh] for p in held.get(d.name, [])})
            busy = procs.wait_ports_free(ours)
            if busy:
                log.warning("ports %s still busy after stopping what `devnet up` started", busy)
            if network is not None:
                network.close()  # its daemons, then its namespaces, veths, qdiscs and bridge
            if wrote_state:
                state_file(state_dir).unlink(missing_ok=True)
        raise


def down(state_dir: Path = DEFAULT_STATE_DIR) -> list[int]:
    """Stop exactly the daemons ``up`` recorded, then (`up --netns`) remove its namespaces, veths,
    qdiscs and bridge (killing whatever still runs inside them: a node started there with `ip netns
    exec` goes with its namespace); returns the PIDs that were stopped."""
    devnet = load(Path(state_dir).resolve())
    stopped = [d.pid for d in reversed(devnet.daemon_list()) if procs.stop(d)]
    if devnet.netns:
        removed = netns.cleanup(devnet.netns)
        log.info("removed %s", removed)
    state_file(state_dir).unlink()
    return stopped


class BadAddress(ProcError):
    def __init__(self, text: str) -> None:
        super().__init__(f"ADDRESS: expected 0x + 40 hex digits (an account address), got {text!r}")


DEFAULT_FUND_ETH = "10"
DEFAULT_FUND_TOKENS = "1000"


@dataclass(frozen=True)
class Funded:
    address: str
    eth: int  # wei added
    tokens: int  # token base units minted
    eth_balance: int
    token_balance: int
    symbol: str
    decimals: int


def fund(state_dir: Path, address: str, eth: TokenAmount | None, tokens: TokenAmount | None) -> Funded:
    """Give ``address`` ETH for gas (anvil_setBalance: its balance + ``eth``) and DevTokens (minted by the
    deployer, the token's owner): what a key made with `concord keys new` needs to stake on the devnet."""
    from eth_utils.address import is_address, to_checksum_address

    from concord.client import chain
    from concord.client.chain import keys

    if not is_address(address):
        raise BadAddress(address)
    addr = to_checksum_address(address)
    net = load(Path(state_dir).resolve())
    client = chain.connect(net.rpc_url, chain.Deployment.from_json(net.deployment))
    decimals, symbol = client.token.decimals(), client.token.symbol()
    wei = 0 if eth is None else eth.units(18)
    units = 0 if tokens is None else tokens.units(decimals)
    if wei:
        have = int(client.rpc.call("eth_getBalance", addr, "latest"), 16)
        client.rpc.call("anvil_setBalance", addr, hex(have + wei))
    if units:
        client.token.mint(client.signer(keys.devnet_account(0)), addr, units)
    return Funded(
        addr,
        wei,
        units,
        int(client.rpc.call("eth_getBalance", addr, "latest"), 16),
        client.token.balance_of(addr),
        symbol,
        decimals,
    )


def parser() -> argparse.ArgumentParser:
    """`concord devnet up|down|status`, `concord devnet fund ADDRESS [--eth N] [--tokens N]`."""
    p = argparse.ArgumentParser(
        prog="concord devnet", description="local devnet: Anvil on a clock + IPFS peers (Helia) in a mesh"
    )
    p.add_argument("action", choices=["up", "down", "status", "fund"])
    p.add_argument("address", nargs="?", default=None, help="fund: the account to fund (0x...)")
    p.add_argument(
        "--eth",
        type=amount_arg("--eth", allow_zero=True),
        default=None,
        help=f"fund: ETH to add for gas (without --eth and --tokens: {DEFAULT_FUND_ETH} ETH and "
        f"{DEFAULT_FUND_TOKENS} tokens)",
    )
    p.add_argument(
        "--tokens",
        type=amount_arg("--tokens", allow_zero=True),
        default=None,
        help="fund: DevTokens to mint to it (whole tokens, or 1000base)",
    )
    p.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
    p.add_argument("--anvil-port", type=tcp_port, default=Ports.anvil)
    p.add_argument("--ipfs-port", type=tcp_port, default=Ports.ipfs_api, help="the initiator's IPFS HTTP API port")
    p.add_argument(
        "--ipfs-swarm-port", type=tcp_port, default=None, help="the initiator's IPFS swarm port (default: free)"
    )
    p.add_argument("--ipfs-gateway-port", type=tcp_port, default=Ports.ipfs_gateway, help=argparse.SUPPRESS)
    p.add_argument("--ipfs-grpc-port", type=tcp_port, default=Ports.ipfs_grpc, help=argparse.SUPPRESS)
    p.add_argument(
        "--peer",
        action="append",
        default=[],
        metavar="NAME",
        help="up: one more IPFS peer, for node NAME (repeatable; the initiator's is always started)",
    )
    p.add_argument("--accounts", type=int, default=10, help="default anvil accounts to fund")
    p.add_argument(
        "--netns",
        action="store_true",
        help="up: each IPFS peer in its own network namespace on a bridge, its link rate-limited "
        "(validators and the initiator 1000 Mbit/s, trainers 100 and 20); needs root",
    )
    p.add_argument(
        "--block-time",
        type=block_seconds,
        default=DEFAULT_BLOCK_TIME,
        help=f"seconds per block; transactions are also mined at once (default {DEFAULT_BLOCK_TIME:g}; "
        "0: mine per transaction only, so deadlines pass only when someone transacts)",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """`concord devnet up|down|status`, `concord devnet fund ADDRESS [--eth N] [--tokens N]`."""
    from concord.client.chain.rpc import ChainError  # web3: not for `--help`

    p = parser()
    args = p.parse_args(argv)
    if args.action == "fund" and args.address is None:
        p.error("fund needs the ADDRESS to fund")
    if args.action != "fund" and (args.address is not None or args.eth is not None or args.tokens is not None):
        p.error("ADDRESS, --eth and --tokens are for `concord devnet fund`")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        # `up` leaves its daemons running on purpose (hand_over: `down` stops them), but only a
        # complete devnet: a signal on the way up stops what was started, like any error.
        with procs.no_orphans():
            if args.action == "up":
                ports = Ports(
                    args.anvil_port,
                    args.ipfs_port,
                    args.ipfs_gateway_port,
                    args.ipfs_grpc_port,
                    args.ipfs_swarm_port or 0,
                )
                devnet = up(
                    args.state_dir,
                    ports,
                    args.accounts,
                    args.block_time,
                    hand_over=True,
                    peers=args.peer,
                    use_netns=args.netns,
                )
                clock = "per transaction" if devnet.block_time is None else f"every {devnet.block_time:g}s"
                print(
                    f"devnet up: rpc {devnet.rpc_url} (chain {devnet.chain_id}, a block {clock}), "
                    f"ipfs {devnet.ipfs_api} "
                    f"({len(devnet.peers)} peer(s) in a mesh: {', '.join(devnet.peers)}), "
                    f"state {state_file(Path(devnet.state_dir))}"
                )
                for name, p in devnet.peers.items() if devnet.netns else ():
                    print(
                        f"  {name}: namespace {p['netns']}, ipfs {p['api']} "
                        f"(its node: ip netns exec {p['netns']} concord ... --ipfs-api {p['api']})"
                    )
            elif args.action == "fund":
                neither = args.eth is None and args.tokens is None
                eth = parse_amount(DEFAULT_FUND_ETH, "--eth") if neither else args.eth
                tokens = parse_amount(DEFAULT_FUND_TOKENS, "--tokens") if neither else args.tokens
                got = fund(args.state_dir, args.address, eth, tokens)
                print(
                    f"funded {got.address}: +{format_amount(got.eth, 18, 'ETH')}, "
                    f"+{format_amount(got.tokens, got.decimals, got.symbol)} "
                    f"(now {format_amount(got.eth_balance, 18, 'ETH')}, "
                    f"{format_amount(got.token_balance, got.decimals, got.symbol)})"
                )
            elif args.action == "down":
                pids = down(args.state_dir)
                print(f"devnet down: stopped pids {pids}")
            else:
                devnet = load(args.state_dir)
                live = {f"{d.name} {d.pid}": procs.is_ours(d) for d in devnet.daemon_list()}
                print(
                    json.dumps(
                        {
                            "rpc_url": devnet.rpc_url,
                            "block_time": devnet.block_time,
                            "ipfs_api": devnet.ipfs_api,
                            "peers": {n: p["api"] for n, p in devnet.peers.items()},
                            "netns": {n: p.get("netns", "") for n, p in devnet.peers.items()} if devnet.netns else None,
                            "alive": live,
                            "deployment": devnet.deployment,
                        },
                        indent=2,
                    )
                )
    except KeyboardInterrupt as exc:
        print(f"interrupted ({exc or 'SIGINT'})", file=sys.stderr)
        return 130
    except ProcError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (ChainError, AmountError) as exc:
        from concord.client.runtime.errors import explain

        print(f"error: {explain(exc)}", file=sys.stderr)
        return 1
    return 0

"""Shared fixtures: a real Anvil and a real js-ipfs daemon, each on free ports, each stopped
by PID on teardown (also when a test fails or the run is interrupted).

Other suites add their fixtures below the chain section.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from concord.client.content.store import Store
from concord.client.runtime import procs
from concord.client.runtime.procs import Daemon
from scripts import devnet

# Nodes keep state under a per-user home (client.runtime.paths, read at call time) unless told
# otherwise; the tests and every process they start get a private one.
os.environ["CONCORD_HOME"] = _HOME = tempfile.mkdtemp(prefix="concord-test-home-")
atexit.register(shutil.rmtree, _HOME, True)

logging.getLogger("urllib3").setLevel(logging.WARNING)


# ----------------------------------------------------------------------------- chain


@dataclass(frozen=True)
class AnvilNode:
    url: str
    port: int
    daemon: Daemon


@dataclass(frozen=True)
class IpfsNode:
    api: str  # multiaddr for ipfshttpclient.Client
    api_url: str  # http://127.0.0.1:P
    daemon: Daemon


def _start_anvil(tmp: Path, accounts: int = 10) -> AnvilNode:
    port = procs.free_port()
    daemon = devnet.start_anvil(port, tmp / "anvil.log", accounts=accounts)
    return AnvilNode(f"http://127.0.0.1:{port}", port, daemon)


@pytest.fixture(scope="session")
def anvil(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AnvilNode]:
    """One Anvil for the session; tests isolate themselves with the `snapshot` fixture."""
    node = _start_anvil(tmp_path_factory.mktemp("anvil"))
    try:
        yield node
    finally:
        procs.stop(node.daemon)


@pytest.fixture
def fresh_anvil(tmp_path: Path) -> Iterator[AnvilNode]:
    """An Anvil of the test's own (for tests that must not share chain state)."""
    node = _start_anvil(tmp_path)
    try:
        yield node
    finally:
        procs.stop(node.daemon)


@pytest.fixture(scope="session")
def ipfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IpfsNode]:
    """One js-ipfs daemon for the session (offline, loopback only)."""
    tmp = tmp_path_factory.mktemp("ipfs")
    ports = devnet.Ports(
        anvil=0, ipfs_api=procs.free_port(), ipfs_gateway=procs.free_port(), ipfs_grpc=procs.free_port()
    )
    daemon = devnet.start_ipfs(tmp / "repo", ports, tmp / "ipfs.log")
    try:
        yield IpfsNode(f"/ip4/127.0.0.1/tcp/{ports.ipfs_api}/http", f"http://127.0.0.1:{ports.ipfs_api}", daemon)
    finally:
        procs.stop(daemon)


# ----------------------------------------------------------------------------- chain SDK on a deployed protocol

TOKEN = 10**18


@pytest.fixture(scope="session")
def deployed(anvil: AnvilNode):
    """The protocol deployed once per session (DevToken minted to anvil accounts 0..9)."""
    from concord.client.chain import deploy

    return deploy.deploy_devnet(anvil.url, 10, 1_000_000 * TOKEN)


@dataclass(frozen=True)
class ChainEnv:
    """A deployed protocol plus helpers; every test gets it at a fresh EVM snapshot."""

    client: object  # client.chain.ChainClient
    anvil: AnvilNode

    def signer(self, index: int):
        """A fresh Signer (fresh nonce) for anvil default account ``index``."""
        from concord.client.chain import keys

        return self.client.signer(keys.devnet_account(index))

    def warp(self, seconds: int) -> None:
        """Move chain time forward and mine a block (phases are decided by timestamps)."""
        self.client.rpc.call("evm_increaseTime", hex(seconds))
        self.client.rpc.call("evm_mine")

    def now(self) -> int:
        return self.client.rpc.block_timestamp()

    def create_task(self, initiator, params, budget: int) -> int:
        self.client.token.approve(initiator, self.client.concord.address, budget)
        task_id, _ = self.client.concord.create_task(initiator, params, budget)
        return task_id

    def enrol(self, signer, role, stake: int, task_id: int | None = None) -> None:
        """approve + register (+ join): scripts.harness.enrol."""
        from scripts.harness import enrol

        enrol(self.client, signer, role, stake, task_id)

    def snapshot_state(self, task_id: int | None, addresses) -> tuple:
        """Everything a failed call must leave unchanged: token and credited balances, stakes,
        membership, the task, its rounds, the liability totals."""
        c, t = self.client.concord, self.client.token
        per_addr = tuple(
            (t.balance_of(a), t.allowance(a, c.address), c.balance_of(a), c.node_info(a)) for a in addresses
        )
        task: tuple = ()
        if task_id is not None and task_id <= c.task_count():
            state = c.task_state(task_id)
            rounds = tuple(c.round_info(task_id, r) for r in range(state.head_round + 1))
            members = tuple(c.member_info(task_id, a) for a in addresses)
            task = (state, rounds, members, c.latest_model(task_id))
        return per_addr, task, c.totals(), t.balance_of(c.address), c.task_count()


@pytest.fixture
def chain_env(anvil: AnvilNode, deployed) -> Iterator[ChainEnv]:
    from concord.client import chain

    client = chain.connect(anvil.url, deployed.deployment)
    snap = client.rpc.call("evm_snapshot")
    try:
        yield ChainEnv(client, anvil)
    finally:
        client.rpc.call("evm_revert", snap)


# ---------------------------------------------------------------------------------------------
# Content store views (test_store.py, test_submission.py)
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def store(ipfs, tmp_path: Path) -> Store:
    return Store(ipfs.api, tmp_path / "cache-a", timeout=2.0)


@pytest.fixture
def other(ipfs, tmp_path: Path) -> Store:
    """A second node's view: same daemon, empty cache, so every get crosses the API."""
    return Store(ipfs.api, tmp_path / "cache-b", timeout=2.0)


@pytest.fixture
def dead_store():
    """Make a store whose daemon address has nothing listening: any network use fails fast."""

    def make(cache: Path | None) -> Store:
        return Store(f"/ip4/127.0.0.1/tcp/{procs.free_port()}/http", cache, timeout=1.0, retries=1)

    return make


# ----------------------------------------------------------------------------- test kinds
# Every test is exactly one of three tiers (`make test-unit`, `test-integration`, `test-e2e`):
#   unit         one module, in process, no daemon;
#   integration  against a real Anvil and/or js-ipfs that the fixtures below start;
#   e2e          the system as a user runs it: node processes (`concord trainer|validator run`, the
#                lab's adversaries), `concord demo`, `concord devnet up`, `concord bench ...`, or a
#                `concord` command from the built wheel against a chain.
# The one rule: e2e is said explicitly, by `pytest.mark.e2e` on the test or its module's pytestmark
# (a process launch cannot be seen from here); every other test is integration when it uses a
# daemon fixture (DAEMON_FIXTURES) and unit otherwise, so a new test cannot land unmarked and an
# e2e test is never also integration. Collection fails on a test that carries two tiers.
DAEMON_FIXTURES = {"anvil", "fresh_anvil", "ipfs", "deployed", "chain_env", "store", "other"}
DAEMON_FIXTURES |= {"helia_pair", "helia_spawn"}  # Helia peers started by tests/test_ipfs_peers.py
KINDS = ("unit", "integration", "e2e")


def kinds_of(item: pytest.Item) -> list[str]:
    return [k for k in KINDS if item.get_closest_marker(k) is not None]


# `make test` runs two pytest-xdist workers (`-n 2 --dist loadscope`, with the scopes below). The
# modules that run a network (node processes, Helia peers, namespaces, rounds against deadlines on a
# clock) are one scope: they run on one worker, one after another, as they would alone; two of them
# at once on 2 cores (the attack bench's 30-node networks beside the demo) push the load past what
# their deadlines allow, and the docs' blocks and the demo take the devnet's fixed ports (8545, 5001,
# the dashboard's 8750). Every other module (in-process tests, one Anvil or IPFS daemon) is a scope of
# its own, run whole on either worker meanwhile. Every e2e module must be listed (collection checks).
# (pytest-xdist's `loadgroup` marks do not reach its scheduler under pytest 9: it renames `_nodeid`,
# which pytest 9 no longer reads; a scheduler of ours says the scopes instead.)
NETWORK = "network"
NETWORK_MODULES = {
    # e2e: node processes, the demo, devnet and bench commands, the wheel
    "test_attacks",
    "test_canonical_delta",
    "test_dashboard",
    "test_demo",
    "test_docs_blocks",
    "test_faults",
    "test_lm_network",
    "test_metrics",
    "test_network",
    "test_reproducible",
    "test_signals",
    "test_trainer_node",
    "test_validator_node",
    # integration modules that run a network of their own
    "test_availability",
    "test_devnet",
    "test_flags_network",
    "test_late_fetch",
    "test_netns",
    "test_peer_network",
}
# Not listed, on purpose: test_ipfs_peers and test_exchange_attacks start a few Helia peers on free ports
# and no chain (no deadlines on a clock); test_lm_flags_network steps its nodes in its own process on its own
# Anvil (the chain's clock moves only when it warps it); they run beside the network scope, which is the long
# pole. BESIDE_NETWORK: e2e modules that run no node and no network (a wheel installed in a venv, bound to a
# fixture's Anvil on a free port), so they may run beside it too.
BESIDE_NETWORK = {"test_wheel"}


def scope_of(nodeid: str) -> str:
    """The pytest-xdist scope of a test: NETWORK, or its own module."""
    module = Path(nodeid.split("::", 1)[0]).stem
    return NETWORK if module in NETWORK_MODULES else module


def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object | None:
    if config.getvalue("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class NetworkScopes(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return scope_of(nodeid)

    return NetworkScopes(config, log)


# Seconds per worker (setup + call + teardown of every test it ran), printed at the end: the network
# scope's worker is the suite's long pole, and its total is what `make test`'s 30 minutes hang on.
WORKER_SECONDS: dict[str, float] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    worker = getattr(report, "node", None)
    name = worker.gateway.id if worker is not None else "main"
    key = f"{name} ({'network' if scope_of(report.nodeid) == NETWORK else 'other'})"
    WORKER_SECONDS[key] = WORKER_SECONDS.get(key, 0.0) + report.duration


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if WORKER_SECONDS:
        parts = ", ".join(f"{w} {s:.0f} s" for w, s in sorted(WORKER_SECONDS.items()))
        terminalreporter.write_line(f"test seconds per worker: {parts}")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if not kinds_of(item):
            kind = "integration" if DAEMON_FIXTURES & set(getattr(item, "fixturenames", ())) else "unit"
            item.add_marker(getattr(pytest.mark, kind))
        marked = kinds_of(item)
        if len(marked) != 1:
            raise pytest.UsageError(f"{item.nodeid}: marked {marked}; a test is exactly one of {KINDS}")
        beside = Path(item.nodeid.split("::", 1)[0]).stem in BESIDE_NETWORK
        if "e2e" in marked and scope_of(item.nodeid) != NETWORK and not beside:
            raise pytest.UsageError(f"{item.nodeid}: an e2e test; add its module to conftest.NETWORK_MODULES")

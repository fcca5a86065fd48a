"""Devnets in tests (a helper module, imported by name like chain_judge): free ports for a devnet of
a test's own, the same as command-line flags, a whole network run on one (scripts.demo.run_network),
and the config of a node on a devnet account."""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from concord.client import chain
from concord.client.chain import Role
from concord.client.content.store import Store
from concord.client.digest import Digest
from concord.client.runtime import procs
from concord.client.runtime.config import NodeConfig
from concord.validator import context as vctx
from concord.validator import fetch as vfetch
from concord.validator import node as vnode
from concord.validator import store as vstore
from scripts import devnet
from scripts.harness import conservation

if TYPE_CHECKING:
    from scripts.demo import NetworkPlan, Outcome

TASK_FILE = Path(__file__).parent / "data" / "network_task.toml"  # the small task the network tests run


FAST = {"poll_interval": 0.05, "heartbeat": 0.5}  # NodeConfig fields: poll for blocks often, tick when idle soon


def devnet_node(
    role: str,
    rpc_url: str,
    deployment: chain.Deployment,
    ipfs_api: str,
    state_dir: Path,
    account: int,
    task_id: int = 0,
    **fields,
) -> NodeConfig:
    """The NodeConfig of a node on Anvil account ``account``; ``fields`` (e.g. FAST) set the others."""
    return NodeConfig(role, rpc_url, deployment, ipfs_api, task_id, state_dir, devnet_account=account, **fields)


def free_ports() -> devnet.Ports:
    return devnet.Ports(procs.free_port(), procs.free_port(), procs.free_port(), procs.free_port())


def port_flags() -> list[str]:
    """Free ports as the flags of `concord devnet up` and `concord demo`."""
    ports = free_ports()
    return [
        *("--anvil-port", str(ports.anvil)),
        *("--ipfs-port", str(ports.ipfs_api)),
        *("--ipfs-gateway-port", str(ports.ipfs_gateway)),
        *("--ipfs-grpc-port", str(ports.ipfs_grpc)),
    ]


@dataclass(frozen=True)
class NetworkRun:
    """What a settled network run left: its devnet, a client and a store on it, the plan, the outcome."""

    net: devnet.Devnet
    client: chain.ChainClient
    store: Store
    plan: NetworkPlan
    outcome: Outcome

    def of(self, cls, **match) -> list:
        return [
            e for e in self.outcome.events if isinstance(e, cls) and all(getattr(e, k) == v for k, v in match.items())
        ]

    def addresses(self, role: Role) -> list[str]:
        return [s.address for s in self.plan.nodes if s.role == role]


@contextmanager
def network_run(state: Path, plan: NetworkPlan) -> Iterator[NetworkRun]:
    """Bring a devnet up under ``state``, run ``plan`` on it to the end; on exit stop the nodes and the devnet."""
    from rich.console import Console

    from scripts.demo import NodeProc, run_network, stop_nodes

    net = devnet.up(state, free_ports())
    nodes: list[NodeProc] = []
    try:
        outcome = run_network(net, plan, Console(file=io.StringIO(), width=200), nodes)
        client = chain.connect(net.rpc_url, chain.Deployment.from_json(net.deployment))
        yield NetworkRun(net, client, Store(net.ipfs_api, state / "test-cache", timeout=10.0), plan, outcome)
    finally:
        stop_nodes(nodes)
        devnet.down(state)


def assert_flagged_round_settled(
    client: chain.ChainClient,
    task_id: int,
    lazy_dir: Path,
    lazy_evidence: Digest | str,
    honest_validator: str,
    cheater: str,
    honest_trainer: str,
) -> None:
    """What a round whose cheat (submission 1) one honest validator flagged and a lazy one re-checked
    leaves, on either workload (tests/test_flags_network.py, tests/test_lm_flags_network.py): the lazy
    validator's evidence names whose flag it re-checked; the cheater rejected and slashed, the honest
    trainer paid, both validators revealed one model, money conserved."""
    assert honest_validator.lower() in vstore.evidence_path(lazy_dir, lazy_evidence).read_text()
    events = client.concord.events(client.deployment.block_number, "latest")
    rejected = [e for e in events if isinstance(e, chain.SubmissionRejected) and e.task_id == task_id]
    assert [(e.trainer, e.index) for e in rejected] == [(cheater, 1)] and rejected[0].slashed > 0
    paid = [e.trainer for e in events if isinstance(e, chain.SubmissionRewarded) and e.task_id == task_id]
    assert paid == [honest_trainer]
    revealed = [e for e in events if isinstance(e, chain.Revealed) and e.task_id == task_id]
    assert len({e.next_model_digest for e in revealed}) == 1 and len(revealed) == 2
    c = conservation(client)
    assert c.holds and c.tasks_solvent


def step_round_to_finality(client: chain.ChainClient, validators: list[vctx.Validator], task_id: int) -> None:
    """Round 0 of ``task_id`` stepped in this process from its commit phase to finality, on either workload:
    the validators backfill the submissions, then step in turn (share reveals, checks, flags, re-checks,
    commits, reveals, finalize: each step idempotent) until the round is finalized (12 turns at most)."""
    for v in validators:
        vfetch.backfill_submissions(v)
    for _ in range(12):
        for v in validators:
            vnode.step(v)
        if client.concord.task_state(task_id).finalized_rounds == 1:
            break
    assert client.concord.task_state(task_id).finalized_rounds == 1

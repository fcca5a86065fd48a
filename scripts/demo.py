"""`concord demo` (= `make demo`): the whole network on one machine, as separate processes.

devnet up (a block every second; one IPFS peer per node, in a full mesh: scripts.devnet) -> publish
the default task (configs/default_task.toml, max_rounds = --rounds) from the initiator's peer ->
stake and join 3 honest trainers, 1 cheater (`--cheat MODE`) and 2 validators -> start each
as its own process (`python -m concord.client.trainer run ...` / `python -m concord.validator.node run ...`, the
cheater `python -m scripts.adversaries.trainer run ... --cheat MODE`; JSON logs under
<state>/logs/), each with `--ipfs-api` of its own peer: a trainer publishes to its own peer, a
validator fetches from there over bitswap, a round model is served by whoever holds it ->
follow the rounds from chain events in a live table (with `--netns`, each node process runs in its
peer's network namespace, links rate-limited: `concord devnet up --netns`) ->
stop the nodes -> settlement table, reward curve PNG, token-conservation check, one verdict
line (and a JSON line) -> devnet down. Exit status 0 only when the reward rose, the cheater
was slashed, every validator earned a bounty, every honest node was paid for every round's work
(each honest submission rewarded, each validator's fee for each round that decided a submission:
scripts.pay, from chain events; a FAIL names the node, the round and what is missing) and
conservation holds. While it runs, `concord
dashboard` follows the devnet from this process (`--dashboard-port`, default 8750; its URL is printed).

The demo stakes and joins every node before starting it (the nodes find themselves
registered and joined and go on): a phase closes early once every joined node has acted, so
a node that joined late would miss round 0 and the rounds would differ from run to run.

Nothing outlives the demo: every node and daemon starts in its own process group and is
stopped by PID (SIGTERM, then SIGKILL after a grace period) in a `finally` that runs on
errors, Ctrl-C, SIGTERM and SIGHUP alike; further signals are ignored while it cleans up.
Enrolling, settling up, the ledger and the conservation check are the lab's network harness
(scripts.harness).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from rich import box
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

from concord.client import chain
from concord.client.chain import ChainClient, Role, Signer, keys
from concord.client.content.manifest import SubmissionManifest
from concord.client.content.store import Store, StoreError
from concord.client.content.task_spec import read_toml
from concord.client.digest import Digest
from concord.client.engine.lm_task import is_lm_task
from concord.client.initiator import Published, TaskFile, load_task_file, publish_task
from concord.client.runtime import procs
from concord.client.runtime.procs import Daemon, ProcError
from concord.client.units import format_amount
from scripts import REPO_ROOT, demo_args, devnet, pay
from scripts.demo_args import DEFAULT_CHEAT, SECONDS_PER_ROUND
from scripts.harness import Actor, Conservation, Ledger, conservation, enrol, node_command, settle_up

log = logging.getLogger(__name__)

# The rounds' time limit: a default-task round takes ~20 s with 6 nodes on a quiet 2-core
# machine; the limit catches a stalled network, not a slow one.
LM_SECONDS_PER_ROUND = 360.0  # an LM task (issue 12): the base model's load, 4 trainers' and 2 validators' CPU
INITIATOR = 0  # anvil default account of the task initiator
NODES_FILE = "nodes.json"
CURVE_FILE = "reward_curve.png"
STOP_GRACE_S = 10.0  # SIGTERM -> SIGKILL


class DemoError(RuntimeError):
    """The network could not run its rounds (a node died, or the rounds stalled); names the log to read."""


# SIGTERM or SIGHUP: unwinds like Ctrl-C so every `finally` runs (one mechanism, in client.runtime.procs).
Interrupted = procs.Terminated


TOKEN_DECIMALS, TOKEN_SYMBOL = 18, "CDT"  # the devnet's DevToken (client/chain/deploy.py deploys it)


def _fmt(value: int) -> str:
    """Whole tokens with the symbol, exact (client.units), '-' for nothing."""
    return format_amount(value, TOKEN_DECIMALS, TOKEN_SYMBOL) if value else "-"


# ----------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class NodeSpec:
    """One node process: its name (log file, state dir), role, anvil account and cheat."""

    name: str
    role: Role
    account: int
    cheat: str | None = None

    @property
    def address(self) -> str:
        return keys.devnet_account(self.account).address


@dataclass(frozen=True)
class NetworkPlan:
    """What to run: the task file, how many rounds, which nodes, how long to wait for them."""

    task_file: Path
    rounds: int
    nodes: tuple[NodeSpec, ...]
    timeout_s: float = 540.0  # for all the rounds, after the nodes started
    threads: int = 1  # torch threads per trainer (reproducibility: same everywhere)
    poll_interval: float = 0.1  # nodes' new-block poll
    live: bool = True  # the rich live table (off: one line per settled round)
    dashboard_port: int | None = None  # `concord dashboard` in this process while it runs (0: any free port)
    own_ipfs: bool = True  # each node its own IPFS peer (False: every node uses the initiator's, as before)
    netns: bool = False  # each node and its peer in its own network namespace, links limited (devnet up --netns)


def demo_nodes(honest: int = 3, cheat: str | None = DEFAULT_CHEAT, validators: int = 2) -> tuple[NodeSpec, ...]:
    """Trainers on accounts 1.., the cheater after them, then the validators."""
    specs = [NodeSpec(f"trainer-{i + 1}", Role.TRAINER, 1 + i) for i in range(honest)]
    if cheat is not None:
        specs.append(NodeSpec("cheater", Role.TRAINER, 1 + honest, cheat))
    first = 1 + len(specs)
    specs += [NodeSpec(f"validator-{i + 1}", Role.VALIDATOR, first + i) for i in range(validators)]
    return tuple(specs)


# ----------------------------------------------------------------------------- publishing and enrolment


def demo_task_file(path: Path, rounds: int) -> TaskFile:
    """The task file with max_rounds = rounds and the budget that pays exactly those rounds."""
    task_file = load_task_file(path)
    params = dataclasses.replace(task_file.params, max_rounds=rounds)
    return dataclasses.replace(task_file, params=params, budget=params.per_round * rounds)


# ----------------------------------------------------------------------------- node processes


@dataclass(frozen=True)
class NodeProc:
    """A started node: the Daemon (to stop it by PID) and its Popen (for its exit status)."""

    daemon: Daemon
    proc: subprocess.Popen

    @property
    def name(self) -> str:
        return self.daemon.name


def node_argv(
    spec: NodeSpec,
    devnet_json: Path,
    task_id: int,
    rounds: int,
    state_dir: Path,
    plan: NetworkPlan,
    ipfs_api: str | None = None,
) -> list[str]:
    """The node's command line: the same `concord trainer|validator run` a user would type; a cheater's
    is the lab's node of its role (scripts.adversaries.trainer|validator: the same flags and --cheat).
    ``ipfs_api``: the node's own IPFS peer (default: the devnet file's, the initiator's)."""
    cheat = ["--cheat", spec.cheat] if spec.cheat else []
    ipfs = ["--ipfs-api", ipfs_api] if ipfs_api else []
    if spec.role == Role.TRAINER:
        module = "scripts.adversaries.trainer" if spec.cheat else "concord.client.trainer"
        extra = ["--threads", str(plan.threads), *cheat]
    else:
        module = "scripts.adversaries.validator" if spec.cheat else "concord.validator.node"
        extra = ["--withdraw", *cheat]
    network = ("--devnet", str(devnet_json), *ipfs)
    return node_command(module, network, task_id, spec.account, state_dir, rounds, plan.poll_interval, *extra)


def start_nodes(
    specs: Sequence[NodeSpec], net: devnet.Devnet, task_id: int, plan: NetworkPlan, started: list[NodeProc]
) -> None:
    """Start every node in its own process group, each talking to its own IPFS peer (started here and
    recorded in the devnet's state file when the devnet has none for it yet: devnet.add_peers; with
    ``plan.own_ipfs`` off, every node talks to the initiator's peer, as before issue 23); each is
    appended to ``started`` as soon as it exists (the caller stops them), and <state>/nodes.json lists
    them for anyone else."""
    state = Path(net.state_dir)
    devnet_json = devnet.state_file(state)
    if plan.own_ipfs:
        net = devnet.add_peers(state, [s.name for s in specs])
    for spec in specs:
        peer = net.peer(spec.name) if plan.own_ipfs else None
        api = net.ipfs_api if peer is None else peer.api
        argv = node_argv(spec, devnet_json, task_id, plan.rounds, state / "nodes" / spec.name, plan, api)
        # on a --netns devnet the node runs in its peer's namespace (`ip netns exec` execs: the PID is the node's)
        wrap = ["ip", "netns", "exec", peer.netns] if peer is not None and peer.netns else []
        daemon, proc = procs.start(spec.name, [*wrap, *argv], state / "logs" / f"{spec.name}.log", cwd=REPO_ROOT)
        started.append(NodeProc(daemon, proc))
        write_nodes_file(state, [n.daemon for n in started])


def write_nodes_file(state_dir: Path, daemons: Sequence[Daemon]) -> None:
    tmp = state_dir / f".{NODES_FILE}.tmp"
    tmp.write_text(json.dumps([d.to_json() for d in daemons], indent=1) + "\n")
    tmp.replace(state_dir / NODES_FILE)


def stop_nodes(nodes: Sequence[NodeProc], grace: float = STOP_GRACE_S) -> list[int]:
    """SIGTERM every node's group at once, SIGKILL what is left after ``grace``; returns the PIDs
    that were still running. (One by one, six nodes finishing their step would take six graces.)"""
    running = [n.daemon for n in nodes if procs.is_ours(n.daemon)]
    for d in running:
        try:
            os.killpg(d.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace
    for n in nodes:  # the exited ones too: procs forgets them, so no_orphans has nothing to report
        procs.stop(n.daemon, timeout=max(0.1, deadline - time.monotonic()))
    for n in nodes:
        n.proc.poll()  # reap whatever exited
    return [d.pid for d in running]


# ----------------------------------------------------------------------------- following the rounds


@dataclass
class RoundRow:
    """One round as the live table shows it (from events; the phase from the round views)."""

    round: int
    phase: str = "pending"
    submissions: int = 0
    accepted: int = 0
    rejected: int = 0
    slashed: int = 0
    rewards: list[float] = field(default_factory=list)  # claimed mean reward of each accepted submission
    rejected_claims: list[float] = field(default_factory=list)  # what the rejected ones claimed
    model: str = ""

    @property
    def mean_reward(self) -> float | None:
        return sum(self.rewards) / len(self.rewards) if self.rewards else None


@dataclass
class Progress:
    """What the chain has said about the task so far (events folded in block order)."""

    task_id: int
    rounds: dict[int, RoundRow] = field(default_factory=dict)
    digests: dict[tuple[int, int], Digest] = field(default_factory=dict)  # (round, index) -> bundle digest
    events: list[chain.ConcordEvent] = field(default_factory=list)
    next_block: int = 0
    finalized: int = 0

    def row(self, round_: int) -> RoundRow:
        return self.rounds.setdefault(round_, RoundRow(round_))


def submission_reward(store: Store, digest: Digest) -> float:
    """The mean reward a submission manifest states (validators recomputed it for accepted ones)."""
    manifest = SubmissionManifest.from_bytes(store.get_manifest(digest))
    return float(manifest.stats["mean_reward"])


def poll_progress(client: ChainClient, store: Store, p: Progress) -> None:
    """Fold the task's new events into ``p`` and refresh the open rounds' phases."""
    c = client.concord
    head = client.rpc.block_number()
    if head >= p.next_block:
        for e in c.events(p.next_block, head):
            if getattr(e, "task_id", p.task_id) != p.task_id:
                continue
            p.events.append(e)
            if isinstance(e, chain.Submitted):
                p.row(e.round).submissions += 1
                p.digests[(e.round, e.index)] = Digest.parse(e.bundle_digest)
            elif isinstance(e, chain.SubmissionRewarded):
                row = p.row(e.round)
                row.accepted += 1
                row.rewards.append(submission_reward(store, p.digests[(e.round, e.index)]))
            elif isinstance(e, chain.SubmissionRejected):
                row = p.row(e.round)
                row.rejected += 1
                row.slashed += e.slashed
                row.rejected_claims.append(submission_reward(store, p.digests[(e.round, e.index)]))
            elif isinstance(e, chain.RoundFinalized):
                row = p.row(e.round)
                row.phase = "void" if e.is_void else "finalized"
                row.model = str(Digest.parse(e.next_model_digest))
                p.finalized = max(p.finalized, e.round + 1)
            elif isinstance(e, chain.RoundOpened):
                p.row(e.round)
        p.next_block = head + 1
    if not p.rounds:
        p.row(0)
    for r in range(p.finalized, c.current_round(p.task_id) + 1):
        p.row(r).phase = c.phase_of(p.task_id, r).name.lower()


def progress_table(p: Progress, rounds: int, elapsed: float, alive: int, total: int) -> Table:
    table = Table(
        title=f"task {p.task_id}: {p.finalized}/{rounds} rounds settled · {elapsed:.0f}s · "
        f"{alive}/{total} nodes running",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        collapse_padding=True,
    )
    for col in ("round", "phase", "subs", "accepted", "rejected", "mean reward", "slashed", "model"):
        table.add_column(col, justify="left" if col in {"phase", "model"} else "right", no_wrap=True)
    for r in sorted(p.rounds):
        row = p.rounds[r]
        mean = "-" if row.mean_reward is None else f"{row.mean_reward:.4f}"
        table.add_row(
            str(r),
            row.phase,
            str(row.submissions),
            str(row.accepted),
            str(row.rejected),
            mean,
            _fmt(row.slashed),
            row.model[:12] or "-",
        )
    return table


@contextmanager
def live_view(console: Console, enabled: bool) -> Iterator[Callable[[Table], None]]:
    """A rich Live region on a terminal; elsewhere the caller's table is dropped (lines are printed instead)."""
    if not (enabled and console.is_terminal):
        yield lambda _table: None
        return
    from rich.live import Live

    with Live(console=console, refresh_per_second=4, transient=False) as live:
        yield live.update


def follow_rounds(
    client: ChainClient,
    store: Store,
    task_id: int,
    plan: NetworkPlan,
    nodes: Sequence[NodeProc],
    console: Console,
    start_block: int,
) -> Progress:
    """Poll the chain until ``plan.rounds`` rounds are settled; DemoError if a node fails or time runs out."""
    p = Progress(task_id, next_block=start_block)
    started = time.monotonic()
    printed = 0
    exited: dict[str, int] = {}
    with live_view(console, plan.live) as show:
        while True:
            poll_progress(client, store, p)
            for n in nodes:
                code = n.proc.poll()
                if code is not None and n.name not in exited:
                    exited[n.name] = code
                    if code != 0:
                        log_path = n.daemon.log_path
                        raise DemoError(
                            f"{n.name} exited with status {code}: {procs.log_tail(log_path, 8)} (log {log_path})"
                        )
            elapsed = time.monotonic() - started
            show(progress_table(p, plan.rounds, elapsed, len(nodes) - len(exited), len(nodes)))
            if not (plan.live and console.is_terminal):
                while printed < p.finalized:
                    row = p.row(printed)
                    mean = "-" if row.mean_reward is None else f"{row.mean_reward:.4f}"
                    console.print(
                        f"round {printed} {row.phase} ({elapsed:.0f}s): {row.submissions} submissions, "
                        f"{row.accepted} accepted, {row.rejected} rejected, mean reward {mean}, "
                        f"model {row.model[:14]}"
                    )
                    printed += 1
            if p.finalized >= plan.rounds:
                return p
            if elapsed > plan.timeout_s:
                raise DemoError(
                    f"only {p.finalized} of {plan.rounds} rounds settled after {plan.timeout_s:.0f}s; "
                    f"node logs in {nodes[0].daemon.log_path.parent if nodes else '-'}"
                )
            time.sleep(0.5)


def wait_exit(nodes: Sequence[NodeProc], timeout: float) -> None:
    """Give the nodes a moment to finish on their own (validators withdraw before exiting)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(n.proc.poll() is None for n in nodes):
        time.sleep(0.2)


# ----------------------------------------------------------------------------- settlement


@dataclass(frozen=True)
class Outcome:
    """Everything the verdict is decided on (and the tests assert)."""

    task_id: int
    rounds: int
    curve: tuple[float | None, ...]  # mean claimed reward of accepted submissions, per round
    rejected_claims: tuple[tuple[int, float], ...]  # (round, claimed mean reward) of rejected submissions
    ledger: Ledger
    conservation: Conservation
    actors: tuple[Actor, ...]
    cheaters: tuple[str, ...]
    events: tuple[chain.ConcordEvent, ...]
    wall_s: float

    @property
    def reward_rising(self) -> bool:
        """Mean of the last third of the rounds above the mean of the first third."""
        known = [x for x in self.curve if x is not None]
        if len(known) < 2:
            return False
        k = max(1, len(known) // 3)
        return sum(known[-k:]) / k > sum(known[:k]) / k

    @property
    def cheater_slashed(self) -> bool:
        """Every cheater submission was rejected and slashed, none rewarded."""
        if not self.cheaters:
            return True
        subs = [e for e in self.events if isinstance(e, chain.Submitted) and e.trainer in self.cheaters]
        slashed = [
            e
            for e in self.events
            if isinstance(e, chain.SubmissionRejected) and e.trainer in self.cheaters and e.slashed > 0
        ]
        return bool(subs) and len(slashed) == len(subs) and all(self.ledger.reward[c] == 0 for c in self.cheaters)

    @property
    def bounties_paid(self) -> bool:
        """Every validator earned a slashing bounty (vacuously true without cheaters)."""
        validators = [a.address for a in self.actors if a.role == Role.VALIDATOR]
        return not self.cheaters or all(self.ledger.bounty[v] > 0 for v in validators)

    @property
    def honest_unpaid(self) -> tuple[tuple[str, pay.Unpaid], ...]:
        """(node name, what it was not paid) for every honest node's unpaid round work (scripts.pay,
        from the chain's events, never a node's log): an honest trainer's submission in one of the
        demo's rounds that was not rewarded, an honest validator's fee missing for a round that
        decided a submission (each validator must have revealed in every such round). Every node
        of the demo stays up: one that exits early with an error stops the demo before its verdict."""
        honest = {a.address.lower(): a for a in self.actors if a.address.lower() not in self.cheater_set}
        voters = [addr for addr, a in honest.items() if a.role == Role.VALIDATOR]
        return tuple(
            (honest[u.address].name, u)
            for u in pay.unpaid(self.events, self.task_id, voters)
            if u.address in honest and u.round < self.rounds
        )

    @property
    def cheater_set(self) -> frozenset[str]:
        return frozenset(c.lower() for c in self.cheaters)

    @property
    def honest_paid(self) -> bool:
        return not self.honest_unpaid

    @property
    def ok(self) -> bool:
        return (
            self.reward_rising
            and self.cheater_slashed
            and self.bounties_paid
            and self.honest_paid
            and self.conservation.holds
        )

    def unpaid_text(self, most: int = 3) -> str:
        """'yes', or 'NO (trainer-2 round 1 reward: ..., ...)' naming the first ``most`` of them."""
        missing = self.honest_unpaid
        if not missing:
            return "yes"
        named = [f"{name} round {u.round} {u.missing}" for name, u in missing[:most]]
        more = f"; +{len(missing) - most} more" if len(missing) > most else ""
        return f"NO ({'; '.join(named)}{more})"

    def verdict_line(self) -> str:
        def mark(ok: bool) -> str:
            return "yes" if ok else "NO"

        first = next((x for x in self.curve if x is not None), float("nan"))
        last = next((x for x in reversed(self.curve) if x is not None), float("nan"))
        return (
            f"verdict: {'PASS' if self.ok else 'FAIL'} · reward rising {mark(self.reward_rising)} "
            f"({first:.3f} -> {last:.3f} over {self.rounds} rounds) · cheater slashed {mark(self.cheater_slashed)}"
            f" · validators paid bounty {mark(self.bounties_paid)} · honest nodes paid every round "
            f"{self.unpaid_text()} · conservation "
            f"{'ok' if self.conservation.holds else 'VIOLATED'}"
        )

    def to_json(self) -> dict:
        return {
            "task_id": self.task_id,
            "rounds": self.rounds,
            "wall_s": round(self.wall_s, 1),
            "reward_per_round": [None if x is None else round(x, 4) for x in self.curve],
            "reward_rising": self.reward_rising,
            "cheater_slashed": self.cheater_slashed,
            "bounties_paid": self.bounties_paid,
            "honest_paid": self.honest_paid,
            "honest_unpaid": len(self.honest_unpaid),
            "honest_unpaid_detail": [dict(u.to_json(), node=name) for name, u in self.honest_unpaid],
            "conservation": self.conservation.holds,
            "ok": self.ok,
        }


def settlement_table(
    client: ChainClient,
    initiator: Signer,
    actors: Sequence[Actor],
    ledger: Ledger,
    cheaters: Sequence[str],
    task_id: int,
    rounds: int,
) -> Table:
    """One row per node and one for the initiator; every number from the contract's events and views."""
    table = Table(
        title=f"Settlement of task {task_id} after {rounds} rounds",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        collapse_padding=True,
    )
    for col in (
        "node",
        "role",
        "address",
        "rewards",
        "fees",
        "bounties",
        "slashed",
        "reclaimed",
        "stake",
        "balance",
        "withdrawn",
    ):
        table.add_column(col, justify="left" if col in {"node", "role", "address"} else "right", no_wrap=True)
    for a in actors:
        a_ = a.address
        role = "cheater" if a_ in cheaters else a.role.name.lower()
        table.add_row(
            a.name,
            role,
            a_[:8] + "…",
            _fmt(ledger.reward[a_]),
            _fmt(ledger.fee[a_]),
            _fmt(ledger.bounty[a_]),
            _fmt(ledger.slashed[a_]),
            "-",
            _fmt(client.concord.node_info(a_).stake),
            _fmt(client.concord.balance_of(a_)),
            _fmt(ledger.withdrawn[a_]),
        )
    me = initiator.address
    table.add_row(
        "initiator",
        "task",
        me[:8] + "…",
        "-",
        "-",
        "-",
        "-",
        _fmt(ledger.reclaimed[me]),
        "-",
        _fmt(client.concord.balance_of(me)),
        _fmt(ledger.withdrawn[me]),
    )
    return table


def save_curve_png(
    curve: Sequence[float | None], path: Path, title: str, rejected: Sequence[tuple[int, float]] = ()
) -> Path:
    """Mean reward of the accepted submissions per round (and what rejected ones claimed), as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    xs = [r for r, v in enumerate(curve) if v is not None]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    ax.plot(xs, [curve[r] for r in xs], marker="o", label="accepted submissions (verified)")
    if rejected:
        ax.scatter(
            [r for r, _ in rejected],
            [v for _, v in rejected],
            marker="x",
            color="tab:red",
            label="rejected submissions (claimed)",
        )
    ax.set_xlabel("round")
    ax.set_ylabel("mean reward")
    ax.set_ylim(bottom=0)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(title)
    ax.legend(loc="best", fontsize="small")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------- the run


def run_network(net: devnet.Devnet, plan: NetworkPlan, console: Console, nodes: list[NodeProc]) -> Outcome:
    """Publish, enrol, start the nodes (appended to ``nodes``: the caller stops them), follow, settle.

    The caller owns the devnet and the node processes; this returns once the rounds are settled
    and the nodes are stopped."""
    started = time.monotonic()
    client = chain.connect(net.rpc_url, chain.Deployment.from_json(net.deployment))
    state = Path(net.state_dir)
    for sub in ("nodes", "logs"):
        shutil.rmtree(state / sub, ignore_errors=True)  # node state of an earlier run names an old chain
    store = Store(net.ipfs_api, state / "demo-cache", timeout=30.0)
    initiator = client.signer(keys.devnet_account(INITIATOR))
    task_file = demo_task_file(plan.task_file, plan.rounds)
    start_block = client.rpc.block_number() + 1
    published: Published = publish_task(client, initiator, store, task_file, str(plan.task_file))
    task_id = published.task_id
    spec, model0 = str(published.spec_digest), str(published.initial_model_digest)
    console.print(
        f"task {task_id} published: spec {spec[:18]}…, model 0 {model0[:18]}…, "
        f"budget {_fmt(published.budget)} for {plan.rounds} rounds"
    )
    for spec in plan.nodes:
        stake = (
            task_file.params.min_trainer_stake if spec.role == Role.TRAINER else task_file.params.min_validator_stake
        )
        enrol(client, spec.account, spec.role, stake, task_id)
    start_nodes(plan.nodes, net, task_id, plan, nodes)
    console.print(
        "nodes: " + ", ".join(f"{n.name} (pid {n.daemon.pid})" for n in nodes) + f"; logs in {state / 'logs'}"
    )

    progress = follow_rounds(client, store, task_id, plan, nodes, console, start_block)
    wait_exit(nodes, 15.0)
    stop_nodes(nodes)

    actors = tuple(Actor(s.name, s.role, client.signer(keys.devnet_account(s.account))) for s in plan.nodes)
    settle_up(client, initiator, actors, task_id)
    poll_progress(client, store, progress)  # the withdrawals and the reclaim
    ledger = Ledger.of(progress.events)
    cheaters = tuple(s.address for s in plan.nodes if s.cheat)
    curve = tuple(progress.row(r).mean_reward for r in range(plan.rounds))
    table = settlement_table(client, initiator, actors, ledger, cheaters, task_id, plan.rounds)
    # as wide as its widest row (exact token amounts are long): a narrow terminal wraps rows rather than eliding
    need = Measurement.get(console, console.options.update_width(1000), table).maximum
    console.print(table, width=max(console.width, 120, need))
    rejected = tuple((r, x) for r in range(plan.rounds) for x in progress.row(r).rejected_claims)
    return Outcome(
        task_id,
        plan.rounds,
        curve,
        rejected,
        ledger,
        conservation(client),
        actors,
        cheaters,
        tuple(progress.events),
        time.monotonic() - started,
    )


def report(outcome: Outcome, state_dir: Path, console: Console) -> None:
    """Reward curve PNG, conservation, verdict, and one JSON line for machines."""
    png = save_curve_png(
        outcome.curve, state_dir / CURVE_FILE, f"task {outcome.task_id}: mean reward per round", outcome.rejected_claims
    )
    console.print("reward per round: " + " ".join("-" if x is None else f"{x:.3f}" for x in outcome.curve))
    console.print(f"reward curve: {png}")
    cons = outcome.conservation
    console.print(
        f"conservation: token.balanceOf(Concord) = {_fmt(cons.token_balance)} == escrow "
        f"{_fmt(cons.escrow)} + stakes {_fmt(cons.staked)} + credited "
        f"{_fmt(cons.credited)} -> {'holds' if cons.holds else 'VIOLATED'}"
    )
    # one line whatever the width (a FAIL names nodes and rounds): for readers that grep it
    console.print(outcome.verdict_line(), style="bold green" if outcome.ok else "bold red", soft_wrap=True)
    print(json.dumps({"demo": outcome.to_json()}), flush=True)


# ----------------------------------------------------------------------------- signals

signals_unwind = procs.signals_unwind  # kept here for the benches that import them from the demo
signals_ignored = procs.signals_ignored


@contextmanager
def demo_dashboard(net: devnet.Devnet, port: int | None, console: Console) -> Iterator[str | None]:
    """`concord dashboard` on the demo's devnet, served from this process while the demo runs (its
    evidence from the demo's validators' state dirs); its URL, or None when off. A taken port falls
    back to a free one: the demo never fails for its dashboard."""
    if port is None:
        yield None
        return
    from concord.client.dashboard.server import open_dashboard, serving
    from concord.client.dashboard.state import Source

    source = Source(
        net.rpc_url,
        chain.Deployment.from_json(net.deployment),
        net.ipfs_api,
        None,
        (),
        validator_root=Path(net.state_dir) / "nodes",
    )
    board = open_dashboard(source)
    try:
        ctx = serving(board, port=port)
        server = ctx.__enter__()
    except OSError:
        console.print(f"dashboard: port {port} is taken; serving on a free port instead")
        ctx = serving(board, port=0)
        server = ctx.__enter__()
    console.print(f"dashboard: {server.url} (live while the demo runs)")
    try:
        yield server.url
    finally:
        ctx.__exit__(None, None, None)


def run_demo(
    plan: NetworkPlan,
    state_dir: Path,
    ports: devnet.Ports,
    console: Console,
    block_time: float | None = devnet.DEFAULT_BLOCK_TIME,
) -> Outcome:
    """devnet up -> run_network -> report; nodes and devnet stopped on every way out."""
    state_dir = Path(state_dir).resolve()
    nodes: list[NodeProc] = []
    clock = "mining per transaction" if block_time is None else f"a block every {block_time:g}s"
    ipfs = "an IPFS peer per node" if plan.own_ipfs else "one IPFS peer shared by every node"
    where = "; each node and its peer in its own network namespace, links limited" if plan.netns else ""
    console.print(f"starting devnet (anvil, {clock}; {ipfs}{where}) in {state_dir} …")
    try:
        peers = [s.name for s in plan.nodes] if plan.own_ipfs else []
        net = devnet.up(state_dir, ports, block_time=block_time, peers=peers, use_netns=plan.netns)
        console.print(
            f"devnet: rpc {net.rpc_url}, Concord {net.deployment['concord']}, IPFS peers (full mesh): "
            + ", ".join(f"{n} {p['api_url']}" for n, p in net.peers.items())
        )
        if net.netns:
            links = {n: mbit for n, _, mbit in devnet.link_mbit(list(net.peers))}
            console.print(
                f"namespaces {net.netns}-<node> on bridge {net.netns}br, links (Mbit/s both ways): "
                + ", ".join(f"{n} {links[n]:g}" for n in net.peers),
                soft_wrap=True,  # one line, for readers that grep it
            )
        with demo_dashboard(net, plan.dashboard_port, console):
            outcome = run_network(net, plan, console, nodes)
            report(outcome, state_dir, console)
        return outcome
    finally:
        with signals_ignored():
            stopped = stop_nodes(nodes)
            if stopped:
                console.print(f"stopped nodes {stopped}")
            if devnet.state_file(state_dir).exists():
                devnet.down(state_dir)
                console.print("devnet stopped")


def main(argv: Sequence[str] | None = None) -> int:
    """`concord demo [--rounds N] [--cheat MODE] [--state-dir D] [ports]`."""
    from scripts.adversaries.trainer_cheats import CHEATS

    p = demo_args.parser()
    args = p.parse_args(argv)
    if args.cheat not in CHEATS:
        p.error(f"argument --cheat: invalid choice: {args.cheat!r} (choose from {', '.join(sorted(CHEATS))})")
    if args.rounds < 2:
        p.error("--rounds must be >= 2 (a rising reward needs two rounds)")
    lm_task = is_lm_task(read_toml(args.task_file)) if args.task_file.is_file() else False
    cheat = CHEATS[args.cheat]
    if lm_task and cheat.lm is None and cheat.claim is None:
        p.error(f"--cheat {args.cheat} has no form on an LM task (use one with an LM step, e.g. inflated_rewards)")
    if not args.timeout >= 0:
        p.error(f"--timeout must be >= 0 seconds (0: the default), got {args.timeout}")
    if args.netns and args.shared_ipfs:
        p.error("--netns puts each node's own IPFS peer in its namespace: it cannot go with --shared-ipfs")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    warnings.filterwarnings("ignore", "The 'strict' parameter", FutureWarning)  # urllib3, via ipfshttpclient
    console = Console(width=None if sys.stdout.isatty() else 160)  # pipes get whole rows
    per_round = LM_SECONDS_PER_ROUND if lm_task else SECONDS_PER_ROUND
    timeout = args.timeout or max(540.0, per_round * args.rounds)
    plan = NetworkPlan(
        args.task_file,
        args.rounds,
        demo_nodes(cheat=args.cheat),
        timeout_s=timeout,
        live=not args.no_live,
        dashboard_port=None if args.no_dashboard else args.dashboard_port,
        own_ipfs=not args.shared_ipfs,
        netns=args.netns,
    )
    ports = devnet.Ports(args.anvil_port, args.ipfs_port, args.ipfs_gateway_port, args.ipfs_grpc_port)
    t0 = time.monotonic()
    try:
        with procs.no_orphans():
            outcome = run_demo(plan, args.state_dir, ports, console, args.block_time)
    except (KeyboardInterrupt, Interrupted) as e:
        console.print(f"interrupted ({str(e) or 'SIGINT'}): every node and daemon stopped")
        return 130
    except (ProcError, DemoError, StoreError, chain.ChainError) as e:
        console.print(f"error: {e}", style="red")
        return 1
    console.print(f"demo wall time {time.monotonic() - t0:.0f}s")
    return 0 if outcome.ok else 1


if __name__ == "__main__":
    sys.exit(main())

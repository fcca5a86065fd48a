"""The rounds half of `concord bench network` (issue 23): async levels 0-2 and churn, on namespaces.

Real node processes on a rate-limited network of namespaces, at async levels 0, 1 and 2 for the
same wall time, then a churn run.

The network (scripts/devnet.build_network): an initiator, 3 validators and N trainers
(``--trainers``, default 4), each node process and its own Helia peer in its own namespace
(scripts/netns.py), links limited both ways (validators and the initiator 1000 Mbit/s, trainers
alternating 100 and 20), full mesh. Anvil runs in the root namespace on the bridge's address
(``net.gateway``) with a block every second (and each transaction at once), so every namespace
reaches the chain there and a stopped node costs a round its deadline, never a stall.

Async runs: for each level in 0, 1, 2 a fresh task (the task file's spec, ``async_level`` set,
each phase ``--phase-seconds``) is published from the initiator's peer, every node joins it and
is started as a process (`concord trainer|validator run`, state in its own directory), and the
rounds run ``--rounds-seconds`` of wall time from the moment round 0 settled (the warm-up before:
the nodes' start and round 0, the same at every level); then the nodes are stopped.
``rounds_per_hour``: rounds finalized (not void) in that time x 3600 / the time;
``reward_after_s``: the mean reward the accepted submissions of the last round finalized by the end
of that time state (validators recomputed it).

Churn run (a fresh task at ``--churn-async``, default 0): once the nodes run, in turn
* a trainer SIGKILLed while a round waits for its submission, restarted 5 s later on its state dir;
* a validator SIGKILLed once it committed in a round, restarted at once on its state dir (it must
  reveal its on-disk plan before the reveal deadline);
* a trainer's Helia peer SIGKILLed and restarted on its repo (same peer ID), redialed by the mesh;
* a trainer's link cut for ``--cut-seconds`` (30) with ``Network.cut`` (its veth down);
each in a round of its own: the next starts once the round open at the end of the last one settled
and the churned node caught up (then the run goes on to ``--churn-seconds``, if longer).
Reported: ``churn_events`` (what, who, when, the round, and whether the node caught up: a
restarted trainer submits again, a restarted validator reveals the round it committed in, the
node behind a restarted peer or a cut link submits again), ``void_rounds`` (each with the fewest
validators that were up while it ran and whether that was below minValidators), ``honest_unpaid``
(scripts/pay.py: a node that submitted, or revealed in a round that decided a submission, in a
finalized round without being paid for it, and was up,
its peer up and its link whole, the whole time that round ran), ``conservation_ok`` (each task
holds its budget + open pools, and the token balance equals the protocol's liabilities).

    python -m scripts.bench.network --rounds [--trainers 4] [--rounds-seconds 150] [--no-churn]

Needs root (namespaces). Everything started (nodes, daemons, Anvil, namespaces) is stopped by PID
and removed on the way out, also on Ctrl-C and SIGTERM (scripts/netns.Network).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table

from concord.client import chain
from concord.client.chain import ChainClient, Phase, Role, deploy, keys
from concord.client.content.store import Store
from concord.client.initiator import TaskFile, load_task_file, publish_task, rule_min_commit_seconds
from concord.client.runtime import procs
from scripts import REPO_ROOT, devnet, netns, pay
from scripts.bench.network import rates
from scripts.demo import Progress, poll_progress
from scripts.devnet import TRAINER_MBIT, VALIDATOR_MBIT, NetnsPeer, build_network, roles_of
from scripts.harness import TOKEN, conservation, enrol, node_command
from scripts.netns import Network

DEFAULT_TASK = REPO_ROOT / "configs" / "default_task.toml"
LEVELS = (0, 1, 2)
INITIATOR = 0  # anvil account; validators take 1..V, trainers V+1..
MINT = 10_000_000 * TOKEN
POLL_S = 0.1  # the nodes' new-block poll
FOLLOW_S = 1.0  # the bench's chain poll
RESTART_PAUSE_S = 5.0  # a killed trainer stays down this long
MAX_ROUNDS = 1000  # per task: far more than a run reaches; its budget (x per-round pay) is escrowed


@dataclass
class NodeProcess:
    """One node process of a run, in its peer's namespace; ``down`` lists (from, to) wall-clock spans
    (relative to the run's start) in which it was not up (killed, its peer down, its link cut)."""

    name: str
    role: Role
    account: int
    peer: NetnsPeer
    argv: list[str]
    log: Path
    daemon: procs.Daemon | None = None
    down: list[tuple[float, float]] = field(default_factory=list)

    @property
    def address(self) -> str:
        return keys.devnet_account(self.account).address.lower()

    def is_down(self) -> bool:
        """Inside a down span that has not ended (killed on purpose, not yet restarted)."""
        return bool(self.down) and self.down[-1][1] < 0


@dataclass
class Run:
    """One task's run: its nodes, the chain's view of it, and each round's open/settle wall times."""

    task_id: int
    nodes: list[NodeProcess]
    progress: Progress
    t0: float
    seen: dict[int, tuple[float, float | None]] = field(default_factory=dict)  # round -> (opened, settled)

    def elapsed(self) -> float:
        return time.monotonic() - self.t0


# ----------------------------------------------------------------------------- the chain, tasks, nodes


def start_chain(net: Network, work: Path, accounts: int) -> tuple[ChainClient, str]:
    """Anvil on the bridge's address (reached from every namespace), a block a second, deployed."""
    port = procs.free_port(net.gateway)
    url = f"http://{net.gateway}:{port}"
    argv = [str(devnet.anvil_binary()), "--host", net.gateway, "--port", str(port), "--accounts", str(accounts)]
    argv += ["--block-time", "1", "--mixed-mining"]
    anvil = devnet.start_ready("anvil", argv, work / "anvil.log", lambda: devnet.rpc_ready(url), 30)
    net.track(anvil)
    result = deploy.deploy_devnet(url, accounts, MINT)
    client = chain.connect(url, result.deployment)
    result.deployment.save(work / "deployment.json")
    return client, url


def task_file(path: Path, async_level: int, phase_s: int, rounds: int) -> TaskFile:
    tf = load_task_file(path)
    params = dataclasses.replace(
        tf.params,
        async_level=async_level,
        submit_seconds=phase_s,
        commit_seconds=max(phase_s, rule_min_commit_seconds(tf.spec)),  # the late-fetch rule's room
        reveal_seconds=phase_s,
        max_rounds=rounds,
    )
    return dataclasses.replace(tf, params=params, budget=params.per_round * rounds)


def publish(client: ChainClient, init: NetnsPeer, tf: TaskFile, cache: Path) -> int:
    signer = client.signer(keys.devnet_account(INITIATOR))
    return publish_task(client, signer, Store(init.api, cache, timeout=60.0), tf).task_id


def start_nodes(
    net: Network, client: ChainClient, rpc: str, work: Path, peers: dict[str, NetnsPeer], task_id: int, tf: TaskFile
) -> list[NodeProcess]:
    """Every validator and trainer enrolled in ``task_id`` and started in its namespace."""
    nodes = []
    workers = [p for p in peers.values() if p.role in ("validator", "trainer")]
    for i, peer in enumerate(workers):
        role = Role.VALIDATOR if peer.role == "validator" else Role.TRAINER
        account = 1 + i
        stake = tf.params.min_validator_stake if role == Role.VALIDATOR else tf.params.min_trainer_stake
        enrol(client, account, role, stake, task_id)
        module = "concord.validator.node" if role == Role.VALIDATOR else "concord.client.trainer"
        extra = ["--threads", "1"] if role == Role.TRAINER else []
        network = ("--rpc-url", rpc, "--deployment", str(work / "deployment.json"), "--ipfs-api", peer.api)
        name = peer.node.name
        state = work / f"task{task_id}" / name
        argv = node_command(module, network, task_id, account, state, 1_000_000, POLL_S, *extra)
        nodes.append(NodeProcess(name, role, account, peer, argv, work / f"task{task_id}" / f"{name}.log"))
    for n in nodes:
        launch(net, n)
    return nodes


def launch(net: Network, n: NodeProcess) -> None:
    n.daemon, _ = net.start(n.peer.node, n.name, n.argv, n.log, env={"PYTHONPATH": str(REPO_ROOT)})


def sigkill(d: procs.Daemon) -> None:
    try:
        os.killpg(d.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    procs.stop(d, timeout=5.0)  # reaps it and forgets it


def stop_nodes(nodes: Sequence[NodeProcess]) -> None:
    """SIGTERM every node at once, then by PID (SIGKILL after a grace)."""
    live = [n.daemon for n in nodes if n.daemon is not None and procs.is_ours(n.daemon)]
    for d in live:
        try:
            os.killpg(d.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    for d in live:
        procs.stop(d, timeout=10.0)


def follow(client: ChainClient, store: Store, run: Run) -> None:
    """Fold new events; note when each round was first seen open and when it settled."""
    poll_progress(client, store, run.progress)
    now = run.elapsed()
    for r, row in run.progress.rounds.items():
        opened, settled = run.seen.get(r, (now, None))
        if settled is None and row.phase in ("finalized", "void"):
            settled = now
        run.seen[r] = (opened, settled)


def follow_until(client: ChainClient, store: Store, run: Run, done: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        follow(client, store, run)
        if done():
            return True
        for n in run.nodes:
            if n.daemon is not None and not procs.alive(n.daemon.pid) and not n.is_down():
                raise RuntimeError(f"node {n.name} exited: {procs.log_tail(n.log)}")
        time.sleep(FOLLOW_S)
    return False


# ----------------------------------------------------------------------------- async runs


def finalized_rows(p: Progress) -> list:
    return [row for r, row in sorted(p.rounds.items()) if row.phase == "finalized"]


def async_run(
    net: Network,
    client: ChainClient,
    rpc: str,
    work: Path,
    peers: dict[str, NetnsPeer],
    args: argparse.Namespace,
    level: int,
) -> dict:
    tf = task_file(args.task, level, args.phase_seconds, MAX_ROUNDS)
    task_id = publish(client, peers["init"], tf, work / "cache")
    store = Store(peers["init"].api, work / "cache", timeout=30.0)
    nodes = start_nodes(net, client, rpc, work, peers, task_id, tf)
    run = Run(task_id, nodes, Progress(task_id), time.monotonic())
    try:
        # warm-up, not measured: the nodes' start (imports, model 0) and round 0, the same at every level
        warm = args.phase_seconds * 3 + 120
        if not follow_until(client, store, run, lambda: 0 in run.progress.rounds and settled(run, 0), warm):
            raise RuntimeError(f"async {level}: round 0 of task {task_id} did not settle in {warm} s")
        window = run.elapsed()
        follow_until(client, store, run, lambda: False, args.rounds_seconds)
    finally:
        stop_nodes(nodes)
    end = window + args.rounds_seconds
    by_end = [row for row in finalized_rows(run.progress) if (run.seen[row.round][1] or end + 1) <= end]
    rows = [row for row in by_end if (run.seen[row.round][1] or 0.0) > window]  # settled inside the window
    rewarded = [row for row in by_end if row.mean_reward is not None]
    print(f"async {level}: task {task_id}, {len(rows)} rounds in {args.rounds_seconds:.0f} s", file=sys.stderr)
    return {
        "task_id": task_id,
        "warmup_s": round(window, 1),
        "rounds": len(rows),
        "void": sum(1 for row in run.progress.rounds.values() if row.phase == "void"),
        "rounds_per_hour": round(len(rows) * 3600 / args.rounds_seconds, 1),
        "reward": round(rewarded[-1].mean_reward, 4) if rewarded else None,
        "curve": [
            None if row.mean_reward is None else round(row.mean_reward, 4) for row in finalized_rows(run.progress)
        ],
    }


def settled(run: Run, r: int) -> bool:
    return run.progress.rounds[r].phase in ("finalized", "void")


# ----------------------------------------------------------------------------- churn


def mark_down(n: NodeProcess, run: Run) -> None:
    n.down.append((run.elapsed(), -1.0))


def mark_up(n: NodeProcess, run: Run) -> None:
    start, _ = n.down[-1]
    n.down[-1] = (start, run.elapsed())


def submitted(run: Run, n: NodeProcess, after_round: int = -1) -> list[int]:
    return [
        e.round
        for e in run.progress.events
        if isinstance(e, chain.Submitted) and e.trainer.lower() == n.address and e.round > after_round
    ]


def churn_run(
    net: Network, client: ChainClient, rpc: str, work: Path, peers: dict[str, NetnsPeer], args: argparse.Namespace
) -> dict:
    tf = task_file(args.task, args.churn_async, args.phase_seconds, MAX_ROUNDS)
    task_id = publish(client, peers["init"], tf, work / "cache")
    store = Store(peers["init"].api, work / "cache", timeout=30.0)
    nodes = start_nodes(net, client, rpc, work, peers, task_id, tf)
    run = Run(task_id, nodes, Progress(task_id), time.monotonic())
    trainers = [n for n in nodes if n.role == Role.TRAINER]
    validators = [n for n in nodes if n.role == Role.VALIDATOR]
    c = client.concord
    events: list[dict] = []
    wait = args.phase_seconds * 4 + 60

    def phase(r: int) -> Phase:
        return c.phase_of(task_id, r)

    try:
        # warm: round 0 settled, so every node has loaded the task and model 0
        follow_until(client, store, run, lambda: run.progress.finalized >= 1, wait)

        # Each event in a round of its own: the next waits until the round open at the end of this one
        # settled and the churned node caught up, so what a round paid is charged to one event at most.
        def settle(event: dict, caught: Callable[[], bool]) -> None:
            last = c.current_round(task_id)
            follow_until(client, store, run, lambda: run.progress.finalized > last and caught(), wait)
            event["caught_up"] = caught()
            event["settled_s"] = round(run.elapsed(), 1)
            events.append(event)

        def revealed(n: NodeProcess, r: int) -> bool:
            return any(
                isinstance(e, chain.Revealed) and e.validator.lower() == n.address and e.round == r
                for e in run.progress.events
            )

        def open_round_without(n: NodeProcess) -> int | None:
            """The current round when it is in its submit phase and ``n`` has not submitted to it."""
            r = c.current_round(task_id)
            return r if phase(r) == Phase.SUBMIT and r not in submitted(run, n) else None

        state: dict = {}

        def note(key: str, value: int | None) -> bool:
            if value is None:
                return False
            state[key] = value
            return True

        # 1. a trainer SIGKILLed mid-round (its round open, its submission not yet sent), back 5 s later
        t = trainers[0]
        follow_until(client, store, run, lambda: note("t", open_round_without(t)), wait)
        sigkill(t.daemon)  # type: ignore[arg-type]
        mark_down(t, run)
        follow_until(client, store, run, lambda: False, RESTART_PAUSE_S)
        launch(net, t)
        mark_up(t, run)
        event = {"event": "trainer killed mid-round", "node": t.name, "round": state["t"]}
        event.update(at_s=round(t.down[-1][0], 1), down_s=round(t.down[-1][1] - t.down[-1][0], 1))
        settle(event, lambda: bool(submitted(run, t, state["t"])))

        # 2. a validator SIGKILLed once its commit is on chain, restarted at once on its state dir
        v = validators[0]
        r0 = c.current_round(task_id)

        def committed() -> bool:
            for r in range(r0, c.current_round(task_id) + 1):
                status = c.commit_status(task_id, r, v.address)
                if status.committed and not status.revealed:
                    return note("v", r)
            return False

        follow_until(client, store, run, committed, wait)
        sigkill(v.daemon)  # type: ignore[arg-type]
        mark_down(v, run)
        launch(net, v)
        mark_up(v, run)
        event = {"event": "validator killed after commit, restarted", "node": v.name, "round": state["v"]}
        event.update(at_s=round(v.down[-1][0], 1))
        settle(event, lambda: revealed(v, state["v"]))

        # 3. a trainer's IPFS peer SIGKILLed once its submission is on chain (validators are fetching
        #    it), restarted on its repo (same peer ID) and redialed
        t_ipfs = trainers[1]
        r1 = c.current_round(task_id)

        def just_submitted() -> bool:
            mine = submitted(run, t_ipfs, r1 - 1)
            settled = bool(mine) and run.progress.row(mine[-1]).phase in ("finalized", "void")
            return note("i", mine[-1]) if mine and not settled else False

        follow_until(client, store, run, just_submitted, wait)
        peer = t_ipfs.peer
        sigkill(peer.daemon)
        mark_down(t_ipfs, run)
        again = devnet.start_helia(
            work / peer.node.name, 5001, 4001, (), work / f"{peer.node.name}.restarted.log", 120.0,
            host=peer.node.address, wrap=peer.node.wrap,
        )  # fmt: skip
        net.track(again)
        for other in peers.values():
            if other.node.name != peer.node.name:
                devnet.swarm_connect(peer.api_url, other.swarm)
        mark_up(t_ipfs, run)
        event = {"event": "IPFS daemon restarted", "node": t_ipfs.name, "round": state["i"]}
        event.update(at_s=round(t_ipfs.down[-1][0], 1), down_s=round(t_ipfs.down[-1][1] - t_ipfs.down[-1][0], 1))
        settle(event, lambda: bool(submitted(run, t_ipfs, state["i"])))

        # 4. a trainer's link cut for --cut-seconds as a round opens
        t_cut = trainers[2]
        follow_until(client, store, run, lambda: note("c", open_round_without(t_cut)), wait)
        mark_down(t_cut, run)
        with net.cut(t_cut.peer.node):
            follow_until(client, store, run, lambda: False, args.cut_seconds)
        mark_up(t_cut, run)
        event = {"event": f"link cut {args.cut_seconds:g} s", "node": t_cut.name, "round": state["c"]}
        event.update(at_s=round(t_cut.down[-1][0], 1))
        settle(event, lambda: bool(submitted(run, t_cut, state["c"])))

        if run.elapsed() < args.churn_seconds:
            follow_until(client, store, run, lambda: False, args.churn_seconds - run.elapsed())
    finally:
        stop_nodes(nodes)
    follow(client, store, run)
    return {"task_id": task_id, "events": events, "run": run, "min_validators": tf.params.min_validators}


def up_count(nodes: Sequence[NodeProcess], start: float, end: float) -> int:
    """The fewest of ``nodes`` up at any moment of [start, end] (each down span overlapping it counts)."""
    points = [start] + [a for n in nodes for a, _ in n.down if start <= a <= end]
    fewest = len(nodes)
    for t in points:
        down = sum(1 for n in nodes for a, b in n.down if a <= t and (b < 0 or t < b))
        fewest = min(fewest, len(nodes) - down)
    return fewest


def judge_churn(churn: dict) -> dict:
    run: Run = churn["run"]
    nodes = run.nodes
    validators = [n for n in nodes if n.role == Role.VALIDATOR]
    void = []
    for r, row in sorted(run.progress.rounds.items()):
        if row.phase != "void":
            continue
        opened, settled = run.seen.get(r, (0.0, run.elapsed()))
        up = up_count(validators, opened, settled if settled is not None else run.elapsed())
        void.append({"round": r, "validators_up": up, "below_min_validators": up < churn["min_validators"]})
    finalized = {r for r, row in run.progress.rounds.items() if row.phase == "finalized"}
    # who did a finalized round's work unpaid: the lab's one pay check (scripts/pay.py); void rounds
    # are judged above (void only below minValidators), not charged to a node
    unpaid = [u.to_json() for u in pay.unpaid(run.progress.events, run.task_id) if not u.void]
    # a node "stayed up" for a round when none of its down spans overlaps the round's life (from the
    # bench first seeing it open to seeing it settled): churn elsewhere in the run does not excuse it
    by_address = {n.address: n for n in nodes}
    honest_unpaid, churned_unpaid = [], []
    for u in unpaid:
        n = by_address[u["address"]]
        opened, settled = run.seen.get(u["round"], (0.0, None))
        end = run.elapsed() if settled is None else settled
        hit = [a for a, b in n.down if a <= end and (b < 0 or b >= opened)]
        (churned_unpaid if hit else honest_unpaid).append(dict(u, node=n.name))
    return {
        "void_rounds": void,
        "honest_unpaid": honest_unpaid,
        "churned_unpaid": churned_unpaid,
        "rounds": len(finalized),
    }


# ----------------------------------------------------------------------------- the bench


def run(args: argparse.Namespace) -> dict:
    roles = [("init", "initiator", args.validator_mbit)]
    roles += roles_of(args.trainers, args.validators, args.validator_mbit, args.trainer_mbit)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="concord-bench-rounds-") as tmp, Network() as net:
        work = Path(args.keep or tmp)
        client, rpc = start_chain(net, work, 1 + args.validators + args.trainers)
        peers = build_network(net, work, roles)
        print(f"network {net.tag}: {len(peers)} namespaces, chain at {rpc}", file=sys.stderr)
        levels = {}
        if not args.no_async:
            levels = {f"async{k}": async_run(net, client, rpc, work, peers, args, k) for k in LEVELS}
        churn, churn_error = None, None
        if not args.no_churn:
            try:
                churn = churn_run(net, client, rpc, work, peers, args)
            except RuntimeError as e:  # a node that died for good, a round that never settled: reported
                churn_error = str(e)
        cons = conservation(client)
        task_ids = range(1, client.concord.task_count() + 1)  # every task of this chain: this bench's
        off = {t.task_id for t in cons.tasks_off}
        per_task = {str(t): t not in off for t in task_ids}
        judged = judge_churn(churn) if churn else None
    out: dict = {
        "nodes": len(roles),
        "ipfs_daemons": len(roles),
        "trainers": args.trainers,
        "validators": args.validators,
        "topology": "full mesh, one Helia peer per node, each in its own namespace; chain on the bridge",
        "links_mbit": {name: mbit for name, _, mbit in roles},
        "task": str(args.task.relative_to(REPO_ROOT) if args.task.is_relative_to(REPO_ROOT) else args.task),
        "phase_seconds": args.phase_seconds,
        "rounds_seconds": args.rounds_seconds,
        "rounds_per_hour": {k: v["rounds_per_hour"] for k, v in levels.items()},
        "reward_after_s": {k: v["reward"] for k, v in levels.items()},
        "rounds": {k: v["rounds"] for k, v in levels.items()},
        "warmup_s": {k: v["warmup_s"] for k, v in levels.items()},
        "reward_curve": {k: v["curve"] for k, v in levels.items()},
    }
    if churn is not None and judged is not None:
        out.update(
            {
                "churn_async_level": args.churn_async,
                "churn_events": churn["events"],
                "churn_rounds": judged["rounds"],
                "void_rounds": judged["void_rounds"],
                "honest_unpaid": len(judged["honest_unpaid"]),
                "honest_unpaid_detail": judged["honest_unpaid"],
                "churned_unpaid": judged["churned_unpaid"],
            }
        )
    if churn_error is not None:
        out["churn_error"] = churn_error
    out["conservation_ok"] = cons.holds and all(per_task.values())
    out["conservation_per_task"] = per_task
    out["wall_s"] = round(time.monotonic() - started, 1)
    return out


def table(r: dict) -> Table:
    t = Table(title=f"rounds: {r['validators']} validators + {r['trainers']} trainers, {r['rounds_seconds']:g} s each")
    t.add_column("run")
    t.add_column("rounds", justify="right")
    t.add_column("rounds/h", justify="right")
    t.add_column("reward", justify="right")
    for k, rph in r["rounds_per_hour"].items():
        reward = r["reward_after_s"][k]
        t.add_row(k, str(r["rounds"][k]), f"{rph:g}", "-" if reward is None else f"{reward:.3f}")
    if "churn_events" in r:
        t.add_section()
        for e in r["churn_events"]:
            caught = f"caught up {e.get('caught_up')}"
            t.add_row(f"{e['event']} ({e['node']})", f"r{e['round']}", f"@{e['at_s']:g}s", caught)
        t.add_row("void rounds", str(len(r["void_rounds"])), "", "")
        t.add_row("honest unpaid", str(r["honest_unpaid"]), "", "")
    t.add_row("conservation", "ok" if r["conservation_ok"] else "BROKEN", "", "")
    return t


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="concord bench network --rounds", description=__doc__.splitlines()[0])
    p.add_argument("--rounds", action="store_true", help="(selects this half of the bench)")
    p.add_argument("--trainers", type=int, default=4)
    p.add_argument("--validators", type=int, default=3)
    p.add_argument("--validator-mbit", type=float, default=VALIDATOR_MBIT)
    p.add_argument("--trainer-mbit", type=rates, default=TRAINER_MBIT)
    p.add_argument("--task", type=Path, default=DEFAULT_TASK, help="the task file (its spec; phases and level are set)")
    p.add_argument(
        "--phase-seconds", type=int, default=90, help="each phase's deadline (round 0 must fit the nodes' start)"
    )
    p.add_argument("--rounds-seconds", type=float, default=150.0, help="wall time of each async level's run")
    p.add_argument("--churn-seconds", type=float, default=0.0, help="the churn run's wall time at least")
    p.add_argument("--churn-async", type=int, choices=LEVELS, default=0)
    p.add_argument("--cut-seconds", type=float, default=30.0)
    p.add_argument("--no-async", action="store_true", help="only the churn run")
    p.add_argument("--no-churn", action="store_true", help="only the async runs")
    p.add_argument("--keep", type=Path, default=None, help="work in this directory and keep it (logs)")
    return p


def main(argv: Sequence[str]) -> int:
    args = parser().parse_args(argv)
    if args.trainers < 3 and not args.no_churn:
        raise SystemExit(f"--trainers must be at least 3 for the churn run (3 trainers churn), got {args.trainers}")
    if args.validators < 1:
        raise SystemExit(f"--validators must be at least 1, got {args.validators}")
    if not args.task.is_file():
        raise SystemExit(f"--task {args.task}: no such file")
    reason = netns.available()
    if reason is not None:
        raise SystemExit(f"concord bench network --rounds needs network namespaces: {reason}")
    result = run(args)
    Console().print(table(result))
    print(json.dumps(result))
    return 0

"""`concord bench attacks`: every cheat of the adversarial suite on a real devnet, one row each.

Two networks, each on its own devnet (Anvil + js-ipfs on free ports), every node its own
process running the same `concord trainer|validator run` a user types (a cheater: the lab's
`python -m scripts.adversaries.trainer|validator run ... --cheat MODE`, the library's node
with the mode's hooks):

  trainers    2 honest trainers + one trainer per `--cheat MODE` (scripts.adversaries.trainer_cheats.CHEATS) and
              3 honest validators, 2 rounds (some cheats need a round behind them: a replay)
  validators  2 honest trainers + 1 cheating trainer, 3 honest validators + one validator per
              `--cheat MODE` (scripts.adversaries.validator_cheats.VALIDATOR_CHEATS), 1 round

A cheating trainer's row is "detected" when each of its cheating submissions was rejected by
the validators' majority, its trainer slashed `slashAmount`, the bounty credited to exactly
the validators that rejected it (bountyBps of the slash split equally), and nothing paid to
it; a cheat the contract refuses outright (baseRound outside the async window) is detected
when the refusal names the custom error and nothing landed. A cheating validator's row is
detected when it lost exactly what docs/PROTOCOL.md says (the fee share for a losing vote,
`slashAmount` for a withheld reveal) while the round followed the honest majority. Every
honest submission must be accepted and paid its pro-rata share in full, no honest node
slashed, and token conservation must hold after settlement.

A phase whose last act will never come (the refused trainer, validators that never reveal)
would wait out its deadline; once the bench has seen every other act, and the log line of the
node that will not act, it moves Anvil's clock to the deadline instead (`evm_increaseTime`):
the devnet's stand-in for waiting, with the same on-chain effect.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shutil
import sys
import time
import warnings
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rich import box
from rich.console import Console
from rich.table import Table

from concord.client import chain
from concord.client.chain import ChainClient, Phase, Role, keys
from concord.client.content.store import Store
from concord.client.initiator import TaskFile, load_task_file, publish_task
from concord.client.runtime import paths, procs
from concord.validator import context as vctx
from concord.validator import store as vstore
from scripts import REPO_ROOT, devnet
from scripts.adversaries.trainer_cheats import CHEATS
from scripts.adversaries.validator_cheats import VALIDATOR_CHEATS
from scripts.demo import (
    INITIATOR,
    DemoError,
    Interrupted,
    NetworkPlan,
    NodeProc,
    NodeSpec,
    signals_ignored,
    start_nodes,
    stop_nodes,
    wait_exit,
)
from scripts.harness import Actor, Ledger, conservation, enrol, settle_up

log = logging.getLogger(__name__)

TASK_FILE = REPO_ROOT / "configs" / "attacks_task.toml"
DEFAULT_STATE_DIR = paths.home() / "bench-attacks"
HONEST_TRAINERS = 2
HONEST_VALIDATORS = 3
VALIDATOR_NET_TRAINER_CHEAT = "inflated_rewards"
BPS = 10_000
REFUSED_PREFIX = "contract: "  # Cheat.caught_by of a cheat the contract refuses at submit
WITHHOLDS_REVEAL = {"copy_reveal": "RevealDoesNotMatchCommit", "no_reveal": ""}  # mode -> log text to wait for


# ----------------------------------------------------------------------------- plans and results


@dataclass(frozen=True)
class AttackPlan:
    """One network: who runs, for how many rounds, and what acts will never come."""

    name: str
    rounds: int
    nodes: tuple[NodeSpec, ...]
    min_validators: int
    timeout_s: float
    async_level: int = 0  # the task file's; a cheat may act only from some round on (Cheat.acts)

    def trainers(self) -> list[NodeSpec]:
        return [s for s in self.nodes if s.role == Role.TRAINER]

    def validators(self) -> list[NodeSpec]:
        return [s for s in self.nodes if s.role == Role.VALIDATOR]

    def refuses(self, spec: NodeSpec, round_: int) -> bool:
        """The contract will refuse this trainer's submit of ``round_`` (it never lands)."""
        cheat = CHEATS.get(spec.cheat or "")
        return (
            spec.role == Role.TRAINER
            and cheat is not None
            and cheat.caught_by.startswith(REFUSED_PREFIX)
            and cheat.acts(round_, self.async_level)
        )

    def honest_rounds(self, spec: NodeSpec) -> list[int]:
        """The rounds in which a trainer behaves honestly (all of them without a cheat)."""
        cheat = CHEATS.get(spec.cheat or "")
        return [r for r in range(self.rounds) if cheat is None or not cheat.acts(r, self.async_level)]

    def withholds_reveal(self, spec: NodeSpec) -> bool:
        return spec.role == Role.VALIDATOR and spec.cheat in WITHHOLDS_REVEAL

    def awaited_log_text(self, spec: NodeSpec, phase: Phase, round_: int) -> str:
        """What the node's log must show before the bench ends ``phase`` early ('' = nothing)."""
        if phase == Phase.SUBMIT and self.refuses(spec, round_):
            return CHEATS[spec.cheat].caught_by.removeprefix(REFUSED_PREFIX)
        if phase == Phase.REVEAL and self.withholds_reveal(spec):
            return WITHHOLDS_REVEAL[spec.cheat]
        return ""


@dataclass(frozen=True)
class Row:
    scenario: str
    kind: str  # trainer | validator
    detected: bool
    slashed: int
    bounty: int
    honest_false_rejects: int
    note: str


@dataclass
class Observed:
    """What a network run left on chain (every number the rows are decided on)."""

    plan: AttackPlan
    params: chain.TaskParams  # the published task file's params (digests UNPUBLISHED)
    task_id: int
    events: list[chain.ConcordEvent]
    conservation_ok: bool
    state_dir: Path  # <state>/nodes/<name>/ and <state>/logs/<name>.log of every node
    seconds: float

    @property
    def logs(self) -> Path:
        return self.state_dir / "logs"

    def of(self, kind: type) -> list:
        return [e for e in self.events if isinstance(e, kind)]


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    conservation_ok: bool = True
    seconds: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {
            "scenarios": len(self.rows),
            "detected": sum(r.detected for r in self.rows),
            "honest_false_rejects": sum(r.honest_false_rejects for r in self.rows),
            "conservation_ok": self.conservation_ok,
            "seconds": {k: round(v, 1) for k, v in self.seconds.items()},
        }


def trainer_plan(modes: Sequence[str]) -> AttackPlan:
    specs = [NodeSpec(f"trainer-{i + 1}", Role.TRAINER, 1 + i) for i in range(HONEST_TRAINERS)]
    specs += [NodeSpec(f"cheat-{m}", Role.TRAINER, 1 + len(specs) + k, m) for k, m in enumerate(modes)]
    first = 1 + len(specs)
    specs += [NodeSpec(f"validator-{i + 1}", Role.VALIDATOR, first + i) for i in range(HONEST_VALIDATORS)]
    return AttackPlan("trainers", 2, tuple(specs), min_validators=2, timeout_s=900.0, async_level=_async_level())


def validator_plan(modes: Sequence[str]) -> AttackPlan:
    specs = [NodeSpec(f"trainer-{i + 1}", Role.TRAINER, 1 + i) for i in range(HONEST_TRAINERS)]
    specs.append(NodeSpec("cheater", Role.TRAINER, 1 + len(specs), VALIDATOR_NET_TRAINER_CHEAT))
    first = 1 + len(specs)
    specs += [NodeSpec(f"validator-{i + 1}", Role.VALIDATOR, first + i) for i in range(HONEST_VALIDATORS)]
    first = 1 + len(specs)
    specs += [NodeSpec(f"vcheat-{m}", Role.VALIDATOR, first + k, m) for k, m in enumerate(modes)]
    return AttackPlan(
        "validators", 1, tuple(specs), min_validators=HONEST_VALIDATORS, timeout_s=600.0, async_level=_async_level()
    )


def _async_level() -> int:
    return load_task_file(TASK_FILE).params.async_level


# ----------------------------------------------------------------------------- running a network


def log_count(logs: Path, spec: NodeSpec, text: str) -> int:
    path = logs / f"{spec.name}.log"
    return path.read_text(errors="replace").count(text) if path.exists() else 0


def warp_to(client: ChainClient, deadline: int) -> None:
    """Move Anvil's clock just past ``deadline`` and mine a block (devnet only)."""
    now = client.rpc.block_timestamp()
    if deadline >= now:
        client.rpc.call("evm_increaseTime", deadline - now + 1)
        client.rpc.call("evm_mine")


def end_stalled_phase(client: ChainClient, plan: AttackPlan, r: int, info: chain.RoundInfo, logs: Path) -> str | None:
    """End round ``r``'s open phase early when only acts that will never come are missing; returns what it did."""
    if info.phase == Phase.SUBMIT:
        actors, done, deadline = plan.trainers(), info.submissions, info.submit_end
        expected = sum(1 for s in actors if not plan.refuses(s, r))
    elif info.phase == Phase.REVEAL:
        actors, done, deadline = plan.validators(), info.reveals, info.reveal_end
        expected = sum(1 for s in actors if not plan.withholds_reveal(s))
    else:
        return None
    if done < expected or done == len(actors):
        return None
    for s in actors:
        text = plan.awaited_log_text(s, info.phase, r)
        if text and log_count(logs, s, text) == 0:
            return None
    warp_to(client, deadline)
    return f"round {r}: {info.phase.name.lower()} phase ended at its deadline ({done}/{len(actors)} acted)"


def run_plan(plan: AttackPlan, state_dir: Path, console: Console) -> Observed:
    """devnet up -> publish -> enrol -> node processes -> follow (ending stalled phases) -> settle -> down."""
    state_dir = Path(state_dir).resolve() / plan.name
    started = time.monotonic()
    ports = devnet.Ports(procs.free_port(), procs.free_port(), procs.free_port(), procs.free_port())
    nodes: list[NodeProc] = []
    task_file = load_task_file(TASK_FILE)
    params = dataclasses.replace(task_file.params, max_rounds=plan.rounds, min_validators=plan.min_validators)
    task_file = TaskFile(task_file.spec, params, params.per_round * plan.rounds)
    for sub in ("nodes", "logs"):
        shutil.rmtree(state_dir / sub, ignore_errors=True)  # node state of an earlier run names an old chain
    net = devnet.up(state_dir, ports, accounts=1 + len(plan.nodes))
    try:
        client = chain.connect(net.rpc_url, chain.Deployment.from_json(net.deployment))
        store = Store(net.ipfs_api, state_dir / "bench-cache", timeout=30.0)
        initiator = client.signer(keys.devnet_account(INITIATOR))
        start_block = client.rpc.block_number() + 1
        task_id = publish_task(client, initiator, store, task_file, str(TASK_FILE)).task_id
        for spec in plan.nodes:
            enrol(
                client,
                spec.account,
                spec.role,
                params.min_trainer_stake if spec.role == Role.TRAINER else params.min_validator_stake,
                task_id,
            )
        # One IPFS peer for the whole network (the initiator's), not one per node: this bench measures what each
        # cheat costs under the rules, and ~30 Helia peers on 2 cores made honest trainers miss the fetch bound
        # in round 1 (per-node peers are the demo's default and are tested in tests/test_peer_network.py).
        net_plan = NetworkPlan(TASK_FILE, plan.rounds, plan.nodes, timeout_s=plan.timeout_s, live=False, own_ipfs=False)
        start_nodes(plan.nodes, net, task_id, net_plan, nodes)
        logs = state_dir / "logs"
        console.print(
            f"{plan.name}: task {task_id}: {len(plan.trainers())} trainers, {len(plan.validators())} "
            f"validators as processes; logs in {logs}"
        )
        follow(client, plan, task_id, nodes, logs, console, started)
        wait_exit(nodes, 20.0)
        stop_nodes(nodes)
        actors = [Actor(s.name, s.role, client.signer(keys.devnet_account(s.account))) for s in plan.nodes]
        settle_up(client, initiator, actors, task_id)
        events = [
            e
            for e in client.concord.events(start_block, client.rpc.block_number())
            if getattr(e, "task_id", task_id) == task_id
        ]
        return Observed(
            plan, params, task_id, events, conservation(client).holds, state_dir, time.monotonic() - started
        )
    finally:
        with signals_ignored():
            stop_nodes(nodes)
            devnet.down(state_dir)


def follow(
    client: ChainClient,
    plan: AttackPlan,
    task_id: int,
    nodes: Sequence[NodeProc],
    logs: Path,
    console: Console,
    started: float,
) -> None:
    """Until every round is finalized: watch the nodes (one that fails is an error) and stalled
    phases; one progress line whenever a round changes phase."""
    seen: tuple[int, Phase] | None = None
    while True:
        for n in nodes:
            code = n.proc.poll()
            if code not in (None, 0):
                raise DemoError(
                    f"{n.name} exited with status {code}: {procs.log_tail(n.daemon.log_path, 8)} "
                    f"(log {n.daemon.log_path})"
                )
        finalized = client.concord.task_state(task_id).finalized_rounds
        if finalized >= plan.rounds:
            console.print(f"{plan.name}: {plan.rounds} rounds finalized after {time.monotonic() - started:.0f}s")
            return
        r = client.concord.current_round(task_id)
        info = client.concord.round_info(task_id, r)
        if (r, info.phase) != seen:
            seen = (r, info.phase)
            console.print(
                f"{plan.name}: round {r} {info.phase.name.lower()} ({time.monotonic() - started:.0f}s): "
                f"{info.submissions} submitted, {info.commits} committed, {info.reveals} revealed"
            )
        did = end_stalled_phase(client, plan, r, info, logs)
        if did:
            console.print(f"{plan.name}: {did}")
        if time.monotonic() - started > plan.timeout_s:
            raise DemoError(
                f"{plan.name}: only {finalized} of {plan.rounds} rounds finalized after "
                f"{plan.timeout_s:.0f}s; node logs in {logs}"
            )
        time.sleep(0.5)


# ----------------------------------------------------------------------------- judging


def reject_sets(obs: Observed) -> dict[tuple[int, int], set[str]]:
    """(round, index) -> the validators whose revealed bitmap rejected it."""
    out: dict[tuple[int, int], set[str]] = defaultdict(set)
    subs = defaultdict(int)
    for s in obs.of(chain.Submitted):
        subs[s.round] = max(subs[s.round], s.index + 1)
    for rv in obs.of(chain.Revealed):
        for i in range(subs[rv.round]):
            if (rv.reject_words[i // 256] >> (i % 256)) & 1:
                out[(rv.round, i)].add(rv.validator.lower())
    return out


def failed_checks(obs: Observed) -> dict[tuple[int, int], set[str]]:
    """(round, index) -> the checks the honest validators' verdicts (in their state dirs) name as failed."""
    out: dict[tuple[int, int], set[str]] = defaultdict(set)
    for s in obs.plan.validators():
        if s.cheat is None:
            for v in vstore.load_verdicts(vctx.task_dir(obs.state_dir / "nodes" / s.name, obs.task_id)):
                if not v.accepted:
                    out[(v.round, v.index)].add(v.failed_check)
    return out


def expected_bounties(obs: Observed) -> dict[tuple[int, str], int]:
    """(round, validator) -> what the rules credit: each rejected submission's rejecters share bountyBps."""
    rejecters = reject_sets(obs)
    out: dict[tuple[int, str], int] = defaultdict(int)
    for e in obs.of(chain.SubmissionRejected):
        who = rejecters[(e.round, e.index)]
        for v in who:
            out[(e.round, v)] += e.slashed * obs.params.bounty_bps // BPS // len(who)
    return out


def paid_bounties(obs: Observed) -> dict[tuple[int, str], int]:
    out: dict[tuple[int, str], int] = defaultdict(int)
    for e in obs.of(chain.BountyPaid):
        out[(e.round, e.validator.lower())] += e.amount
    return out


def fair_rewards(obs: Observed) -> dict[tuple[int, int], int]:
    """(round, index) -> the pro-rata share an accepted submission is owed."""
    work = {e.round: e.accepted_work for e in obs.of(chain.RoundFinalized)}
    rejected = {(e.round, e.index) for e in obs.of(chain.SubmissionRejected)}
    return {
        (s.round, s.index): obs.params.trainer_reward_per_round * s.work_units // work[s.round]
        for s in obs.of(chain.Submitted)
        if (s.round, s.index) not in rejected and work.get(s.round)
    }


def honest_outcome(obs: Observed, honest: Sequence[tuple[str, int]]) -> tuple[int, list[str]]:
    """Honest (trainer, round) submissions: (false rejects, problems) — each accepted and paid in full."""
    subs = {(s.trainer.lower(), s.round): s for s in obs.of(chain.Submitted)}
    rejected = {(e.round, e.index) for e in obs.of(chain.SubmissionRejected)}
    paid = {(e.round, e.index): e.reward for e in obs.of(chain.SubmissionRewarded)}
    owed = fair_rewards(obs)
    false_rejects, problems = 0, []
    for who, r in honest:
        s = subs.get((who, r))
        if s is None:
            problems.append(f"{who[:10]} did not submit round {r}")
        elif (r, s.index) in rejected:
            false_rejects += 1
            problems.append(f"{who[:10]} rejected in round {r}")
        elif paid.get((r, s.index)) != owed.get((r, s.index)):
            problems.append(f"{who[:10]} paid {paid.get((r, s.index))} in round {r}, owed {owed.get((r, s.index))}")
    return false_rejects, problems


def validator_problems(obs: Observed, honest_validators: Sequence[str]) -> list[str]:
    """Honest validators: never slashed, paid the fee share of the winning digest every round."""
    problems = []
    slashed = {e.validator.lower() for e in obs.of(chain.ValidatorSlashed)}
    fees = defaultdict(int)
    for e in obs.of(chain.ValidatorPaid):
        fees[(e.round, e.validator.lower())] += e.fee
    for v in honest_validators:
        if v in slashed:
            problems.append(f"honest validator {v[:10]} slashed")
        for r in range(obs.plan.rounds):
            if fees[(r, v)] == 0:
                problems.append(f"honest validator {v[:10]} got no fee in round {r}")
    return problems


def judge_trainers(obs: Observed) -> list[Row]:
    """One row per cheating trainer (rows carry the network-wide honest problems on the first row)."""
    subs = obs.of(chain.Submitted)
    rejected = {(e.round, e.index): e for e in obs.of(chain.SubmissionRejected)}
    rewarded = {(e.round, e.index) for e in obs.of(chain.SubmissionRewarded)}
    bounties_ok = expected_bounties(obs) == paid_bounties(obs)
    checks = failed_checks(obs)
    honest = [(s.address.lower(), r) for s in obs.plan.trainers() for r in obs.plan.honest_rounds(s)]
    false_rejects, problems = honest_outcome(obs, honest)
    problems += validator_problems(obs, [s.address.lower() for s in obs.plan.validators()])
    if not bounties_ok:
        problems.append("bounties differ from the rules")
    rows = []
    for spec in obs.plan.trainers():
        if spec.cheat is None:
            continue
        cheat, me = CHEATS[spec.cheat], spec.address.lower()
        rounds = [r for r in range(obs.plan.rounds) if cheat.acts(r, obs.plan.async_level)]
        mine = [s for s in subs if s.trainer.lower() == me and s.round in rounds]
        if cheat.caught_by.startswith(REFUSED_PREFIX):
            error = cheat.caught_by.removeprefix(REFUSED_PREFIX)
            detected = not mine and log_count(obs.logs, spec, error) >= len(rounds)
            rows.append(
                Row(
                    spec.cheat,
                    "trainer",
                    detected,
                    0,
                    0,
                    0,
                    f"submit refused by the contract ({error}): nothing landed, nothing to slash",
                )
            )
            continue
        hits = [rejected.get((s.round, s.index)) for s in mine]
        detected = (
            len(mine) == len(rounds)
            and all(h is not None and h.slashed == obs.params.slash_amount for h in hits)
            and not any((s.round, s.index) in rewarded for s in mine)
            and bounties_ok
        )
        slashed = sum(h.slashed for h in hits if h is not None)
        bounty = sum(h.bounty for h in hits if h is not None)
        seen = sorted(set().union(*(checks[(s.round, s.index)] for s in mine))) if mine else []
        how = ", ".join(seen) or "-"
        if seen != [cheat.caught_by]:
            how += f" (expected {cheat.caught_by})"
        rows.append(
            Row(
                spec.cheat,
                "trainer",
                detected,
                slashed,
                bounty,
                0,
                f"{sum(h is not None for h in hits)}/{len(rounds)} rejected by {how}",
            )
        )
    if rows:
        rows[0] = dataclasses.replace(
            rows[0],
            honest_false_rejects=false_rejects,
            note=rows[0].note + ("; " + "; ".join(problems) if problems else ""),
        )
        if problems:
            rows[0] = dataclasses.replace(rows[0], detected=False)
    return rows


def judge_validators(obs: Observed) -> list[Row]:
    """One row per cheating validator: it lost exactly what the rules say; the round followed the honest majority."""
    honest_vals = [s.address.lower() for s in obs.plan.validators() if s.cheat is None]
    cheater = next(s for s in obs.plan.trainers() if s.cheat is not None).address.lower()
    honest_trainers = [
        (s.address.lower(), r) for s in obs.plan.trainers() if s.cheat is None for r in range(obs.plan.rounds)
    ]
    false_rejects, problems = honest_outcome(obs, honest_trainers)
    problems += validator_problems(obs, honest_vals)
    revealed = {(e.round, e.validator.lower()): e for e in obs.of(chain.Revealed)}
    committed = {(e.round, e.validator.lower()): e.commitment for e in obs.of(chain.Committed)}
    finals = {e.round: e for e in obs.of(chain.RoundFinalized)}
    shares_in = {(e.round, e.validator.lower()) for e in obs.of(chain.SeedShareCommitted)}
    shares_out = {(e.round, e.validator.lower()) for e in obs.of(chain.SeedShareRevealed)}
    for r in range(obs.plan.rounds):
        honest_digests = {revealed[(r, v)].next_model_digest for v in honest_vals if (r, v) in revealed}
        if r not in finals or finals[r].is_void or honest_digests != {finals[r].next_model_digest}:
            problems.append(f"round {r}: the next model is not the honest validators' digest")
    cheat_subs = [s for s in obs.of(chain.Submitted) if s.trainer.lower() == cheater]
    rejected = {(e.round, e.index) for e in obs.of(chain.SubmissionRejected)}
    if not cheat_subs or any((s.round, s.index) not in rejected for s in cheat_subs):
        problems.append("the cheating trainer was not rejected")
    ledger = Ledger.of(obs.events)  # what each address earned and lost, from the events
    fee, vslash, bounty = (
        defaultdict(int, {a.lower(): x for a, x in d.items()}) for d in (ledger.fee, ledger.slashed, ledger.bounty)
    )
    honest_fee = min((fee[v] for v in honest_vals), default=0)
    expected_bounty = expected_bounties(obs)
    rows = []
    for spec in obs.plan.validators():
        if spec.cheat is None:
            continue
        me, mode, R = spec.address.lower(), spec.cheat, obs.plan.rounds
        owed_bounty = sum(expected_bounty[(r, me)] for r in range(R))
        withheld = all((r, me) in committed and (r, me) not in revealed for r in range(R))
        if mode in WITHHOLDS_REVEAL:
            others = [s.address.lower() for s in obs.plan.validators() if s.address.lower() != me]
            copied = all(committed.get((r, me)) in {committed.get((r, v)) for v in others} for r in range(R))
            ok = withheld and vslash[me] == obs.params.slash_amount * R and fee[me] == 0 and bounty[me] == 0
            if mode == "copy_reveal":
                ok = ok and copied and log_count(obs.logs, spec, WITHHOLDS_REVEAL[mode]) >= R
            note = (
                f"{'copied a commitment, reveal refused; ' if mode == 'copy_reveal' else ''}"
                f"never revealed: slashed {tokens(vslash[me])}, fee 0"
            )
        elif VALIDATOR_CHEATS[mode].honest_vote:
            # lazy, false_flags, withhold_share: it reveals the honest validators' vote, so it is paid like
            # them; only a withheld seed share costs (slashAmount per round), and no verdict changes
            voted = all(
                (r, me) in revealed and revealed[(r, me)].next_model_digest == finals[r].next_model_digest
                for r in range(R)
                if r in finals
            )
            withheld_share = VALIDATOR_CHEATS[mode].withhold_share
            held = all((r, me) in shares_in and (r, me) not in shares_out for r in range(R))
            owed_slash = obs.params.slash_amount * R if withheld_share else 0
            ok = (
                voted
                and fee[me] == honest_fee > 0
                and bounty[me] == owed_bounty
                and vslash[me] == owed_slash
                and (held or not withheld_share)
            )
            note = (
                f"revealed the honest vote: fee {tokens(fee[me])} (honest validators {tokens(honest_fee)}), "
                f"bounty {tokens(bounty[me])}, slashed {tokens(vslash[me])}"
            )
        else:
            voted = all((r, me) in revealed for r in range(R))
            ok = voted and vslash[me] == 0 and fee[me] == 0 and honest_fee > 0 and bounty[me] == owed_bounty
            if mode == "accept_cheat":
                ok = ok and bounty[me] == 0
            note = (
                f"revealed, its digest lost the vote: fee 0 (honest validators {tokens(honest_fee)}), "
                f"bounty {tokens(bounty[me])}, not slashed"
            )
        rows.append(
            Row(
                mode,
                "validator",
                ok and not problems,
                vslash[me],
                bounty[me],
                0,
                VALIDATOR_CHEATS[mode].expected_loss + " — " + note,
            )
        )
    if rows:
        rows[0] = dataclasses.replace(
            rows[0],
            honest_false_rejects=false_rejects,
            note=rows[0].note + ("; " + "; ".join(problems) if problems else ""),
        )
    return rows


# ----------------------------------------------------------------------------- faults

FAULTS = (
    "trainer_killed_during_upload",
    "validator_killed_between_commit_and_reveal",
    "ipfs_sigkilled",
    "anvil_frozen",
    "revert_named_by_cli",
    "slow_provider",
)


def run_faults(names: Sequence[str], state_dir: Path, console: Console) -> tuple[list[Row], float]:
    """scripts.drills on one Anvil (each drill from the same snapshot) and a shared js-ipfs;
    a drill's row is "detected" when the network came through whole: conservation, no honest node
    slashed, nothing paid twice, and the drill's own expectations held."""
    from concord.client.chain import deploy
    from scripts import drills as drills

    state_dir = Path(state_dir).resolve() / "faults"
    shutil.rmtree(state_dir, ignore_errors=True)
    state_dir.mkdir(parents=True)
    started = time.monotonic()
    port = procs.free_port()
    anvil = devnet.start_anvil(port, state_dir / "anvil.log")
    shared: drills.IpfsDaemon | None = None
    rows = []
    try:
        url = f"http://127.0.0.1:{port}"
        client = chain.connect(url, deploy.deploy_devnet(url, 10, devnet.DEVNET_MINT).deployment)
        shared = drills.IpfsDaemon.start(state_dir / "shared")
        for name in names:
            snapshot = client.rpc.call("evm_snapshot")
            work = state_dir / name
            work.mkdir()
            if name == "ipfs_sigkilled":
                own = drills.IpfsDaemon.start(work)
                try:
                    result = drills.drill_ipfs_sigkilled(client, own, work)
                finally:
                    own.stop()
            elif name == "anvil_frozen":
                result = drills.drill_anvil_frozen(client, anvil, shared.api, work)
            else:
                result = getattr(drills, f"drill_{name}")(client, shared.api, work)
            client.rpc.call("evm_revert", snapshot)
            whole = result.ok and result.conservation_ok and not result.honest_slashed and not result.paid_twice
            console.print(f"faults: {name}: {'ok' if whole else 'FAILED'} in {result.seconds:.0f}s")
            slashed = sum(result.facts.get("slashed", {}).values())  # an attack drill's cheater (slow_provider)
            rows.append(Row(name, "fault", whole, slashed, 0, len(result.honest_slashed), result.detail))
    finally:
        with signals_ignored():
            if shared is not None:
                shared.stop()
            procs.stop(anvil)
    return rows, time.monotonic() - started


# ----------------------------------------------------------------------------- the bench


def run_attacks(
    state_dir: Path,
    trainer_modes: Sequence[str],
    validator_modes: Sequence[str],
    faults: Sequence[str],
    console: Console,
) -> Report:
    report = Report()
    for plan, judge in (
        (trainer_plan(trainer_modes), judge_trainers),
        (validator_plan(validator_modes), judge_validators),
    ):
        if (
            not plan.nodes
            or (plan.name == "trainers" and not trainer_modes)
            or (plan.name == "validators" and not validator_modes)
        ):
            continue
        obs = run_plan(plan, state_dir, console)
        report.rows += judge(obs)
        report.conservation_ok &= obs.conservation_ok
        report.seconds[plan.name] = obs.seconds
    if faults:
        rows, seconds = run_faults(faults, state_dir, console)
        report.rows += rows
        report.seconds["faults"] = seconds
    return report


def tokens(base_units: int) -> str:
    """Whole DevTokens (18 decimals), as the task file writes them."""
    return f"{base_units / 10**18:g}"


def table(report: Report) -> Table:
    t = Table(title="Attacks on a real devnet (token amounts in DevTokens)", box=box.SIMPLE_HEAD)
    for col in ("scenario", "kind", "detected", "slashed", "bounty", "honest false rejects", "how"):
        t.add_column(col, justify="right" if col in {"slashed", "bounty", "honest false rejects"} else "left")
    for r in report.rows:
        t.add_row(
            r.scenario,
            r.kind,
            "yes" if r.detected else "NO",
            tokens(r.slashed),
            tokens(r.bounty),
            str(r.honest_false_rejects),
            r.note,
        )
    return t


def main(argv: Sequence[str] | None = None) -> int:
    """`concord bench attacks [--trainer-cheats a,b] [--validator-cheats a,b] [--faults a,b]
    [--state-dir D] [--json]`."""
    p = argparse.ArgumentParser(prog="concord bench attacks", description=__doc__.splitlines()[0])
    p.add_argument(
        "--trainer-cheats",
        default=",".join(CHEATS),
        help="comma-separated trainer --cheat modes ('' for none; default: all)",
    )
    p.add_argument(
        "--validator-cheats",
        default=",".join(VALIDATOR_CHEATS),
        help="comma-separated validator --cheat modes ('' for none; default: all)",
    )
    p.add_argument(
        "--faults", default=",".join(FAULTS), help="comma-separated fault drills ('' for none; default: all)"
    )
    p.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR, help="devnets, node logs and state")
    p.add_argument("--json", action="store_true", help="print only the final JSON line")
    args = p.parse_args(argv)
    trainer_modes = [m for m in args.trainer_cheats.split(",") if m]
    validator_modes = [m for m in args.validator_cheats.split(",") if m]
    faults = [m for m in args.faults.split(",") if m]
    for flag, modes, known in (
        ("--trainer-cheats", trainer_modes, CHEATS),
        ("--validator-cheats", validator_modes, VALIDATOR_CHEATS),
        ("--faults", faults, FAULTS),
    ):
        unknown = [m for m in modes if m not in known]
        if unknown:
            p.error(f"{flag}: unknown mode(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    args.state_dir.mkdir(parents=True, exist_ok=True)  # in-process nodes of the fault drills log here
    logging.basicConfig(
        level=logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        filename=args.state_dir / "bench.log",
    )
    warnings.filterwarnings("ignore", "The 'strict' parameter", FutureWarning)
    console = Console(width=200, quiet=args.json)
    try:
        with procs.no_orphans():
            report = run_attacks(args.state_dir, trainer_modes, validator_modes, faults, console)
    except (KeyboardInterrupt, Interrupted) as e:
        console.print(f"interrupted ({e or 'SIGINT'}): every node and daemon stopped")
        return 130
    except (DemoError, procs.ProcError, chain.ChainError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    console.print(table(report))
    print(json.dumps(report.to_json()), flush=True)
    ok = (
        all(r.detected for r in report.rows)
        and report.conservation_ok
        and report.to_json()["honest_false_rejects"] == 0
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""An independent judge of an adversarial network run, from the chain alone.

`concord bench attacks` judges its own runs (scripts.bench.attacks.judge_trainers/validators, which
also read the nodes' logs and verdict files). This judge shares none of that code: it reads the
Concord contract's events (client.chain's decoded event classes) and its views (stakes, credited
balances, the task's escrow, the totals, the token balance), and holds them against the protocol's
rules (docs/PROTOCOL.md) and a list of who cheated how:

* a cheating trainer: each submission of a round it cheats in was rejected, slashed the task's
  slashAmount and paid nothing; a cheat the contract refuses landed no submission and no slash;
* a cheating validator: paid no fee in any round; one that withholds its reveal committed, never
  revealed and was slashed slashAmount each round; one that withholds its seed share committed
  one, never revealed it and was slashed slashAmount each round (once, whatever else it did); one
  that revealed everything was not slashed and its digest was not the next model;
* every honest node: never slashed, its stake whole; an honest trainer's every submission paid,
  an honest validator paid its fee share every round in which some submission was decided;
* bounties: each rejection's bountyBps of the slash, split equally among exactly the validators
  whose revealed bitmap rejected it;
* conservation: per round (reserved = rewards + fees + returned; slashes less bounties = what the
  round's StakeBurned events burned), per task (the escrow the chain holds = budget in - paid out
  - reclaimed = budget + reserved: slashes are burned, never kept), per node (stake = deposited -
  slashed; credited = earned - withdrawn) and in all (the protocol's token balance = escrow +
  stakes + credited).

`judge` returns the problems it found, each starting with the node (or "task"/"network") it is
about: an empty list is a pass.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from concord.client import chain
from concord.client.chain import ChainClient, Role

BPS = 10_000


@dataclass(frozen=True)
class Scenario:
    """One cheating node: what the judge must find on chain for it."""

    name: str  # the node's name (problems start with it)
    address: str
    role: Role
    cheating_rounds: tuple[int, ...] = ()  # trainer: the rounds it cheats in
    refused: bool = False  # trainer: the contract refuses its cheating submit (nothing lands)
    withholds_reveal: bool = False  # validator: commits, never reveals
    withholds_share: bool = False  # validator: commits a seed share, never reveals it
    honest_vote: bool = False  # validator: reveals the honest vote (lazy, false flags): its digest wins, fee paid


@dataclass(frozen=True)
class ChainRecord:
    """What the chain holds after settlement: the task's events and the views the judge checks them against."""

    task_id: int
    events: tuple[chain.ConcordEvent, ...]
    stake: dict[str, int]  # node -> nodeInfo().stake
    credited: dict[str, int]  # account -> balanceOf() (credited, not withdrawn)
    escrow: chain.TaskEscrow
    totals: chain.Totals
    token_balance: int  # token.balanceOf(Concord)
    nodes: dict[str, str] = field(default_factory=dict)  # address -> name (for messages)


def read_chain(client: ChainClient, task_id: int, nodes: dict[str, str]) -> ChainRecord:
    """Every Concord event of ``task_id`` (and the ones that name no task) since genesis, and the views."""
    c = client.concord
    events = tuple(e for e in c.events(0, "latest") if getattr(e, "task_id", task_id) == task_id)
    accounts = {a.lower() for a in nodes}
    accounts |= {e.initiator.lower() for e in events if isinstance(e, chain.TaskCreated)}
    return ChainRecord(
        task_id,
        events,
        {a.lower(): c.node_info(a).stake for a in nodes},
        {a: c.balance_of(a) for a in accounts},
        c.task_escrow(task_id),
        c.totals(),
        client.token.balance_of(c.address),
        {a.lower(): n for a, n in nodes.items()},
    )


def _of(events: Iterable[chain.ConcordEvent], kind: type) -> list:
    return [e for e in events if isinstance(e, kind)]


def judge(record: ChainRecord, scenarios: Sequence[Scenario]) -> list[str]:
    """The problems of the run in ``record`` given who cheated (``scenarios``); [] when it all holds."""
    ev = record.events
    created = [e for e in _of(ev, chain.TaskCreated) if e.task_id == record.task_id]
    if len(created) != 1:
        return [f"task: {len(created)} TaskCreated events for task {record.task_id}"]
    params: chain.TaskParams = created[0].params
    problems: list[str] = []

    def name(address: str) -> str:
        return record.nodes.get(address.lower(), address[:10])

    subs = {(e.round, e.index): e for e in _of(ev, chain.Submitted)}
    rejected = {(e.round, e.index): e for e in _of(ev, chain.SubmissionRejected)}
    rewarded = {(e.round, e.index): e for e in _of(ev, chain.SubmissionRewarded)}
    committed = {(e.round, e.validator.lower()) for e in _of(ev, chain.Committed)}
    revealed = {(e.round, e.validator.lower()): e for e in _of(ev, chain.Revealed)}
    finals = {e.round: e for e in _of(ev, chain.RoundFinalized)}
    opened = {e.round: e for e in _of(ev, chain.RoundOpened)}
    fees: dict[tuple[int, str], int] = defaultdict(int)
    for e in _of(ev, chain.ValidatorPaid):
        fees[(e.round, e.validator.lower())] += e.fee
    vslashed: dict[tuple[int, str], int] = defaultdict(int)
    for e in _of(ev, chain.ValidatorSlashed):
        vslashed[(e.round, e.validator.lower())] += e.amount
    shares_in = {(e.round, e.validator.lower()) for e in _of(ev, chain.SeedShareCommitted)}
    shares_out = {(e.round, e.validator.lower()) for e in _of(ev, chain.SeedShareRevealed)}
    burned: dict[int, int] = defaultdict(int)
    for e in _of(ev, chain.StakeBurned):
        burned[e.round] += e.amount
    rounds = range(params.max_rounds)
    for r in rounds:
        if r not in finals:
            problems.append(f"task: round {r} not finalized")

    # -- the cheaters
    cheaters = {s.address.lower() for s in scenarios}
    for s in scenarios:
        me = s.address.lower()
        if s.role == Role.TRAINER:
            for r in s.cheating_rounds:
                mine = [k for k, e in subs.items() if k[0] == r and e.trainer.lower() == me]
                if s.refused:
                    if mine:
                        problems.append(f"{s.name}: round {r}: a submission landed that the contract must refuse")
                    continue
                if not mine:
                    problems.append(f"{s.name}: round {r}: no submission (the cheat did not play)")
                for k in mine:
                    hit = rejected.get(k)
                    if hit is None:
                        problems.append(f"{s.name}: round {r}: cheating submission {k[1]} not slashed")
                    elif hit.slashed != params.slash_amount:
                        problems.append(
                            f"{s.name}: round {r}: slashed {hit.slashed}, slashAmount {params.slash_amount}"
                        )
                    if k in rewarded:
                        problems.append(f"{s.name}: round {r}: cheating submission {k[1]} paid {rewarded[k].reward}")
            if s.refused and any(e.trainer.lower() == me for e in rejected.values()):
                problems.append(f"{s.name}: slashed although nothing of its cheat landed")
        else:
            for r in rounds:
                if fees[(r, me)] and not s.honest_vote:
                    problems.append(f"{s.name}: round {r}: paid a fee of {fees[(r, me)]}")
                if s.honest_vote and not fees[(r, me)]:
                    problems.append(f"{s.name}: round {r}: revealed the honest vote and was paid no fee")
                if s.withholds_share and ((r, me) not in shares_in or (r, me) in shares_out):
                    problems.append(f"{s.name}: round {r}: expected a seed share and no share reveal")
                if s.withholds_reveal and ((r, me) not in committed or (r, me) in revealed):
                    problems.append(f"{s.name}: round {r}: expected a commitment and no reveal")
                if s.withholds_reveal or s.withholds_share:
                    what = "reveal" if s.withholds_reveal else "seed share"
                    if vslashed[(r, me)] != params.slash_amount:  # once, even for both
                        problems.append(
                            f"{s.name}: round {r}: slashed {vslashed[(r, me)]} for its withheld {what}, "
                            f"slashAmount {params.slash_amount}"
                        )
                if not s.withholds_reveal:
                    if (r, me) not in revealed:
                        problems.append(f"{s.name}: round {r}: never revealed")
                    elif r in finals and (revealed[(r, me)].next_model_digest == finals[r].next_model_digest) != (
                        s.honest_vote
                    ):
                        lost_or_won = "lost" if s.honest_vote else "won"
                        problems.append(f"{s.name}: round {r}: its next-model digest {lost_or_won} the vote")
                    if vslashed[(r, me)] and not s.withholds_share:
                        problems.append(f"{s.name}: round {r}: slashed {vslashed[(r, me)]} although it revealed")

    # -- the honest nodes
    registered = {e.node.lower(): e.role for e in _of(ev, chain.NodeRegistered)}
    for a, role in registered.items():
        if a in cheaters:
            continue
        if any(e.trainer.lower() == a for e in rejected.values()) or any(v == a for _, v in vslashed):
            problems.append(f"{name(a)}: honest and slashed")
        if role == Role.TRAINER:
            for k, e in subs.items():
                if e.trainer.lower() == a and k not in rewarded and k[0] in finals and not finals[k[0]].is_void:
                    problems.append(f"{name(a)}: honest submission {k[1]} of round {k[0]} not paid")
        else:
            joined = any(e.node.lower() == a for e in _of(ev, chain.Joined))
            for r in rounds:
                # the fee pays for deciding submissions: none for a round whose every submission tied
                decided = any(k[0] == r for k in (*rejected, *rewarded))
                settled = r in finals and not finals[r].is_void and decided
                if joined and settled and fees[(r, a)] == 0:
                    problems.append(f"{name(a)}: honest validator paid no fee in round {r}")

    # -- bounties: bountyBps of each slash, equally to exactly the validators that rejected it
    submissions: dict[int, int] = defaultdict(int)
    for r, i in subs:
        submissions[r] = max(submissions[r], i + 1)
    owed: dict[tuple[int, str], int] = defaultdict(int)
    for (r, i), e in rejected.items():
        who = [
            v
            for (rr, v), rv in revealed.items()
            if rr == r and i in chain.rejected_indexes(rv.reject_words, submissions[r])
        ]
        share = e.slashed * params.bounty_bps // BPS // len(who) if who else 0
        for v in who:
            owed[(r, v)] += share
        if e.bounty != share * len(who):
            problems.append(f"task: round {r}: submission {i}'s bounty {e.bounty}, rules say {share * len(who)}")
    paid: dict[tuple[int, str], int] = defaultdict(int)
    for e in _of(ev, chain.BountyPaid):
        paid[(e.round, e.validator.lower())] += e.amount
    for k in sorted(set(owed) | set(paid)):
        if owed[k] != paid[k]:
            problems.append(f"{name(k[1])}: round {k[0]}: bounty {paid[k]}, rules say {owed[k]}")

    # -- conservation per round: the pool equals what was paid and returned; the slashes, less
    #    bounties, were burned (none of it stays with the task)
    for r, f in finals.items():
        net = sum(e.slashed - e.bounty for (rr, _), e in rejected.items() if rr == r)
        net += sum(x for (rr, _), x in vslashed.items() if rr == r)
        out = sum(e.reward for (rr, _), e in rewarded.items() if rr == r)
        out += sum(x for (rr, _), x in fees.items() if rr == r)
        reserved = opened[r].reserved if r in opened else 0
        if reserved != out + f.returned:
            problems.append(f"task: round {r}: reserved {reserved} != paid {out} + returned {f.returned}")
        if burned[r] != net:
            problems.append(f"task: round {r}: burned {burned[r]}, slashes less bounties {net}")
        if out > params.per_round:
            problems.append(f"task: round {r}: paid {out}, more than the round's pool {params.per_round}")

    # -- conservation per task: what came in, less what went out, is what the chain holds for it
    inflow = created[0].budget + sum(e.amount for e in _of(ev, chain.TaskToppedUp))
    outflow = sum(e.reward for e in rewarded.values()) + sum(fees.values())
    outflow += sum(e.amount for e in _of(ev, chain.BudgetReclaimed))
    if inflow - outflow != record.escrow.held:
        problems.append(f"task: the events leave {inflow - outflow} in escrow, the chain holds {record.escrow.held}")
    if record.escrow.held != record.escrow.budget + record.escrow.reserved:
        problems.append(
            f"task: holds {record.escrow.held}, owes budget {record.escrow.budget} + reserved {record.escrow.reserved}"
        )

    # -- conservation per node: stake and credited balance are what the events add up to
    deposited: dict[str, int] = defaultdict(int)
    for e in _of(ev, chain.NodeRegistered):
        deposited[e.node.lower()] += e.stake
    for e in _of(ev, chain.StakeAdded):
        deposited[e.node.lower()] += e.amount
    for e in rejected.values():
        deposited[e.trainer.lower()] -= e.slashed
    for (_, v), x in vslashed.items():
        deposited[v] -= x
    for e in _of(ev, chain.UnbondCompleted):
        deposited[e.node.lower()] -= e.amount
    for a, stake in record.stake.items():
        if deposited[a] != stake:
            problems.append(f"{name(a)}: stake {stake} on chain, the events say {deposited[a]}")
    earned: dict[str, int] = defaultdict(int)
    for e in rewarded.values():
        earned[e.trainer.lower()] += e.reward
    for (_, v), x in fees.items():
        earned[v] += x
    for (_, v), x in paid.items():
        earned[v] += x
    for e in _of(ev, chain.BudgetReclaimed):
        earned[e.initiator.lower()] += e.amount
    for e in _of(ev, chain.UnbondCompleted):
        earned[e.node.lower()] += e.amount
    for e in _of(ev, chain.Withdrawn):
        earned[e.account.lower()] -= e.amount
    for a, credited in record.credited.items():
        if earned[a] != credited:
            problems.append(f"{name(a)}: credited {credited} on chain, the events say {earned[a]}")

    # -- conservation in all
    t = record.totals
    if record.token_balance != t.escrow + t.staked + t.credited:
        problems.append(
            f"network: token balance {record.token_balance} != escrow {t.escrow} + stakes {t.staked} "
            f"+ credited {t.credited}"
        )
    return problems

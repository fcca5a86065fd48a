"""Who did work in a round and was not paid for it: the lab's one pay check, from chain events only.

The demo's verdict (scripts/demo.py: ``honest paid``) and `concord bench network --rounds`'s
``honest_unpaid`` (scripts/bench/network_rounds.py) both fold a task's events through ``unpaid``
and keep the entries of the nodes they call honest and up; neither reads a node's own log.

The rules (the contract's, contracts/ConcordSettlement.sol):

* a trainer is owed a reward for each submission (``Submitted``) of a round that finalized: the
  submission was accepted (``SubmissionRewarded`` with a reward above 0). A rejected one
  (``SubmissionRejected``: slashed), an undecided one, one the settlement never reached, or one
  in a void round is unpaid;
* a validator is owed its fee for each finalized round in which some submission was decided
  (rewarded or rejected: the contract pays no fee for a round that decided nothing) and it
  revealed (``Revealed``), and, with ``voters``, each of those validators for each such round
  whether it revealed or not (a node that stayed up must have voted). Paid: ``ValidatorPaid``
  with a fee above 0 for that round. A validator that revealed a model other than the majority's
  is unpaid by the contract, and so here;
* a void round pays nobody; its entries carry ``void`` so a caller that judges void rounds
  apart (the bench: void only below minValidators) can drop them.

Addresses are compared lower-cased (events carry checksummed ones).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from concord.client import chain


@dataclass(frozen=True)
class Unpaid:
    """One round's pay a node did the work for and did not get: who, which round, and what is missing."""

    round: int
    address: str  # lower-case
    role: str  # "trainer" | "validator"
    missing: str  # e.g. "reward: submission 2 rejected, 80 slashed", "fee: no reveal"
    void: bool = False  # the round settled void (nobody is paid)

    def to_json(self) -> dict[str, object]:
        return {"round": self.round, "address": self.address, "role": self.role, "missing": self.missing}


def unpaid(
    events: Iterable[chain.ConcordEvent], task_id: int | None = None, voters: Iterable[str] = ()
) -> list[Unpaid]:
    """Every (round, node) of ``events`` (of task ``task_id`` when given) that did a round's work
    and was not paid for it, in round order: trainers per submission, validators per decided round
    they revealed in (and, for each address in ``voters``, per decided round whether or not it
    revealed). Rounds that have not settled are not judged."""
    evs = [e for e in events if task_id is None or getattr(e, "task_id", task_id) == task_id]
    void: set[int] = set()
    finalized: set[int] = set()
    for e in evs:
        if isinstance(e, chain.RoundFinalized):
            (void if e.is_void else finalized).add(e.round)
    rewarded: dict[tuple[int, int], int] = {}
    rejected: dict[tuple[int, int], int] = {}
    decided: set[int] = set()
    fees: dict[tuple[int, str], int] = {}
    revealed: set[tuple[int, str]] = set()
    for e in evs:
        if isinstance(e, chain.SubmissionRewarded):
            rewarded[(e.round, e.index)] = e.reward
            decided.add(e.round)
        elif isinstance(e, chain.SubmissionRejected):
            rejected[(e.round, e.index)] = e.slashed
            decided.add(e.round)
        elif isinstance(e, chain.ValidatorPaid):
            key = (e.round, e.validator.lower())
            fees[key] = fees.get(key, 0) + e.fee
        elif isinstance(e, chain.Revealed):
            revealed.add((e.round, e.validator.lower()))

    out: list[Unpaid] = []
    for e in evs:
        if not isinstance(e, chain.Submitted) or (e.round not in finalized and e.round not in void):
            continue
        who, key = e.trainer.lower(), (e.round, e.index)
        if e.round in void:
            out.append(Unpaid(e.round, who, "trainer", f"reward: submission {e.index} in a void round", True))
        elif key in rejected:
            out.append(
                Unpaid(e.round, who, "trainer", f"reward: submission {e.index} rejected, {rejected[key]} slashed")
            )
        elif key not in rewarded:
            out.append(Unpaid(e.round, who, "trainer", f"reward: submission {e.index} not rewarded (undecided)"))
        elif rewarded[key] == 0:
            out.append(Unpaid(e.round, who, "trainer", f"reward: submission {e.index} accepted, paid 0"))
    owed = {(r, v) for r, v in revealed if r in finalized | void}
    owed |= {(r, v.lower()) for r in decided & finalized for v in voters}
    for r, v in sorted(owed):
        if r in void:
            out.append(Unpaid(r, v, "validator", "fee: revealed in a void round", True))
        elif r not in decided:
            continue  # no submission decided: the contract pays no fee to anyone
        elif (r, v) not in revealed:
            out.append(Unpaid(r, v, "validator", "fee: no reveal"))
        elif fees.get((r, v), 0) == 0:
            out.append(Unpaid(r, v, "validator", "fee: revealed, not paid (not the majority's model?)"))
    return sorted(out, key=lambda u: (u.round, u.role, u.address))

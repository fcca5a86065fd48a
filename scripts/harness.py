"""The lab's one network harness: what the demo, the benches, the drills and the tests do to a
deployed protocol that is not a node's own work.

* ``enrol``: approve + register (unless already registered in that role) + join a task, as a
  node does on start;
* ``node_command``: the command line of a node process (`python -m MODULE run ...`, the flags
  of `concord trainer|validator run`);
* ``wait_for``: poll a condition on chain (or in a node's log) with a timeout, failing early
  when a node it depends on has died;
* ``settle_up``: after the last round the initiator reclaims the leftover escrow and everyone
  withdraws (pull payments);
* ``Ledger``: what each address earned, lost and withdrew, folded from the contract's events;
* ``conservation``: DESIGN 3's invariants, per entity: the protocol's token balance equals
  escrow + stakes + credited (also as the contract's own ``totalLiabilities`` view), the tasks'
  escrows sum to the escrow total, and each task holds exactly its budget plus the pools of its
  open rounds;
* ``digest``: a stand-in 32-byte digest for calls that need one and no content behind it.

Every failed expectation raises ``CheckFailed`` (an AssertionError) with what was expected.
"""

from __future__ import annotations

import hashlib
import logging
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from concord.client import chain
from concord.client.chain import ChainClient, ContractError, Role, Signer, keys

log = logging.getLogger(__name__)

TOKEN = 10**18


class CheckFailed(AssertionError):
    """A network expectation did not hold (a wait timed out, a node failed, a value was off); says which."""


def expect(cond: bool, what: str) -> None:
    if not cond:
        raise CheckFailed(what)


def digest(label: str) -> bytes:
    """A stand-in sha256 digest (the chain only stores 32 bytes; nodes put real manifests there)."""
    return hashlib.sha256(label.encode()).digest()


@dataclass(frozen=True)
class Actor:
    """A named participant of a lab network and the signer it acts with."""

    name: str
    role: Role
    signer: Signer

    @property
    def address(self) -> str:
        return self.signer.address


# ----------------------------------------------------------------------------- enrolling and waiting


def signer_of(client: ChainClient, who: Signer | int) -> Signer:
    """``who`` itself, or a fresh Signer for anvil default account ``who`` (the lab's nodes are devnet accounts)."""
    return client.signer(keys.devnet_account(who)) if isinstance(who, int) else who


def enrol(client: ChainClient, who: Signer | int, role: Role, stake: int, task_id: int | None = None) -> str:
    """approve + register with ``stake`` (unless registered in ``role`` already) + join ``task_id``
    (when given), as the node itself would on start; returns the node's address."""
    signer = signer_of(client, who)
    info = client.concord.node_info(signer.address)
    if info.role == Role.NONE:
        client.token.approve(signer, client.concord.address, stake)
        client.concord.register(signer, role, stake)
    else:
        expect(info.role == role, f"{signer.address} is registered as {info.role.name}, not {role.name}")
    if task_id is not None:
        client.concord.join(signer, task_id)
    return signer.address


def node_command(
    module: str,
    network: Sequence[str],
    task_id: int,
    account: int,
    state_dir: Path,
    rounds: int,
    poll: float,
    *extra: str,
) -> list[str]:
    """`python -m MODULE run`: a node process with the flags of `concord trainer|validator run`:
    ``network`` (how it reaches the chain and IPFS: ``--devnet FILE``, or ``--rpc-url``,
    ``--deployment`` and ``--ipfs-api``), the task, devnet account ``account``, ``state_dir``,
    ``rounds`` rounds, JSON logs, polling every ``poll`` seconds, then ``extra``."""
    return [
        *(sys.executable, "-m", module, "run", "--task", str(task_id), *network),
        *("--devnet-account", str(account), "--state-dir", str(state_dir), "--rounds", str(rounds)),
        *("--json-logs", "--poll-interval", str(poll), *extra),
    ]


def wait_for(
    what: str,
    predicate: Callable[[], bool],
    timeout: float = 90.0,
    alive: Callable[[], str | None] = lambda: None,
    poll: float = 0.05,
) -> None:
    """Poll ``predicate`` every ``poll`` seconds until it holds; CheckFailed after ``timeout`` seconds,
    or as soon as ``alive()`` names a problem (a node that died cannot make it hold)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        problem = alive()
        if problem:
            raise CheckFailed(f"{what}: {problem}")
        time.sleep(poll)
    raise CheckFailed(f"timed out after {timeout:.0f}s waiting for {what}")


def settle_up(client: ChainClient, initiator: Signer, actors: Sequence[Actor], task_id: int) -> None:
    """After the last round: the initiator reclaims the leftover escrow; everyone withdraws (pull payments)."""
    try:
        client.concord.reclaim_budget(initiator, task_id)
    except ContractError as e:
        log.warning("reclaim of task %d's budget refused: %s", task_id, e)
    for s in [initiator, *(a.signer for a in actors)]:
        balance = client.concord.balance_of(s.address)
        if balance:
            client.concord.withdraw(s, balance)


# ----------------------------------------------------------------------------- who earned and lost what


@dataclass
class Ledger:
    """What each address earned, lost and withdrew, from the contract's events (per node), and what
    went back to the task budget and which model the last finalized round chose (per task)."""

    reward: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    fee: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    bounty: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    slashed: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    withdrawn: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    reclaimed: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    returned_to_budget: int = 0
    next_model: bytes = b""
    void: bool = False

    @classmethod
    def of(cls, events: Iterable[chain.ConcordEvent], task_id: int | None = None) -> Ledger:
        """The ledger of ``events``; with ``task_id``, of that task's events only (plus withdrawals,
        which name no task)."""
        ledger = cls()
        ledger.add([e for e in events if task_id is None or getattr(e, "task_id", task_id) == task_id])
        return ledger

    def add(self, events: Iterable[chain.ConcordEvent]) -> None:
        for e in events:
            if isinstance(e, chain.SubmissionRewarded):
                self.reward[e.trainer] += e.reward
            elif isinstance(e, chain.SubmissionRejected):
                self.slashed[e.trainer] += e.slashed
            elif isinstance(e, chain.BountyPaid):
                self.bounty[e.validator] += e.amount
            elif isinstance(e, chain.ValidatorPaid):
                self.fee[e.validator] += e.fee
            elif isinstance(e, chain.ValidatorSlashed):
                self.slashed[e.validator] += e.amount
            elif isinstance(e, chain.BudgetReclaimed):
                self.reclaimed[e.initiator] += e.amount
            elif isinstance(e, chain.Withdrawn):
                self.withdrawn[e.account] += e.amount
            elif isinstance(e, chain.RoundFinalized):
                self.returned_to_budget += e.returned
                self.next_model = e.next_model_digest
                self.void = e.is_void


# ----------------------------------------------------------------------------- conservation


@dataclass(frozen=True)
class TaskHolding:
    """One task's escrow: what the contract holds for it against its budget + the pools of its open rounds."""

    task_id: int
    held: int
    owed: int  # budget + reserved


@dataclass(frozen=True)
class Conservation:
    """DESIGN 3's invariants as read from the chain, one number per entity so a failure names it."""

    token_balance: int  # token.balanceOf(Concord)
    escrow: int  # totals(): what all tasks hold
    staked: int  # totals(): every node's stake (bonded and unbonding)
    credited: int  # totals(): every credited, not yet withdrawn balance
    tasks_held: int = -1  # sum over tasks of taskEscrow().held (-1: not read)
    tasks_off: tuple[TaskHolding, ...] = ()  # each task whose held != budget + reserved
    liabilities: int = -1  # the contract's own totalLiabilities() view (-1: not read)

    @property
    def tasks_solvent(self) -> bool:
        """Every task holds exactly its budget + the pools of its open rounds."""
        return not self.tasks_off

    @property
    def holds(self) -> bool:
        owed = self.escrow + self.staked + self.credited
        return (
            self.token_balance == owed
            and self.liabilities in (-1, owed)
            and self.tasks_held in (-1, self.escrow)
            and self.tasks_solvent
        )

    def problems(self) -> list[str]:
        """What does not hold, entity by entity ([] when it all holds)."""
        owed = self.escrow + self.staked + self.credited
        out = []
        if self.token_balance != owed:
            out.append(
                f"token balance {self.token_balance} != escrow {self.escrow} + stakes {self.staked} "
                f"+ credited {self.credited}"
            )
        if self.liabilities not in (-1, owed):
            out.append(f"totalLiabilities() {self.liabilities} != totals() {owed}")
        if self.tasks_held not in (-1, self.escrow):
            out.append(f"tasks hold {self.tasks_held} in all, escrow total {self.escrow}")
        out += [f"task {t.task_id} holds {t.held}, owed budget + reserved {t.owed}" for t in self.tasks_off]
        return out


def conservation(client: ChainClient) -> Conservation:
    """The token balance against the totals and the contract's liability view, and each task's
    escrow against its budget + reserved pools."""
    c = client.concord
    t = c.totals()
    held, off = 0, []
    for task_id in range(1, c.task_count() + 1):
        e = c.task_escrow(task_id)
        held += e.held
        if e.held != e.budget + e.reserved:
            off.append(TaskHolding(task_id, e.held, e.budget + e.reserved))
    return Conservation(
        client.token.balance_of(c.address), t.escrow, t.staked, t.credited, held, tuple(off), c.total_liabilities()
    )

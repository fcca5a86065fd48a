"""Chain-only demo: one complete round through the SDK, then the settlement table.

Until the trainer and validator nodes exist, `make demo` runs this: devnet up, register
three trainers and three validators, publish a task (escrow), trainers submit (one is a
cheater whose submission every validator rejects), validators commit and reveal, anyone
finalizes (paginated), everyone withdraws; the table shows who was paid and who was
slashed, and the conservation check: protocol token balance == escrow + stakes + credited.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import sys
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from eth_account.signers.local import LocalAccount
from rich.console import Console
from rich.table import Table

from client import chain
from client.chain import ChainClient, Role, Signer, TaskParams, keys
from client.runtime.procs import ProcError
from scripts import devnet

log = logging.getLogger(__name__)

TOKEN = 10 ** 18


def digest(label: str) -> bytes:
    """A stand-in sha256 digest (the chain only stores 32 bytes; nodes put real manifests there)."""
    return hashlib.sha256(label.encode()).digest()


def demo_params(async_level: int = 0, min_validators: int = 2, max_rounds: int = 1) -> TaskParams:
    return TaskParams(
        spec_digest=digest("demo task spec"),
        initial_model_digest=digest("model 0"),
        trainer_reward_per_round=300 * TOKEN,
        validator_fee_per_round=60 * TOKEN,
        min_trainer_stake=100 * TOKEN,
        min_validator_stake=100 * TOKEN,
        slash_amount=80 * TOKEN,
        submit_seconds=600,
        commit_seconds=600,
        reveal_seconds=600,
        max_rounds=max_rounds,
        bounty_bps=5000,
        async_level=async_level,
        min_validators=min_validators,
        max_work_units=10 ** 9,
    )


@dataclass(frozen=True)
class Actor:
    name: str
    role: Role
    signer: Signer

    @property
    def address(self) -> str:
        return self.signer.address


@dataclass
class Ledger:
    """What each address earned, lost and withdrew in the round, from the contract's events."""

    reward: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    fee: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    bounty: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    slashed: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    withdrawn: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    reclaimed: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    returned_to_budget: int = 0
    next_model: bytes = b""
    void: bool = False

    def add(self, events: Sequence[chain.ConcordEvent]) -> None:
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


def stake_and_join(client: ChainClient, actor: Actor, task_id: int, stake: int) -> None:
    client.token.approve(actor.signer, client.concord.address, stake)
    client.concord.register(actor.signer, actor.role, stake)
    client.concord.join(actor.signer, task_id)


def create_task(client: ChainClient, initiator: Signer, params: TaskParams, budget: int) -> int:
    client.token.approve(initiator, client.concord.address, budget)
    task_id, _ = client.concord.create_task(initiator, params, budget)
    return task_id


@dataclass(frozen=True)
class RoundResult:
    task_id: int
    round: int
    from_block: int
    cheater_index: int


@dataclass(frozen=True)
class Verdict:
    """What every (honest) validator decided about the round."""

    reject_words: list[int]
    next_model: bytes


def submit_all(client: ChainClient, task_id: int, round_: int, trainers: Sequence[Actor], cheater: int) -> None:
    """Each trainer submits once; the cheater re-submits trainer 1's bundle digest as its own
    (validators catch it: the manifest behind that digest names another trainer)."""
    base = client.concord.latest_model(task_id).model
    for i, t in enumerate(trainers):
        bundle = digest("bundle 0") if i == cheater else digest(f"bundle {i}")
        client.concord.submit(t.signer, task_id, round_, base, bundle, digest(f"proofs {i}"), 10 * (i + 1))


def commit_and_reveal(client: ChainClient, task_id: int, round_: int, validators: Sequence[Actor],
                      verdict: Verdict) -> None:
    c = client.concord
    salts = {v.address: digest(f"salt {v.name}") for v in validators}
    for v in validators:
        c.commit(v.signer, task_id, round_, chain.commit_hash(task_id, round_, verdict.reject_words,
                                                               verdict.next_model, salts[v.address], v.address))
    for v in validators:
        c.reveal(v.signer, task_id, round_, verdict.reject_words, verdict.next_model, salts[v.address])


def withdraw_all(client: ChainClient, signers: Sequence[Signer]) -> None:
    """Pull payments: each participant takes out its whole credited balance."""
    for s in signers:
        balance = client.concord.balance_of(s.address)
        if balance:
            client.concord.withdraw(s, balance)


def play_round(client: ChainClient, initiator: Signer, trainers: Sequence[Actor], validators: Sequence[Actor],
               cheater: int, page: int = 2) -> RoundResult:
    """Publish, register and join, submit, commit, reveal, finalize (``page`` steps per call), withdraw."""
    c = client.concord
    from_block = client.rpc.block_number()
    params = demo_params()
    task_id = create_task(client, initiator, params, 3 * params.per_round)
    for actor in [*trainers, *validators]:
        stake_and_join(client, actor, task_id, 100 * TOKEN if actor.role == Role.TRAINER else 120 * TOKEN)
    round_ = c.current_round(task_id)
    submit_all(client, task_id, round_, trainers, cheater)
    n = c.round_info(task_id, round_).submissions
    commit_and_reveal(client, task_id, round_, validators, Verdict(chain.reject_words([cheater], n), digest("model 1")))
    c.finalize_all(initiator, task_id, round_, max_items=page)
    c.reclaim_budget(initiator, task_id)  # maxRounds = 1: the task is over, the leftover escrow goes back
    withdraw_all(client, [initiator, *(a.signer for a in [*trainers, *validators])])
    return RoundResult(task_id, round_, from_block, cheater)


def _fmt(value: int) -> str:
    return f"{value / TOKEN:,.2f}" if value else "-"


def settlement_table(client: ChainClient, initiator: Signer, trainers: Sequence[Actor], validators: Sequence[Actor],
                     result: RoundResult) -> tuple[Table, Ledger]:
    """One row per participant, every number read back from the contract's events and views."""
    ledger = Ledger()
    ledger.add(client.concord.events(result.from_block))
    table = Table(title=f"Settlement of task {result.task_id}, round {result.round} (tokens)")
    for col in ["participant", "address", "reward", "fee", "bounty", "slashed", "reclaimed", "withdrawn", "stake"]:
        table.add_column(col, justify="left" if col in {"participant", "address"} else "right", no_wrap=True)
    for a in [*trainers, *validators]:
        tag = " (cheater)" if a is trainers[result.cheater_index] else ""
        table.add_row(a.name + tag, a.address[:8] + "…", _fmt(ledger.reward[a.address]), _fmt(ledger.fee[a.address]),
                      _fmt(ledger.bounty[a.address]), _fmt(ledger.slashed[a.address]), "-",
                      _fmt(ledger.withdrawn[a.address]), _fmt(client.concord.node_info(a.address).stake))
    me = initiator.address
    table.add_row("task initiator", me[:8] + "…", "-", "-", "-", "-", _fmt(ledger.reclaimed[me]),
                  _fmt(ledger.withdrawn[me]), "-")
    return table, ledger


@dataclass(frozen=True)
class Conservation:
    token_balance: int
    escrow: int
    staked: int
    credited: int
    tasks_held: int = -1        # sum over tasks of taskEscrow().held (-1: not read)
    tasks_solvent: bool = True  # every task holds exactly its budget + the pools of its open rounds

    @property
    def holds(self) -> bool:
        per_task = self.tasks_held in (-1, self.escrow) and self.tasks_solvent
        return self.token_balance == self.escrow + self.staked + self.credited and per_task


def conservation(client: ChainClient) -> Conservation:
    """Totals against the token balance, and each task's escrow against its budget + reserved pools."""
    c = client.concord
    t = c.totals()
    held, solvent = 0, True
    for task_id in range(1, c.task_count() + 1):
        e = c.task_escrow(task_id)
        held += e.held
        solvent = solvent and e.held == e.budget + e.reserved
    return Conservation(client.token.balance_of(c.address), t.escrow, t.staked, t.credited, held, solvent)


def demo_actors(client: ChainClient) -> tuple[Signer, list[Actor], list[Actor]]:
    accounts: list[LocalAccount] = keys.devnet_accounts(7)
    initiator = client.signer(accounts[0])
    trainers = [Actor(f"trainer {i + 1}", Role.TRAINER, client.signer(a)) for i, a in enumerate(accounts[1:4])]
    validators = [Actor(f"validator {i + 1}", Role.VALIDATOR, client.signer(a)) for i, a in enumerate(accounts[4:7])]
    return initiator, trainers, validators


def play(net: devnet.Devnet, console: Console) -> Conservation:
    client = chain.connect(net.rpc_url, chain.Deployment.from_json(net.deployment))
    initiator, trainers, validators = demo_actors(client)
    result = play_round(client, initiator, trainers, validators, cheater=2)
    table, ledger = settlement_table(client, initiator, trainers, validators, result)
    console.print(table)
    console.print(f"trainer rewards {_fmt(sum(ledger.reward.values()))} · slashed {_fmt(sum(ledger.slashed.values()))}"
                  f" · bounty to rejecting validators {_fmt(sum(ledger.bounty.values()))} · validator fees "
                  f"{_fmt(sum(ledger.fee.values()))} · returned to the task budget {_fmt(ledger.returned_to_budget)}")
    console.print(f"model 1 = {ledger.next_model.hex()[:16]}… (void: {ledger.void})")
    cons = conservation(client)
    mark = "[green]holds[/green]" if cons.holds else "[red]VIOLATED[/red]"
    console.print(f"conservation: token.balanceOf(Concord) = {cons.token_balance / TOKEN:,.2f}  ==  escrow "
                  f"{cons.escrow / TOKEN:,.2f} + stakes {cons.staked / TOKEN:,.2f} + credited "
                  f"{cons.credited / TOKEN:,.2f}  → {mark}")
    return cons


def run_demo(state_dir: Path = devnet.DEFAULT_STATE_DIR, ports: devnet.Ports = devnet.Ports()) -> Conservation:
    """devnet up → play one round → devnet down, the last also on error or Ctrl-C."""
    console = Console(width=None if sys.stdout.isatty() else 110)
    console.print("starting devnet (anvil + js-ipfs) …")
    net = devnet.up(state_dir, ports)
    try:
        console.print(f"devnet: rpc {net.rpc_url}, ipfs {net.ipfs_api}, Concord {net.deployment['concord']}")
        return play(net, console)
    finally:
        devnet.down(state_dir)
        console.print("devnet stopped")


def main(argv: Sequence[str] | None = None) -> int:
    """`concord demo`."""
    p = argparse.ArgumentParser(prog="concord demo", description="one settled round on a throwaway devnet")
    p.add_argument("--state-dir", type=Path, default=devnet.DEFAULT_STATE_DIR)
    p.add_argument("--anvil-port", type=int, default=devnet.Ports.anvil)
    p.add_argument("--ipfs-port", type=int, default=devnet.Ports.ipfs_api)
    p.add_argument("--ipfs-gateway-port", type=int, default=devnet.Ports.ipfs_gateway)
    p.add_argument("--ipfs-grpc-port", type=int, default=devnet.Ports.ipfs_grpc)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    ports = devnet.Ports(args.anvil_port, args.ipfs_port, args.ipfs_gateway_port, args.ipfs_grpc_port)
    try:
        cons = run_demo(args.state_dir, ports)
    except ProcError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0 if cons.holds else 2

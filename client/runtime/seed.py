"""The round's check seed as a node obtains it (IConcord.fixSeed; docs/PROTOCOL.md, "Sampled checks").

Rule on chain: the seed hangs from an anchor block A (the block of the submission that closed the
submit phase early, else the block of the first ``fixSeed`` after its deadline) and is
``keccak256(abi.encode(blockhash(A + 1), taskId, round))``, fixed by the first ``fixSeed`` mined
after block A + 1 while that hash is readable (up to A + 257; later, the next call re-anchors).

A node that needs the seed calls ``seed_step`` once per tick: it reads the seed, or sends the one
``fixSeed`` that moves it forward (anchor it, or fix it once block A + 1 exists). On a chain that
mines only on transactions (Anvil without ``--block-time``) block A + 1 never comes by itself, so
while block A + 1 is missing the node sends ``fixSeed`` anyway once ``nudge_after_s`` passed without
a new block (default 0: at once): that transaction is block A + 1 (it changes nothing on chain;
the next call fixes the seed). On a chain with its own blocks the nudge costs at most one no-op
transaction per validator and round; a node may set ``nudge_after_s`` to the block time to save it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from client.chain import Concord, ContractError, Rpc, Signer

NUDGE_AFTER_S = 0.0  # no new block for this long while A + 1 is missing: send fixSeed (it is the block)


class SeedTimeout(TimeoutError):
    def __init__(self, task_id: int, round_: int, seconds: float) -> None:
        super().__init__(f"task {task_id} round {round_}: check seed not fixed within {seconds:.0f}s")
        self.task_id, self.round, self.seconds = task_id, round_, seconds


@dataclass
class SeedWatch:
    """The latest block a node saw while waiting for one round's seed, and since when (monotonic)."""

    block: int = -1
    since: float = 0.0


def read_seed(concord: Concord, task_id: int, round_: int) -> tuple[bytes | None, int]:
    """(seed, 0) once fixed, else (None, availableAtBlock) from the contract's SeedNotReady."""
    try:
        return concord.check_seed(task_id, round_), 0
    except ContractError as e:
        if e.name != "SeedNotReady":
            raise
        return None, int(str(e.params["availableAtBlock"]))


def seed_step(
    concord: Concord,
    rpc: Rpc,
    signer: Signer,
    task_id: int,
    round_: int,
    watch: SeedWatch,
    nudge_after_s: float = NUDGE_AFTER_S,
) -> bytes | None:
    """The round's seed if fixed; otherwise send ``fixSeed`` when it can make progress (no anchor yet,
    block A + 1 exists, or no block for ``nudge_after_s``) and return the seed if that fixed it."""
    seed, ready_at = read_seed(concord, task_id, round_)
    if seed is not None:
        return seed
    latest, now = rpc.block_number(), time.monotonic()
    if latest != watch.block:
        watch.block, watch.since = latest, now
    if ready_at != 0 and latest + 1 < ready_at and now - watch.since < nudge_after_s:
        return None  # block A + 1 is still to come: wait for the chain
    concord.fix_seed(signer, task_id, round_)
    watch.block, watch.since = -1, 0.0
    return read_seed(concord, task_id, round_)[0]


def wait_for_seed(
    concord: Concord,
    rpc: Rpc,
    signer: Signer,
    task_id: int,
    round_: int,
    timeout_s: float = 60.0,
    nudge_after_s: float = 0.0,
    poll_s: float = 0.05,
) -> bytes:
    """Block until the round's seed is fixed, driving it with ``seed_step`` (tests, benches, the lab)."""
    watch, deadline = SeedWatch(), time.monotonic() + timeout_s
    while True:
        seed = seed_step(concord, rpc, signer, task_id, round_, watch, nudge_after_s)
        if seed is not None:
            return seed
        if time.monotonic() > deadline:
            raise SeedTimeout(task_id, round_, timeout_s)
        time.sleep(poll_s)

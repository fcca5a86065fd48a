"""The round's check seed as a node obtains it (IConcord.commitSeedShare, revealSeedShare, fixSeed;
docs/PROTOCOL.md, "Sampled checks and the check seed").

Rule on chain: every joined validator commits ``share_hash(share, validator, task, round)`` of 32 secret
random bytes during the submit phase, and the phase closes early only once every trainer submitted and
every validator committed a share. At the close the round is anchored: the block number A and the hash of
block A - 1, both fixed before any share is known. After the close each validator reveals its share
(XORed into the round's mix) before shareEnd = submitEnd + commitSeconds / 4; the reveal that completes
the committed set fixes the seed at once, otherwise the first ``fixSeed`` at or after shareEnd fixes it
from the shares revealed, and a committed share not revealed is slashed at finalize. So the last revealer
chooses between two seeds only (reveal, or withhold and be slashed), and nobody who builds or grinds a
block after the close moves the seed.

A validator node, per round: ``new_share`` then ``commit_share`` in the submit phase (the share must
survive a restart: a share not revealed is slashed), ``reveal_share`` once the submit phase closed, then
``seed_step`` each tick until it returns the seed. ``seed_step`` sends ``fixSeed`` only when that call
can fix the seed: every committed share is revealed but the seed is not fixed (no share was committed at
all: the seed is the block value alone), or shareEnd passed with a share withheld. Chain time is the
later of the latest block's timestamp and this machine's clock (a chain that mines only on transactions
has no block at shareEnd until someone sends one; that ``fixSeed`` is it). It sends at most one
``fixSeed`` per block it has seen.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from web3.exceptions import BlockNotFound

from concord.client.chain import Concord, Phase, Rpc, RpcError, SeedInfo, Signer, share_hash

__all__ = [
    "SHARE_BYTES",
    "SeedTimeout",
    "SeedWatch",
    "ShareSize",
    "can_fix",
    "chain_now",
    "commit_share",
    "commit_shares",
    "new_share",
    "reveal_share",
    "reveal_shares",
    "seed_step",
    "share_hash",  # client.chain's, the contract's commitment hash, here beside the share it hashes
    "wait_for_seed",
]

SHARE_BYTES = 32
_PAST_SUBMIT = (Phase.COMMIT, Phase.REVEAL, Phase.FINALIZE)  # live rounds whose seed fixSeed may fix


class SeedTimeout(TimeoutError):
    def __init__(self, task_id: int, round_: int, seconds: float) -> None:
        super().__init__(f"task {task_id} round {round_}: check seed not fixed within {seconds:.0f}s")
        self.task_id, self.round, self.seconds = task_id, round_, seconds


class ShareSize(ValueError):
    def __init__(self, size: int) -> None:
        super().__init__(f"a seed share is {SHARE_BYTES} bytes, got {size}")
        self.size = size


@dataclass
class SeedWatch:
    """The block in which this node last sent ``fixSeed`` for one round's seed (-1: never)."""

    sent_at_block: int = -1


def new_share() -> bytes:
    """32 secret random bytes: a validator's seed share for one round."""
    return os.urandom(SHARE_BYTES)


def commit_share(concord: Concord, signer: Signer, task_id: int, round_: int, share: bytes) -> None:
    """Commit ``share`` for ``round_`` (head round, submit phase) as the signer's seed share."""
    if len(share) != SHARE_BYTES:
        raise ShareSize(len(share))
    concord.commit_seed_share(signer, task_id, round_, share_hash(share, signer.address, task_id, round_))


def reveal_share(concord: Concord, signer: Signer, task_id: int, round_: int, share: bytes) -> None:
    """Reveal the committed ``share`` (commit phase, before shareEnd)."""
    if len(share) != SHARE_BYTES:
        raise ShareSize(len(share))
    concord.reveal_seed_share(signer, task_id, round_, share)


def commit_shares(concord: Concord, signers: Sequence[Signer], task_id: int, round_: int) -> dict[str, bytes]:
    """Each signer commits a fresh share; returns the shares by address (tests, benches, the lab)."""
    shares: dict[str, bytes] = {s.address: new_share() for s in signers}
    for s in signers:
        commit_share(concord, s, task_id, round_, shares[s.address])
    return shares


def reveal_shares(
    concord: Concord, signers: Sequence[Signer], task_id: int, round_: int, shares: Mapping[str, bytes]
) -> None:
    """Each signer reveals its share from ``shares`` (as ``commit_shares`` returned them)."""
    for s in signers:
        reveal_share(concord, s, task_id, round_, shares[s.address])


def chain_now(rpc: Rpc) -> int:
    """The timestamp the chain's next block will carry: the pending block's (Anvil and geth compute it from
    their own clock and any offset; the latest block's when a node serves no pending block). Never this
    machine's clock: a chain's time can lag it (an Anvil reverted to a snapshot continues from the snapshot's
    time) or lead it (time warped forward), and a deadline is the contract's, judged by block.timestamp."""
    try:
        return int(rpc.block_timestamp("pending"))
    except (BlockNotFound, RpcError):
        return int(rpc.block_timestamp("latest"))


def can_fix(info: SeedInfo, now: int) -> bool:
    """Whether a ``fixSeed`` sent now (the round past its submit phase, seed not fixed) fixes the seed."""
    return info.shares_committed == info.shares_revealed or now >= info.share_end


def seed_step(concord: Concord, rpc: Rpc, signer: Signer, task_id: int, round_: int, watch: SeedWatch) -> bytes | None:
    """The round's seed if fixed; otherwise send ``fixSeed`` when it can fix it (see ``can_fix``),
    at most once per block, and return the seed if that fixed it. None while it cannot be fixed yet
    (shares outstanding before shareEnd, or the round still in its submit phase)."""
    info = concord.seed_info(task_id, round_)
    if info.is_fixed:
        return info.seed
    if concord.phase_of(task_id, round_) not in _PAST_SUBMIT:
        return None  # still in its submit phase, or no longer live: fixSeed would revert
    if not can_fix(info, chain_now(rpc)):
        return None
    latest = rpc.block_number()
    if latest == watch.sent_at_block:
        return None  # our last fixSeed is in this block: wait for the next one
    concord.fix_seed(signer, task_id, round_)
    watch.sent_at_block = rpc.block_number()
    fixed = concord.seed_info(task_id, round_)
    return fixed.seed if fixed.is_fixed else None


def wait_for_seed(
    concord: Concord,
    rpc: Rpc,
    signer: Signer,
    task_id: int,
    round_: int,
    timeout_s: float = 60.0,
    poll_s: float = 0.05,
) -> bytes:
    """Block until the round's seed is fixed, driving it with ``seed_step`` (tests, benches, the lab).
    Revealing shares is the validators' part: this only waits for them, or for shareEnd."""
    watch, deadline = SeedWatch(), time.monotonic() + timeout_s
    while True:
        seed = seed_step(concord, rpc, signer, task_id, round_, watch)
        if seed is not None:
            return seed
        if time.monotonic() > deadline:
            raise SeedTimeout(task_id, round_, timeout_s)
        time.sleep(poll_s)

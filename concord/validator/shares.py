"""This validator's seed shares (docs/PROTOCOL.md, "The check seed").

Rule on chain (IConcord.commitSeedShare / revealSeedShare): while a round takes submissions, every
joined validator commits ``keccak256(abi.encode(share, validator, taskId, round))`` for a secret
32-byte share; the submit phase closes early only once every joined validator has committed one. After
it closes, each reveals its share; the seed is the hash of the task, the round and the XOR of the
revealed shares with a block value fixed before any share was revealed. A committed share that is not
revealed is slashed, so the last revealer can choose between two seeds at the price of its stake, and
nobody else can choose at all.

Restart safety: the share is written to the state dir (atomically) before its commitment is sent, and
read back to reveal it, so a node restarted between the two reveals the share it committed. A share
file that does not match the commitment on chain is an operator error (another state dir): the reveal
is refused by the contract (ShareDoesNotMatch) and the node says so.
"""

from __future__ import annotations

import logging
from pathlib import Path

from concord.client.chain import Concord, ContractError, Signer, share_hash
from concord.client.runtime.display import fields
from concord.client.runtime.seed import new_share
from concord.validator.files import write_atomic

log = logging.getLogger("concord.validator")

ALREADY_COMMITTED = ("ShareAlreadyCommitted",)
ALREADY_REVEALED = ("ShareAlreadyRevealed",)


def share_path(folder: Path, round_: int) -> Path:
    return folder / "shares" / f"r{round_:06d}.hex"


def round_share(folder: Path, round_: int) -> bytes:
    """This validator's secret share for ``round_``: read from the state dir, or drawn and written there
    (before any commitment to it can exist)."""
    path = share_path(folder, round_)
    if path.exists():
        return bytes.fromhex(path.read_text().strip())[:32]
    share = new_share()
    write_atomic(path, share.hex().encode())
    return share


def slot_bit(concord: Concord, task_id: int, me: str) -> int | None:
    """This validator's bit in the round masks (1 << its slot), None while it holds no slot."""
    m = concord.member_info(task_id, me)
    return (1 << m.validator_index) if m.joined else None


def share_committed(concord: Concord, task_id: int, me: str, round_: int) -> bool:
    """Whether this validator's share for ``round_`` is committed on chain."""
    bit = slot_bit(concord, task_id, me)
    return bit is not None and bool(concord.seed_info(task_id, round_).shares_committed & bit)


def commit_share(concord: Concord, signer: Signer, folder: Path, task_id: int, round_: int) -> bool:
    """Submit phase: commit this validator's share for ``round_`` unless already committed; True once
    committed (by this call or before)."""
    bit = slot_bit(concord, task_id, signer.address)
    if bit is None:
        return False
    if concord.seed_info(task_id, round_).shares_committed & bit:
        return True
    share = round_share(folder, round_)
    try:
        concord.commit_seed_share(signer, task_id, round_, share_hash(share, signer.address, task_id, round_))
    except ContractError as e:
        if e.name in ALREADY_COMMITTED:
            return True
        if e.name == "WrongPhase":  # the submit phase closed first (deadline): this round has no share of ours
            return False
        raise
    log.info("round %d: seed share committed", round_, extra=fields(event="share_committed", round=round_))
    return True


def reveal_share(concord: Concord, signer: Signer, folder: Path, task_id: int, round_: int) -> None:
    """After the submit phase: reveal the committed share (once; nothing to do without a commitment)."""
    bit = slot_bit(concord, task_id, signer.address)
    if bit is None:
        return
    info = concord.seed_info(task_id, round_)
    if not info.shares_committed & bit or info.shares_revealed & bit or info.seed != bytes(32):
        return
    path = share_path(folder, round_)
    if not path.exists():
        log.error(
            "round %d: a seed share is committed on chain but %s is missing: it cannot be revealed "
            "(this validator will be slashed for it)",
            round_,
            path,
            extra=fields(event="share_lost", round=round_),
        )
        return
    try:
        concord.reveal_seed_share(signer, task_id, round_, round_share(folder, round_))
    except ContractError as e:
        if e.name in ALREADY_REVEALED:
            return
        raise
    log.info("round %d: seed share revealed", round_, extra=fields(event="share_revealed", round=round_))

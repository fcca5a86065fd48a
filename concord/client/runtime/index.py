"""Concord's events, indexed incrementally: each refresh asks eth_getLogs only for the blocks after
the last one it indexed, never again from the deployment block.

    index = ChainIndex(client)       starts at the deployment block, nothing fetched yet
    new = index.refresh()            the events of the blocks since the last refresh (chain order)
    index.events, index.last_block   everything indexed so far; the last block covered
    index.block_times(blocks)        block -> timestamp, each block fetched once (batched)

Reorganisations: the index remembers the hash of its last block; when the chain no longer has
that block at that height (a reorg, or a devnet restarted under the same address), the next
refresh starts over from the deployment block and says so in the log. That is the one case a
rescan happens. `concord status` and `concord dashboard` read events through this.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass

from concord.client.chain import ChainClient, ConcordEvent, RpcError

log = logging.getLogger(__name__)

MAX_RANGE = 10_000  # blocks per eth_getLogs request (public RPCs cap the range)


@dataclass(frozen=True)
class LogRange:
    """One incremental step: the inclusive block range asked for and how many events it held."""

    from_block: int
    to_block: int
    events: int


class ChainIndex:
    """Every Concord event from the deployment block on, in chain order; the state worth a class
    (the cursor and the block-time cache). Safe to share between threads (one lock)."""

    def __init__(self, client: ChainClient, start_block: int | None = None, max_range: int = MAX_RANGE) -> None:
        self.client = client
        self.start_block = client.deployment.block_number if start_block is None else start_block
        self.max_range = max_range
        self.events: list[ConcordEvent] = []
        self.last_block = self.start_block - 1  # nothing indexed yet
        self.ranges: list[LogRange] = []  # every eth_getLogs range asked for, in order (what a test counts)
        self.resets = 0  # times a reorg forced a rescan
        self._last_hash: str | None = None
        self._times: dict[int, int] = {}
        self._lock = threading.Lock()

    def refresh(self) -> list[ConcordEvent]:
        """Index the blocks after ``last_block`` up to the head; returns the new events."""
        with self._lock:
            head = self.client.rpc.block_number()
            if self._reorged():
                log.warning(
                    "block %d changed under the index (reorg or a new chain): re-indexing from block %d",
                    self.last_block,
                    self.start_block,
                )
                self.events, self.last_block, self._last_hash = [], self.start_block - 1, None
                self._times.clear()
                self.resets += 1
            if head <= self.last_block:
                return []
            first = self.last_block + 1
            new = self.client.concord.events(first, head, max_range=self.max_range)
            self.ranges.append(LogRange(first, head, len(new)))
            self.events.extend(new)
            self.last_block = head
            self._last_hash = self._hash(head)
            return new

    def _hash(self, block: int) -> str | None:
        got = self.client.rpc.call("eth_getBlockByNumber", hex(block), False)
        return None if got is None else str(got["hash"])

    def _reorged(self) -> bool:
        return self._last_hash is not None and self._hash(self.last_block) != self._last_hash

    def block_times(self, blocks: Iterable[int]) -> dict[int, int]:
        """Timestamps of ``blocks`` (unix seconds); each block is asked for once, in one batch per call."""
        with self._lock:
            missing = sorted({b for b in blocks if b not in self._times})
            if missing:
                got = self.client.rpc.batch([("eth_getBlockByNumber", (hex(b), False)) for b in missing])
                for b, answer in zip(missing, got, strict=True):
                    if isinstance(answer, RpcError) or answer is None:
                        continue  # not there (yet): asked again next time
                    self._times[b] = int(answer["timestamp"], 16)
            return {b: self._times[b] for b in blocks if b in self._times}

    def of_task(self, task_id: int) -> list[ConcordEvent]:
        """The indexed events of one task (events without a task, e.g. withdrawals, excluded)."""
        with self._lock:
            return [e for e in self.events if getattr(e, "task_id", None) == task_id]

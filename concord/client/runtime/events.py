"""Following the chain: one Tick per new block with this task's events, a heartbeat otherwise.

EventFollower(node, task_id).follow(stop) -> Iterator[Tick]
add_tick_listener(fn)   every new-block tick also goes to fn (a node's metrics)
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from concord.client.chain import ConcordEvent
from concord.client.runtime.connect import Node

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- events


@dataclass(frozen=True)
class Tick:
    """What changed since the last tick: the new head and this task's events in the new blocks."""

    block: int
    timestamp: int
    events: tuple[ConcordEvent, ...]


_tick_listeners: list[Callable[[Tick], None]] = []


def add_tick_listener(listener: Callable[[Tick], None]) -> None:
    """Hand every tick with new blocks to ``listener`` as well (it sees what the node sees, once)."""
    _tick_listeners.append(listener)


def _for_task(event: ConcordEvent, task_id: int) -> bool:
    return getattr(event, "task_id", task_id) == task_id


class EventFollower:
    """Follows new blocks with eth_getLogs; the cursor (last block handled) is persisted in the state dir.

    A block is handled once the consumer asks for the next tick, so after a crash the
    events of the block being handled are seen again (nodes act on chain state, so that is safe).
    """

    def __init__(
        self,
        node: Node,
        task_id: int,
        poll_interval: float = 0.25,
        heartbeat: float = 2.0,
        start_block: int | None = None,
    ) -> None:
        self.concord = node.client.concord
        self.rpc = node.client.rpc
        self.task_id = task_id
        self.poll_interval = poll_interval
        self.heartbeat = heartbeat
        self.path = node.state_dir / f"cursor-task{task_id}.json"
        default = node.client.deployment.block_number - 1 if start_block is None else start_block - 1
        self.cursor = self._load(default)

    def _load(self, default: int) -> int:
        if not self.path.exists():
            return default
        try:
            return int(json.loads(self.path.read_text())["block"])
        except (ValueError, KeyError, json.JSONDecodeError) as e:
            log.warning("cursor file %s unreadable (%s); starting from block %d", self.path, e, default + 1)
            return default

    def _save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"block": self.cursor}))
        tmp.replace(self.path)

    def poll(self) -> Tick | None:
        """The next tick if a block arrived since the cursor, else None."""
        head = self.rpc.block_number()
        if head <= self.cursor:
            return None
        events = self.concord.events(self.cursor + 1, head)
        mine = tuple(e for e in events if _for_task(e, self.task_id))
        tick = Tick(head, self.rpc.block_timestamp(head), mine)
        for listener in _tick_listeners:
            listener(tick)
        return tick

    def follow(self, stop: threading.Event) -> Iterator[Tick]:
        """Ticks until ``stop`` is set: one per batch of new blocks, or a heartbeat when none came."""
        idle = 0.0
        while not stop.is_set():
            tick = self.poll()
            if tick is None and idle < self.heartbeat:
                stop.wait(self.poll_interval)
                idle += self.poll_interval
                continue
            idle = 0.0
            if tick is None:
                tick = Tick(self.cursor, self.rpc.block_timestamp("latest"), ())
            yield tick
            if tick.block > self.cursor:
                self.cursor = tick.block
                self._save()

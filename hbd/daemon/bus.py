"""Fan committed events out to live subscribers without ever blocking the writer.

Each subscriber gets a bounded memory stream of batches: one batch per
commit, the events that commit wrote, so fanning a commit out costs one
``send_nowait`` per subscriber however many events it holds. ``publish``
never waits: when a subscriber's buffer is full it is marked ``behind`` and
receives nothing more from the bus; its reader then catches up from the
database (the log is the truth) and resubscribes, or gives up. So a stuck
consumer costs the sweep one failed ``send_nowait`` per commit, nothing more.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from hbd.store.log import StoredEvent

# Commits buffered per subscriber: a few seconds of a busy sweep (a runner
# commits at most MAX_BATCH items at once). A consumer further behind than
# this reads from the database instead of from memory.
SUBSCRIBER_BUFFER = 256

Batch = tuple[StoredEvent, ...]


@dataclass(eq=False)
class Subscription:
    sweep_id: str | None
    send: MemoryObjectSendStream[Batch]
    receive: MemoryObjectReceiveStream[Batch]
    behind: bool = False


class EventBus:
    def __init__(self, buffer: int = SUBSCRIBER_BUFFER) -> None:
        self._buffer = buffer
        self._subs: set[Subscription] = set()
        self.closed = False

    def subscribe(self, sweep_id: str | None = None) -> Subscription:
        """A new subscription; once the bus is closed it is already at its end."""
        send, receive = anyio.create_memory_object_stream[Batch](self._buffer)
        sub = Subscription(sweep_id, send, receive)
        if self.closed:
            send.close()
        else:
            self._subs.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subs.discard(sub)
        sub.send.close()
        sub.receive.close()

    def close(self) -> None:
        """End every subscription (the daemon is stopping): readers see end-of-stream."""
        self.closed = True
        for sub in list(self._subs):
            sub.send.close()
        self._subs.clear()

    @property
    def subscribers(self) -> int:
        return len(self._subs)

    @staticmethod
    def _of_sweep(batch: Batch, sweep_id: str, cache: dict[str, Batch]) -> Batch:
        """The batch's events of one sweep, filtered once per publish for all its subscribers."""
        if sweep_id not in cache:
            cache[sweep_id] = tuple(e for e in batch if e.sweep_id == sweep_id)
        return cache[sweep_id]

    def publish(self, events: Iterable[StoredEvent]) -> None:
        batch = tuple(events)
        if not batch:
            return
        by_sweep: dict[str, Batch] = {}
        for sub in list(self._subs):
            if sub.behind:
                continue
            mine = batch if sub.sweep_id is None else self._of_sweep(batch, sub.sweep_id, by_sweep)
            if not mine:
                continue
            try:
                sub.send.send_nowait(mine)
            except anyio.WouldBlock:
                sub.behind = True
            except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                self._subs.discard(sub)

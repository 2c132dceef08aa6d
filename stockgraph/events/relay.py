"""The outbox relay: publishes what was committed, in order, as soon as it is committed.

Writers wake the relay after they commit (:meth:`Relay.wake`); it then reads the outbox
past the last event it published and hands the events to the bus in id order. A slow
poll (``idle_seconds``) is only a safety net for a wake-up that never came.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Protocol

from stockgraph.domain.events import OutboxEvent
from stockgraph.events.bus import MemoryBus

log = logging.getLogger("stockgraph.events")


class Outbox(Protocol):
    """The outbox as the relay reads it (the services' ``EventLog``)."""

    async def after(self, after_id: int, *, limit: int = 500) -> Sequence[OutboxEvent]: ...

    async def last_id(self) -> int: ...


class Relay:
    """Reads the outbox after its last published event and publishes to the bus."""

    def __init__(
        self, *, log: Outbox, bus: MemoryBus, batch: int = 500, idle_seconds: float = 1.0
    ) -> None:
        self._log = log
        self._bus = bus
        self._batch = batch
        self._idle = idle_seconds
        self._woken = asyncio.Event()
        self.published: int | None = None
        """The id of the last event handed to the bus; None before :meth:`run` starts."""

    def wake(self) -> None:
        """Something was committed: publish it now."""
        self._woken.set()

    async def run(self) -> None:
        """Publish until cancelled, starting after the newest event committed so far (older
        ones are for replays, not for live subscribers)."""
        if self.published is None:
            self.published = await self._log.last_id()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._woken.wait(), self._idle)
            self._woken.clear()
            try:
                await self.publish_pending()
            except Exception:
                log.exception("the outbox relay failed; retrying")
                await asyncio.sleep(self._idle)

    async def publish_pending(self) -> int:
        """Publish every committed event not yet published; how many there were."""
        count = 0
        if self.published is None:
            self.published = await self._log.last_id()
        while True:
            events = await self._log.after(self.published, limit=self._batch)
            if not events:
                return count
            self._bus.publish(events)
            self.published = events[-1].id
            count += len(events)
            if len(events) < self._batch:
                return count


__all__ = ["Relay"]

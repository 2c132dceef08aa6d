"""The outbox relay: publishes what was committed, in order, as soon as it is committed.

Writers wake the relay after they commit (:meth:`Relay.wake`); it then reads the outbox
past the last event it published and hands the events on in id order. A slow poll
(``idle_seconds``) is only a safety net for a wake-up that never came, or for another
process that died between its commit and its publishing.

In-process, the relay hands events to the process's bus. With a shared :class:`Stream`
(Redis), it appends them to the stream, and the stream's reader delivers them, with every
other process's events, to the bus. While the stream cannot deliver (Redis away, the reader
catching up) the relay delivers to the bus itself, from the last event the bus delivered,
so that no event is missed: the bus skips what it has delivered already.
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


class Stream(Protocol):
    """A stream of events every process shares (:class:`~stockgraph.events.streams.EventStream`)."""

    @property
    def delivering(self) -> bool:
        """Whether the stream's reader is delivering the stream to this process's bus."""

    async def append(self, events: Sequence[OutboxEvent]) -> bool:
        """Append ``events`` (in id order; those there already are left as they are);
        False if the stream cannot be reached now."""


class Relay:
    """Reads the outbox after its last published event and publishes it."""

    def __init__(
        self,
        *,
        log: Outbox,
        bus: MemoryBus,
        stream: Stream | None = None,
        batch: int = 500,
        idle_seconds: float = 1.0,
    ) -> None:
        self._log = log
        self._bus = bus
        self._stream = stream
        self._batch = batch
        self._idle = idle_seconds
        self._woken = asyncio.Event()
        self.published: int | None = None
        """The id of the last event published; None before :meth:`run` starts."""

    def wake(self) -> None:
        """Something was committed: publish it now."""
        self._woken.set()

    async def run(self) -> None:
        """Publish until cancelled, starting after the newest event committed so far (older
        ones are for replays, not for live subscribers)."""
        await self.start()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._woken.wait(), self._idle)
            self._woken.clear()
            try:
                await self.publish_pending()
            except Exception:
                log.exception("the outbox relay failed; retrying")
                await asyncio.sleep(self._idle)

    async def start(self) -> int:
        """Take the starting point: publish only events committed from now on (older ones
        are for replays). Call before anyone can subscribe, so that a subscriber that read
        the newest id before the relay did cannot miss what lies between; :meth:`run`
        calls it too. The id of the last event published."""
        if self.published is None:
            self.published = await self._log.last_id()
            self._bus.start_after(self.published)
        return self.published

    async def publish_pending(self) -> int:
        """Publish every committed event not yet published; how many there were."""
        count = 0
        published = await self.start()
        while True:
            # Without a stream delivering to the bus, the bus is ours to keep up to date.
            local = self._stream is None or not self._stream.delivering
            delivered = published if self._bus.delivered is None else self._bus.delivered
            if local:
                start = min(published, delivered)
            else:
                # What the stream delivered here is in the stream (or was filled in from the
                # outbox, behind newer entries): no need to offer it again.
                start = published = self.published = max(published, delivered)
            events = await self._log.after(start, limit=self._batch)
            if not events:
                return count
            fresh = [event for event in events if event.id > published]
            if fresh and self._stream is not None and not await self._stream.append(fresh):
                local = True  # Redis is away: every process's relay delivers on its own
            if local:
                self._bus.publish(events)
            published = self.published = max(published, events[-1].id)
            count += len(fresh)
            if len(events) < self._batch:
                return count


__all__ = ["Outbox", "Relay", "Stream"]

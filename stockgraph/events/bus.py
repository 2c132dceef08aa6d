"""The in-process event bus: committed events, fanned out to this process's subscribers.

The relay (:mod:`stockgraph.events.relay`) publishes what the outbox committed, in order;
every subscriber of the event's tenant gets it through a bounded queue of its own. A
subscriber that falls ``capacity`` events behind is cut off rather than allowed to grow
without bound or to skip events silently: its iterator raises :class:`SubscriberTooSlow`,
and the caller can resume from the last event it handled.

Events reach the bus from more than one source when Redis carries the bus (the stream
reader, and the relay while Redis is away: see :mod:`stockgraph.events.streams`), so the bus
delivers ids strictly increasing: an event at or below :attr:`MemoryBus.delivered` has been
delivered already and is skipped.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence

from stockgraph.domain.events import OutboxEvent, SubscriberTooSlow
from stockgraph.domain.ids import TenantId


class _Subscriber:
    def __init__(
        self,
        bus: MemoryBus,
        tenant_id: TenantId,
        capacity: int,
        accept: Callable[[OutboxEvent], bool],
    ) -> None:
        self._bus = bus
        self.tenant_id = tenant_id
        self._accept = accept
        self.queue: asyncio.Queue[OutboxEvent] = asyncio.Queue(maxsize=capacity)
        self.overflowed = False

    def offer(self, event: OutboxEvent) -> None:
        if self.overflowed or not self._accept(event):
            return
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            # The queue is full, so its reader is not waiting: it sees this at its next read.
            self.overflowed = True

    def __aiter__(self) -> AsyncIterator[OutboxEvent]:
        return self

    async def __anext__(self) -> OutboxEvent:
        if self.overflowed:
            raise SubscriberTooSlow(f"more than {self.queue.maxsize} events behind")
        return await self.queue.get()

    def close(self) -> None:
        self._bus.forget(self)


class MemoryBus:
    """Committed events to this process's subscribers, per tenant."""

    def __init__(self, *, capacity: int = 1000) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._capacity = capacity
        self._subscribers: dict[TenantId, set[_Subscriber]] = {}
        self.delivered: int | None = None
        """The id of the last event delivered; None until something starts the bus."""

    def start_after(self, event_id: int) -> None:
        """Deliver only events after ``event_id`` (unless the bus has started already):
        older ones are for replays, not for live subscribers."""
        if self.delivered is None:
            self.delivered = event_id

    def subscribe(
        self, tenant_id: TenantId, accept: Callable[[OutboxEvent], bool] = lambda _e: True
    ) -> _Subscriber:
        """Events of ``tenant_id`` that ``accept`` takes, from now on; ``close()`` the result
        when done. Filtering here, as events are published, wakes no subscriber for events
        it does not want."""
        subscriber = _Subscriber(self, tenant_id, self._capacity, accept)
        self._subscribers.setdefault(tenant_id, set()).add(subscriber)
        return subscriber

    def forget(self, subscriber: _Subscriber) -> None:
        subscribers = self._subscribers.get(subscriber.tenant_id)
        if subscribers is not None:
            subscribers.discard(subscriber)
            if not subscribers:
                del self._subscribers[subscriber.tenant_id]

    def publish(self, events: Sequence[OutboxEvent]) -> None:
        """Hand ``events`` (in id order) to every subscriber of their tenant, skipping any
        already delivered."""
        for event in events:
            if self.delivered is not None and event.id <= self.delivered:
                continue
            self.delivered = event.id
            for subscriber in tuple(self._subscribers.get(event.tenant_id, ())):
                subscriber.offer(event)

    @property
    def subscriber_count(self) -> int:
        return sum(len(s) for s in self._subscribers.values())


__all__ = ["MemoryBus", "SubscriberTooSlow"]

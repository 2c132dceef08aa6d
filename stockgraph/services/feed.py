"""Following committed events: first what a subscriber missed, then live, with no gap.

A subscriber names the last event it saw (its cursor) or none. The feed starts listening
to the bus *before* it reads the outbox, so an event committed meanwhile is either read
from the outbox or heard live, and events heard live that were already read are skipped:
the subscriber gets every event after its cursor once, in order.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from stockgraph.domain.events import CursorExpired, OutboxEvent, Topic
from stockgraph.domain.ids import TenantId
from stockgraph.services.ports import EventBus, EventLog


class EventFeed:
    """A tenant's committed events of one topic, replayed from a cursor and then live."""

    def __init__(self, *, log: EventLog, bus: EventBus, page: int = 500) -> None:
        self._log = log
        self._bus = bus
        self._page = page

    async def follow(
        self,
        tenant_id: TenantId,
        topic: Topic,
        *,
        after: int | None,
        accept: Callable[[OutboxEvent], bool] = lambda _e: True,
    ) -> AsyncIterator[OutboxEvent]:
        """Events of ``topic`` after ``after`` (from now on when None) that ``accept`` takes.

        Raises :class:`CursorExpired` when retention has deleted events after ``after``.
        """
        live = self._bus.subscribe(tenant_id, lambda e: e.topic == topic and accept(e))
        try:
            if after is None:
                last = await self._log.last_id()
            else:
                last = after
                while True:
                    page = await self._log.after(
                        last, tenant_id=tenant_id, topic=topic, limit=self._page
                    )
                    # Checked after reading: retention deletes and records how far in one
                    # transaction, so a page read before a deletion is whole, and one read
                    # after it is caught here.
                    pruned = await self._log.pruned_through()
                    if last < pruned:
                        raise CursorExpired(after, pruned)
                    for event in page:
                        last = event.id
                        if accept(event):
                            yield event
                    if len(page) < self._page:
                        break
            async for event in live:
                if event.id <= last:
                    continue  # already replayed from the outbox
                last = event.id
                yield event
        finally:
            live.close()


__all__ = ["EventFeed"]

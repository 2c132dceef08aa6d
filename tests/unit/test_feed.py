"""Following committed events: replay from a cursor, then live, nothing missed or repeated."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest

from stockgraph.domain.events import CursorExpired, OutboxEvent, SubscriberTooSlow, Topic
from stockgraph.domain.ids import Sku, TenantId, WarehouseId
from stockgraph.events.bus import MemoryBus
from stockgraph.events.relay import Relay
from stockgraph.services.feed import EventFeed

ACME = TenantId("acme")
GLOBEX = TenantId("globex")


def _event(event_id: int, tenant: TenantId = ACME, sku: str = "SKU-1") -> OutboxEvent:
    return OutboxEvent(
        id=event_id,
        tenant_id=tenant,
        topic=Topic.STOCK_CHANGED,
        warehouse_id=WarehouseId(1),
        sku=Sku(sku),
        payload={},
        created_at=datetime(2026, 11, 24, tzinfo=UTC),
    )


class FakeLog:
    """The outbox: committed events in id order."""

    def __init__(self) -> None:
        self.events: list[OutboxEvent] = []
        self.pruned = 0

    def commit(self, *events: OutboxEvent) -> None:
        self.events.extend(events)

    def prune(self, through: int) -> None:
        self.events = [e for e in self.events if e.id > through]
        self.pruned = max(self.pruned, through)

    async def after(
        self,
        after_id: int,
        *,
        tenant_id: TenantId | None = None,
        topic: Topic | None = None,
        limit: int = 500,
    ) -> Sequence[OutboxEvent]:
        found = [
            e
            for e in self.events
            if e.id > after_id
            and (tenant_id is None or e.tenant_id == tenant_id)
            and (topic is None or e.topic == topic)
        ]
        return found[:limit]

    async def last_id(self) -> int:
        return self.events[-1].id if self.events else 0

    async def pruned_through(self) -> int:
        return self.pruned


async def _take(feed: EventFeed, count: int, after: int | None) -> list[int]:
    got: list[int] = []
    async for event in feed.follow(ACME, Topic.STOCK_CHANGED, after=after):
        got.append(event.id)
        if len(got) == count:
            break
    return got


async def test_a_subscriber_gets_what_it_missed_then_live_events_once_each() -> None:
    log, bus = FakeLog(), MemoryBus()
    relay = Relay(log=log, bus=bus)
    log.commit(*(_event(i) for i in range(1, 6)))
    await relay.publish_pending()
    feed = EventFeed(log=log, bus=bus, page=2)  # pages of two: replay crosses pages
    reader = asyncio.ensure_future(_take(feed, 6, after=2))
    await asyncio.sleep(0)
    # Committed and published while the subscriber is replaying: heard live and also in
    # the outbox; each must come once.
    log.commit(_event(6), _event(7, GLOBEX), _event(8), _event(9))
    await relay.publish_pending()
    assert await asyncio.wait_for(reader, 1) == [3, 4, 5, 6, 8, 9]


async def test_without_a_cursor_a_subscriber_starts_with_what_comes_next() -> None:
    log, bus = FakeLog(), MemoryBus()
    relay = Relay(log=log, bus=bus)
    log.commit(_event(1), _event(2))
    await relay.publish_pending()
    reader = asyncio.ensure_future(_take(EventFeed(log=log, bus=bus), 2, after=None))
    await asyncio.sleep(0)
    log.commit(_event(3), _event(4))
    await relay.publish_pending()
    assert await asyncio.wait_for(reader, 1) == [3, 4]


async def test_the_relay_publishes_in_order_once_whatever_the_wake_ups() -> None:
    log, bus = FakeLog(), MemoryBus()
    relay = Relay(log=log, bus=bus, batch=2)
    stream = bus.subscribe(ACME)
    log.commit(*(_event(i) for i in range(1, 6)))
    assert await relay.publish_pending() == 0  # started after what was already there
    log.commit(*(_event(i) for i in range(6, 11)))
    assert await relay.publish_pending() == 5
    assert await relay.publish_pending() == 0
    got = [await stream.__anext__() for _ in range(5)]
    assert [e.id for e in got] == [6, 7, 8, 9, 10]
    stream.close()
    assert bus.subscriber_count == 0


async def test_a_subscriber_too_far_behind_is_told_so_rather_than_skipping() -> None:
    bus = MemoryBus(capacity=3)
    stream = bus.subscribe(ACME)
    bus.publish([_event(i) for i in range(1, 6)])
    with pytest.raises(SubscriberTooSlow):
        await stream.__anext__()


async def test_the_bus_hands_a_subscriber_only_what_it_accepts() -> None:
    bus = MemoryBus(capacity=2)
    stream = bus.subscribe(ACME, lambda e: e.sku == "SKU-2")
    bus.publish([_event(i, sku="SKU-1") for i in range(1, 10)] + [_event(10, sku="SKU-2")])
    assert (await stream.__anext__()).id == 10  # nine others neither queued nor overflowing
    stream.close()


async def test_a_cursor_older_than_what_is_kept_is_refused_rather_than_replayed_short() -> None:
    log = FakeLog()
    feed = EventFeed(log=log, bus=MemoryBus())
    log.commit(*(_event(i) for i in range(1, 11)))
    log.prune(through=4)
    assert await _take(feed, 6, after=4) == [5, 6, 7, 8, 9, 10]  # nothing after 4 is gone
    with pytest.raises(CursorExpired) as expired:
        await _take(feed, 1, after=3)
    assert expired.value.pruned_through == 4


async def test_a_subscriber_of_a_relay_started_before_serving_misses_nothing_committed_next() -> (
    None
):
    log, bus = FakeLog(), MemoryBus()
    relay = Relay(log=log, bus=bus)
    await relay.start()  # what the runtime does before it serves anyone
    feed = EventFeed(log=log, bus=bus)
    taking = asyncio.ensure_future(_take(feed, 1, after=None))
    for _ in range(100):
        if bus.subscriber_count:
            break
        await asyncio.sleep(0)
    log.commit(_event(1))  # committed before the relay's task first runs
    running = asyncio.create_task(relay.run())
    try:
        assert await asyncio.wait_for(taking, 2) == [1]
    finally:
        running.cancel()

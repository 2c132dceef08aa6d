"""The event bus on a Redis stream: one entry per event, every process delivers every event.

Each "process" here is what a Stockgraph process holds for its events: a bus, a relay and
the stream's reader, all reading one outbox (an in-memory one that every process shares,
as they share the database). Each test has a stream key of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime

import pytest
from redis.asyncio import Redis

from stockgraph.domain.events import OutboxEvent, Topic
from stockgraph.domain.ids import Sku, TenantId, WarehouseId
from stockgraph.events.bus import MemoryBus
from stockgraph.events.relay import Relay
from stockgraph.events.streams import EventStream, event_id
from tests.integration import test_redis_outage as outage
from tests.integration.test_redis_outage import RedisServer
from tests.services import redis_url

server = outage.server
"""A private redis-server on a spare port, stopped and started by the test."""

pytestmark = pytest.mark.redis

ACME = TenantId("acme")


class SharedOutbox:
    """The outbox every process reads: committed events in id order."""

    def __init__(self) -> None:
        self.events: list[OutboxEvent] = []

    def commit(self, count: int) -> list[int]:
        start = self.last()
        made = [_event(start + i) for i in range(1, count + 1)]
        self.events.extend(made)
        return [e.id for e in made]

    def last(self) -> int:
        return self.events[-1].id if self.events else 0

    async def after(self, after_id: int, *, limit: int = 500) -> Sequence[OutboxEvent]:
        return [e for e in self.events if e.id > after_id][:limit]

    async def last_id(self) -> int:
        return self.last()


def _event(event_id: int) -> OutboxEvent:
    return OutboxEvent(
        id=event_id,
        tenant_id=ACME,
        topic=Topic.STOCK_CHANGED,
        warehouse_id=WarehouseId(3),
        sku=Sku(f"SKU-{event_id:05d}"),
        payload={"level": {"onHand": event_id}},
        created_at=datetime(2026, 11, 24, 19, 30, tzinfo=UTC),
    )


class Process:
    """One process's bus, relay and stream reader on ``url``'s Redis."""

    def __init__(
        self, outbox: SharedOutbox, url: str, key: str, *, poll: float = 600.0, batch: int = 500
    ) -> None:
        self.redis = Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        self.bus = MemoryBus()
        self.stream = EventStream(
            redis=self.redis,
            reader=Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=0.5),
            key=key,
            outbox=outbox,
            bus=self.bus,
            batch=batch,
            block_seconds=0.2,
            retry_seconds=0.2,
        )
        self.relay = Relay(log=outbox, bus=self.bus, stream=self.stream, idle_seconds=poll)
        self.tasks: list[asyncio.Task[None]] = []

    async def start(self, *, relay: bool = True) -> None:
        if relay:
            self.tasks.append(asyncio.ensure_future(self.relay.run()))
        self.tasks.append(asyncio.ensure_future(self.stream.run(lost=self.relay.wake)))
        await asyncio.wait_for(self.stream.reading.wait(), 5.0)

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.stream.aclose()
        await self.redis.aclose()


@pytest.fixture
async def watcher() -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url())
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def key(watcher: Redis) -> AsyncIterator[str]:
    """A stream of this test's own, deleted afterwards."""
    name = f"test-{uuid.uuid4().hex}:events"
    try:
        yield name
    finally:
        await watcher.delete(name)


async def _stream_ids(redis: Redis, key: str) -> list[int]:
    return [event_id(entry) for entry, _fields in await redis.xrange(key)]


async def _events(subscriber: AsyncIterator[OutboxEvent], count: int) -> list[OutboxEvent]:
    async with asyncio.timeout(10.0):
        return [await anext(subscriber) for _ in range(count)]


async def _received(subscriber: AsyncIterator[OutboxEvent], count: int) -> list[int]:
    return [event.id for event in await _events(subscriber, count)]


async def test_two_relays_publishing_one_outbox_leave_one_entry_per_event_in_order(
    key: str, watcher: Redis
) -> None:
    outbox = SharedOutbox()
    a, b = Process(outbox, redis_url(), key), Process(outbox, redis_url(), key)
    try:
        for process in (a, b):
            await process.relay.publish_pending()  # both start after the empty outbox
        outbox.commit(3)
        await a.relay.publish_pending()
        outbox.commit(4)
        # B offers all seven (three appended by A already), A the last four again.
        await asyncio.gather(b.relay.publish_pending(), a.relay.publish_pending())
        outbox.commit(1)
        await b.relay.publish_pending()
        await a.relay.publish_pending()

        assert await _stream_ids(watcher, key) == list(range(1, 9))
        appended = a.stream.stats.appended + b.stream.stats.appended
        refused = a.stream.stats.already_there + b.stream.stats.already_there
        assert (appended, refused) == (8, 8)
        [(_entry, fields)] = await watcher.xrange(key, "5-0", "5-0")
        assert fields[b"sku"] == b"SKU-00005" and fields[b"tenant"] == b"acme"
    finally:
        await a.close()
        await b.close()


async def test_a_reader_delivers_what_another_process_appended_to_its_subscribers(
    key: str,
) -> None:
    outbox = SharedOutbox()
    writer, reader = Process(outbox, redis_url(), key), Process(outbox, redis_url(), key)
    await reader.start(relay=False)  # nothing but the stream can bring it events
    subscriber = reader.bus.subscribe(ACME)
    try:
        await writer.relay.publish_pending()
        outbox.commit(3)
        await writer.relay.publish_pending()
        assert await _events(subscriber, 3) == outbox.events  # as committed, field for field
        assert reader.stream.stats.read == 3
        outbox.commit(1)
        await writer.relay.publish_pending()
        assert await _received(subscriber, 1) == [4]
        assert reader.relay.published is None  # its relay never ran
        assert reader.stream.stats.appended == 0
    finally:
        subscriber.close()
        await writer.close()
        await reader.close()


async def test_events_the_stream_skips_are_read_from_the_outbox_in_their_place(
    key: str, watcher: Redis
) -> None:
    outbox = SharedOutbox()
    writer, reader = Process(outbox, redis_url(), key), Process(outbox, redis_url(), key)
    await reader.start(relay=False)
    subscriber = reader.bus.subscribe(ACME)
    try:
        await writer.relay.publish_pending()
        outbox.commit(2)
        await writer.relay.publish_pending()
        # Events 3 to 5 were delivered by relays on their own (Redis was away) and never
        # appended; event 6 is.
        outbox.commit(3)
        writer.relay.published = 5
        outbox.commit(1)
        await writer.relay.publish_pending()

        assert await _stream_ids(watcher, key) == [1, 2, 6]
        assert await _received(subscriber, 6) == [1, 2, 3, 4, 5, 6]
        assert reader.stream.stats.filled == 3
    finally:
        subscriber.close()
        await writer.close()
        await reader.close()


async def test_a_stream_ahead_of_the_outbox_is_reported_and_the_relay_delivers_instead(
    key: str, watcher: Redis
) -> None:
    await watcher.xadd(key, {"topic": "stock.changed"}, id="900-0")  # another database's
    outbox = SharedOutbox()
    process = Process(outbox, redis_url(), key)
    await process.relay.publish_pending()  # started: after the empty outbox
    process.tasks.append(asyncio.ensure_future(process.stream.run(lost=process.relay.wake)))
    process.tasks.append(asyncio.ensure_future(process.relay.run()))
    subscriber = process.bus.subscribe(ACME)
    try:
        outbox.commit(2)  # only the relay can deliver these: it is never woken but by...
        assert await _received(subscriber, 2) == [1, 2]  # ...the reader giving up
        assert process.stream.status().startswith("ok (degraded: StreamAhead: ")
        assert "STOCKGRAPH_REDIS_NAMESPACE" in process.stream.status()
        assert not process.stream.delivering
        assert await _stream_ids(watcher, key) == [900]
    finally:
        subscriber.close()
        await process.close()


async def test_subscribers_get_every_event_once_in_order_through_a_redis_outage(
    server: RedisServer, key: str
) -> None:
    outbox = SharedOutbox()
    # A short poll: while Redis is away, nothing but the poll tells a relay of the other
    # process's commits.
    a = Process(outbox, server.url, key, poll=0.1, batch=3)
    b = Process(outbox, server.url, key, poll=0.1, batch=3)
    await a.start()
    await b.start()
    on_a, on_b = a.bus.subscribe(ACME), b.bus.subscribe(ACME)
    expected: list[int] = []

    async def commit(process: Process, count: int) -> None:
        expected.extend(outbox.commit(count))
        process.relay.wake()
        await asyncio.sleep(0.05)  # events flow while the next ones commit

    try:
        for _ in range(3):
            await commit(a, 2)
            await commit(b, 3)
        seen_a = await _received(on_a, len(expected))
        seen_b = await _received(on_b, len(expected))

        server.stop()
        for _ in range(3):
            await commit(b, 4)
            await commit(a, 1)
        seen_a += await _received(on_a, len(expected) - len(seen_a))
        seen_b += await _received(on_b, len(expected) - len(seen_b))
        assert "degraded" in a.stream.status() and "degraded" in b.stream.status()

        server.start()  # empty: the events appended before the outage are gone
        for process in (a, b):
            await asyncio.wait_for(process.stream.reading.wait(), 10.0)
        await asyncio.sleep(0.2)  # the relays' retry interval: they append again
        read_before = b.stream.stats.read
        for _ in range(3):
            await commit(b, 2)
            await commit(a, 5)
        seen_a += await _received(on_a, len(expected) - len(seen_a))
        seen_b += await _received(on_b, len(expected) - len(seen_b))

        assert seen_a == expected and seen_b == expected
        assert expected == list(range(1, len(expected) + 1))
        # Nothing more is on its way: one event after all of them is the next to arrive.
        await commit(a, 1)
        assert await _received(on_b, 1) == [expected[-1]]
        assert await _received(on_a, 1) == [expected[-1]]
        assert a.stream.status() == b.stream.status() == "ok (redis streams)"
        assert b.stream.stats.read > read_before  # the stream carried events again
    finally:
        on_a.close()
        on_b.close()
        await a.close()
        await b.close()

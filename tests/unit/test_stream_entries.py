"""Events as Redis stream entries, and a relay whose stream cannot deliver."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import pytest

from stockgraph.domain.events import OutboxEvent, Topic
from stockgraph.domain.ids import Sku, TenantId, WarehouseId
from stockgraph.events.bus import MemoryBus
from stockgraph.events.relay import Relay
from stockgraph.events.streams import decode, encode, entry_id, event_id
from tests.unit.test_feed import FakeLog

ACME = TenantId("acme")


def _event(number: int, *, sku: str | None = "SKU-1") -> OutboxEvent:
    return OutboxEvent(
        id=number,
        tenant_id=ACME,
        topic=Topic.STOCK_CHANGED,
        warehouse_id=None if sku is None else WarehouseId(7),
        sku=None if sku is None else Sku(sku),
        payload={"level": {"onHand": number}, "cause": "WEBHOOK"},
        created_at=datetime(2026, 11, 24, 19, 30, 1, 250000, tzinfo=UTC),
    )


def _as_redis_returns(fields: dict[str, str]) -> dict[bytes, bytes]:
    return {name.encode(): value.encode() for name, value in fields.items()}


@pytest.mark.parametrize("sku", ["SKU-1", None])
def test_an_event_reads_back_from_its_entry_as_it_was_written(sku: str | None) -> None:
    event = _event(42, sku=sku)
    assert entry_id(event.id) == "42-0" and event_id(b"42-0") == 42
    assert decode(42, _as_redis_returns(encode(event))) == event


def test_an_entry_of_a_topic_this_release_does_not_know_is_skipped() -> None:
    fields = encode(_event(3)) | {"topic": "order.shipped"}
    assert decode(3, _as_redis_returns(fields)) is None


def test_an_entry_that_is_not_an_event_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="not an event entry"):
        decode(3, {b"topic": b"stock.changed"})


def test_the_bus_delivers_each_id_once_whichever_source_offers_it() -> None:
    bus = MemoryBus()
    bus.start_after(2)
    subscriber = bus.subscribe(ACME)
    bus.publish([_event(n) for n in (1, 2, 3, 4)])
    bus.publish([_event(n) for n in (3, 4, 5)])
    got = []
    while not subscriber.queue.empty():
        got.append(subscriber.queue.get_nowait().id)
    assert got == [3, 4, 5]
    assert bus.delivered == 5


class AwayStream:
    """A stream whose Redis is away: nothing appended, nothing delivered."""

    def __init__(self) -> None:
        self.offered: list[int] = []

    @property
    def delivering(self) -> bool:
        return False

    async def append(self, events: Sequence[OutboxEvent]) -> bool:
        self.offered.extend(e.id for e in events)
        return False


async def test_while_the_stream_cannot_deliver_the_relay_delivers_from_what_the_bus_has() -> None:
    log, bus, stream = FakeLog(), MemoryBus(), AwayStream()
    relay = Relay(log=log, bus=bus, stream=stream)
    await relay.publish_pending()
    log.commit(*(_event(n) for n in range(1, 6)))
    subscriber = bus.subscribe(ACME)
    # The stream carried 1 and 2 here; the relay had appended up to 4 before Redis went.
    bus.publish([_event(1), _event(2)])
    relay.published = 4
    assert await relay.publish_pending() == 1  # one event new to the relay: 5
    got = [subscriber.queue.get_nowait().id for _ in range(subscriber.queue.qsize())]
    assert got == [1, 2, 3, 4, 5]
    assert stream.offered == [5]

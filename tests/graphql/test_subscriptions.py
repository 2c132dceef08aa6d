"""stockChanged through ``schema.subscribe``: filters, tenancy and a subscriber that lags."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from stockgraph.auth.principal import Principal
from stockgraph.auth.scopes import Scope
from stockgraph.domain.events import OutboxEvent, Topic
from stockgraph.domain.ids import Sku, TenantId, WarehouseId
from stockgraph.events.bus import MemoryBus
from stockgraph.runtime import Runtime
from stockgraph.schema.build import SchemaLimits, StockgraphSchema, build_schema
from stockgraph.schema.context import Context
from stockgraph.schema.events import event_cursor
from stockgraph.services.feed import EventFeed

SCHEMA = build_schema()
QUERY = (
    "subscription($skus: [String!], $after: String) "
    "{ stockChanged(skus: $skus, after: $after) { cursor sku level { onHand } } }"
)


async def _listening(bus: MemoryBus, count: int = 1) -> None:
    """Until ``count`` subscriptions listen to ``bus`` (they start on their first read)."""
    for _ in range(500):
        if bus.subscriber_count >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{bus.subscriber_count} of {count} subscriptions listen")


class EmptyLog:
    async def after(
        self, after_id: int, *, tenant_id: Any = None, topic: Any = None, limit: int = 500
    ) -> Sequence[OutboxEvent]:
        return []

    async def last_id(self) -> int:
        return 0

    async def pruned_through(self) -> int:
        return 0


def _event(event_id: int, warehouse: WarehouseId, sku: str, tenant: str = "acme") -> OutboxEvent:
    return OutboxEvent(
        id=event_id,
        tenant_id=TenantId(tenant),
        topic=Topic.STOCK_CHANGED,
        warehouse_id=warehouse,
        sku=Sku(sku),
        payload={
            "level": {"onHand": event_id, "asOf": "2026-11-24T00:00:00Z"},
            "delta": {"onHand": 1},
            "cause": "WEBHOOK",
            "correlationId": "c",
            "occurredAt": "2026-11-24T00:00:00Z",
        },
        created_at=datetime(2026, 11, 24, tzinfo=UTC),
    )


async def _subscribed(
    runtime: Runtime,
    bus: MemoryBus,
    variables: dict[str, Any] | None = None,
    schema: StockgraphSchema = SCHEMA,
) -> Any:
    services = replace(runtime.services(), feed=EventFeed(log=EmptyLog(), bus=bus))
    context = Context(
        principal=Principal(TenantId("acme"), "dashboard", frozenset(Scope)), services=services
    )
    stream = await schema.subscribe(QUERY, variable_values=variables, context_value=context)
    return stream


async def test_a_subscriber_gets_its_tenants_changes_of_the_skus_it_asked_for(
    runtime: Runtime,
) -> None:
    warehouse = (await runtime.catalog.warehouses(TenantId("acme")))[0].id
    bus = MemoryBus()
    stream = await _subscribed(runtime, bus, {"skus": ["SKU-00001"]})
    pending = asyncio.ensure_future(stream.__anext__())
    await _listening(bus)
    bus.publish(
        [
            _event(1, warehouse, "SKU-00002"),
            _event(2, warehouse, "SKU-00001", tenant="globex"),
            _event(3, warehouse, "SKU-00001"),
        ]
    )
    result = await asyncio.wait_for(pending, 2)
    assert result.errors is None
    assert result.data["stockChanged"]["sku"] == "SKU-00001"
    assert result.data["stockChanged"]["level"]["onHand"] == 3
    await stream.aclose()


@pytest.mark.parametrize(
    ("bus_capacity", "queue", "after"),
    [
        # Alone (a cursor of its own): the bus's queue for it overflows.
        pytest.param(2, 1000, event_cursor(0), id="alone"),
        # Sharing its execution with others: its own queue of shared results overflows.
        pytest.param(1000, 2, None, id="shared"),
    ],
)
async def test_a_subscriber_too_far_behind_is_told_where_to_resume(
    runtime: Runtime, bus_capacity: int, queue: int, after: str | None
) -> None:
    warehouse = (await runtime.catalog.warehouses(TenantId("acme")))[0].id
    bus = MemoryBus(capacity=bus_capacity)
    schema = build_schema(SchemaLimits(subscriber_queue=queue))
    stream = await _subscribed(runtime, bus, {"after": after}, schema)
    pending = asyncio.ensure_future(stream.__anext__())
    await _listening(bus)
    bus.publish([_event(1, warehouse, "SKU-00001")])
    first = await asyncio.wait_for(pending, 2)
    cursor = first.data["stockChanged"]["cursor"]
    bus.publish([_event(i, warehouse, "SKU-00001") for i in range(2, 8)])  # nobody reading
    # What was queued before the overflow may still come; then the error, naming the
    # last change given, never a silent skip.
    for _ in range(8):
        result = await asyncio.wait_for(stream.__anext__(), 2)
        if result.errors:
            break
        cursor = result.data["stockChanged"]["cursor"]
    [error] = result.errors
    assert error.extensions["code"] == "THROTTLED"
    assert error.extensions["resumeAfter"] == cursor
    await stream.aclose()


class PrunedLog(EmptyLog):
    async def pruned_through(self) -> int:
        return 5


async def test_a_cursor_older_than_the_kept_events_is_refused_with_its_reason(
    runtime: Runtime,
) -> None:
    services = replace(runtime.services(), feed=EventFeed(log=PrunedLog(), bus=MemoryBus()))
    principal = Principal(TenantId("acme"), "dashboard", frozenset(Scope))
    context = Context(principal=principal, services=services)
    for after, refused in ((event_cursor(3), True), (event_cursor(5), False)):
        stream = await SCHEMA.subscribe(
            QUERY, variable_values={"after": after}, context_value=context
        )
        pending = asyncio.ensure_future(stream.__anext__())  # type: ignore[union-attr]
        await asyncio.sleep(0.05)
        assert pending.done() == refused
        if refused:
            [error] = pending.result().errors
            assert error.extensions["code"] == "BAD_USER_INPUT"
            assert error.extensions["reason"] == "CURSOR_EXPIRED"
            assert error.extensions["oldestCursor"] == event_cursor(5)
        else:
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pending
        await stream.aclose()  # type: ignore[union-attr]


class CountingFeed(EventFeed):
    """Counts the subscriptions the schema actually runs."""

    def __init__(self, bus: MemoryBus) -> None:
        super().__init__(log=EmptyLog(), bus=bus)
        self.runs = 0

    def follow(self, *args: Any, **kwargs: Any) -> Any:
        self.runs += 1
        return super().follow(*args, **kwargs)


async def test_subscribers_of_one_document_share_one_execution_of_each_change(
    runtime: Runtime,
) -> None:
    warehouse = (await runtime.catalog.warehouses(TenantId("acme")))[0].id
    bus = MemoryBus()
    feed = CountingFeed(bus)
    services = replace(runtime.services(), feed=feed)
    schema = build_schema()

    def context(tenant: str = "acme") -> Context:
        principal = Principal(TenantId(tenant), "dashboard", frozenset(Scope))
        return Context(principal=principal, services=services)

    async def subscribe(variables: dict[str, Any], tenant: str = "acme") -> Any:
        return await schema.subscribe(
            QUERY, variable_values=variables, context_value=context(tenant)
        )

    same = [await subscribe({"skus": ["SKU-00001"]}) for _ in range(50)]
    other_skus = await subscribe({"skus": ["SKU-00002"]})
    other_tenant = await subscribe({"skus": ["SKU-00001"]}, tenant="globex")
    with_cursor = await subscribe({"skus": ["SKU-00001"], "after": event_cursor(0)})
    streams = [*same, other_skus, other_tenant, with_cursor]
    pending = [asyncio.ensure_future(stream.__anext__()) for stream in streams]
    await _listening(bus, 4)
    await asyncio.sleep(0.05)
    assert feed.runs == 4  # one for the 50, one each for the other three

    bus.publish([_event(1, warehouse, "SKU-00001"), _event(2, warehouse, "SKU-00002")])
    results = await asyncio.wait_for(asyncio.gather(*pending[:50], pending[52]), 2)
    assert all(r is results[0] for r in results[:50])  # computed once, shared
    assert results[0].data["stockChanged"]["level"]["onHand"] == 1
    assert results[50] is not results[0]
    assert results[50].data == results[0].data  # its own run, the same answer
    assert (await asyncio.wait_for(pending[50], 2)).data["stockChanged"]["sku"] == "SKU-00002"
    assert not pending[51].done()  # globex hears nothing of acme

    # Members leave one by one; the group runs while any is left, then stops.
    for stream in same[:-1]:
        await stream.aclose()
    bus.publish([_event(3, warehouse, "SKU-00001")])
    last = await asyncio.wait_for(same[-1].__anext__(), 2)
    assert last.data["stockChanged"]["level"]["onHand"] == 3
    before = bus.subscriber_count
    await same[-1].aclose()
    await asyncio.sleep(0.05)
    assert bus.subscriber_count == before - 1
    pending[51].cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await pending[51]
    for stream in streams[50:]:
        await stream.aclose()
    await asyncio.sleep(0.05)
    assert bus.subscriber_count == 0


ALERTS = "subscription { syncAlerts { cursor kind connectorId code message exceptionId } }"


async def test_sync_alerts_reach_operators_only(runtime: Runtime) -> None:
    bus = MemoryBus()
    services = replace(runtime.services(), feed=EventFeed(log=EmptyLog(), bus=bus))

    def context(scopes: frozenset[Scope]) -> Context:
        return Context(principal=Principal(TenantId("acme"), "ops", scopes), services=services)

    refused = await SCHEMA.subscribe(
        ALERTS, context_value=context(frozenset({Scope.INVENTORY_READ}))
    )
    first = await asyncio.wait_for(refused.__anext__(), 2)  # type: ignore[union-attr]
    assert first.errors and first.errors[0].extensions["code"] == "FORBIDDEN"
    stream = await SCHEMA.subscribe(ALERTS, context_value=context(frozenset(Scope)))
    pending = asyncio.ensure_future(stream.__anext__())  # type: ignore[union-attr]
    await _listening(bus)
    alert = OutboxEvent(
        id=9,
        tenant_id=TenantId("acme"),
        topic=Topic.SYNC_ALERT,
        warehouse_id=None,
        sku=None,
        payload={
            "kind": "SYNC_EXCEPTION",
            "connectorId": "acme-wh-00",
            "code": "UNKNOWN_SKU",
            "message": "WMS SKU 'X' maps to nothing",
            "eventId": "e1",
            "exceptionId": 4,
            "occurredAt": "2026-11-24T00:00:00Z",
        },
        created_at=datetime(2026, 11, 24, tzinfo=UTC),
    )
    bus.publish([_event(1, WarehouseId(1), "SKU-00001"), alert])
    result = await asyncio.wait_for(pending, 2)
    assert result.errors is None
    got = result.data["syncAlerts"]
    assert (got["kind"], got["code"], got["connectorId"]) == (
        "SYNC_EXCEPTION",
        "UNKNOWN_SKU",
        "acme-wh-00",
    )
    assert got["exceptionId"]
    await stream.aclose()  # type: ignore[union-attr]

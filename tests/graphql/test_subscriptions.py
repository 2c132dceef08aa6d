"""stockChanged through ``schema.subscribe``: filters, tenancy and a subscriber that lags."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from stockgraph.app import Runtime
from stockgraph.auth.principal import Principal
from stockgraph.auth.scopes import Scope
from stockgraph.domain.events import OutboxEvent, Topic
from stockgraph.domain.ids import Sku, TenantId, WarehouseId
from stockgraph.events.bus import MemoryBus
from stockgraph.schema.build import build_schema
from stockgraph.schema.context import Context
from stockgraph.services.feed import EventFeed

SCHEMA = build_schema()
QUERY = (
    "subscription($skus: [String!]) { stockChanged(skus: $skus) { cursor sku level { onHand } } }"
)


class EmptyLog:
    async def after(
        self, after_id: int, *, tenant_id: Any = None, topic: Any = None, limit: int = 500
    ) -> Sequence[OutboxEvent]:
        return []

    async def last_id(self) -> int:
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
    runtime: Runtime, bus: MemoryBus, variables: dict[str, Any] | None = None
) -> Any:
    services = replace(runtime.services(), feed=EventFeed(log=EmptyLog(), bus=bus))
    context = Context(
        principal=Principal(TenantId("acme"), "dashboard", frozenset(Scope)), services=services
    )
    stream = await SCHEMA.subscribe(QUERY, variable_values=variables, context_value=context)
    return stream


async def test_a_subscriber_gets_its_tenants_changes_of_the_skus_it_asked_for(
    runtime: Runtime,
) -> None:
    warehouse = (await runtime.catalog.warehouses(TenantId("acme")))[0].id
    bus = MemoryBus()
    stream = await _subscribed(runtime, bus, {"skus": ["SKU-00001"]})
    pending = asyncio.ensure_future(stream.__anext__())
    await asyncio.sleep(0.05)
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


async def test_a_subscriber_too_far_behind_is_told_where_to_resume(runtime: Runtime) -> None:
    warehouse = (await runtime.catalog.warehouses(TenantId("acme")))[0].id
    bus = MemoryBus(capacity=2)
    stream = await _subscribed(runtime, bus)
    pending = asyncio.ensure_future(stream.__anext__())
    await asyncio.sleep(0.05)
    bus.publish([_event(1, warehouse, "SKU-00001")])
    first = await asyncio.wait_for(pending, 2)
    cursor = first.data["stockChanged"]["cursor"]
    bus.publish([_event(i, warehouse, "SKU-00001") for i in range(2, 8)])  # nobody reading
    lagging = await asyncio.wait_for(stream.__anext__(), 2)
    [error] = lagging.errors
    assert error.extensions["code"] == "THROTTLED"
    assert error.extensions["resumeAfter"] == cursor
    await stream.aclose()


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
    await asyncio.sleep(0.05)
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

"""The types subscribers receive."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import strawberry

from stockgraph.domain.events import OutboxEvent
from stockgraph.domain.global_ids import event_cursor, to_global_id
from stockgraph.schema.types import InventoryLevel, LevelSource, Warehouse


@strawberry.type(description="How each quantity moved, in base units.")
class StockDelta:
    on_hand: int
    available: int
    committed: int
    reserved: int
    incoming: int
    damaged: int
    safety_stock: int
    quality_control: int

    @classmethod
    def of(cls, values: Mapping[str, Any]) -> StockDelta:
        return cls(**{name: int(values.get(key, 0)) for name, key in _QUANTITIES.items()})


_QUANTITIES = {
    "on_hand": "onHand",
    "available": "available",
    "committed": "committed",
    "reserved": "reserved",
    "incoming": "incoming",
    "damaged": "damaged",
    "safety_stock": "safetyStock",
    "quality_control": "qualityControl",
}


def _instant(value: object) -> datetime:
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).astimezone(UTC)


@strawberry.type(description="One committed change to one warehouse's level of one SKU.")
class StockChange:
    cursor: str = strawberry.field(description="Pass as `after` to resume right after this change.")
    sku: str
    warehouse: Warehouse
    level: InventoryLevel = strawberry.field(description="The level once the change applied.")
    delta: StockDelta
    cause: str = strawberry.field(description="WEBHOOK, POLL, RECONCILIATION, ADJUSTMENT, ...")
    reason: str | None
    correlation_id: str
    occurred_at: datetime
    published_at: datetime = strawberry.field(description="When Stockgraph committed it.")

    @classmethod
    def of(cls, event: OutboxEvent, warehouse: Warehouse) -> StockChange:
        payload = event.payload
        level: Mapping[str, Any] = payload.get("level", {})
        sequence = level.get("sourceSequence")
        return cls(
            cursor=event_cursor(event.id),
            sku=str(event.sku),
            warehouse=warehouse,
            level=InventoryLevel(
                sku=str(event.sku),
                warehouse=warehouse,
                as_of=_instant(level.get("asOf")),
                source=LevelSource.PROJECTION,
                stale=False,
                source_sequence=None if sequence is None else int(sequence),
                **{name: int(level.get(key, 0)) for name, key in _QUANTITIES.items()},
            ),
            delta=StockDelta.of(payload.get("delta", {})),
            cause=str(payload.get("cause", "")),
            reason=payload.get("reason"),
            correlation_id=str(payload.get("correlationId", "")),
            occurred_at=_instant(payload.get("occurredAt")),
            published_at=event.created_at,
        )


@strawberry.type(description="Something an operator should look at in the sync with a WMS.")
class SyncAlert:
    cursor: str = strawberry.field(description="Pass as `after` to resume right after this.")
    kind: str = strawberry.field(description="SYNC_EXCEPTION: a WMS payload was not applied.")
    connector_id: str
    code: str = strawberry.field(description="UNKNOWN_SKU, UNKNOWN_STATUS, MALFORMED, ...")
    message: str
    event_id: str | None
    exception_id: strawberry.ID | None = strawberry.field(
        description="The `SyncException` holding the raw payload, for `syncExceptions`."
    )
    occurred_at: datetime

    @classmethod
    def of(cls, event: OutboxEvent) -> SyncAlert:
        payload = event.payload
        exception = payload.get("exceptionId")
        return cls(
            cursor=event_cursor(event.id),
            kind=str(payload.get("kind", "")),
            connector_id=str(payload.get("connectorId", "")),
            code=str(payload.get("code", "")),
            message=str(payload.get("message", "")),
            event_id=payload.get("eventId"),
            exception_id=(
                None
                if exception is None
                else strawberry.ID(to_global_id("SyncException", event.tenant_id, str(exception)))
            ),
            occurred_at=_instant(payload.get("occurredAt")),
        )


__all__ = ["StockChange", "StockDelta", "SyncAlert", "event_cursor"]

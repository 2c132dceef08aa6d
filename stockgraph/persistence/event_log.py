"""The outbox: events written beside the changes they report, read back in order.

Every writer of the ledger inserts, in the same transaction, the rows
:func:`stock_changed_rows` builds: one ``stock.changed`` event per movement.
:class:`SqlEventLog` reads them for relays and replays.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, cast

import orjson
from sqlalchemy import Row, Table, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from stockgraph.domain.events import OutboxEvent, Topic
from stockgraph.domain.ids import Sku, TenantId, WarehouseId
from stockgraph.domain.model import StockMovement
from stockgraph.domain.quantities import QUANTITY_NAMES
from stockgraph.persistence.models import OutboxEventRow, OutboxPrunedRow

_outbox = cast(Table, OutboxEventRow.__table__)
_pruned = cast(Table, OutboxPrunedRow.__table__)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


_PAYLOAD_NAMES = tuple(_camel(name) for name in QUANTITY_NAMES)


def _quantities(values: tuple[int, ...]) -> dict[str, int]:
    return dict(zip(_PAYLOAD_NAMES, values, strict=True))


def _instant(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def stock_changed_payload(movement: StockMovement) -> dict[str, Any]:
    """The ``stock.changed`` payload of one ledger movement, for example::

    {"level": {"onHand": 12, "available": 12, ..., "incoming": 0,
               "asOf": "2026-11-24T19:30:00Z", "sourceSequence": 7},
     "delta": {"onHand": 2, "available": 2, ..., "incoming": 0},
     "cause": "WEBHOOK", "reason": "ADJUSTED", "correlationId": "5f0c...",
     "occurredAt": "2026-11-24T19:30:00Z"}
    """
    level = movement.level
    return {
        "level": {
            **_quantities(level.quantities.as_tuple()),
            "asOf": _instant(level.as_of),
            "sourceSequence": level.source_sequence,
        },
        "delta": _quantities(movement.delta.as_tuple()),
        "cause": movement.cause.value,
        "reason": movement.reason,
        "correlationId": movement.correlation_id,
        "occurredAt": _instant(movement.occurred_at),
    }


_OUTBOX_LOCK = 0x5347_4F42  # "SGOB": the advisory lock writers of the outbox take turns on


async def take_outbox_turn(conn: AsyncConnection) -> None:
    """Call before inserting outbox rows, in the same transaction.

    Outbox ids are handed out at insert but transactions commit in any order; a reader past
    id 11 would never see an id 10 committed later. On PostgreSQL writers of the outbox take
    turns until they commit, so ids become visible in order (SQLite has one writer anyway).
    """
    if conn.dialect.name == "postgresql":
        await conn.execute(select(func.pg_advisory_xact_lock(_OUTBOX_LOCK)))


def sync_alert_row(
    *,
    tenant_id: str,
    connector_id: str,
    code: str,
    message: str,
    event_id: str | None,
    exception_id: int,
    created_at: datetime,
) -> dict[str, Any]:
    """The outbox row of a sync exception, to insert with the exception."""
    payload = {
        "kind": "SYNC_EXCEPTION",
        "connectorId": connector_id,
        "code": code,
        "message": message,
        "eventId": event_id,
        "exceptionId": exception_id,
        "occurredAt": _instant(created_at),
    }
    return {
        "tenant_id": tenant_id,
        "topic": Topic.SYNC_ALERT.value,
        "warehouse_id": None,
        "sku": None,
        "payload": orjson.dumps(payload).decode(),
        "created_at": created_at,
    }


def stock_changed_rows(
    movements: Sequence[StockMovement], *, created_at: datetime
) -> list[dict[str, Any]]:
    """Outbox rows for ``movements``, one each, to insert with the ledger rows."""
    return [
        {
            "tenant_id": m.level.tenant_id,
            "topic": Topic.STOCK_CHANGED.value,
            "warehouse_id": m.level.warehouse_id,
            "sku": m.level.sku,
            "payload": orjson.dumps(stock_changed_payload(m)).decode(),
            "created_at": created_at,
        }
        for m in movements
    ]


def outbox_event(row: Row[Any]) -> OutboxEvent:
    """The event an ``outbox_events`` row holds."""
    return OutboxEvent(
        id=int(row.id),
        tenant_id=TenantId(row.tenant_id),
        topic=Topic(row.topic),
        warehouse_id=None if row.warehouse_id is None else WarehouseId(row.warehouse_id),
        sku=None if row.sku is None else Sku(row.sku),
        payload=orjson.loads(row.payload),
        created_at=row.created_at,
    )


class SqlEventLog:
    """Implements the services' ``EventLog`` port: each read is one statement.

    Events of topics this release does not know are skipped, so that a newer release
    writing new topics to the same database does not stop an older reader.
    """

    def __init__(self, *, engine: AsyncEngine) -> None:
        self._engine = engine

    async def after(
        self,
        after_id: int,
        *,
        tenant_id: TenantId | None = None,
        topic: Topic | None = None,
        limit: int = 500,
    ) -> Sequence[OutboxEvent]:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        query = select(_outbox).where(_outbox.c.id > after_id)
        if tenant_id is not None:
            query = query.where(_outbox.c.tenant_id == tenant_id)
        if topic is not None:
            query = query.where(_outbox.c.topic == topic.value)
        else:
            # A newer release may write topics this one does not know: skip, not fail.
            query = query.where(_outbox.c.topic.in_([known.value for known in Topic]))
        query = query.order_by(_outbox.c.id).limit(limit)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [outbox_event(row) for row in rows]

    async def last_id(self) -> int:
        async with self._engine.connect() as conn:
            newest = await conn.scalar(select(func.coalesce(func.max(_outbox.c.id), 0)))
        return int(newest or 0)

    async def pruned_through(self) -> int:
        async with self._engine.connect() as conn:
            through = await conn.scalar(select(_pruned.c.through_id).where(_pruned.c.id == 1))
        return int(through or 0)

    async def prune(
        self, *, before: datetime, keep_after: int | None = None, batch: int = 10_000
    ) -> int:
        """Delete events committed before ``before`` (never one above ``keep_after``: a
        reader that has not caught up keeps what it still needs; never the newest one);
        how many were deleted.

        Deletes the oldest first, ``batch`` ids per transaction, and records the highest id
        deleted, so replays from an older cursor are refused rather than silently short.
        """
        async with self._engine.connect() as conn:
            query = select(func.max(_outbox.c.id)).where(_outbox.c.created_at < before)
            through = await conn.scalar(query)
            newest = await conn.scalar(select(func.max(_outbox.c.id)))
        if through is None or newest is None:
            return 0
        # The newest event always stays: SQLite gives a new row the highest id held plus
        # one, so an emptied outbox would hand out ids that cursors already name.
        through = min(int(through), int(newest) - 1)
        if keep_after is not None:
            through = min(through, keep_after)
        deleted = 0
        while True:
            async with self._engine.begin() as conn:
                oldest = await conn.scalar(select(func.min(_outbox.c.id)))
                if oldest is None or oldest > through:
                    return deleted
                upto = min(through, int(oldest) + batch - 1)
                gone = await conn.execute(delete(_outbox).where(_outbox.c.id <= upto))
                deleted += gone.rowcount or 0
                await conn.execute(
                    update(_pruned)
                    .where(_pruned.c.id == 1, _pruned.c.through_id < upto)
                    .values(through_id=upto, pruned_at=datetime.now(UTC))
                )


__all__ = ["SqlEventLog", "outbox_event", "stock_changed_payload", "stock_changed_rows"]

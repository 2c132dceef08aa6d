"""The projection and the ledger: reading levels, folding the ledger, loading stock.

Ledger rows are only appended through :func:`append_movements`, which writes each one's
outbox event in the same transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import cache
from typing import Any, cast

from sqlalchemy import Join, Select, Table, bindparam, func, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from stockgraph.domain.ids import CorrelationId, Sku, TenantId, WarehouseId
from stockgraph.domain.model import (
    InitialStock,
    LevelSource,
    MovementCause,
    StockLevel,
    StockMovement,
    StockTotals,
)
from stockgraph.domain.quantities import QUANTITY_NAMES, StockDelta, StockQuantities
from stockgraph.persistence.catalog_store import code_to_sku
from stockgraph.persistence.event_log import stock_changed_rows, take_outbox_turn
from stockgraph.persistence.models import (
    AuditEventRow,
    OutboxEventRow,
    StockLevelRow,
    StockMovementRow,
)

_levels = cast(Table, StockLevelRow.__table__)
_moves = cast(Table, StockMovementRow.__table__)
_audit = cast(Table, AuditEventRow.__table__)
_outbox = cast(Table, OutboxEventRow.__table__)

_LEVEL_COLUMNS = [_levels.c[name] for name in QUANTITY_NAMES]
_DELTA_SUMS = [func.sum(_moves.c[f"d_{name}"]).label(name) for name in QUANTITY_NAMES]


@cache
def _levels_query(filtered: bool) -> Select[Any]:
    requested = code_to_sku()
    query = (
        select(
            _levels.c.warehouse_id,
            _levels.c.sku,
            *_LEVEL_COLUMNS,
            _levels.c.as_of,
            _levels.c.source_sequence,
        )
        .where(
            _levels.c.tenant_id == bindparam("tenant_id"),
            _levels.c.sku.in_(select(requested.c.sku).scalar_subquery()),
        )
        .order_by(_levels.c.sku, _levels.c.warehouse_id)
    )
    if filtered:
        query = query.where(_levels.c.warehouse_id.in_(bindparam("warehouse_ids", expanding=True)))
    return query


@cache
def _ledger_query(filtered: bool) -> Select[Any]:
    requested = code_to_sku()
    query = (
        select(
            _moves.c.warehouse_id, _moves.c.sku, *_DELTA_SUMS, func.max(_moves.c.source_sequence)
        )
        .where(
            _moves.c.tenant_id == bindparam("tenant_id"),
            _moves.c.sku.in_(select(requested.c.sku).scalar_subquery()),
            _moves.c.occurred_at <= bindparam("at"),
        )
        .group_by(_moves.c.sku, _moves.c.warehouse_id)
        .order_by(_moves.c.sku, _moves.c.warehouse_id)
    )
    if filtered:
        query = query.where(_moves.c.warehouse_id.in_(bindparam("warehouse_ids", expanding=True)))
    return query


def _requested_levels() -> Join:
    requested = code_to_sku()
    return requested.outerjoin(
        _levels,
        (_levels.c.tenant_id == bindparam("tenant_id")) & (_levels.c.sku == requested.c.sku),
    )


@cache
def _totals_query() -> Select[Any]:
    requested = code_to_sku()
    return select(
        requested.c.code,
        requested.c.sku,
        _levels.c.warehouse_id,
        _levels.c.available,
        _levels.c.on_hand,
    ).select_from(_requested_levels())


@cache
def _sums_query() -> Select[Any]:
    requested = code_to_sku()
    return (
        select(
            requested.c.code,
            requested.c.sku,
            func.coalesce(func.sum(_levels.c.available), 0),
            func.coalesce(func.sum(_levels.c.on_hand), 0),
        )
        .select_from(_requested_levels())
        .group_by(requested.c.code, requested.c.sku)
    )


async def append_movements(
    conn: AsyncConnection, movements: Sequence[StockMovement], *, recorded_at: datetime
) -> None:
    """Append ledger rows and their ``stock.changed`` outbox events: two statements, in the
    transaction ``conn`` is in."""
    if not movements:
        return
    await take_outbox_turn(conn)
    await conn.execute(
        insert(_moves),
        [
            {
                "tenant_id": m.level.tenant_id,
                "warehouse_id": m.level.warehouse_id,
                "sku": m.level.sku,
                "occurred_at": m.occurred_at,
                "recorded_at": recorded_at,
                **{f"d_{n}": v for n, v in zip(QUANTITY_NAMES, m.delta.as_tuple(), strict=True)},
                "cause": m.cause.value,
                "reason": m.reason,
                "correlation_id": m.correlation_id,
                "actor": m.actor,
                "reference": m.reference,
                "source_sequence": m.level.source_sequence,
            }
            for m in movements
        ],
    )
    await conn.execute(insert(_outbox), stock_changed_rows(movements, created_at=recorded_at))


def _params(
    tenant_id: TenantId, codes: Sequence[str], warehouse_ids: Sequence[WarehouseId] | None = None
) -> dict[str, Any]:
    params: dict[str, Any] = {"tenant_id": tenant_id, "codes": list(codes)}
    if warehouse_ids is not None:
        params["warehouse_ids"] = list(warehouse_ids)
    return params


class SqlStockStore:
    """Implements the ``StockReader`` and ``StockWriter`` ports on SQLAlchemy Core.

    Every read is one statement whatever the number of SKUs and warehouses asked.
    ``on_outbox`` is called after a commit that wrote outbox events (see
    :class:`~stockgraph.persistence.unit_of_work.SqlUnitOfWork`).
    """

    def __init__(self, *, engine: AsyncEngine, on_outbox: Callable[[], None] | None = None) -> None:
        self._engine = engine
        self._on_outbox = on_outbox

    async def levels(
        self,
        tenant_id: TenantId,
        codes: Sequence[str],
        warehouse_ids: Sequence[WarehouseId] | None,
    ) -> Sequence[StockLevel]:
        if not codes or warehouse_ids == []:
            return []
        query = _levels_query(warehouse_ids is not None)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query, _params(tenant_id, codes, warehouse_ids))).all()
        return [
            StockLevel(
                tenant_id=tenant_id,
                warehouse_id=WarehouseId(r[0]),
                sku=Sku(r[1]),
                quantities=StockQuantities(*r[2:10]),
                as_of=r[10],
                source_sequence=r[11],
            )
            for r in rows
        ]

    async def levels_as_of(
        self,
        tenant_id: TenantId,
        codes: Sequence[str],
        warehouse_ids: Sequence[WarehouseId] | None,
        at: datetime,
    ) -> Sequence[StockLevel]:
        if not codes or warehouse_ids == []:
            return []
        query = _ledger_query(warehouse_ids is not None)
        params = {**_params(tenant_id, codes, warehouse_ids), "at": at}
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query, params)).all()
        return [
            StockLevel(
                tenant_id=tenant_id,
                warehouse_id=WarehouseId(r[0]),
                sku=Sku(r[1]),
                quantities=StockQuantities(*(int(v) for v in r[2:10])),
                as_of=at,
                source_sequence=r[10],
                source=LevelSource.LEDGER,
            )
            for r in rows
        ]

    async def totals(self, tenant_id: TenantId, codes: Sequence[str]) -> Sequence[StockTotals]:
        if not codes:
            return []
        async with self._engine.connect() as conn:
            rows = (await conn.execute(_totals_query(), _params(tenant_id, codes))).all()
        return [
            StockTotals(
                code=r[0],
                sku=Sku(r[1]),
                warehouse_id=None if r[2] is None else WarehouseId(r[2]),
                available=r[3] or 0,
                on_hand=r[4] or 0,
            )
            for r in rows
        ]

    async def sums(self, tenant_id: TenantId, codes: Sequence[str]) -> Sequence[StockTotals]:
        if not codes:
            return []
        async with self._engine.connect() as conn:
            rows = (await conn.execute(_sums_query(), _params(tenant_id, codes))).all()
        return [StockTotals(r[0], Sku(r[1]), None, int(r[2]), int(r[3])) for r in rows]

    async def load_initial(
        self,
        tenant_id: TenantId,
        entries: Sequence[InitialStock],
        *,
        correlation_id: CorrelationId,
        actor: str,
    ) -> int:
        now = datetime.now(UTC)
        async with self._engine.begin() as conn:
            existing = {
                (r.warehouse_id, r.sku)
                for r in await conn.execute(
                    select(_levels.c.warehouse_id, _levels.c.sku).where(
                        _levels.c.tenant_id == tenant_id
                    )
                )
            }
            fresh = [e for e in entries if (e.warehouse_id, e.sku) not in existing]
            if not fresh:
                return 0
            movements = [
                StockMovement(
                    level=StockLevel(
                        tenant_id=tenant_id,
                        warehouse_id=entry.warehouse_id,
                        sku=entry.sku,
                        quantities=entry.quantities,
                        as_of=now,
                        source_sequence=None,
                    ),
                    delta=StockDelta(*entry.quantities.as_tuple()),
                    cause=MovementCause.SEED,
                    correlation_id=correlation_id,
                    actor=actor,
                    occurred_at=now,
                    reason="RECEIVED",
                )
                for entry in fresh
            ]
            await conn.execute(
                insert(_levels),
                [
                    {
                        "tenant_id": tenant_id,
                        "warehouse_id": m.level.warehouse_id,
                        "sku": m.level.sku,
                        **dict(zip(QUANTITY_NAMES, m.level.quantities.as_tuple(), strict=True)),
                        "as_of": now,
                        "source_sequence": None,
                        "version": 1,
                        "updated_at": now,
                    }
                    for m in movements
                ],
            )
            await append_movements(conn, movements, recorded_at=now)
            await conn.execute(
                insert(_audit).values(
                    tenant_id=tenant_id,
                    occurred_at=now,
                    kind="STOCK_LOADED",
                    actor=actor,
                    correlation_id=correlation_id,
                    sku=None,
                    warehouse_id=None,
                    order_id=None,
                    reference=None,
                    message=f"initial stock loaded for {len(fresh)} warehouse/SKU pairs",
                    detail={"levels": len(fresh), "batch": str(uuid.uuid4())},
                )
            )
        if self._on_outbox is not None:
            self._on_outbox()
        return len(fresh)

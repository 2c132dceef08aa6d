"""One database transaction for one use-case, with the ledger, audit and state it writes.

``SqlUnitOfWork`` is an async context manager: it opens a transaction, hands out the
operations a write needs, and rolls everything back unless :meth:`commit` was called.
Rows are locked for update on PostgreSQL; SQLite serialises writers by itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self, cast

from sqlalchemy import Table, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncTransaction

from stockgraph.domain.ids import CorrelationId, Sku, TenantId, WarehouseId
from stockgraph.domain.model import MovementCause, StockLevel
from stockgraph.domain.quantities import QUANTITY_NAMES, StockDelta, StockQuantities
from stockgraph.persistence.models import (
    AuditEventRow,
    ConnectorStateRow,
    InboxEventRow,
    ItemRow,
    StockLevelRow,
    StockMovementRow,
    SyncExceptionRow,
)

_levels = cast(Table, StockLevelRow.__table__)
_moves = cast(Table, StockMovementRow.__table__)
_audit = cast(Table, AuditEventRow.__table__)
_inbox = cast(Table, InboxEventRow.__table__)
_exceptions = cast(Table, SyncExceptionRow.__table__)
_states = cast(Table, ConnectorStateRow.__table__)
_items = cast(Table, ItemRow.__table__)


class SqlUnitOfWork:
    """Implements the services' ``UnitOfWork`` port on one SQLAlchemy transaction."""

    def __init__(self, *, engine: AsyncEngine) -> None:
        self._engine = engine
        self._conn: AsyncConnection | None = None
        self._tx: AsyncTransaction | None = None
        self._committed = False

    async def __aenter__(self) -> Self:
        self._conn = await self._engine.connect()
        self._tx = await self._conn.begin()
        self._committed = False
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        conn, tx = self._conn, self._tx
        self._conn = self._tx = None
        try:
            if tx is not None and tx.is_active and not self._committed:
                await tx.rollback()
        finally:
            if conn is not None:
                await conn.close()

    async def commit(self) -> None:
        if self._tx is None:
            raise RuntimeError("commit outside the unit of work")
        await self._tx.commit()
        self._committed = True

    @property
    def _c(self) -> AsyncConnection:
        if self._conn is None:
            raise RuntimeError("the unit of work is not open")
        return self._conn

    async def known_skus(self, tenant_id: TenantId, skus: Sequence[Sku]) -> set[Sku]:
        rows = await self._c.execute(
            select(_items.c.sku).where(_items.c.tenant_id == tenant_id, _items.c.sku.in_(skus))
        )
        return {Sku(r[0]) for r in rows}

    async def level_for_update(
        self, tenant_id: TenantId, warehouse_id: WarehouseId, sku: Sku
    ) -> tuple[StockLevel, int] | None:
        """The current level and its version, locked until the transaction ends."""
        query = select(
            *(_levels.c[n] for n in QUANTITY_NAMES),
            _levels.c.as_of,
            _levels.c.source_sequence,
            _levels.c.version,
        ).where(
            _levels.c.tenant_id == tenant_id,
            _levels.c.warehouse_id == warehouse_id,
            _levels.c.sku == sku,
        )
        if self._c.dialect.name == "postgresql":
            query = query.with_for_update()
        row = (await self._c.execute(query)).first()
        if row is None:
            return None
        level = StockLevel(
            tenant_id=tenant_id,
            warehouse_id=warehouse_id,
            sku=sku,
            quantities=StockQuantities(*row[:8]),
            as_of=row[8],
            source_sequence=row[9],
        )
        return level, int(row[10])

    async def save_level(self, level: StockLevel, *, version: int | None) -> None:
        """Write ``level``; ``version`` is the one read (None: the row is new)."""
        values: dict[str, Any] = dict(zip(QUANTITY_NAMES, level.quantities.as_tuple(), strict=True))
        now = datetime.now(UTC)
        values.update(as_of=level.as_of, source_sequence=level.source_sequence, updated_at=now)
        if version is None:
            await self._c.execute(
                insert(_levels).values(
                    tenant_id=level.tenant_id,
                    warehouse_id=level.warehouse_id,
                    sku=level.sku,
                    version=1,
                    **values,
                )
            )
            return
        result = await self._c.execute(
            update(_levels)
            .where(
                _levels.c.tenant_id == level.tenant_id,
                _levels.c.warehouse_id == level.warehouse_id,
                _levels.c.sku == level.sku,
                _levels.c.version == version,
            )
            .values(version=version + 1, **values)
        )
        if result.rowcount != 1:
            raise RuntimeError("the level changed under this transaction")

    async def add_movement(
        self,
        *,
        level: StockLevel,
        delta: StockDelta,
        cause: MovementCause,
        correlation_id: CorrelationId,
        actor: str,
        occurred_at: datetime,
        reason: str | None = None,
        reference: str | None = None,
    ) -> None:
        await self._c.execute(
            insert(_moves).values(
                tenant_id=level.tenant_id,
                warehouse_id=level.warehouse_id,
                sku=level.sku,
                occurred_at=occurred_at,
                recorded_at=datetime.now(UTC),
                **{f"d_{n}": v for n, v in zip(QUANTITY_NAMES, delta.as_tuple(), strict=True)},
                cause=cause.value,
                reason=reason,
                correlation_id=correlation_id,
                actor=actor,
                reference=reference,
                source_sequence=level.source_sequence,
            )
        )

    async def add_audit(
        self,
        *,
        tenant_id: TenantId,
        kind: str,
        actor: str,
        correlation_id: CorrelationId,
        message: str,
        detail: dict[str, Any],
        sku: Sku | None = None,
        warehouse_id: WarehouseId | None = None,
        reference: str | None = None,
    ) -> None:
        await self._c.execute(
            insert(_audit).values(
                tenant_id=tenant_id,
                occurred_at=datetime.now(UTC),
                kind=kind,
                actor=actor,
                correlation_id=correlation_id,
                sku=sku,
                warehouse_id=warehouse_id,
                order_id=None,
                reference=reference,
                message=message,
                detail=detail,
            )
        )

    async def add_exception(
        self,
        *,
        tenant_id: TenantId,
        connector_id: str,
        event_id: str | None,
        code: str,
        reason: str,
        raw: str,
    ) -> None:
        await self._c.execute(
            insert(_exceptions).values(
                tenant_id=tenant_id,
                connector_id=connector_id,
                event_id=event_id,
                code=code,
                reason=reason,
                raw=raw,
                created_at=datetime.now(UTC),
                resolved_at=None,
            )
        )

    async def finish_inbox(self, inbox_id: int, *, status: str, error: str | None = None) -> None:
        await self._c.execute(
            update(_inbox)
            .where(_inbox.c.id == inbox_id)
            .values(status=status, error=error, applied_at=datetime.now(UTC))
        )

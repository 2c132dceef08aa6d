"""One database transaction for one use-case, with the ledger, outbox, audit and state it
writes.

``SqlUnitOfWork`` is an async context manager: it opens a transaction, hands out the
operations a write needs, and rolls everything back unless :meth:`commit` was called.
Rows are locked for update on PostgreSQL; SQLite serialises writers by itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self, cast

from sqlalchemy import Table, bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncTransaction

from stockgraph.domain.errors import ConcurrentChange
from stockgraph.domain.ids import Sku, TenantId, WarehouseId
from stockgraph.domain.model import AuditEntry, StockLevel, StockMovement
from stockgraph.domain.quantities import QUANTITY_NAMES, StockQuantities
from stockgraph.persistence.event_log import sync_alert_row, take_outbox_turn
from stockgraph.persistence.models import (
    AuditEventRow,
    ConnectorStateRow,
    InboxEventRow,
    ItemRow,
    OutboxEventRow,
    StockLevelRow,
    SyncExceptionRow,
)
from stockgraph.persistence.stock_store import append_movements

_levels = cast(Table, StockLevelRow.__table__)
_audit = cast(Table, AuditEventRow.__table__)
_inbox = cast(Table, InboxEventRow.__table__)
_exceptions = cast(Table, SyncExceptionRow.__table__)
_states = cast(Table, ConnectorStateRow.__table__)
_items = cast(Table, ItemRow.__table__)
_outbox = cast(Table, OutboxEventRow.__table__)


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

    async def levels_for_update(
        self, tenant_id: TenantId, warehouse_id: WarehouseId, skus: Sequence[Sku]
    ) -> dict[Sku, tuple[StockLevel, int]]:
        """The current levels and versions of ``skus``, locked until the transaction ends."""
        if not skus:
            return {}
        query = select(
            _levels.c.sku,
            *(_levels.c[n] for n in QUANTITY_NAMES),
            _levels.c.as_of,
            _levels.c.source_sequence,
            _levels.c.version,
        ).where(
            _levels.c.tenant_id == tenant_id,
            _levels.c.warehouse_id == warehouse_id,
            _levels.c.sku.in_(list(skus)),
        )
        if self._c.dialect.name == "postgresql":
            query = query.with_for_update()
        found: dict[Sku, tuple[StockLevel, int]] = {}
        for row in await self._c.execute(query):
            sku = Sku(row[0])
            found[sku] = (
                StockLevel(
                    tenant_id=tenant_id,
                    warehouse_id=warehouse_id,
                    sku=sku,
                    quantities=StockQuantities(*row[1:9]),
                    as_of=row[9],
                    source_sequence=row[10],
                ),
                int(row[11]),
            )
        return found

    async def save_levels(self, levels: Sequence[tuple[StockLevel, int | None]]) -> None:
        """Write levels, each with the version read (None: the row is new), in bulk.

        An update whose row moved on since it was read fails the whole transaction.
        """
        now = datetime.now(UTC)
        inserts: list[dict[str, Any]] = []
        updates: list[dict[str, Any]] = []
        for level, version in levels:
            values: dict[str, Any] = dict(
                zip(QUANTITY_NAMES, level.quantities.as_tuple(), strict=True)
            )
            values.update(
                tenant_id=level.tenant_id,
                warehouse_id=level.warehouse_id,
                sku=level.sku,
                as_of=level.as_of,
                source_sequence=level.source_sequence,
                updated_at=now,
            )
            if version is None:
                inserts.append({**values, "version": 1})
            else:
                updates.append({**values, "read_version": version, "new_version": version + 1})
        if inserts:
            try:
                await self._c.execute(insert(_levels), inserts)
            except IntegrityError as exc:
                raise ConcurrentChange("a level was created by another writer meanwhile") from exc
        if updates:
            statement = (
                update(_levels)
                .where(
                    _levels.c.tenant_id == bindparam("b_tenant"),
                    _levels.c.warehouse_id == bindparam("b_warehouse"),
                    _levels.c.sku == bindparam("b_sku"),
                    _levels.c.version == bindparam("read_version"),
                )
                .values(
                    {
                        **{n: bindparam(n) for n in QUANTITY_NAMES},
                        "as_of": bindparam("as_of"),
                        "source_sequence": bindparam("source_sequence"),
                        "updated_at": bindparam("updated_at"),
                        "version": bindparam("new_version"),
                    }
                )
            )
            params = [
                {
                    **{k: v for k, v in u.items() if k not in ("tenant_id", "warehouse_id", "sku")},
                    "b_tenant": u["tenant_id"],
                    "b_warehouse": u["warehouse_id"],
                    "b_sku": u["sku"],
                }
                for u in updates
            ]
            result = await self._c.execute(statement, params)
            if result.rowcount not in (-1, len(params)):
                raise ConcurrentChange("a level changed under this transaction")

    async def add_movements(self, movements: Sequence[StockMovement]) -> None:
        """Append ledger rows and one ``stock.changed`` outbox event each: two statements."""
        await append_movements(self._c, movements, recorded_at=datetime.now(UTC))

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
        now = datetime.now(UTC)
        await take_outbox_turn(self._c)
        kept = await self._c.execute(
            insert(_exceptions).values(
                tenant_id=tenant_id,
                connector_id=connector_id,
                event_id=event_id,
                code=code,
                reason=reason,
                raw=raw,
                created_at=now,
                resolved_at=None,
            )
        )
        [exception_id] = kept.inserted_primary_key or (0,)
        alert = sync_alert_row(
            tenant_id=tenant_id,
            connector_id=connector_id,
            code=code,
            message=reason,
            event_id=event_id,
            exception_id=int(exception_id),
            created_at=now,
        )
        await self._c.execute(insert(_outbox), [alert])

    async def add_audits(self, entries: Sequence[AuditEntry]) -> None:
        """Append audit events, in one statement."""
        if not entries:
            return
        now = datetime.now(UTC)
        await self._c.execute(
            insert(_audit),
            [
                {
                    "tenant_id": e.tenant_id,
                    "occurred_at": now,
                    "kind": e.kind,
                    "actor": e.actor,
                    "correlation_id": e.correlation_id,
                    "sku": e.sku,
                    "warehouse_id": e.warehouse_id,
                    "order_id": None,
                    "reference": e.reference,
                    "message": e.message,
                    "detail": dict(e.detail),
                }
                for e in entries
            ],
        )

    async def finish_inbox(
        self, inbox_ids: Sequence[int], *, status: str, error: str | None = None
    ) -> None:
        if not inbox_ids:
            return
        await self._c.execute(
            update(_inbox)
            .where(_inbox.c.id.in_(list(inbox_ids)))
            .values(status=status, error=error, applied_at=datetime.now(UTC))
        )

"""One database transaction for one use-case, with the ledger, outbox, audit and state it
writes.

``SqlUnitOfWork`` is an async context manager: it opens a transaction, hands out the
operations a write needs, and rolls everything back unless :meth:`commit` was called.
Rows are locked for update on PostgreSQL; on SQLite, whose database has one write lock,
the process's writers take turns on its :class:`~stockgraph.persistence.database.WriteGate`
from their first write, and receipts waiting for it commit with them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from functools import cache
from types import TracebackType
from typing import Any, Self, cast

from sqlalchemy import (
    ColumnElement,
    Select,
    Table,
    Update,
    bindparam,
    insert,
    select,
    tuple_,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncTransaction

from stockgraph.domain.errors import ConcurrentChange
from stockgraph.domain.ids import Sku, TenantId, WarehouseId
from stockgraph.domain.model import AuditEntry, StockLevel, StockMovement
from stockgraph.domain.quantities import PHYSICAL_NAMES, QUANTITY_NAMES, StockQuantities
from stockgraph.persistence.database import write_gate
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
_TOUCH_CHUNK = 500
"""Rows per touch or confirm statement: up to five parameters each, well under SQLite's and
asyncpg's limits."""
_audit = cast(Table, AuditEventRow.__table__)
_inbox = cast(Table, InboxEventRow.__table__)
_exceptions = cast(Table, SyncExceptionRow.__table__)
_states = cast(Table, ConnectorStateRow.__table__)
_items = cast(Table, ItemRow.__table__)
_outbox = cast(Table, OutboxEventRow.__table__)


@cache
def _known_skus() -> Select[Any]:
    return select(_items.c.sku).where(
        _items.c.tenant_id == bindparam("tenant_id"),
        _items.c.sku.in_(bindparam("skus", expanding=True)),
    )


def _same_row() -> ColumnElement[bool]:
    return (
        (_levels.c.tenant_id == bindparam("b_tenant"))
        & (_levels.c.warehouse_id == bindparam("b_warehouse"))
        & (_levels.c.sku == bindparam("b_sku"))
        & (_levels.c.version == bindparam("read_version"))
    )


@cache
def _update_level() -> Update:
    return (
        update(_levels)
        .where(_same_row())
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


@cache
def _touch_levels(confirmed: bool) -> Update:
    """Levels of one warehouse brought up to one ``as_of`` and sequence, each row only if
    it is as read: ``read`` lists (SKU, version) pairs; or, ``confirmed``, only if it holds
    the physical counts given at that sequence or an older one: ``read`` lists (SKU,
    physical counts) tuples."""
    if confirmed:
        read = tuple_(_levels.c.sku, *(_levels.c[n] for n in PHYSICAL_NAMES))
    else:
        read = tuple_(_levels.c.sku, _levels.c.version)
    where = [
        _levels.c.tenant_id == bindparam("b_tenant"),
        _levels.c.warehouse_id == bindparam("b_warehouse"),
        # The SKUs apart as well: SQLite finds the rows by key through them, where the row
        # values alone would have it scan every level of the warehouse.
        _levels.c.sku.in_(bindparam("skus", expanding=True)),
        read.in_(bindparam("read", expanding=True)),
    ]
    if confirmed:
        where.append(_levels.c.source_sequence <= bindparam("source_sequence"))
    return (
        update(_levels)
        .where(*where)
        .values(
            as_of=bindparam("as_of"),
            source_sequence=bindparam("source_sequence"),
            updated_at=bindparam("updated_at"),
            version=_levels.c.version + 1,
        )
    )


@cache
def _levels_for_update(lock: bool, pairs: bool) -> Select[Any]:
    """``pairs``: also only the (warehouse, SKU) pairs asked, where the warehouses and SKUs
    asked would match many more."""
    query = select(
        _levels.c.warehouse_id,
        _levels.c.sku,
        *(_levels.c[n] for n in QUANTITY_NAMES),
        _levels.c.as_of,
        _levels.c.source_sequence,
        _levels.c.version,
    ).where(
        _levels.c.tenant_id == bindparam("tenant_id"),
        _levels.c.warehouse_id.in_(bindparam("warehouse_ids", expanding=True)),
        _levels.c.sku.in_(bindparam("skus", expanding=True)),
    )
    if pairs:
        query = query.where(
            tuple_(_levels.c.warehouse_id, _levels.c.sku).in_(bindparam("pairs", expanding=True))
        )
    return query.with_for_update() if lock else query


class SqlUnitOfWork:
    """Implements the services' ``UnitOfWork`` port on one SQLAlchemy transaction.

    ``on_outbox`` is called once a commit has made outbox events visible (ledger movements,
    sync alerts): the relay and the webhook dispatcher wake on it. A transaction that wrote
    none tells nobody.
    """

    def __init__(self, *, engine: AsyncEngine, on_outbox: Callable[[], None] | None = None) -> None:
        self._engine = engine
        self._conn: AsyncConnection | None = None
        self._tx: AsyncTransaction | None = None
        self._committed = False
        self._gate = write_gate(engine)
        self._leave_gate: Callable[[], None] | None = None
        self._on_outbox = on_outbox
        self._wrote_outbox = False

    async def _writing(self) -> None:
        """Called before the first write: wait for this process's turn to write."""
        if self._leave_gate is None:
            self._leave_gate = await self._gate.acquire()

    async def __aenter__(self) -> Self:
        self._conn = await self._engine.connect()
        self._tx = await self._conn.begin()
        self._committed = False
        self._wrote_outbox = False
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
            try:
                if conn is not None:
                    await conn.close()
            finally:
                if self._leave_gate is not None:
                    self._leave_gate()
                    self._leave_gate = None

    async def commit(self) -> None:
        if self._tx is None or self._conn is None:
            raise RuntimeError("commit outside the unit of work")
        if self._leave_gate is None:
            await self._tx.commit()
            self._committed = True
            self._tell_outbox()
            return
        # Holding the turn to write: whatever waits for it (receipts) commits with this.
        finish = await self._gate.board(self._conn)
        try:
            await self._tx.commit()
        except BaseException:
            finish(False)
            raise
        self._committed = True
        finish(True)
        self._leave_gate()
        self._leave_gate = None
        self._tell_outbox()

    def _tell_outbox(self) -> None:
        if self._wrote_outbox:
            self._wrote_outbox = False
            if self._on_outbox is not None:
                self._on_outbox()

    @property
    def _c(self) -> AsyncConnection:
        if self._conn is None:
            raise RuntimeError("the unit of work is not open")
        return self._conn

    async def known_skus(self, tenant_id: TenantId, skus: Sequence[Sku]) -> set[Sku]:
        rows = await self._c.execute(_known_skus(), {"tenant_id": tenant_id, "skus": list(skus)})
        return {Sku(r[0]) for r in rows}

    async def levels_for_update(
        self, tenant_id: TenantId, skus: Mapping[WarehouseId, Sequence[Sku]]
    ) -> dict[tuple[WarehouseId, Sku], tuple[StockLevel, int]]:
        """The current levels and versions of ``skus`` per warehouse, locked until the
        transaction ends: one statement. Where each warehouse is asked for other SKUs (a
        round of webhooks from many instances), the database keeps only the pairs asked,
        rather than this process reading every warehouse's row of every SKU."""
        wanted = {(w, s) for w, listed in skus.items() for s in listed}
        if not wanted:
            return {}
        everything = sorted({s for _w, s in wanted})
        pairs = len(wanted) < len(skus) * len(everything)
        query = _levels_for_update(self._c.dialect.name == "postgresql", pairs)
        params: dict[str, Any] = {
            "tenant_id": tenant_id,
            "warehouse_ids": sorted(skus),
            "skus": everything,
        }
        if pairs:
            params["pairs"] = sorted(wanted)
        found: dict[tuple[WarehouseId, Sku], tuple[StockLevel, int]] = {}
        for row in await self._c.execute(query, params):
            key = (WarehouseId(row[0]), Sku(row[1]))
            if key not in wanted:
                continue
            found[key] = (
                StockLevel(
                    tenant_id=tenant_id,
                    warehouse_id=key[0],
                    sku=key[1],
                    quantities=StockQuantities(*row[2:10]),
                    as_of=row[10],
                    source_sequence=row[11],
                ),
                int(row[12]),
            )
        return found

    async def save_levels(self, levels: Sequence[tuple[StockLevel, int | None]]) -> None:
        """Write levels, each with the version read (None: the row is new), in bulk.

        An update whose row moved on since it was read fails the whole transaction.
        """
        if not levels:
            return
        await self._writing()
        now = datetime.now(UTC)
        inserts: list[dict[str, Any]] = []
        updates: list[dict[str, Any]] = []
        for level, version in levels:
            values: dict[str, Any] = dict(
                zip(QUANTITY_NAMES, level.quantities.as_tuple(), strict=True)
            )
            values["as_of"] = level.as_of
            values["source_sequence"] = level.source_sequence
            values["updated_at"] = now
            if version is None:
                values.update(
                    tenant_id=level.tenant_id,
                    warehouse_id=level.warehouse_id,
                    sku=level.sku,
                    version=1,
                )
                inserts.append(values)
            else:
                values.update(
                    b_tenant=level.tenant_id,
                    b_warehouse=level.warehouse_id,
                    b_sku=level.sku,
                    read_version=version,
                    new_version=version + 1,
                )
                updates.append(values)
        if inserts:
            try:
                await self._c.execute(insert(_levels), inserts)
            except IntegrityError as exc:
                raise ConcurrentChange("a level was created by another writer meanwhile") from exc
        if updates:
            result = await self._c.execute(_update_level(), updates)
            if result.rowcount not in (-1, len(updates)):
                raise ConcurrentChange("a level changed under this transaction")

    async def touch_levels(self, levels: Sequence[tuple[StockLevel, int]]) -> None:
        """Bring levels whose quantities did not change up to date (``as_of``, sequence),
        each against the version read; a row that moved on since it was read fails the whole
        transaction.

        One statement per warehouse and (``as_of``, sequence) — a WMS's answer brings all its
        levels to the same — rather than one per level: a live read touches a thousand.
        """
        await self._bring_up_to_date(
            _touch_levels(False), [(level, (level.sku, version)) for level, version in levels]
        )

    async def confirm_levels(self, levels: Sequence[StockLevel]) -> None:
        """Bring levels a WMS reports with the physical counts held up to its ``as_of`` and
        sequence: each row only if it holds those counts (whatever was committed or
        reserved since) at that sequence or an older one, with no read first. A row holding
        other counts, or newer ones, fails the whole transaction.
        """
        await self._bring_up_to_date(
            _touch_levels(True),
            [
                (level, (level.sku, *(getattr(level.quantities, n) for n in PHYSICAL_NAMES)))
                for level in levels
            ],
        )

    async def _bring_up_to_date(
        self, statement: Update, levels: Sequence[tuple[StockLevel, tuple[Any, ...]]]
    ) -> None:
        """``statement`` once per warehouse and (``as_of``, sequence) of the levels, for the
        rows each level's tuple names (``read``); every row must be found."""
        if not levels:
            return
        await self._writing()
        now = datetime.now(UTC)
        groups: dict[tuple[TenantId, WarehouseId, datetime, int | None], list[Any]] = {}
        for level, row in levels:
            key = (level.tenant_id, level.warehouse_id, level.as_of, level.source_sequence)
            groups.setdefault(key, []).append(row)
        for (tenant_id, warehouse_id, as_of, sequence), rows in groups.items():
            for start in range(0, len(rows), _TOUCH_CHUNK):
                read = rows[start : start + _TOUCH_CHUNK]
                params = {
                    "b_tenant": tenant_id,
                    "b_warehouse": warehouse_id,
                    "skus": [row[0] for row in read],
                    "read": read,
                    "as_of": as_of,
                    "source_sequence": sequence,
                    "updated_at": now,
                }
                result = await self._c.execute(statement, params)
                if result.rowcount not in (-1, len(read)):
                    raise ConcurrentChange("a level changed under this transaction")

    async def add_movements(self, movements: Sequence[StockMovement]) -> None:
        """Append ledger rows and one ``stock.changed`` outbox event each: two statements."""
        await self._writing()
        await append_movements(self._c, movements, recorded_at=datetime.now(UTC))
        self._wrote_outbox = self._wrote_outbox or bool(movements)

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
        await self._writing()
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
        self._wrote_outbox = True

    async def add_audits(self, entries: Sequence[AuditEntry]) -> None:
        """Append audit events, in one statement."""
        if not entries:
            return
        await self._writing()
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
        await self._writing()
        await self._c.execute(
            update(_inbox)
            .where(_inbox.c.id.in_(list(inbox_ids)))
            .values(status=status, error=error, applied_at=datetime.now(UTC))
        )

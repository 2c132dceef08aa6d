"""The inbox of received WMS events and the sync state of each connector."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import cast

from sqlalchemy import Table, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from stockgraph.domain.ids import TenantId
from stockgraph.persistence.catalog_store import upsert
from stockgraph.persistence.database import no_finish, write_gate
from stockgraph.persistence.models import ConnectorStateRow, InboxEventRow

_inbox = cast(Table, InboxEventRow.__table__)
_states = cast(Table, ConnectorStateRow.__table__)

PENDING = "PENDING"


@dataclass(frozen=True, slots=True)
class InboxItem:
    id: int
    tenant_id: TenantId
    connector_id: str
    event_id: str
    body: bytes


class SqlInbox:
    """Implements the services' ``Inbox`` port, committing concurrent receipts together.

    Each :meth:`add` waits until its row is committed, but receipts that arrive while a
    commit is in flight share the next one (group commit): under a burst of webhooks the
    database sees one transaction per batch, not one per webhook. On SQLite, receipts that
    arrive while another writer (the applier) holds the write lock are inserted in its
    transaction just before it commits, rather than waiting for a turn of their own.
    """

    def __init__(self, *, engine: AsyncEngine) -> None:
        self._engine = engine
        self._gate = write_gate(engine)
        self._gate.take_riders(self._ride)
        self._keep = (
            upsert(engine, _inbox)
            .on_conflict_do_nothing(index_elements=["connector_id", "event_id"])
            .returning(_inbox.c.connector_id, _inbox.c.event_id)
        )
        self._queue: list[_Queued] = []
        self._flusher: asyncio.Task[None] | None = None

    async def add(
        self, *, tenant_id: TenantId, connector_id: str, event_id: str, body: bytes
    ) -> bool:
        """Keep a received event; False when the same event was received before."""
        row: dict[str, object] = {
            "tenant_id": tenant_id,
            "connector_id": connector_id,
            "event_id": event_id,
            "received_at": datetime.now(UTC),
            "body": body,
            "status": PENDING,
            "applied_at": None,
            "error": None,
        }
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._queue.append((row, done))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        return await done

    async def _flush(self) -> None:
        while self._queue:
            async with self._gate.turn():
                # Taken once it is this flush's turn: while another writer holds the
                # gate, what queues up rides along with its commit (:meth:`_ride`).
                batch, self._queue = self._queue, []
                if not batch:
                    continue
                try:
                    results = await self._insert([row for row, _ in batch])
                except Exception as exc:
                    for _, done in batch:
                        if not done.done():
                            done.set_exception(exc)
                    continue
                _settle(batch, results)

    async def _ride(self, conn: AsyncConnection) -> Callable[[bool], None]:
        """The receipts queued now, inserted in the transaction on ``conn`` (see
        :meth:`~stockgraph.persistence.database.WriteGate.board`)."""
        batch, self._queue = self._queue, []
        if not batch:
            return no_finish
        rows = [row for row, _ in batch]
        try:
            kept = {(c, e) for c, e in await conn.execute(self._keep, rows)}
        except Exception:
            # SQLite undid just this statement; this inbox's own flush settles them.
            self._requeue(batch)
            return no_finish
        except BaseException:
            self._requeue(batch)
            raise

        def finish(committed: bool) -> None:
            if committed:
                _settle(batch, _outcomes(rows, kept))
            else:
                self._requeue(batch)

        return finish

    def _requeue(self, batch: list[_Queued]) -> None:
        self._queue[:0] = batch
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())

    async def _insert(self, rows: list[dict[str, object]]) -> list[bool | IntegrityError]:
        """One statement: rows whose event was received before are skipped by the database
        (``ON CONFLICT DO NOTHING``), and the ones it kept come back (``RETURNING``), so a
        receipt costs no read first and racing processes need no second try."""
        try:
            async with self._engine.begin() as conn:
                kept = {(c, e) for c, e in await conn.execute(self._keep, rows)}
        except IntegrityError:
            # A row the database refuses for another reason: settle the batch row by row,
            # so that only that delivery fails.
            return [await self._insert_one(row) for row in rows]
        return _outcomes(rows, kept)

    async def _insert_one(self, row: dict[str, object]) -> bool | IntegrityError:
        try:
            async with self._engine.begin() as conn:
                return (await conn.execute(self._keep, [row])).first() is not None
        except IntegrityError as exc:
            return exc

    async def pending(self, limit: int) -> Sequence[InboxItem]:
        """The oldest received events not applied yet, in the order they arrived."""
        query = (
            select(
                _inbox.c.id,
                _inbox.c.tenant_id,
                _inbox.c.connector_id,
                _inbox.c.event_id,
                _inbox.c.body,
            )
            .where(_inbox.c.status == PENDING)
            .order_by(_inbox.c.id)
            .limit(limit)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [InboxItem(r[0], TenantId(r[1]), r[2], r[3], bytes(r[4])) for r in rows]

    async def counts(self) -> dict[str, int]:
        """How many received events are in each state."""
        query = select(_inbox.c.status, func.count()).group_by(_inbox.c.status)
        async with self._engine.connect() as conn:
            return {r[0]: int(r[1]) for r in await conn.execute(query)}


_Queued = tuple[dict[str, object], "asyncio.Future[bool]"]


def _outcomes(
    rows: list[dict[str, object]], kept: set[tuple[str, str]]
) -> list[bool | IntegrityError]:
    """Per row, whether it was kept: the same event twice in one batch, the first was."""
    added: list[bool | IntegrityError] = []
    for row in rows:
        key = (str(row["connector_id"]), str(row["event_id"]))
        added.append(key in kept)
        kept.discard(key)
    return added


def _settle(batch: list[_Queued], results: list[bool | IntegrityError]) -> None:
    for (_, done), added in zip(batch, results, strict=True):
        if done.done():
            continue
        if isinstance(added, BaseException):
            done.set_exception(added)
        else:
            done.set_result(added)


class SqlConnectorStates:
    """Poll cursors and full-sync marks per connector."""

    def __init__(self, *, engine: AsyncEngine) -> None:
        self._engine = engine

    async def get(self, connector_id: str) -> tuple[str | None, datetime | None]:
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    select(_states.c.cursor, _states.c.full_sync_at).where(
                        _states.c.connector_id == connector_id
                    )
                )
            ).first()
        return (row[0], row[1]) if row else (None, None)

    async def save(
        self, connector_id: str, *, cursor: str | None = None, full_sync: bool = False
    ) -> None:
        now = datetime.now(UTC)
        values = {
            "connector_id": connector_id,
            "cursor": cursor,
            "updated_at": now,
            "full_sync_at": now if full_sync else None,
            "last_event_at": now,
        }
        stmt = upsert(self._engine, _states).values(**values)
        changes = {
            "updated_at": stmt.excluded.updated_at,
            "last_event_at": stmt.excluded.last_event_at,
        }
        if cursor is not None:
            changes["cursor"] = stmt.excluded.cursor
        if full_sync:
            changes["full_sync_at"] = stmt.excluded.full_sync_at
        stmt = stmt.on_conflict_do_update(index_elements=["connector_id"], set_=changes)
        async with self._engine.begin() as conn:
            await conn.execute(stmt)


__all__ = ["PENDING", "InboxItem", "SqlConnectorStates", "SqlInbox"]

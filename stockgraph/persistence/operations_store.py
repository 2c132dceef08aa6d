"""What operators look at: the sync exceptions WMS instances have raised."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from sqlalchemy import Table, select
from sqlalchemy.ext.asyncio import AsyncEngine

from stockgraph.domain.ids import TenantId
from stockgraph.domain.model import SyncExceptionRecord
from stockgraph.persistence.models import SyncExceptionRow

_exceptions = cast(Table, SyncExceptionRow.__table__)


class SqlOperationsStore:
    """Implements the services' ``OperationsReader`` port."""

    def __init__(self, *, engine: AsyncEngine) -> None:
        self._engine = engine

    async def sync_exceptions(
        self,
        tenant_id: TenantId,
        *,
        before_id: int | None,
        limit: int,
        connector_id: str | None,
        open_only: bool,
    ) -> Sequence[SyncExceptionRecord]:
        """Newest first, strictly older than ``before_id``."""
        t = _exceptions
        query = select(
            t.c.id,
            t.c.connector_id,
            t.c.event_id,
            t.c.code,
            t.c.reason,
            t.c.raw,
            t.c.created_at,
            t.c.resolved_at,
        ).where(t.c.tenant_id == tenant_id)
        if before_id is not None:
            query = query.where(t.c.id < before_id)
        if connector_id is not None:
            query = query.where(t.c.connector_id == connector_id)
        if open_only:
            query = query.where(t.c.resolved_at.is_(None))
        query = query.order_by(t.c.id.desc()).limit(limit)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [SyncExceptionRecord(tenant_id, *row) for row in rows]

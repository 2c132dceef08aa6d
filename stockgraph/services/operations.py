"""What operators need to see when syncing goes wrong."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from stockgraph.domain.ids import TenantId
from stockgraph.domain.model import SyncExceptionRecord


class OperationsReader(Protocol):
    async def sync_exceptions(
        self,
        tenant_id: TenantId,
        *,
        before_id: int | None,
        limit: int,
        connector_id: str | None,
        open_only: bool,
    ) -> Sequence[SyncExceptionRecord]: ...


class OperationsService:
    def __init__(self, *, reader: OperationsReader) -> None:
        self._reader = reader

    async def sync_exceptions(
        self,
        tenant_id: TenantId,
        *,
        before_id: int | None,
        limit: int,
        connector_id: str | None = None,
        open_only: bool = True,
    ) -> tuple[Sequence[SyncExceptionRecord], bool]:
        """A page of the tenant's sync exceptions, newest first, and whether more follow."""
        rows = await self._reader.sync_exceptions(
            tenant_id,
            before_id=before_id,
            limit=limit + 1,
            connector_id=connector_id,
            open_only=open_only,
        )
        return rows[:limit], len(rows) > limit

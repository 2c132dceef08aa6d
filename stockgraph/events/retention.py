"""Outbox retention: events older than the retention period are deleted, oldest first,
and so are webhook deliveries that are over (delivered or dead) and as old.

Subscribers replay from the outbox (``after``), so what it keeps bounds how far back a
subscriber can resume; a cursor older than that is refused (``CURSOR_EXPIRED``), never
answered with a replay that silently starts later. Readers that must see every event (the
outbound-webhook dispatcher) hold retention back until they have read past it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Protocol

log = logging.getLogger("stockgraph.events")


class Prunable(Protocol):
    async def prune(self, *, before: datetime, keep_after: int | None = None) -> int: ...


class FinishedDeliveries(Protocol):
    async def prune_finished(self, *, before: datetime) -> int: ...


class OutboxRetention:
    """Deletes events older than ``keep`` every ``every_seconds``."""

    def __init__(
        self,
        *,
        outbox: Prunable,
        keep: timedelta,
        every_seconds: float = 300.0,
        held_back_by: Callable[[], Awaitable[int | None]] | None = None,
        deliveries: FinishedDeliveries | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if keep <= timedelta(0):
            raise ValueError("keep must be positive")
        self._outbox = outbox
        self._keep = keep
        self._every = every_seconds
        self._held_back_by = held_back_by
        self._deliveries = deliveries
        self._clock = clock

    async def prune_once(self) -> int:
        """Delete what is due now (and webhook deliveries that are over and as old); how
        many events were deleted."""
        before = self._clock() - self._keep
        if self._deliveries is not None:
            await self._deliveries.prune_finished(before=before)
        keep_after = None if self._held_back_by is None else await self._held_back_by()
        return await self._outbox.prune(before=before, keep_after=keep_after)

    async def run(self) -> None:
        """Every ``every_seconds`` from start-up, until cancelled."""
        while True:
            await asyncio.sleep(self._every)
            try:
                deleted = await self.prune_once()
                if deleted:
                    log.info("outbox retention deleted %d events", deleted)
            except Exception:
                log.exception("outbox retention failed; trying again later")


__all__ = ["OutboxRetention"]

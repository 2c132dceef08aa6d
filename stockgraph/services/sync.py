"""Pulling state from WMS instances: the first full sync, and polling for events.

An instance seen for the first time is fully synced once: every page of its levels is
applied as a snapshot (cause ``RECONCILIATION``), newer-sequence-wins like any event.
Dialects that cannot push are polled: events since the saved cursor are applied (cause
``POLL``) and the cursor moves only after they are committed, so a crash re-reads rather
than skips. Either way the same mapping, ordering, ledger and exception rules apply as for
webhooks (:class:`~stockgraph.services.ingestion.IngestionService`).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Protocol

from stockgraph.connectors.base import EventKind, WmsEvent
from stockgraph.connectors.errors import ConnectorError, MalformedPayload
from stockgraph.domain.errors import ConcurrentChange
from stockgraph.domain.model import MovementCause
from stockgraph.services.ingestion import ApplyReport, ConnectorInstance, IngestionService
from stockgraph.services.ports import ProjectionChanged, UnitOfWork

log = logging.getLogger("stockgraph.sync")


class ConnectorStates(Protocol):
    async def get(self, connector_id: str) -> tuple[str | None, datetime | None]:
        """The saved poll cursor and when the instance was last fully synced."""

    async def save(
        self, connector_id: str, *, cursor: str | None = None, full_sync: bool = False
    ) -> None: ...


class SyncService:
    """Full syncs and polls, one instance at a time."""

    def __init__(
        self,
        *,
        ingestion: IngestionService,
        states: ConnectorStates,
        unit_of_work: Callable[[], UnitOfWork],
        on_change: ProjectionChanged = lambda _t, _s: None,
    ) -> None:
        self._ingestion = ingestion
        self._states = states
        self._uow = unit_of_work
        self._on_change = on_change
        self._synced: set[str] = set()
        """Instances known to be fully synced: a mark that is never taken back."""

    async def full_sync(self, instance: ConnectorInstance) -> ApplyReport:
        """Apply every level the instance holds, page by page, then mark it synced."""
        report = ApplyReport()
        cursor: str | None = None
        page = 0
        while True:
            levels, cursor = await instance.connector.list_levels(cursor)
            page += 1
            if levels:
                sequence = max((lv.sequence or 0) for lv in levels)
                snapshot = WmsEvent(
                    event_id=f"full-sync-{uuid.uuid4().hex[:12]}-{page}",
                    sequence=sequence,
                    kind=EventKind.SNAPSHOT,
                    occurred_at=max(
                        (lv.observed_at for lv in levels if lv.observed_at is not None),
                        default=datetime.now(UTC),
                    ),
                    levels=tuple(levels),
                )
                async with self._ingestion.lock(instance.connector_id), self._uow() as uow:
                    await self._ingestion.apply_event(
                        uow, instance, snapshot, cause=MovementCause.RECONCILIATION, report=report
                    )
                    await uow.commit()
            if cursor is None:
                break
        await self._states.save(instance.connector_id, full_sync=True)
        self._synced.add(instance.connector_id)
        for tenant, skus in report.touched.items():
            self._on_change(tenant, skus)
        return report

    async def poll(self, instance: ConnectorInstance) -> ApplyReport:
        """Apply events since the saved cursor; the cursor moves after they commit."""
        cursor, _synced = await self._states.get(instance.connector_id)
        return await self._poll(instance, cursor)

    async def _poll(self, instance: ConnectorInstance, cursor: str | None) -> ApplyReport:
        report = ApplyReport()
        try:
            events, next_cursor = await instance.connector.poll_events(cursor)
        except MalformedPayload as exc:
            await self._quarantine(instance, exc)
            report.exceptions += 1
            if exc.resume_after is not None:
                await self._states.save(instance.connector_id, cursor=exc.resume_after)
            return report
        if events:
            async with self._ingestion.lock(instance.connector_id), self._uow() as uow:
                # One pass for the whole poll: levels read and written once, in WMS order.
                await self._ingestion.apply_events(
                    uow, instance, events, cause=MovementCause.POLL, report=report
                )
                await uow.commit()
        if next_cursor is not None and next_cursor != cursor:
            await self._states.save(instance.connector_id, cursor=next_cursor)
        for tenant, skus in report.touched.items():
            self._on_change(tenant, skus)
        return report

    async def _quarantine(self, instance: ConnectorInstance, exc: MalformedPayload) -> None:
        """Keep a document the WMS sent that cannot be read, with why, for an operator."""
        async with self._uow() as uow:
            await uow.add_exception(
                tenant_id=instance.tenant_id,
                connector_id=instance.connector_id,
                event_id=exc.resume_after,
                code="MALFORMED",
                reason=str(exc),
                raw=exc.raw.decode("utf-8", "replace"),
            )
            await uow.commit()

    async def sync_once(self, instance: ConnectorInstance) -> ApplyReport | None:
        """Full sync if it never happened, then a poll for polling dialects; None on failure.

        An instance that pushes has nothing more to ask once it is known to be synced: its
        state is not read again every round (dozens of instances, every few seconds).
        """
        polled = instance.connector.spec.poll
        if not polled and instance.connector_id in self._synced:
            return ApplyReport()
        try:
            # One read of the instance's state for both questions: a poll comes every few
            # seconds for every polled instance.
            cursor, synced_at = await self._states.get(instance.connector_id)
            if synced_at is None:
                return await self.full_sync(instance)
            self._synced.add(instance.connector_id)
            if polled:
                return await self._poll(instance, cursor)
        except (ConnectorError, ConcurrentChange) as exc:
            log.warning("sync of %s failed: %s", instance.connector_id, exc)
            return None
        return ApplyReport()

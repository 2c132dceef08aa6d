"""Ingesting what WMS instances report: verify, keep, map, and apply in WMS order.

A webhook is verified (signature over the raw body, timestamp tolerance, rotated secrets),
kept in the inbox — deduplicated by its event id — and acknowledged; the inbox is then
applied in the background, a round of received bodies per transaction. Applying maps
every level to our SKU, warehouse and base units (:mod:`stockgraph.domain.mapping`) and
writes it to the projection only when it is newer than what is held, by the WMS's own
sequence: an event older than the state we hold never overwrites it, so duplicates and
reordering converge.
Every applied change writes a ledger movement and an audit event in the same transaction;
anything that cannot be read or mapped becomes a sync exception holding the raw payload and
the reason (:mod:`stockgraph.services.wms_reports`). Polled dialects, the first full sync of
an instance and live reads go the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from enum import Enum

from stockgraph.connectors.base import WmsEvent
from stockgraph.connectors.errors import ConnectorError, MalformedPayload
from stockgraph.connectors.signing import verify
from stockgraph.domain.model import MovementCause
from stockgraph.services.ports import Inbox, InboxEntry, ProjectionChanged, UnitOfWork
from stockgraph.services.wms_reports import (
    ApplyReport,
    Batch,
    Confirmation,
    ConnectorInstance,
    SyncProgress,
    apply_reports,
    confirm_reports,
    together_or_alone,
)

__all__ = [
    "ApplyReport",
    "BadDelivery",
    "ConnectorInstance",
    "IngestionService",
    "Receipt",
    "SyncProgress",
    "UnknownConnector",
]

log = logging.getLogger("stockgraph.ingestion")

MAX_BODY_BYTES = 1_048_576


class UnknownConnector(LookupError):
    """No configured WMS instance has this connector id."""


class BadDelivery(ValueError):
    """A delivery that cannot be accepted as it is (no event id, too large)."""


class Receipt(Enum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"


class IngestionService:
    """Receives, keeps and applies what WMS instances report."""

    def __init__(
        self,
        *,
        instances: Callable[[str], ConnectorInstance | None],
        inbox: Inbox,
        unit_of_work: Callable[[], UnitOfWork],
        on_change: ProjectionChanged = lambda _t, _s: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._instances = instances
        self._inbox = inbox
        self._uow = unit_of_work
        self._on_change = on_change
        self._clock = clock
        self.wake = asyncio.Event()
        self._locks: dict[str, asyncio.Lock] = {}
        self.progress: dict[str, SyncProgress] = {}

    def lock(self, connector_id: str) -> asyncio.Lock:
        """Held while anything applies to one instance's levels in this process.

        Webhooks, polls, full syncs and live reads of the same instance would otherwise
        race to create the same new levels; across processes the database refuses the
        loser (:class:`~stockgraph.domain.errors.ConcurrentChange`) and it tries again.
        """
        found = self._locks.get(connector_id)
        if found is None:
            found = self._locks[connector_id] = asyncio.Lock()
        return found

    @contextlib.asynccontextmanager
    async def locks(self, connector_ids: Iterable[str]) -> AsyncIterator[None]:
        """Every instance's :meth:`lock`, always taken in the same order, so that two
        appliers of several instances never wait on each other crosswise."""
        async with contextlib.AsyncExitStack() as held:
            for connector_id in sorted(set(connector_ids)):
                await held.enter_async_context(self.lock(connector_id))
            yield

    def instance(self, connector_id: str) -> ConnectorInstance:
        found = self._instances(connector_id)
        if found is None:
            raise UnknownConnector(f"no WMS instance {connector_id!r}")
        return found

    async def receive(
        self, connector_id: str, *, event_id: str | None, body: bytes, signature: str | None
    ) -> Receipt:
        """Verify and keep one webhook delivery; applying happens in the background.

        Raises :class:`UnknownConnector`, :class:`~stockgraph.connectors.signing.
        InvalidSignature` or :class:`BadDelivery`; nothing is kept then.
        """
        instance = self.instance(connector_id)
        verify(body, signature, instance.webhook_secrets, now=self._clock())
        if not event_id or len(event_id) > 200:
            raise BadDelivery("X-Event-Id must name the event (1 to 200 characters)")
        if len(body) > MAX_BODY_BYTES:
            raise BadDelivery(f"body over {MAX_BODY_BYTES} bytes")
        added = await self._inbox.add(
            tenant_id=instance.tenant_id, connector_id=connector_id, event_id=event_id, body=body
        )
        if added:
            self.wake.set()
        return Receipt.ACCEPTED if added else Receipt.DUPLICATE

    async def apply_pending(self, *, limit: int = 50) -> ApplyReport:
        """Apply received events, oldest first: one transaction per round, whatever the
        number of instances they came from.

        One transaction rather than one per instance: the levels, ledger rows, audit events
        and inbox marks of every instance in the round are written by one statement each,
        so a burst spread over many instances costs the database (and SQLite's single write
        lock) one short transaction. Should another process have changed one of the levels
        meanwhile, the round is rolled back and each instance's events are applied in a
        transaction of their own; those that meet the change again stay in the inbox for
        the next round, and only they.
        """
        groups: dict[str, list[InboxEntry]] = {}
        for entry in await self._inbox.pending(limit):
            groups.setdefault(entry.connector_id, []).append(entry)
        report = await together_or_alone(
            list(groups.items()), self._apply_round, lambda group: group[0]
        )
        for tenant, skus in report.touched.items():
            self._on_change(tenant, skus)
        return report

    async def _apply_round(self, groups: Sequence[tuple[str, list[InboxEntry]]]) -> ApplyReport:
        report = ApplyReport()
        if groups:
            async with self.locks(connector_id for connector_id, _ in groups):
                await self._apply_entries(groups, report)
            report.entries = sum(len(entries) for _, entries in groups)
        return report

    async def _apply_entries(
        self, groups: Sequence[tuple[str, list[InboxEntry]]], report: ApplyReport
    ) -> None:
        async with self._uow() as uow:
            batches: list[Batch] = []
            parsed: list[int] = []
            for connector_id, entries in groups:
                instance = self._instances(connector_id)
                if instance is None:
                    for entry in entries:
                        await self._quarantine(
                            uow, entry, "UNKNOWN_CONNECTOR", "the instance is no longer configured"
                        )
                    continue
                events: list[WmsEvent] = []
                for entry in entries:
                    try:
                        events += instance.connector.parse_webhook(entry.body)
                    except (MalformedPayload, ConnectorError) as exc:
                        await self._quarantine(uow, entry, "MALFORMED", str(exc))
                        report.exceptions += 1
                        continue
                    parsed.append(entry.id)
                batches.append((instance, events))
            await self.apply_batches(uow, batches, cause=MovementCause.WEBHOOK, report=report)
            await uow.finish_inbox(parsed, status="APPLIED")
            await uow.commit()

    async def _quarantine(self, uow: UnitOfWork, entry: InboxEntry, code: str, reason: str) -> None:
        await uow.add_exception(
            tenant_id=entry.tenant_id,
            connector_id=entry.connector_id,
            event_id=entry.event_id,
            code=code,
            reason=reason,
            raw=entry.body.decode("utf-8", "replace"),
        )
        await uow.finish_inbox([entry.id], status="QUARANTINED", error=f"{code}: {reason}")

    async def apply_event(
        self,
        uow: UnitOfWork,
        instance: ConnectorInstance,
        event: WmsEvent,
        *,
        cause: MovementCause,
        report: ApplyReport,
    ) -> None:
        """Apply one event inside ``uow`` (see :meth:`apply_events`)."""
        await self.apply_events(uow, instance, [event], cause=cause, report=report)

    async def apply_events(
        self,
        uow: UnitOfWork,
        instance: ConnectorInstance,
        events: Sequence[WmsEvent],
        *,
        cause: MovementCause,
        report: ApplyReport,
    ) -> None:
        """Apply events of one instance inside ``uow`` (see :meth:`apply_batches`)."""
        await self.apply_batches(uow, [(instance, events)], cause=cause, report=report)

    async def apply_batches(
        self,
        uow: UnitOfWork,
        batches: Sequence[Batch],
        *,
        cause: MovementCause,
        report: ApplyReport,
    ) -> None:
        """Apply events of several instances inside ``uow``, in WMS order, newer levels only.

        However many instances, events and levels, the levels are read once, written once
        and their ledger rows and audit events appended once (see
        :func:`~stockgraph.services.wms_reports.apply_reports`). The caller holds each
        instance's :meth:`lock`.
        """
        await apply_reports(uow, batches, cause=cause, report=report, progress=self.progress)

    async def confirm_batches(
        self, uow: UnitOfWork, confirmations: Sequence[Confirmation], *, report: ApplyReport
    ) -> None:
        """Bring levels that instances' answers confirm up to date inside ``uow`` (see
        :func:`~stockgraph.services.wms_reports.confirm_reports`). The caller holds each
        instance's :meth:`lock`."""
        await confirm_reports(uow, confirmations, report=report, progress=self.progress)

    async def run(
        self, *, idle_seconds: float = 1.0, round_size: int = 50, max_round_size: int = 200
    ) -> None:
        """Apply the inbox whenever something arrives (or every ``idle_seconds``).

        Rounds take ``round_size`` events; while they come back full (a backlog), each
        takes twice the one before, up to ``max_round_size``. Small rounds keep the write
        lock short, so receipts waiting to be committed do not wait long; larger ones cost
        less per event, so a backlog is worked off rather than left to grow.
        """
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout=idle_seconds)
            self.wake.clear()
            limit = round_size
            try:
                while taken := (await self.apply_pending(limit=limit)).entries:
                    limit = min(limit * 2, max_round_size) if taken >= limit else round_size
            except Exception:
                log.exception("applying the inbox failed; retrying shortly")

"""Ingesting what WMS instances report: verify, keep, map, and apply in WMS order.

A webhook is verified (signature over the raw body, timestamp tolerance, rotated secrets),
kept in the inbox — deduplicated by its event id — and acknowledged; the inbox is then
applied in the background, one transaction per received body. Applying maps every level to
our SKU, warehouse and base units (:mod:`stockgraph.domain.mapping`) and writes it to the
projection only when it is newer than what is held, by the WMS's own sequence: an event
older than the state we hold never overwrites it, so duplicates and reordering converge.
Every applied change writes a ledger movement and an audit event in the same transaction;
anything that cannot be read or mapped becomes a sync exception holding the raw payload and
the reason. Polled dialects and the first full sync of an instance go the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum

import orjson

from stockgraph.connectors.base import Connector, EventKind, WmsEvent, WmsLevel
from stockgraph.connectors.errors import ConnectorError, MalformedPayload
from stockgraph.connectors.metrics import RuntimeStats
from stockgraph.connectors.signing import verify
from stockgraph.domain.errors import ConcurrentChange, DomainError
from stockgraph.domain.ids import CorrelationId, Sku, TenantId, WarehouseId
from stockgraph.domain.mapping import InstanceMapping, MappedLevel, Unmappable
from stockgraph.domain.model import AuditEntry, MovementCause, StockLevel, StockMovement
from stockgraph.domain.quantities import StockQuantities, with_physical
from stockgraph.services.ports import Inbox, InboxEntry, ProjectionChanged, UnitOfWork

log = logging.getLogger("stockgraph.ingestion")

MAX_BODY_BYTES = 1_048_576


class UnknownConnector(LookupError):
    """No configured WMS instance has this connector id."""


class BadDelivery(ValueError):
    """A delivery that cannot be accepted as it is (no event id, too large)."""


class Receipt(Enum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"


@dataclass(frozen=True, slots=True)
class ConnectorInstance:
    """One configured WMS instance, as ingestion needs it."""

    connector_id: str
    tenant_id: TenantId
    warehouse_id: WarehouseId
    warehouse_code: str
    connector: Connector
    mapping: InstanceMapping
    webhook_secrets: tuple[str, ...] = ()
    health: Callable[[], RuntimeStats] | None = None
    """The instance's runtime figures (calls, errors, breaker, budget), if it has a runtime."""


@dataclass
class SyncProgress:
    """How fresh one instance's data is, as this process has seen it."""

    last_event_at: datetime | None = None
    lag_ms: float | None = None
    """Time from the WMS's event to its being applied here, smoothed."""


@dataclass
class ApplyReport:
    """What applying one batch of events did."""

    entries: int = 0
    applied: int = 0
    stale: int = 0
    unchanged: int = 0
    exceptions: int = 0
    touched: dict[TenantId, set[Sku]] = field(default_factory=dict)
    """The SKUs whose levels were written (changed, or only brought up to date), by tenant."""


_CAUSE_REASON = {
    EventKind.RECEIPT: "RECEIVED",
    EventKind.CYCLE_COUNT: "CYCLE_COUNT",
    EventKind.ADJUSTMENT: "CORRECTION",
    EventKind.RETURN: "RESTOCK",
}


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

    async def apply_pending(self, *, limit: int = 200) -> ApplyReport:
        """Apply received events, oldest first, one transaction per instance and round."""
        report = ApplyReport()
        groups: dict[str, list[InboxEntry]] = {}
        for entry in await self._inbox.pending(limit):
            groups.setdefault(entry.connector_id, []).append(entry)
        for connector_id, entries in groups.items():
            try:
                async with self.lock(connector_id):
                    await self._apply_entries(connector_id, entries, report)
            except ConcurrentChange as exc:
                log.info(
                    "%s: %s; its events stay in the inbox for the next round", connector_id, exc
                )
                continue
            report.entries += len(entries)
        for tenant, skus in report.touched.items():
            self._on_change(tenant, skus)
        return report

    async def _apply_entries(
        self, connector_id: str, entries: Sequence[InboxEntry], report: ApplyReport
    ) -> None:
        instance = self._instances(connector_id)
        async with self._uow() as uow:
            if instance is None:
                for entry in entries:
                    await self._quarantine(
                        uow, entry, "UNKNOWN_CONNECTOR", "the instance is no longer configured"
                    )
                await uow.commit()
                return
            events: list[WmsEvent] = []
            parsed: list[int] = []
            for entry in entries:
                try:
                    events += instance.connector.parse_webhook(entry.body)
                except (MalformedPayload, ConnectorError) as exc:
                    await self._quarantine(uow, entry, "MALFORMED", str(exc))
                    report.exceptions += 1
                    continue
                parsed.append(entry.id)
            await self.apply_events(
                uow, instance, events, cause=MovementCause.WEBHOOK, report=report
            )
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
        """Apply events of one instance inside ``uow``, in WMS order, newer levels only.

        However many events and levels, the levels are read once, written once and their
        ledger rows and audit events appended once.
        """
        plan: list[tuple[WmsEvent, list[tuple[WmsLevel, MappedLevel]]]] = []
        for event in sorted(events, key=lambda e: e.sequence):
            mapped: list[tuple[WmsLevel, MappedLevel]] = []
            for level in event.levels:
                result = instance.mapping.level(
                    level.wms_sku,
                    level.location,
                    level.unit,
                    level.on_hand,
                    damaged=level.damaged,
                    quality_control=level.quality_control,
                    incoming=level.incoming,
                )
                if isinstance(result, Unmappable):
                    await self._exception(uow, instance, event, result.code, result.reason, level)
                    report.exceptions += 1
                elif result.warehouse_code != instance.warehouse_code:
                    reason = f"location {level.location!r} is not this instance's warehouse"
                    await self._exception(uow, instance, event, "UNKNOWN_LOCATION", reason, level)
                    report.exceptions += 1
                else:
                    mapped.append((level, result))
            plan.append((event, mapped))
        skus = sorted({ours.sku for _, mapped in plan for _, ours in mapped})
        known = await uow.known_skus(instance.tenant_id, skus)
        held = await uow.levels_for_update(
            instance.tenant_id, instance.warehouse_id, [s for s in skus if s in known]
        )
        state = {sku: level for sku, (level, _version) in held.items()}
        writes: dict[Sku, tuple[StockLevel, int | None]] = {}
        movements: list[StockMovement] = []
        audits: list[AuditEntry] = []
        actor = f"wms:{instance.connector_id}"
        for event, mapped in plan:
            correlation = CorrelationId(uuid.uuid4().hex)
            occurred = event.occurred_at.astimezone(UTC)
            # A snapshot is the WMS's state as of its sequence: at an equal sequence it still
            # wins, since a difference there is stock that changed without any event (drift).
            snapshot = event.kind is EventKind.SNAPSHOT
            applied = 0
            for raw, ours in mapped:
                if ours.sku not in known:
                    reason = f"WMS SKU {raw.wms_sku!r} maps to {ours.sku}, which is not an item"
                    await self._exception(uow, instance, event, "UNKNOWN_SKU", reason, raw)
                    report.exceptions += 1
                    continue
                sequence = raw.sequence if raw.sequence is not None else event.sequence
                current = state.get(ours.sku)
                held_sequence = current.source_sequence if current is not None else None
                if held_sequence is not None and (
                    held_sequence > sequence or (held_sequence == sequence and not snapshot)
                ):
                    report.stale += 1
                    continue
                try:
                    quantities, shortfall = with_physical(
                        current.quantities if current else None,
                        on_hand=ours.on_hand,
                        damaged=ours.damaged,
                        quality_control=ours.quality_control,
                        incoming=ours.incoming,
                    )
                except DomainError as exc:
                    await self._exception(uow, instance, event, exc.code, str(exc), raw)
                    report.exceptions += 1
                    continue
                new_level = StockLevel(
                    tenant_id=instance.tenant_id,
                    warehouse_id=instance.warehouse_id,
                    sku=ours.sku,
                    quantities=quantities,
                    as_of=occurred,
                    source_sequence=sequence,
                )
                before = current.quantities if current else StockQuantities.ZERO
                state[ours.sku] = new_level
                read = held.get(ours.sku)
                writes[ours.sku] = (new_level, read[1] if read else None)
                report.touched.setdefault(instance.tenant_id, set()).add(ours.sku)
                delta = before.delta_to(quantities)
                if delta.is_zero():
                    report.unchanged += 1
                    continue
                report.applied += 1
                applied += 1
                movements.append(
                    StockMovement(
                        level=new_level,
                        delta=delta,
                        cause=cause,
                        correlation_id=correlation,
                        actor=actor,
                        occurred_at=occurred,
                        reason=_CAUSE_REASON.get(event.kind),
                        reference=f"wms://{instance.connector_id}/events/{event.event_id}",
                    )
                )
                if shortfall:
                    audits.append(
                        AuditEntry(
                            tenant_id=instance.tenant_id,
                            kind="OVERCOMMITTED",
                            actor=actor,
                            correlation_id=correlation,
                            message=(
                                f"{ours.sku} at {instance.warehouse_code}: the WMS holds "
                                f"{shortfall} less than is committed and reserved"
                            ),
                            detail={"shortfall": shortfall, "event_id": event.event_id},
                            sku=ours.sku,
                            warehouse_id=instance.warehouse_id,
                        )
                    )
            if applied:
                audits.append(
                    AuditEntry(
                        tenant_id=instance.tenant_id,
                        kind="STOCK_SYNCED",
                        actor=actor,
                        correlation_id=correlation,
                        message=f"{event.kind.value} {event.event_id}: {applied} level(s) applied",
                        detail={
                            "connector_id": instance.connector_id,
                            "event_id": event.event_id,
                            "sequence": event.sequence,
                            "kind": event.kind.value,
                            "cause": cause.value,
                        },
                        warehouse_id=instance.warehouse_id,
                    )
                )
            self._progressed(instance.connector_id, occurred, lagging=not snapshot)
        await uow.save_levels(list(writes.values()))
        await uow.add_movements(movements)
        await uow.add_audits(audits)

    def _progressed(self, connector_id: str, occurred: datetime, *, lagging: bool) -> None:
        """Note an applied change; events (not snapshots, whose time is the WMS's clock of
        the whole state) also move the smoothed lag."""
        progress = self.progress.setdefault(connector_id, SyncProgress())
        if lagging:
            lag = max(0.0, (datetime.now(UTC) - occurred).total_seconds() * 1000)
            progress.lag_ms = lag if progress.lag_ms is None else 0.8 * progress.lag_ms + 0.2 * lag
        if progress.last_event_at is None or occurred > progress.last_event_at:
            progress.last_event_at = occurred

    async def _exception(
        self,
        uow: UnitOfWork,
        instance: ConnectorInstance,
        event: WmsEvent,
        code: str,
        reason: str,
        level: WmsLevel | None,
    ) -> None:
        raw: Mapping[str, object] = event.raw or {"event_id": event.event_id}
        payload = {"event": dict(raw), "level": _level_dict(level) if level else None}
        await uow.add_exception(
            tenant_id=instance.tenant_id,
            connector_id=instance.connector_id,
            event_id=event.event_id,
            code=code,
            reason=reason,
            raw=orjson.dumps(payload, default=str).decode(),
        )

    async def run(self, *, idle_seconds: float = 1.0) -> None:
        """Apply the inbox whenever something arrives (or every ``idle_seconds``)."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout=idle_seconds)
            self.wake.clear()
            try:
                while (await self.apply_pending()).entries:
                    pass
            except Exception:
                log.exception("applying the inbox failed; retrying shortly")


def _level_dict(level: WmsLevel) -> dict[str, object]:
    return {
        "wms_sku": level.wms_sku,
        "location": level.location,
        "unit": level.unit,
        "on_hand": str(level.on_hand),
        "sequence": level.sequence,
    }

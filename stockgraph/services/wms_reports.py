"""What WMS instances report, applied to the projection: mapped, newest first, ledgered.

Every level a WMS reports is mapped to our SKU, warehouse and base units
(:mod:`stockgraph.domain.mapping`) and written only when it is newer than what is held, by
the WMS's own sequence: an event older than the state held never overwrites it, so
duplicates and reordering converge. A change writes a ledger movement (and its outbox
event) and an audit event in the same transaction. A level the WMS confirms unchanged only
has its ``as_of`` and sequence brought up to date: no ledger row, since nothing moved.
Whatever cannot be read or mapped becomes a sync exception holding the raw payload.

:func:`apply_reports` takes the reports of several instances at once, so a live read of
two dozen instances is one transaction of a handful of statements, not two dozen.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeVar

import orjson

from stockgraph.connectors.base import Connector, EventKind, WmsEvent, WmsLevel
from stockgraph.connectors.metrics import RuntimeStats
from stockgraph.domain.errors import ConcurrentChange, DomainError
from stockgraph.domain.ids import CorrelationId, Sku, TenantId, WarehouseId
from stockgraph.domain.mapping import InstanceMapping, MappedLevel, Unmappable
from stockgraph.domain.model import (
    AuditEntry,
    LevelSource,
    MovementCause,
    StockLevel,
    StockMovement,
)
from stockgraph.domain.quantities import StockQuantities, with_physical
from stockgraph.services.ports import UnitOfWork

LevelKey = tuple[WarehouseId, Sku]


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

    def add(self, other: ApplyReport) -> None:
        """Count what ``other`` did too (another transaction of the same pass)."""
        self.entries += other.entries
        self.applied += other.applied
        self.stale += other.stale
        self.unchanged += other.unchanged
        self.exceptions += other.exceptions
        for tenant, skus in other.touched.items():
            self.touched.setdefault(tenant, set()).update(skus)


Batch = tuple[ConnectorInstance, Sequence[WmsEvent]]
"""One instance and events it reported."""

Confirmation = tuple[ConnectorInstance, WmsEvent, Sequence[StockLevel]]
"""One instance, an answer it gave, and the levels held as that answer confirms them: the
same physical counts at a newer sequence or ``as_of``."""

log = logging.getLogger("stockgraph.ingestion")

_Part = TypeVar("_Part")


async def together_or_alone(
    parts: Sequence[_Part],
    apply: Callable[[Sequence[_Part]], Awaitable[ApplyReport]],
    name: Callable[[_Part], str],
) -> ApplyReport:
    """``apply`` to every part in one transaction; should that meet another writer's change
    (:class:`~stockgraph.domain.errors.ConcurrentChange`), to each part in one of its own, so
    that only a part meeting the change again is left for a later pass."""
    try:
        return await apply(parts)
    except ConcurrentChange as exc:
        if len(parts) == 1:
            log.info("%s: %s; left for a later pass", name(parts[0]), exc)
            return ApplyReport()
        log.info("%s; applying one instance at a time", exc)
    report = ApplyReport()
    for part in parts:
        try:
            report.add(await apply([part]))
        except ConcurrentChange as again:
            log.info("%s: %s; left for a later pass", name(part), again)
    return report


_CAUSE_REASON = {
    EventKind.RECEIPT: "RECEIVED",
    EventKind.CYCLE_COUNT: "CYCLE_COUNT",
    EventKind.ADJUSTMENT: "CORRECTION",
    EventKind.RETURN: "RESTOCK",
}

_Plan = list[tuple[WmsEvent, list[tuple[WmsLevel, MappedLevel]]]]


async def apply_reports(
    uow: UnitOfWork,
    batches: Sequence[Batch],
    *,
    cause: MovementCause,
    report: ApplyReport,
    progress: dict[str, SyncProgress],
) -> None:
    """Apply each instance's events inside ``uow``, in WMS order, newer levels only.

    However many instances, events and levels: the SKUs are checked once per tenant, the
    levels read once, written once (unchanged ones only brought up to date), and their
    ledger rows and audit events appended once. ``progress`` is updated per instance.
    """
    plans: list[tuple[ConnectorInstance, _Plan]] = []
    asked: dict[TenantId, dict[WarehouseId, set[Sku]]] = {}
    for instance, events in batches:
        plan = await _plan(uow, instance, events, report)
        plans.append((instance, plan))
        skus = asked.setdefault(instance.tenant_id, {}).setdefault(instance.warehouse_id, set())
        skus.update(ours.sku for _, mapped in plan for _, ours in mapped)
    known: dict[TenantId, set[Sku]] = {}
    held: dict[LevelKey, tuple[StockLevel, int]] = {}
    for tenant_id, by_warehouse in asked.items():
        everything = sorted(set().union(*by_warehouse.values()))
        known[tenant_id] = await uow.known_skus(tenant_id, everything) if everything else set()
        wanted = {w: sorted(s & known[tenant_id]) for w, s in by_warehouse.items()}
        held.update(await uow.levels_for_update(tenant_id, wanted))
    writes: dict[LevelKey, tuple[StockLevel, int | None]] = {}
    touches: dict[LevelKey, tuple[StockLevel, int]] = {}
    movements: list[StockMovement] = []
    audits: list[AuditEntry] = []
    state = {key: level for key, (level, _version) in held.items()}
    for instance, plan in plans:
        actor = f"wms:{instance.connector_id}"
        warehouse = instance.warehouse_id
        for event, mapped in plan:
            correlation = CorrelationId(uuid.uuid4().hex)
            occurred = event.occurred_at.astimezone(UTC)
            snapshot = event.kind is EventKind.SNAPSHOT
            applied = 0
            for raw, ours in mapped:
                if ours.sku not in known[instance.tenant_id]:
                    reason = f"WMS SKU {raw.wms_sku!r} maps to {ours.sku}, which is not an item"
                    await _exception(uow, instance, event, "UNKNOWN_SKU", reason, raw)
                    report.exceptions += 1
                    continue
                key = (warehouse, ours.sku)
                sequence = raw.sequence if raw.sequence is not None else event.sequence
                current = state.get(key)
                try:
                    made = reported_level(
                        current, instance, ours, sequence, occurred=occurred, snapshot=snapshot
                    )
                except DomainError as exc:
                    await _exception(uow, instance, event, exc.code, str(exc), raw)
                    report.exceptions += 1
                    continue
                if made is None:
                    report.stale += 1
                    continue
                new_level, shortfall = made
                quantities = new_level.quantities
                before = current.quantities if current else StockQuantities.ZERO
                state[key] = new_level
                read = held.get(key)
                report.touched.setdefault(instance.tenant_id, set()).add(ours.sku)
                if quantities == before and read is not None and key not in writes:
                    touches[key] = (new_level, read[1])
                    report.unchanged += 1
                    continue
                touches.pop(key, None)
                writes[key] = (new_level, read[1] if read else None)
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
                    audits.append(_overcommitted(instance, ours.sku, shortfall, event, correlation))
            if applied:
                audits.append(_synced(instance, event, applied, cause, correlation))
            _progressed(progress, instance.connector_id, occurred, lagging=not snapshot)
    await uow.save_levels(list(writes.values()))
    await uow.touch_levels(list(touches.values()))
    await uow.add_movements(movements)
    await uow.add_audits(audits)


async def confirm_reports(
    uow: UnitOfWork,
    confirmations: Sequence[Confirmation],
    *,
    report: ApplyReport,
    progress: dict[str, SyncProgress],
) -> None:
    """Bring the levels instances' answers confirm up to date inside ``uow``: their
    ``as_of`` and sequence, each row only if it holds the physical counts confirmed at that
    sequence or an older one (:meth:`~stockgraph.services.ports.UnitOfWork.confirm_levels`,
    which raises ``ConcurrentChange`` otherwise). No read, no mapping and no ledger row:
    nothing moved.
    """
    await uow.confirm_levels([level for _i, _a, confirmed in confirmations for level in confirmed])
    for instance, answer, confirmed in confirmations:
        report.unchanged += len(confirmed)
        report.touched.setdefault(instance.tenant_id, set()).update(
            level.sku for level in confirmed
        )
        _progressed(
            progress, instance.connector_id, answer.occurred_at.astimezone(UTC), lagging=False
        )


async def _plan(
    uow: UnitOfWork, instance: ConnectorInstance, events: Sequence[WmsEvent], report: ApplyReport
) -> _Plan:
    """Each event (in WMS order) with its levels in our terms; the unmappable kept aside."""
    plan: _Plan = []
    for event in sorted(events, key=lambda e: e.sequence):
        mapped: list[tuple[WmsLevel, MappedLevel]] = []
        for level in event.levels:
            result = map_level(instance, level)
            if isinstance(result, Unmappable):
                await _exception(uow, instance, event, result.code, result.reason, level)
                report.exceptions += 1
            else:
                mapped.append((level, result))
        plan.append((event, mapped))
    return plan


def map_level(instance: ConnectorInstance, level: WmsLevel) -> MappedLevel | Unmappable:
    """One reported level in our terms, or why it cannot be: the instance's mapping, and
    its location must be the instance's own warehouse."""
    result = instance.mapping.level(
        level.wms_sku,
        level.location,
        level.unit,
        level.on_hand,
        damaged=level.damaged,
        quality_control=level.quality_control,
        incoming=level.incoming,
    )
    if isinstance(result, MappedLevel) and result.warehouse_code != instance.warehouse_code:
        reason = f"location {level.location!r} is not this instance's warehouse"
        return Unmappable(reason, "UNKNOWN_LOCATION")
    return result


def reported_level(
    current: StockLevel | None,
    instance: ConnectorInstance,
    ours: MappedLevel,
    sequence: int,
    *,
    occurred: datetime,
    snapshot: bool,
    source: LevelSource = LevelSource.PROJECTION,
) -> tuple[StockLevel, int] | None:
    """What a WMS's report of ``ours`` at ``sequence`` makes of the level held (``current``,
    None when there is none), with the shortfall against what is committed and reserved;
    None when the report is older than what is held.

    A snapshot is the WMS's state as of its sequence: at an equal sequence it still wins,
    since a difference there is stock that changed without any event (drift). Raises a
    ``DomainError`` when the physical counts cannot be taken.
    """
    held = current.source_sequence if current is not None else None
    if held is not None and (held > sequence or (held == sequence and not snapshot)):
        return None
    quantities, shortfall = with_physical(
        current.quantities if current else None,
        on_hand=ours.on_hand,
        damaged=ours.damaged,
        quality_control=ours.quality_control,
        incoming=ours.incoming,
    )
    level = StockLevel(
        tenant_id=instance.tenant_id,
        warehouse_id=instance.warehouse_id,
        sku=ours.sku,
        quantities=quantities,
        as_of=occurred,
        source_sequence=sequence,
        source=source,
    )
    return level, shortfall


def _overcommitted(
    instance: ConnectorInstance,
    sku: Sku,
    shortfall: int,
    event: WmsEvent,
    correlation: CorrelationId,
) -> AuditEntry:
    return AuditEntry(
        tenant_id=instance.tenant_id,
        kind="OVERCOMMITTED",
        actor=f"wms:{instance.connector_id}",
        correlation_id=correlation,
        message=(
            f"{sku} at {instance.warehouse_code}: the WMS holds "
            f"{shortfall} less than is committed and reserved"
        ),
        detail={"shortfall": shortfall, "event_id": event.event_id},
        sku=sku,
        warehouse_id=instance.warehouse_id,
    )


def _synced(
    instance: ConnectorInstance,
    event: WmsEvent,
    applied: int,
    cause: MovementCause,
    correlation: CorrelationId,
) -> AuditEntry:
    return AuditEntry(
        tenant_id=instance.tenant_id,
        kind="STOCK_SYNCED",
        actor=f"wms:{instance.connector_id}",
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


def _progressed(
    progress: dict[str, SyncProgress], connector_id: str, occurred: datetime, *, lagging: bool
) -> None:
    """Note an applied change; events (not snapshots, whose time is the WMS's clock of
    the whole state) also move the smoothed lag."""
    seen = progress.setdefault(connector_id, SyncProgress())
    if lagging:
        lag = max(0.0, (datetime.now(UTC) - occurred).total_seconds() * 1000)
        seen.lag_ms = lag if seen.lag_ms is None else 0.8 * seen.lag_ms + 0.2 * lag
    if seen.last_event_at is None or occurred > seen.last_event_at:
        seen.last_event_at = occurred


async def _exception(
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


def _level_dict(level: WmsLevel) -> dict[str, object]:
    return {
        "wms_sku": level.wms_sku,
        "location": level.location,
        "unit": level.unit,
        "on_hand": str(level.on_hand),
        "sequence": level.sequence,
    }

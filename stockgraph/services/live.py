"""Live reads: asking the WMS itself when the projection is older than the caller accepts.

``inventoryLevels(maxAge:)`` names how old an answer may be. Levels older than that are
read from their WMS instances through a loader made per request: every SKU any field of
the request asks of one instance goes out in one batch (split only at the dialect's
``max_batch``), every instance is asked at once, and the answers are written back to the
projection through the same path as any other WMS report (mapping, newer-sequence-wins,
ledger), so the next reader benefits. An instance that cannot answer in time — its
breaker open, its budget spent, its network slow — leaves its levels as they were, marked
stale: a live read never fails a query.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from aiodataloader import DataLoader

from stockgraph.connectors.base import EventKind, WmsEvent, WmsLevel
from stockgraph.connectors.errors import CircuitOpen, ConnectorError, RateLimited
from stockgraph.connectors.runtime import deadline
from stockgraph.domain.errors import ConcurrentChange
from stockgraph.domain.ids import Sku, TenantId, WarehouseId
from stockgraph.domain.model import LevelSource, MovementCause, StockLevel
from stockgraph.services.ingestion import IngestionService
from stockgraph.services.ports import ProjectionChanged, StockReader, UnitOfWork
from stockgraph.services.wms_reports import ApplyReport, Batch, ConnectorInstance

log = logging.getLogger("stockgraph.live")

LiveKey = tuple[WarehouseId, Sku]


@dataclass(frozen=True, slots=True)
class UpstreamUse:
    """What one request asked of one WMS instance: reported in ``extensions.cost``."""

    connector_id: str
    calls: int
    """Calls sent to the instance (one per batch of SKUs)."""
    served_from_cache: bool
    """The instance was not read: its levels came from the projection, marked stale."""
    budget_remaining: float | None
    retry_after_ms: int | None
    """How long the instance's budget or Retry-After held the call back, when it did."""


RecordUse = Callable[[UpstreamUse], None]


class LiveReads:
    """Reads levels from WMS instances and writes what they say back to the projection."""

    def __init__(
        self,
        *,
        instances: Callable[[], Sequence[ConnectorInstance]],
        ingestion: IngestionService,
        unit_of_work: Callable[[], UnitOfWork],
        stock: StockReader,
        timeout_seconds: float = 2.0,
        wait_seconds: float = 0.1,
        on_change: ProjectionChanged = lambda _t, _s: None,
    ) -> None:
        self._instances = instances
        self._ingestion = ingestion
        self._uow = unit_of_work
        self._stock = stock
        self._timeout = timeout_seconds
        self._wait = wait_seconds
        self._on_change = on_change

    def instance_count(self, tenant_id: TenantId) -> int:
        """How many of the tenant's warehouses a live read can ask."""
        return sum(1 for i in self._instances() if i.tenant_id == tenant_id)

    def loader(
        self, tenant_id: TenantId, record: RecordUse = lambda _use: None
    ) -> DataLoader[LiveKey, StockLevel | None]:
        """A per-request loader: ``(warehouse id, SKU)`` → a live level, or None.

        ``record`` hears what each instance was asked, for the request's cost report.
        """

        async def load(keys: list[LiveKey]) -> list[StockLevel | None]:
            found = await self.read(tenant_id, keys, record)
            return [found.get(key) for key in keys]

        return DataLoader(load, cache=True)

    async def read(
        self,
        tenant_id: TenantId,
        keys: Sequence[LiveKey],
        record: RecordUse = lambda _use: None,
    ) -> dict[LiveKey, StockLevel]:
        """Ask every instance concerned at once; what came back, as now held."""
        by_warehouse: dict[WarehouseId, list[Sku]] = defaultdict(list)
        for warehouse_id, sku in keys:
            by_warehouse[warehouse_id].append(sku)
        instances = {i.warehouse_id: i for i in self._instances() if i.tenant_id == tenant_id}
        asked = [(instances[w], skus) for w, skus in by_warehouse.items() if w in instances]
        answers = await asyncio.gather(*(self._ask(i, skus, record) for i, skus in asked))
        reported = [
            (instance, levels)
            for (instance, _skus), levels in zip(asked, answers, strict=True)
            if levels is not None
        ]
        report, answered = await self._write_back(reported)
        touched = report.touched.get(tenant_id, set())
        if touched:
            self._on_change(tenant_id, touched)
        found: dict[LiveKey, StockLevel] = {}
        missing: list[LiveKey] = []
        for warehouse_id in answered:
            for sku in by_warehouse[warehouse_id]:
                key = (warehouse_id, sku)
                level = report.levels.get(key)
                if level is None:
                    missing.append(key)
                else:
                    found[key] = replace(level, source=LevelSource.LIVE)
        if missing:
            # Levels the WMS did not report, as held: its answer covered them all the same.
            skus = sorted({sku for _w, sku in missing})
            wanted = set(missing)
            warehouses = sorted({w for w, _sku in missing})
            for lv in await self._stock.levels(tenant_id, skus, warehouses):
                if (lv.warehouse_id, lv.sku) in wanted:
                    found[(lv.warehouse_id, lv.sku)] = replace(lv, source=LevelSource.LIVE)
        return found

    async def _ask(
        self, instance: ConnectorInstance, skus: Sequence[Sku], record: RecordUse
    ) -> Sequence[WmsLevel] | None:
        codes = [instance.mapping.wms_code(sku) for sku in skus]
        batch = instance.connector.spec.max_batch
        chunks = [codes[i : i + batch] for i in range(0, len(codes), batch)]
        calls, retry_after = len(chunks), None
        try:
            # Waiting for the instance's budget (its rate limit, a Retry-After, a backoff)
            # is bounded tighter than the call itself: a storefront would rather have the
            # projection now, marked stale, than a live answer late.
            with deadline(self._wait):
                results = await asyncio.wait_for(
                    asyncio.gather(*(instance.connector.fetch_levels(c) for c in chunks)),
                    timeout=self._timeout,
                )
        except (ConnectorError, TimeoutError) as exc:
            log.info("live read from %s failed: %s", instance.connector_id, exc)
            if isinstance(exc, RateLimited | CircuitOpen):
                calls = 0  # held back before sending
            if isinstance(exc, RateLimited):
                retry_after = round(exc.retry_after * 1000)
            record(_use(instance, calls, served_from_cache=True, retry_after_ms=retry_after))
            return None
        record(_use(instance, calls, served_from_cache=False, retry_after_ms=None))
        return [level for chunk in results for level in chunk]

    async def _write_back(
        self, reported: Sequence[tuple[ConnectorInstance, Sequence[WmsLevel]]]
    ) -> tuple[ApplyReport, list[WarehouseId]]:
        """Write every instance's answer back in one transaction (each instance's alone if
        that one meets a concurrent change); the report and the warehouses whose answers
        were kept."""
        batches = [(instance, [_snapshot(levels)]) for instance, levels in reported if levels]
        answered = [instance.warehouse_id for instance, _levels in reported]
        try:
            return await self._apply(batches), answered
        except ConcurrentChange as exc:
            if len(batches) == 1:
                log.info("live answer of %s not kept: %s", batches[0][0].connector_id, exc)
                kept = {i.warehouse_id for i, levels in reported if not levels}
                return ApplyReport(), [w for w in answered if w in kept]
        report = ApplyReport()
        lost: set[WarehouseId] = set()
        for batch in batches:
            try:
                one = await self._apply([batch])
            except ConcurrentChange as exc:
                log.info("live answer of %s not kept: %s", batch[0].connector_id, exc)
                lost.add(batch[0].warehouse_id)
                continue
            for tenant, skus in one.touched.items():
                report.touched.setdefault(tenant, set()).update(skus)
            report.levels.update(one.levels)
        return report, [w for w in answered if w not in lost]

    async def _apply(self, batches: Sequence[Batch]) -> ApplyReport:
        report = ApplyReport()
        if not batches:
            return report
        async with contextlib.AsyncExitStack() as held:
            # Every instance's lock, always in the same order, so two readers never wait
            # on each other crosswise.
            for connector_id in sorted({instance.connector_id for instance, _ in batches}):
                await held.enter_async_context(self._ingestion.lock(connector_id))
            async with self._uow() as uow:
                await self._ingestion.apply_batches(
                    uow, batches, cause=MovementCause.POLL, report=report
                )
                await uow.commit()
        return report


def _snapshot(levels: Sequence[WmsLevel]) -> WmsEvent:
    return WmsEvent(
        event_id=f"live-{uuid.uuid4().hex[:12]}",
        sequence=max((lv.sequence or 0) for lv in levels),
        kind=EventKind.SNAPSHOT,
        occurred_at=datetime.now(UTC),
        levels=tuple(levels),
    )


def _use(
    instance: ConnectorInstance, calls: int, *, served_from_cache: bool, retry_after_ms: int | None
) -> UpstreamUse:
    stats = instance.health() if instance.health is not None else None
    remaining = None
    if stats is not None:
        # The budget this read spent: an x12 mailbox's inquiry limit, not its poll interval.
        remaining = stats.budget_remaining
        if stats.live_budget_remaining is not None:
            remaining = stats.live_budget_remaining
    return UpstreamUse(
        connector_id=instance.connector_id,
        calls=calls,
        served_from_cache=served_from_cache,
        budget_remaining=remaining,
        retry_after_ms=retry_after_ms,
    )

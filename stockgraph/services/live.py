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
from stockgraph.services.ingestion import ApplyReport, ConnectorInstance, IngestionService
from stockgraph.services.ports import ProjectionChanged, StockReader, UnitOfWork

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
        answered: list[WarehouseId] = []
        touched: set[Sku] = set()
        for (instance, _skus), levels in zip(asked, answers, strict=True):
            if levels is None:
                continue
            try:
                report = await self._write_back(instance, levels)
            except ConcurrentChange as exc:
                log.info("live answer of %s not kept: %s", instance.connector_id, exc)
                continue
            touched |= report.touched.get(tenant_id, set())
            answered.append(instance.warehouse_id)
        if touched:
            self._on_change(tenant_id, touched)
        if not answered:
            return {}
        wanted = set(keys)
        skus = sorted({sku for w in answered for sku in by_warehouse[w]})
        return {
            (lv.warehouse_id, lv.sku): replace(lv, source=LevelSource.LIVE)
            for lv in await self._stock.levels(tenant_id, skus, answered)
            if (lv.warehouse_id, lv.sku) in wanted
        }

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
        self, instance: ConnectorInstance, levels: Sequence[WmsLevel]
    ) -> ApplyReport:
        report = ApplyReport()
        if not levels:
            return report
        event = WmsEvent(
            event_id=f"live-{uuid.uuid4().hex[:12]}",
            sequence=max((lv.sequence or 0) for lv in levels),
            kind=EventKind.SNAPSHOT,
            occurred_at=datetime.now(UTC),
            levels=tuple(levels),
        )
        async with self._ingestion.lock(instance.connector_id), self._uow() as uow:
            await self._ingestion.apply_event(
                uow, instance, event, cause=MovementCause.POLL, report=report
            )
            await uow.commit()
        return report


def _use(
    instance: ConnectorInstance, calls: int, *, served_from_cache: bool, retry_after_ms: int | None
) -> UpstreamUse:
    stats = instance.health() if instance.health is not None else None
    return UpstreamUse(
        connector_id=instance.connector_id,
        calls=calls,
        served_from_cache=served_from_cache,
        budget_remaining=stats.budget_remaining if stats is not None else None,
        retry_after_ms=retry_after_ms,
    )

"""Live reads: asking the WMS itself when the projection is older than the caller accepts.

``inventoryLevels(maxAge:)`` names how old an answer may be. Levels older than that are
read from their WMS instances through a loader made per request: every SKU any field of
the request asks of one instance goes out in one batch (split only at the dialect's
``max_batch``), every instance is asked at once, and the answers are written back to the
projection through the same path as any other WMS report (mapping, newer-sequence-wins,
ledger) or, when all they do is confirm what is held, by bringing the rows held up to the
answer's sequence and time; either way the next reader benefits. The write-back follows
the answer rather than preceding it: the caller has what the WMSs said as soon as they said
it. An instance that cannot answer in time — its breaker open, its budget spent, its
network slow — leaves its levels as they were, marked stale: a live read never fails a
query.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from aiodataloader import DataLoader

from stockgraph.connectors.base import EventKind, WmsEvent, WmsLevel
from stockgraph.connectors.errors import CircuitOpen, ConnectorError, RateLimited
from stockgraph.connectors.runtime import deadline
from stockgraph.domain.errors import ConcurrentChange, DomainError
from stockgraph.domain.ids import Sku, TenantId, WarehouseId
from stockgraph.domain.mapping import Unmappable
from stockgraph.domain.model import LevelSource, MovementCause, StockLevel
from stockgraph.services.ingestion import IngestionService
from stockgraph.services.ports import ProjectionChanged, UnitOfWork
from stockgraph.services.wms_reports import (
    ApplyReport,
    Batch,
    Confirmation,
    ConnectorInstance,
    map_level,
    reported_level,
    together_or_alone,
)

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
    """Reads levels from WMS instances and writes what they say back to the projection.

    A read answers as soon as the instances have: from each WMS's answer laid over the
    levels the caller holds, by the same rules the write-back follows (mapping,
    newer-sequence-wins, physical counts over what is committed). The write-back runs just
    after, as ingestion applies an acknowledged webhook after acknowledging it; at most
    ``max_pending`` write-backs wait at a time, and a read beyond that waits for one.
    Projection reads wait for their tenant's (:meth:`written_back`), so a caller answered
    live never reads the projection from before; :meth:`settle` waits for every one
    (shutdown, tests).

    An answer with nothing new for the projection is not written back: every level as
    held (same quantities, same sequence) and held ``as_of`` less than ``refresh_seconds``
    old. Storefronts asking the same SKUs live many times a second would otherwise
    rewrite the same rows each time for their ``as_of`` alone; between refreshes the held
    ``as_of`` may trail the last confirmation by up to that long, which only ever makes a
    level look older than it is (a later ``maxAge`` read asks the WMS again, never less).

    An answer whose only news is that it confirms the levels held (the same physical
    counts at a newer sequence, as every x12 reply carries, or a refreshed ``as_of``) is
    written back without reading or mapping anything again: one statement per instance
    bringing each row up to date if it holds those counts at that sequence or an older one.
    Should a row hold others meanwhile, that answer goes the whole ingestion way instead.
    """

    def __init__(
        self,
        *,
        instances: Callable[[], Sequence[ConnectorInstance]],
        ingestion: IngestionService,
        unit_of_work: Callable[[], UnitOfWork],
        timeout_seconds: float = 2.0,
        wait_seconds: float = 0.1,
        max_pending: int = 4,
        refresh_seconds: float = 1.0,
        on_change: ProjectionChanged = lambda _t, _s: None,
    ) -> None:
        """``on_change`` hears of SKUs whose cached answers no longer hold: about to be
        written back, then written (changed, or only brought up to date). What the
        write-back's commit put in the outbox is told by the unit of work itself."""
        self._instances = instances
        self._ingestion = ingestion
        self._uow = unit_of_work
        self._timeout = timeout_seconds
        self._wait = wait_seconds
        self._max_pending = max_pending
        self._refresh = timedelta(seconds=refresh_seconds)
        self._on_change = on_change
        self._pending: dict[asyncio.Task[None], TenantId] = {}

    def instance_count(self, tenant_id: TenantId) -> int:
        """How many of the tenant's warehouses a live read can ask."""
        return sum(1 for i in self._instances() if i.tenant_id == tenant_id)

    def loader(self, tenant_id: TenantId, record: RecordUse = lambda _use: None) -> LiveLoader:
        """A per-request loader: a level as held → the level as its WMS says it is now, or
        None when its WMS could not be read (see :class:`LiveLoader`).

        ``record`` hears what each instance was asked, for the request's cost report.
        """
        return LiveLoader(self, tenant_id, record)

    async def read(
        self,
        tenant_id: TenantId,
        held: Sequence[StockLevel],
        record: RecordUse = lambda _use: None,
        *,
        early: dict[WarehouseId, EarlyAsk] | None = None,
    ) -> dict[LiveKey, StockLevel]:
        """Ask every instance concerned at once about the ``held`` levels; each level as its
        WMS says it is now (``source`` LIVE), for the instances that answered.

        An instance already asked (``early``, see :meth:`ask`) is not asked again, only
        about SKUs that ask did not name; its entry is taken out of ``early``.
        """
        by_warehouse: dict[WarehouseId, dict[Sku, StockLevel]] = defaultdict(dict)
        for level in held:
            if level.tenant_id == tenant_id:
                by_warehouse[level.warehouse_id][level.sku] = level
        instances = {i.warehouse_id: i for i in self._instances() if i.tenant_id == tenant_id}
        asked = [(instances[w], list(mine)) for w, mine in by_warehouse.items() if w in instances]
        early = {} if early is None else early
        outcomes = await asyncio.gather(
            *(
                self._answered(
                    i,
                    self._answer_of(i, skus, record, early.pop(i.warehouse_id, None)),
                    by_warehouse[i.warehouse_id],
                )
                for i, skus in asked
            )
        )
        return await self._take(tenant_id, outcomes)

    def ask(
        self,
        tenant_id: TenantId,
        skus: Sequence[Sku],
        warehouse_ids: Collection[WarehouseId] | None,
        record: RecordUse = lambda _use: None,
    ) -> dict[WarehouseId, EarlyAsk]:
        """Start asking the tenant's instances (those of ``warehouse_ids`` when given) about
        ``skus`` now, before the levels held are known: for a read that will ask about
        every level (``maxAge: 0``), the calls then run while the projection is read."""
        asks: dict[WarehouseId, EarlyAsk] = {}
        if not skus:
            return asks
        for instance in self._instances():
            if instance.tenant_id != tenant_id or (
                warehouse_ids is not None and instance.warehouse_id not in warehouse_ids
            ):
                continue
            task = asyncio.ensure_future(self._ask(instance, skus, record))
            asks[instance.warehouse_id] = EarlyAsk(frozenset(skus), task)
        return asks

    async def take_unneeded(self, tenant_id: TenantId, early: dict[WarehouseId, EarlyAsk]) -> None:
        """The answers of early asks no level held needed (a warehouse the projection holds
        none of these SKUs at): written back all the same, as news."""
        instances = {i.warehouse_id: i for i in self._instances() if i.tenant_id == tenant_id}
        waiting = [(instances[w], ask.answer) for w, ask in early.items() if w in instances]
        early.clear()
        outcomes = await asyncio.gather(*(self._answered(i, answer, {}) for i, answer in waiting))
        await self._take(tenant_id, outcomes)

    async def _answer_of(
        self,
        instance: ConnectorInstance,
        skus: Sequence[Sku],
        record: RecordUse,
        early: EarlyAsk | None,
    ) -> Sequence[WmsLevel] | None:
        if early is None:
            return await self._ask(instance, skus, record)
        rest = [sku for sku in skus if sku not in early.skus]
        if not rest:
            return await early.answer
        first, more = await asyncio.gather(early.answer, self._ask(instance, rest, record))
        return None if first is None or more is None else [*first, *more]

    async def _answered(
        self,
        instance: ConnectorInstance,
        answer: Awaitable[Sequence[WmsLevel] | None],
        held: dict[Sku, StockLevel],
    ) -> _Answered | None:
        """One instance's answer laid over its levels held, as soon as it has come (the
        others may still be on their way); None when it could not be read."""
        levels = await answer
        if levels is None:
            return None
        snapshot = _snapshot(levels)
        found, news, confirmed = _answer(instance, snapshot, held, self._refresh)
        return _Answered(instance, snapshot, found, news, confirmed)

    async def _take(
        self, tenant_id: TenantId, outcomes: Sequence[_Answered | None]
    ) -> dict[LiveKey, StockLevel]:
        """The levels as the instances' answers make them; what is new goes to the
        write-back."""
        found: dict[LiveKey, StockLevel] = {}
        snapshots: list[Batch] = []
        confirmations: list[Confirmation] = []
        changing: set[Sku] = set()
        for outcome in outcomes:
            if outcome is None:
                continue
            found.update(outcome.found)
            if not outcome.news:
                continue
            if outcome.confirmed is None:
                snapshots.append((outcome.instance, [outcome.snapshot]))
            else:
                confirmations.append((outcome.instance, outcome.snapshot, outcome.confirmed))
            changing.update(sku for _w, sku in outcome.found)
        if snapshots or confirmations:
            await self._write_behind(tenant_id, snapshots, confirmations)
            # Answers cached from the projection no longer hold for the SKUs about to be
            # written; the write-back's commit drops them again, with whatever was computed
            # in between. An instance with nothing new leaves its SKUs' answers be.
            self._on_change(tenant_id, changing)
        return found

    async def written_back(self, tenant_id: TenantId) -> None:
        """Wait for the write-backs of ``tenant_id``'s live answers given so far."""
        while mine := [task for task, tenant in self._pending.items() if tenant == tenant_id]:
            await asyncio.wait(mine)

    async def settle(self) -> None:
        """Wait for every write-back started so far."""
        while self._pending:
            await asyncio.wait(list(self._pending))

    async def _write_behind(
        self, tenant_id: TenantId, snapshots: list[Batch], confirmations: list[Confirmation]
    ) -> None:
        while len(self._pending) >= self._max_pending:
            await asyncio.wait(list(self._pending), return_when=asyncio.FIRST_COMPLETED)
        task = asyncio.create_task(self._write_back(tenant_id, snapshots, confirmations))
        self._pending[task] = tenant_id
        task.add_done_callback(lambda done: self._pending.pop(done, None))

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
        self,
        tenant_id: TenantId,
        snapshots: Sequence[Batch],
        confirmations: Sequence[Confirmation],
    ) -> None:
        """Write the answers back: those with news through the ingestion path in one
        transaction (each instance's alone if that one meets a concurrent change), then
        those that only confirm levels held in one that reads nothing, or, should a level
        have moved on meanwhile, the ingestion way too."""
        try:
            report = ApplyReport()
            if snapshots:
                report.add(await together_or_alone(snapshots, self._apply, _connector_id))
            if confirmations:
                try:
                    report.add(await self._confirm(confirmations))
                except ConcurrentChange as exc:
                    log.info("%s; writing those answers back in full", exc)
                    again = [(instance, [answer]) for instance, answer, _ in confirmations]
                    report.add(await together_or_alone(again, self._apply, _connector_id))
            if touched := report.touched.get(tenant_id, set()):
                self._on_change(tenant_id, touched)
        except Exception:
            log.exception("writing a live answer back failed")

    async def _confirm(self, confirmations: Sequence[Confirmation]) -> ApplyReport:
        report = ApplyReport()
        connector_ids = [instance.connector_id for instance, _, _ in confirmations]
        async with self._ingestion.locks(connector_ids), self._uow() as uow:
            await self._ingestion.confirm_batches(uow, confirmations, report=report)
            await uow.commit()
        return report

    async def _apply(self, batches: Sequence[Batch]) -> ApplyReport:
        report = ApplyReport()
        connector_ids = [instance.connector_id for instance, _ in batches]
        async with self._ingestion.locks(connector_ids), self._uow() as uow:
            await self._ingestion.apply_batches(
                uow, batches, cause=MovementCause.POLL, report=report
            )
            await uow.commit()
        return report


@dataclass(frozen=True, slots=True)
class _Answered:
    instance: ConnectorInstance
    snapshot: WmsEvent
    found: dict[LiveKey, StockLevel]
    news: bool
    confirmed: list[StockLevel] | None
    """When all the answer has for the projection is levels held confirmed: those, as it
    confirms them."""


@dataclass(frozen=True, slots=True)
class EarlyAsk:
    """An instance asked before the levels held were known: the SKUs named, and the call."""

    skus: frozenset[Sku]
    answer: asyncio.Future[Sequence[WmsLevel] | None]


class LiveLoader(DataLoader[StockLevel, StockLevel | None]):
    """One request's live reads: levels as held → as their WMSs say they are now.

    Levels are one key per warehouse and SKU, whatever was held when each was asked: two
    fields of a request asking the same level share one upstream call. A resolver that will
    ask about every level may :meth:`ask_early` before reading the projection, and must then
    :meth:`finish` once its levels are loaded.
    """

    def __init__(self, reads: LiveReads, tenant_id: TenantId, record: RecordUse) -> None:
        super().__init__(cache=True, get_cache_key=_key)
        self._reads = reads
        self._tenant = tenant_id
        self._record = record
        self._early: dict[WarehouseId, EarlyAsk] = {}
        self._asked_early = False

    async def batch_load_fn(self, held: list[StockLevel]) -> list[StockLevel | None]:
        found = await self._reads.read(self._tenant, held, self._record, early=self._early)
        return [found.get(_key(level)) for level in held]

    def ask_early(self, skus: Sequence[Sku], warehouse_ids: Collection[WarehouseId] | None) -> None:
        """Ask the instances of ``warehouse_ids`` (every one when None) about ``skus`` now.

        Once per request: a second field asking early again (the same SKUs, as a rule) asks
        nothing; its levels come from the loader's cache, or are asked for as they load.
        """
        if self._asked_early:
            return
        self._asked_early = True
        self._early = self._reads.ask(self._tenant, skus, warehouse_ids, self._record)

    async def finish(self) -> None:
        """Take the early answers no level needed (see :meth:`LiveReads.take_unneeded`)."""
        if self._early:
            await self._reads.take_unneeded(self._tenant, self._early)


def _answer(
    instance: ConnectorInstance,
    snapshot: WmsEvent,
    held: dict[Sku, StockLevel],
    refresh: timedelta,
) -> tuple[dict[LiveKey, StockLevel], bool, list[StockLevel] | None]:
    """The held levels of one instance as its answer makes them, all ``source`` LIVE;
    whether the answer has anything for the projection; and, when all it has is held
    levels confirmed (same physical quantities, a newer sequence or ``as_of``), those.

    A level it did not report, or reported older than held, is answered as held (its
    answer covered them all the same). What cannot be mapped, a level not held, changed
    quantities or sequence, or a held ``as_of`` older than ``refresh``: news, for the
    write-back to apply or record.
    """
    live = LevelSource.LIVE
    now = dict(held)
    occurred = snapshot.occurred_at
    changed = False
    for raw in snapshot.levels:
        ours = map_level(instance, raw)
        if isinstance(ours, Unmappable) or ours.sku not in now:
            changed = True
            continue
        sequence = raw.sequence if raw.sequence is not None else snapshot.sequence
        try:
            made = reported_level(
                now[ours.sku],
                instance,
                ours,
                sequence,
                occurred=occurred,
                snapshot=True,
                source=live,
            )
        except DomainError:
            changed = True
            continue
        if made is not None:
            now[ours.sku] = made[0]
    confirmed: list[StockLevel] = []
    for sku, level in now.items():
        before = held[sku]
        if level is before:
            continue
        if level.quantities != before.quantities or before.source_sequence is None:
            changed = True
        elif level.source_sequence != before.source_sequence or occurred - before.as_of >= refresh:
            confirmed.append(level)
    answered = {
        (instance.warehouse_id, sku): level if level.source is live else replace(level, source=live)
        for sku, level in now.items()
    }
    return answered, changed or bool(confirmed), None if changed else confirmed


def _connector_id(batch: Batch) -> str:
    return batch[0].connector_id


def _key(level: StockLevel) -> LiveKey:
    return (level.warehouse_id, level.sku)


def _snapshot(levels: Sequence[WmsLevel]) -> WmsEvent:
    return WmsEvent(
        event_id=f"live-{uuid.uuid4().hex[:12]}",
        sequence=max((lv.sequence or 0 for lv in levels), default=0),
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

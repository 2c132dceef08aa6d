"""The outbox: every ledger row has its event, committed with it, read back in order.

Tests taking ``engine`` run on SQLite and on PostgreSQL, each in a fresh migrated database.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, cast

import orjson
import pytest
from sqlalchemy import Table, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from stockgraph.connectors.signing import sign
from stockgraph.domain.events import CursorExpired, OutboxEvent, Topic
from stockgraph.domain.ids import CorrelationId, Sku, TenantId, WarehouseId
from stockgraph.domain.mapping import InstanceMapping
from stockgraph.domain.model import (
    InitialStock,
    MovementCause,
    StockLevel,
    StockMovement,
)
from stockgraph.domain.quantities import StockDelta, StockQuantities
from stockgraph.events.bus import MemoryBus
from stockgraph.events.retention import OutboxRetention
from stockgraph.persistence.event_log import SqlEventLog, stock_changed_payload
from stockgraph.persistence.inbox_store import SqlInbox
from stockgraph.persistence.models import (
    ItemRow,
    OutboxEventRow,
    StockLevelRow,
    StockMovementRow,
    Tenant,
    WarehouseRow,
    WebhookCursorRow,
    WebhookEndpointRow,
)
from stockgraph.persistence.stock_store import SqlStockStore
from stockgraph.persistence.unit_of_work import SqlUnitOfWork
from stockgraph.persistence.webhook_queue import SqlWebhookQueue
from stockgraph.services.feed import EventFeed
from stockgraph.services.ingestion import ConnectorInstance, IngestionService, Receipt
from tests.ingestion.conftest import SECRET, JsonConnector

NOW = datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)
ACTOR = "outbox-test"
_outbox = cast(Table, OutboxEventRow.__table__)
_moves = cast(Table, StockMovementRow.__table__)
_levels = cast(Table, StockLevelRow.__table__)
_webhook_cursor = cast(Table, WebhookCursorRow.__table__)
_webhook_endpoints = cast(Table, WebhookEndpointRow.__table__)


@dataclass(frozen=True)
class Site:
    """One tenant with one warehouse and a few items, all with generated ids."""

    tenant_id: TenantId
    warehouse_id: WarehouseId
    code: str
    connector_id: str
    skus: tuple[Sku, ...]


def _new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _camel(quantities: StockQuantities | StockDelta) -> dict[str, int]:
    return {
        "onHand": quantities.on_hand,
        "available": quantities.available,
        "committed": quantities.committed,
        "reserved": quantities.reserved,
        "damaged": quantities.damaged,
        "safetyStock": quantities.safety_stock,
        "qualityControl": quantities.quality_control,
        "incoming": quantities.incoming,
    }


async def add_warehouse(
    conn: AsyncConnection, tenant_id: TenantId, code: str, connector_id: str
) -> WarehouseId:
    """A warehouse of ``tenant_id``, in the transaction ``conn`` is in."""
    inserted = await conn.execute(
        insert(WarehouseRow)
        .values(
            tenant_id=tenant_id,
            code=code,
            connector_id=connector_id,
            name="Warehouse",
            region="eu-west",
            lat=None,
            lng=None,
            dialect="test",
            settings={},
            created_at=NOW,
        )
        .returning(WarehouseRow.id)
    )
    return WarehouseId(inserted.scalar_one())


async def _site(engine: AsyncEngine) -> Site:
    tenant_id = TenantId(_new_id("tenant"))
    code = _new_id("WH")
    connector_id = _new_id("connector")
    skus = tuple(Sku(_new_id("SKU")) for _ in range(2))
    async with engine.begin() as conn:
        await conn.execute(insert(Tenant).values(id=tenant_id, name="Tenant", created_at=NOW))
        warehouse_id = await add_warehouse(conn, tenant_id, code, connector_id)
        await conn.execute(
            insert(ItemRow),
            [
                {
                    "tenant_id": tenant_id,
                    "sku": sku,
                    "name": "Widget",
                    "base_unit": "each",
                    "created_at": NOW,
                }
                for sku in skus
            ],
        )
    return Site(tenant_id, warehouse_id, code, connector_id, skus)


def _movement(site: Site, on_hand: int, *, sku: Sku | None = None) -> StockMovement:
    quantities = StockQuantities.from_physical(on_hand=on_hand, committed=1)
    return StockMovement(
        level=StockLevel(
            tenant_id=site.tenant_id,
            warehouse_id=site.warehouse_id,
            sku=sku or site.skus[0],
            quantities=quantities,
            as_of=NOW,
            source_sequence=None,
        ),
        delta=StockQuantities.ZERO.delta_to(quantities),
        cause=MovementCause.ADJUSTMENT,
        correlation_id=CorrelationId(uuid.uuid4().hex),
        actor=ACTOR,
        occurred_at=NOW,
        reason="CORRECTION",
    )


def on_hands(events: Sequence[OutboxEvent]) -> list[int]:
    return [int(e.payload["level"]["onHand"]) for e in events]


async def _commit(engine: AsyncEngine, *movements: StockMovement) -> None:
    async with SqlUnitOfWork(engine=engine) as uow:
        await uow.add_movements(movements)
        await uow.commit()


async def _count(engine: AsyncEngine, table: Table) -> int:
    async with engine.connect() as conn:
        return int(await conn.scalar(select(func.count()).select_from(table)) or 0)


def _ingestion(engine: AsyncEngine, site: Site) -> IngestionService:
    instance = ConnectorInstance(
        connector_id=site.connector_id,
        tenant_id=site.tenant_id,
        warehouse_id=site.warehouse_id,
        warehouse_code=site.code,
        connector=JsonConnector(),
        mapping=InstanceMapping(
            skus={"W1": site.skus[0], "W2": site.skus[1]}, default_location=site.code
        ),
        webhook_secrets=(SECRET,),
    )
    return IngestionService(
        instances={site.connector_id: instance}.get,
        inbox=SqlInbox(engine=engine),
        unit_of_work=lambda: SqlUnitOfWork(engine=engine),
    )


async def _deliver(
    service: IngestionService, site: Site, event_id: str, seq: int, levels: list[dict[str, Any]]
) -> None:
    body = orjson.dumps({"id": event_id, "seq": seq, "levels": levels})
    signature = sign(body, SECRET, timestamp=int(time.time()))
    receipt = await service.receive(
        site.connector_id, event_id=event_id, body=body, signature=signature
    )
    assert receipt is Receipt.ACCEPTED
    report = await service.apply_pending()
    assert report.exceptions == 0


async def test_each_applied_webhook_change_writes_one_outbox_event_beside_its_ledger_row(
    engine: AsyncEngine,
) -> None:
    site = await _site(engine)
    service = _ingestion(engine, site)

    await _deliver(service, site, "e1", 1, [{"sku": "W1", "qty": 10}])
    await _deliver(service, site, "e2", 2, [{"sku": "W1", "qty": 7}, {"sku": "W2", "qty": 3}])

    async with engine.connect() as conn:
        ledger = (await conn.execute(select(_moves).order_by(_moves.c.id))).all()
        levels = {r.sku: r for r in await conn.execute(select(_levels).order_by(_levels.c.sku))}
    events = await SqlEventLog(engine=engine).after(0)
    assert len(ledger) == len(events) == 3
    after = {
        (site.skus[0], 1): (StockQuantities(on_hand=10, available=10), StockDelta(10, 10)),
        (site.skus[0], 2): (StockQuantities(on_hand=7, available=7), StockDelta(-3, -3)),
        (site.skus[1], 2): (StockQuantities(on_hand=3, available=3), StockDelta(3, 3)),
    }
    for row, event in zip(ledger, events, strict=True):
        level, delta = after[(row.sku, row.source_sequence)]
        assert (event.tenant_id, event.topic, event.warehouse_id, event.sku) == (
            site.tenant_id,
            Topic.STOCK_CHANGED,
            site.warehouse_id,
            row.sku,
        )
        assert event.created_at == row.recorded_at
        assert event.payload == {
            "level": {
                **_camel(level),
                "asOf": _iso(row.occurred_at),
                "sourceSequence": row.source_sequence,
            },
            "delta": _camel(delta),
            "cause": "WEBHOOK",
            "reason": "CORRECTION",
            "correlationId": row.correlation_id,
            "occurredAt": _iso(row.occurred_at),
        }
        assert delta.as_tuple() == (
            row.d_on_hand,
            row.d_available,
            row.d_committed,
            row.d_reserved,
            row.d_damaged,
            row.d_safety_stock,
            row.d_quality_control,
            row.d_incoming,
        )
    for event in events[1:]:
        held = levels[event.sku]
        assert event.payload["level"]["onHand"] == held.on_hand
        assert event.payload["level"]["asOf"] == _iso(held.as_of)
        assert event.payload["level"]["sourceSequence"] == held.source_sequence


async def test_loading_initial_stock_writes_a_seed_event_per_level(engine: AsyncEngine) -> None:
    site = await _site(engine)
    quantities = StockQuantities.from_physical(on_hand=5, reserved=2, incoming=4)
    correlation = CorrelationId(uuid.uuid4().hex)

    created = await SqlStockStore(engine=engine).load_initial(
        site.tenant_id,
        [InitialStock(site.warehouse_id, sku, quantities) for sku in site.skus],
        correlation_id=correlation,
        actor=ACTOR,
    )

    events = await SqlEventLog(engine=engine).after(0, tenant_id=site.tenant_id)
    assert created == await _count(engine, _moves) == len(events) == 2
    assert sorted(e.sku for e in events if e.sku is not None) == sorted(site.skus)
    for event in events:
        assert event.payload["level"] == {
            **_camel(quantities),
            "asOf": _iso(event.created_at),
            "sourceSequence": None,
        }
        assert event.payload["delta"] == _camel(quantities)
        assert (event.payload["cause"], event.payload["reason"]) == ("SEED", "RECEIVED")
        assert event.payload["correlationId"] == correlation


async def test_a_unit_of_work_left_uncommitted_writes_no_outbox_event(engine: AsyncEngine) -> None:
    site = await _site(engine)

    async with SqlUnitOfWork(engine=engine) as uow:
        await uow.add_movements([_movement(site, 5)])
    with pytest.raises(LookupError):
        async with SqlUnitOfWork(engine=engine) as uow:
            await uow.add_movements([_movement(site, 6)])
            raise LookupError("the use-case failed after writing")

    assert await _count(engine, _moves) == 0
    assert await _count(engine, _outbox) == 0
    assert await SqlEventLog(engine=engine).last_id() == 0

    await _commit(engine, _movement(site, 7))

    assert await _count(engine, _moves) == await _count(engine, _outbox) == 1


async def test_a_unit_of_work_tells_of_the_outbox_after_committing_what_it_wrote_there(
    engine: AsyncEngine,
) -> None:
    """The relay and the webhook dispatcher wake on this: once per commit that wrote outbox
    events (ledger movements, sync alerts), with the events already visible to a reader;
    never for a transaction that wrote none or did not commit."""
    site = await _site(engine)
    seen: list[int] = []
    told: list[asyncio.Task[None]] = []

    async def visible() -> None:
        seen.append(await _count(engine, _outbox))

    def on_outbox() -> None:
        told.append(asyncio.ensure_future(visible()))

    async def unit(write: Callable[[SqlUnitOfWork], Awaitable[None]], *, commit: bool) -> None:
        async with SqlUnitOfWork(engine=engine, on_outbox=on_outbox) as uow:
            await write(uow)
            if commit:
                await uow.commit()
        await asyncio.gather(*told)

    async def movement(uow: SqlUnitOfWork) -> None:
        await uow.add_movements([_movement(site, 5)])

    async def nothing(uow: SqlUnitOfWork) -> None:
        await uow.add_movements([])

    async def alert(uow: SqlUnitOfWork) -> None:
        await uow.add_exception(
            tenant_id=site.tenant_id,
            connector_id=site.connector_id,
            event_id="evt-1",
            code="MALFORMED",
            reason="not JSON",
            raw="{",
        )

    await unit(movement, commit=False)
    await unit(nothing, commit=True)
    assert told == []
    await unit(movement, commit=True)
    await unit(alert, commit=True)
    assert seen == [1, 2]


async def test_loading_initial_stock_tells_of_the_outbox_only_when_it_wrote_there(
    engine: AsyncEngine,
) -> None:
    site = await _site(engine)
    told: list[int] = []
    store = SqlStockStore(engine=engine, on_outbox=lambda: told.append(1))
    entries = [
        InitialStock(site.warehouse_id, site.skus[0], StockQuantities.from_physical(on_hand=3))
    ]
    for _ in range(2):  # the second time, the level exists: nothing is written
        await store.load_initial(
            site.tenant_id, entries, correlation_id=CorrelationId("c"), actor=ACTOR
        )
    assert told == [1]


async def test_events_are_read_after_an_id_in_order_per_tenant_and_topic_up_to_a_limit(
    engine: AsyncEngine,
) -> None:
    first, second = await _site(engine), await _site(engine)
    log = SqlEventLog(engine=engine)
    for site, on_hand in ((first, 1), (second, 2), (first, 3), (first, 4)):
        await _commit(engine, _movement(site, on_hand))
    async with engine.begin() as conn:
        unknown_topic = await conn.scalar(
            insert(_outbox)
            .values(
                tenant_id=first.tenant_id,
                topic="stock.forecast",
                warehouse_id=None,
                sku=None,
                payload="{}",
                created_at=NOW,
            )
            .returning(_outbox.c.id)
        )

    everything = await log.after(0)
    mine = await log.after(0, tenant_id=first.tenant_id, topic=Topic.STOCK_CHANGED)
    theirs = await log.after(0, tenant_id=second.tenant_id)

    assert on_hands(everything) == [1, 2, 3, 4]
    assert [e.id for e in everything] == sorted(e.id for e in everything)
    assert on_hands(mine) == [1, 3, 4]
    assert {e.tenant_id for e in mine} == {first.tenant_id}
    assert on_hands(theirs) == [2]
    assert on_hands(await log.after(0, tenant_id=first.tenant_id, limit=2)) == [1, 3]
    assert on_hands(await log.after(mine[0].id, tenant_id=first.tenant_id)) == [3, 4]
    assert await log.after(mine[-1].id) == []
    assert await log.last_id() == unknown_topic
    with pytest.raises(ValueError, match="limit"):
        await log.after(0, limit=0)


async def test_the_last_id_is_zero_for_an_empty_outbox_then_the_newest_event(
    engine: AsyncEngine,
) -> None:
    site = await _site(engine)
    log = SqlEventLog(engine=engine)
    assert await log.last_id() == 0

    await _commit(engine, _movement(site, 1), _movement(site, 2, sku=site.skus[1]))

    events = await log.after(0)
    assert on_hands(events) == [1, 2]
    assert await log.last_id() == events[-1].id


async def test_outbox_rows_refuse_updates_but_may_be_deleted(engine: AsyncEngine) -> None:
    site = await _site(engine)
    await _commit(engine, _movement(site, 1))
    (event,) = await SqlEventLog(engine=engine).after(0)

    with pytest.raises(IntegrityError, match="outbox_events is append-only"):
        async with engine.begin() as conn:
            await conn.execute(update(_outbox).where(_outbox.c.id == event.id).values(sku=None))
    assert await SqlEventLog(engine=engine).after(0) == [event]

    async with engine.begin() as conn:
        await conn.execute(delete(_outbox).where(_outbox.c.id == event.id))
    assert await _count(engine, _outbox) == 0


async def _aged_events(engine: AsyncEngine, site: Site, ages: Sequence[timedelta]) -> list[int]:
    ids = []
    async with engine.begin() as conn:
        for age in ages:
            row = {
                "tenant_id": site.tenant_id,
                "topic": Topic.STOCK_CHANGED.value,
                "warehouse_id": site.warehouse_id,
                "sku": site.skus[0],
                "payload": "{}",
                "created_at": NOW - age,
            }
            ids.append(await conn.scalar(insert(_outbox).values(**row).returning(_outbox.c.id)))
    return ids


async def test_retention_deletes_old_events_oldest_first_and_refuses_cursors_before_them(
    engine: AsyncEngine,
) -> None:
    site = await _site(engine)
    log = SqlEventLog(engine=engine)
    days = [timedelta(days=d) for d in (10, 9, 8, 8, 1, 0)]
    ids = await _aged_events(engine, site, days)
    assert await log.pruned_through() == 0

    # A reader still at the second event holds retention back there.
    held = OutboxRetention(
        outbox=log, keep=timedelta(days=7), held_back_by=_at(ids[1]), clock=lambda: NOW
    )
    assert await held.prune_once() == 2
    assert await log.pruned_through() == ids[1]
    retention = OutboxRetention(outbox=log, keep=timedelta(days=7), clock=lambda: NOW)
    assert await retention.prune_once() == 2
    assert await retention.prune_once() == 0
    assert [e.id for e in await log.after(0)] == ids[4:]
    assert await log.pruned_through() == ids[3]

    feed = EventFeed(log=log, bus=MemoryBus())
    with pytest.raises(CursorExpired):
        await anext(feed.follow(site.tenant_id, Topic.STOCK_CHANGED, after=ids[2]))
    replay = feed.follow(site.tenant_id, Topic.STOCK_CHANGED, after=ids[3])
    assert [(await anext(replay)).id, (await anext(replay)).id] == ids[4:]
    await replay.aclose()


async def test_retention_keeps_what_the_webhook_dispatcher_has_not_reached(
    engine: AsyncEngine,
) -> None:
    site = await _site(engine)
    log, queue = SqlEventLog(engine=engine), SqlWebhookQueue(engine=engine)
    await _endpoint(engine, site)
    ids = await _aged_events(engine, site, [timedelta(days=30)] * 4)
    async with engine.begin() as conn:  # the dispatcher has queued the first two only
        await conn.execute(update(_webhook_cursor).values(event_id=ids[1]))
    retention = OutboxRetention(
        outbox=log, keep=timedelta(days=7), held_back_by=queue.position, clock=lambda: NOW
    )

    assert await retention.prune_once() == 2
    assert [e.id for e in await log.after(0)] == ids[2:]
    dispatched = await queue.fan_out(now=NOW)
    assert dispatched.cursor == ids[3]
    assert await retention.prune_once() == 1  # the newest event always stays


async def test_without_endpoints_nothing_is_dispatched_and_retention_is_not_held_back(
    engine: AsyncEngine,
) -> None:
    site = await _site(engine)
    log, queue = SqlEventLog(engine=engine), SqlWebhookQueue(engine=engine)
    ids = await _aged_events(engine, site, [timedelta(days=30)] * 3)

    assert not await queue.has_pending()  # no write transaction per commit for nobody
    assert await queue.position() is None
    retention = OutboxRetention(
        outbox=log, keep=timedelta(days=7), held_back_by=queue.position, clock=lambda: NOW
    )
    assert await retention.prune_once() == 2
    assert [e.id for e in await log.after(0)] == ids[-1:]  # the newest always stays

    # The first endpoint hears of what comes after it, and the cursor jumps there at once.
    await _endpoint(engine, site, since=ids[-1])
    later = await _aged_events(engine, site, [timedelta(0)])
    assert later[0] > ids[-1]  # ids are never handed out twice
    assert await queue.has_pending()
    moved = await queue.fan_out(now=NOW)
    assert (moved.events, moved.deliveries, moved.cursor) == (1, 1, later[0])


async def _endpoint(engine: AsyncEngine, site: Site, *, since: int = 0) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            insert(_webhook_endpoints).values(
                tenant_id=site.tenant_id,
                url=f"https://{_new_id('backend')}.example/hooks",
                secret="whsec_" + "A" * 32,
                event_types=[Topic.STOCK_CHANGED.value],
                description="",
                enabled=True,
                since_event_id=since,
                created_at=NOW,
                updated_at=NOW,
            )
        )


def _at(event_id: int) -> Any:
    async def position() -> int:
        return event_id

    return position


def test_the_payload_names_quantities_in_camel_case_and_instants_in_utc() -> None:
    site = Site(TenantId("t"), WarehouseId(1), "WH", "c", (Sku("S"),))
    movement = _movement(site, 4)
    east = timezone(timedelta(hours=2))
    local = StockMovement(
        level=StockLevel(
            tenant_id=site.tenant_id,
            warehouse_id=site.warehouse_id,
            sku=site.skus[0],
            quantities=movement.level.quantities,
            as_of=datetime(2026, 1, 2, 5, 0, tzinfo=east),
            source_sequence=42,
        ),
        delta=movement.delta,
        cause=MovementCause.POLL,
        correlation_id=CorrelationId("corr-1"),
        actor=ACTOR,
        occurred_at=datetime(2026, 1, 2, 4, 59, 30, 250000, tzinfo=east),
    )

    assert stock_changed_payload(local) == {
        "level": {
            "onHand": 4,
            "available": 3,
            "committed": 1,
            "reserved": 0,
            "damaged": 0,
            "safetyStock": 0,
            "qualityControl": 0,
            "incoming": 0,
            "asOf": "2026-01-02T03:00:00Z",
            "sourceSequence": 42,
        },
        "delta": {
            "onHand": 4,
            "available": 3,
            "committed": 1,
            "reserved": 0,
            "damaged": 0,
            "safetyStock": 0,
            "qualityControl": 0,
            "incoming": 0,
        },
        "cause": "POLL",
        "reason": None,
        "correlationId": "corr-1",
        "occurredAt": "2026-01-02T02:59:30.250000Z",
    }

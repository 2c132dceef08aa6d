"""Webhook ingestion: verified, deduplicated, applied in WMS order, nothing lost or invented."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
import pytest
from sqlalchemy import text

from stockgraph.connectors.base import EventKind, WmsEvent, WmsLevel
from stockgraph.connectors.signing import InvalidSignature, sign
from stockgraph.domain.errors import ConcurrentChange
from stockgraph.domain.model import MovementCause
from stockgraph.persistence.inbox_store import SqlInbox
from stockgraph.persistence.unit_of_work import SqlUnitOfWork
from stockgraph.services.ingestion import (
    ApplyReport,
    BadDelivery,
    IngestionService,
    Receipt,
    UnknownConnector,
)
from tests.ingestion.conftest import OLD_SECRET, SECRET, World


async def test_a_signed_event_is_applied_with_a_ledger_row_and_an_audit_event(world: World) -> None:
    assert await world.deliver("e1", 100, [{"sku": "W1", "qty": 77}]) is Receipt.ACCEPTED
    report = await world.service.apply_pending()
    assert (report.applied, report.exceptions) == (1, 0)
    assert await world.on_hand("SKU-00001") == 77
    assert (
        await world.scalar(
            "SELECT count(*) FROM stock_movements WHERE cause = 'WEBHOOK' AND source_sequence = 100"
        )
        == 1
    )
    assert await world.scalar("SELECT count(*) FROM audit_events WHERE kind = 'STOCK_SYNCED'") == 1


@pytest.mark.parametrize(
    ("secret", "offset", "tamper"),
    [(SECRET, -301, False), (SECRET, 301, False), ("wrong", 0, False), (SECRET, 0, True)],
    ids=["stale", "future", "wrong-secret", "tampered-body"],
)
async def test_bad_signatures_are_refused_and_nothing_is_kept(
    world: World, secret: str, offset: int, tamper: bool
) -> None:
    body = orjson.dumps({"id": "e1", "seq": 1, "levels": [{"sku": "W1", "qty": 1}]})
    header = sign(body, secret, timestamp=int(time.time()) + offset)
    if tamper:
        body = body.replace(b'"qty":1', b'"qty":9')
    with pytest.raises(InvalidSignature):
        await world.service.receive("acme-wh-00", event_id="e1", body=body, signature=header)
    with pytest.raises(InvalidSignature):
        await world.service.receive("acme-wh-00", event_id="e1", body=body, signature=None)
    assert await world.scalar("SELECT count(*) FROM inbox_events") == 0


async def test_a_rotated_secret_still_verifies(world: World) -> None:
    assert await world.deliver("e1", 1, [{"sku": "W1", "qty": 5}], secret=OLD_SECRET) is (
        Receipt.ACCEPTED
    )


async def test_unknown_connectors_and_missing_event_ids_are_refused(world: World) -> None:
    body = b"{}"
    header = sign(body, SECRET, timestamp=int(time.time()))
    with pytest.raises(UnknownConnector):
        await world.service.receive("nobody", event_id="x", body=body, signature=header)
    with pytest.raises(BadDelivery):
        await world.service.receive("acme-wh-00", event_id=None, body=body, signature=header)


async def test_a_repeated_delivery_is_kept_and_applied_once(world: World) -> None:
    assert await world.deliver("e1", 5, [{"sku": "W2", "qty": 40}]) is Receipt.ACCEPTED
    assert await world.deliver("e1", 5, [{"sku": "W2", "qty": 40}]) is Receipt.DUPLICATE
    await world.service.apply_pending()
    assert await world.deliver("e1", 5, [{"sku": "W2", "qty": 40}]) is Receipt.DUPLICATE
    await world.service.apply_pending()
    assert await world.scalar("SELECT count(*) FROM stock_movements WHERE source_sequence = 5") == 1


async def test_an_older_event_never_overwrites_newer_state(world: World) -> None:
    await world.deliver("e3", 30, [{"sku": "W3", "qty": 3}])
    await world.deliver("e1", 10, [{"sku": "W3", "qty": 1}])
    first = await world.service.apply_pending()
    assert first.applied == 2  # one round applies what it holds in WMS order
    assert await world.on_hand("SKU-00003") == 3
    await world.deliver("e2", 20, [{"sku": "W3", "qty": 2}])
    late = await world.service.apply_pending()
    assert (late.applied, late.stale) == (0, 1)
    assert await world.on_hand("SKU-00003") == 3
    await world.deliver("e4", 40, [{"sku": "W3", "qty": 4}])
    await world.service.apply_pending()
    assert await world.on_hand("SKU-00003") == 4


async def test_unmappable_levels_become_exceptions_and_the_rest_applies(world: World) -> None:
    levels = [
        {"sku": "W4", "qty": 2, "unit": "CS"},
        {"sku": "W5", "qty": "0.5", "unit": "CS"},
        {"sku": "W6", "qty": "0.1", "unit": "CS"},
        {"sku": "NOPE", "qty": 1},
        {"sku": "GHOST", "qty": 1},
        {"sku": "W7", "qty": 1, "unit": "PALLET"},
    ]
    await world.deliver("e1", 7, levels)
    report = await world.service.apply_pending()
    assert (report.applied, report.exceptions) == (2, 4)
    assert await world.on_hand("SKU-00004") == 24
    assert await world.on_hand("SKU-00005") == 6
    async with world.runtime.engine.connect() as conn:
        rows = (
            await conn.execute(text("SELECT code, reason, raw FROM sync_exceptions ORDER BY id"))
        ).all()
    assert [r.code for r in rows] == [
        "NOT_WHOLE_BASE_UNITS",
        "UNKNOWN_SKU",
        "UNKNOWN_UNIT",
        "UNKNOWN_SKU",
    ]
    assert "1.2 base units" in rows[0].reason
    assert all('"id":"e1"' in r.raw for r in rows)


async def test_a_malformed_body_is_quarantined_and_later_events_still_apply(world: World) -> None:
    await world.deliver("bad", 1, [], body=b'{"id": "bad", "seq": ')
    await world.deliver("good", 2, [{"sku": "W8", "qty": 8}])
    report = await world.service.apply_pending()
    assert report.applied == 1
    assert await world.scalar("SELECT status FROM inbox_events WHERE event_id = 'bad'") == (
        "QUARANTINED"
    )
    assert await world.scalar("SELECT code FROM sync_exceptions") == "MALFORMED"
    assert await world.on_hand("SKU-00008") == 8


async def test_the_ledger_still_folds_to_the_projection_after_ingestion(world: World) -> None:
    for seq, qty in ((1, 50), (3, 12), (2, 99), (4, 0), (5, 31)):
        await world.deliver(f"e{seq}", seq, [{"sku": "W9", "qty": qty}])
    await world.service.apply_pending()
    folded = await world.scalar(
        "SELECT sum(d_on_hand) FROM stock_movements m JOIN warehouses w ON w.id = m.warehouse_id"
        " WHERE w.connector_id = 'acme-wh-00' AND m.sku = 'SKU-00009'"
    )
    assert folded == await world.on_hand("SKU-00009") == 31


async def test_operators_see_their_own_sync_exceptions_and_nobody_else_does(world: World) -> None:
    from stockgraph.auth.scopes import Scope
    from tests.graphql.helpers import run

    await world.deliver("e1", 7, [{"sku": "NOPE", "qty": 1}, {"sku": "W1", "qty": "0.5"}])
    await world.deliver("bad", 8, [], body=b"{not json")
    await world.service.apply_pending()
    query = """query($after: String) { syncExceptions(first: 2, after: $after) {
        edges { cursor node { connectorId eventId code reason raw createdAt } }
        pageInfo { hasNextPage endCursor } } }"""
    first = await run(world.runtime, query, {"after": None})
    assert first.errors == []
    page = first.data["syncExceptions"]
    codes = [e["node"]["code"] for e in page["edges"]]
    assert page["pageInfo"]["hasNextPage"] is True
    rest = await run(world.runtime, query, {"after": page["pageInfo"]["endCursor"]})
    codes += [e["node"]["code"] for e in rest.data["syncExceptions"]["edges"]]
    assert sorted(codes) == ["MALFORMED", "NOT_WHOLE_BASE_UNITS", "UNKNOWN_SKU"]
    assert rest.data["syncExceptions"]["pageInfo"]["hasNextPage"] is False
    unknown = [
        e["node"]
        for e in page["edges"] + rest.data["syncExceptions"]["edges"]
        if e["node"]["code"] == "UNKNOWN_SKU"
    ]
    assert "NOPE" in unknown[0]["raw"]
    other = await run(world.runtime, query, {"after": None}, tenant="globex")
    assert other.data["syncExceptions"]["edges"] == []
    reader = await run(world.runtime, query, {"after": None}, scopes={Scope.INVENTORY_READ})
    assert reader.codes == ["FORBIDDEN"]


async def test_concurrent_deliveries_of_one_event_are_kept_once(world: World) -> None:
    import asyncio

    receipts = await asyncio.gather(
        *(world.deliver("same", 9, [{"sku": "W2", "qty": 9}]) for _ in range(5)),
        *(world.deliver(f"other-{i}", 10 + i, [{"sku": "W2", "qty": i}]) for i in range(5)),
    )
    assert receipts[:5].count(Receipt.ACCEPTED) == 1
    assert receipts[:5].count(Receipt.DUPLICATE) == 4
    assert receipts[5:] == [Receipt.ACCEPTED] * 5
    assert await world.scalar("SELECT count(*) FROM inbox_events") == 6


async def test_applied_events_name_the_skus_they_wrote_to_whoever_caches_them(
    world: World,
) -> None:
    heard: list[tuple[str, set[str] | None]] = []
    service = IngestionService(
        instances={"acme-wh-00": world.instance}.get,
        inbox=SqlInbox(engine=world.runtime.engine),
        unit_of_work=lambda: SqlUnitOfWork(engine=world.runtime.engine),
        on_change=lambda tenant, skus: heard.append((tenant, None if skus is None else set(skus))),
    )
    await world.deliver("e1", 100, [{"sku": "W1", "qty": 77}, {"sku": "W2", "qty": 5}])
    await world.deliver("e2", 101, [{"sku": "GHOST", "qty": 1}])  # an exception, no write
    report = await service.apply_pending()
    assert report.touched == {"acme": {"SKU-00001", "SKU-00002"}}
    assert heard == [("acme", {"SKU-00001", "SKU-00002"})]


async def test_a_payload_that_cannot_be_applied_raises_a_sync_alert(world: World) -> None:
    before = await world.scalar("SELECT count(*) FROM outbox_events WHERE topic = 'sync.alert'")
    await world.deliver("e1", 100, [{"sku": "GHOST", "qty": 1}])
    await world.service.apply_pending()
    rows = await world.rows(
        "SELECT payload FROM outbox_events WHERE topic = 'sync.alert' ORDER BY id"
    )
    assert len(rows) == before + 1
    alert = orjson.loads(rows[-1][0])
    assert (alert["kind"], alert["code"], alert["connectorId"], alert["eventId"]) == (
        "SYNC_EXCEPTION",
        "UNKNOWN_SKU",
        "acme-wh-00",
        "e1",
    )
    assert alert["exceptionId"] == await world.scalar("SELECT max(id) FROM sync_exceptions")


async def test_a_snapshot_moves_as_of_of_what_it_confirms_and_ledgers_only_a_change(
    world: World,
) -> None:
    await world.deliver("e1", 10, [{"sku": "W1", "qty": 5}, {"sku": "W2", "qty": 6}])
    await world.service.apply_pending()
    level = (
        "SELECT l.as_of, l.source_sequence, l.version FROM stock_levels l"
        " JOIN warehouses w ON w.id = l.warehouse_id"
        " WHERE w.connector_id = 'acme-wh-00' AND l.sku = '{}'"
    )
    [(as_of, _seq, version)] = await world.rows(level.format("SKU-00001"))
    moves = "SELECT count(*) FROM stock_movements WHERE sku = '{}' AND cause = 'POLL'"
    outbox = "SELECT count(*) FROM outbox_events"
    outbox_before = await world.scalar(outbox)
    snapshot = WmsEvent(
        event_id="snap-1",
        sequence=12,
        kind=EventKind.SNAPSHOT,
        occurred_at=datetime.now(UTC),
        levels=(
            WmsLevel("W1", "MAIN", "EA", Decimal(5), sequence=12),
            WmsLevel("W2", "MAIN", "EA", Decimal(8), sequence=12),
        ),
    )
    report = ApplyReport()
    async with world.service.lock("acme-wh-00"), SqlUnitOfWork(engine=world.runtime.engine) as uow:
        await world.service.apply_batches(
            uow, [(world.instance, [snapshot])], cause=MovementCause.POLL, report=report
        )
        await uow.commit()

    assert (report.applied, report.unchanged) == (1, 1)
    [(confirmed_at, sequence, confirmed_version)] = await world.rows(level.format("SKU-00001"))
    assert confirmed_at > as_of
    assert (sequence, confirmed_version) == (12, version + 1)
    assert await world.on_hand("SKU-00001") == 5
    assert await world.scalar(moves.format("SKU-00001")) == 0
    assert await world.on_hand("SKU-00002") == 8
    assert await world.scalar(moves.format("SKU-00002")) == 1
    assert await world.scalar(outbox) == outbox_before + 1  # the change's stock.changed


async def test_a_receipt_the_database_refuses_fails_alone_and_its_batch_is_kept(
    world: World,
) -> None:
    import asyncio

    from sqlalchemy.exc import IntegrityError

    from stockgraph.domain.ids import TenantId

    inbox = SqlInbox(engine=world.runtime.engine)

    def add(tenant: str, event_id: str) -> Any:
        return inbox.add(
            tenant_id=TenantId(tenant), connector_id="acme-wh-00", event_id=event_id, body=b"{}"
        )

    # Added together, the three share one commit; the tenant nobody configured breaks the
    # foreign key, and only its receipt may fail.
    results = await asyncio.gather(
        add("acme", "kept-1"),
        add("no-such-tenant", "refused"),
        add("acme", "kept-2"),
        return_exceptions=True,
    )
    assert results[0] is True and results[2] is True
    assert isinstance(results[1], IntegrityError)
    assert (
        await world.scalar(
            "SELECT count(*) FROM inbox_events WHERE event_id IN ('kept-1', 'kept-2', 'refused')"
        )
        == 2
    )
    assert await add("acme", "kept-1") is False


async def test_a_backlog_is_applied_in_rounds_that_grow_and_shrink_back(world: World) -> None:
    import asyncio

    backlog = [50, 100, 200, 200, 130]  # what each round finds, at most its limit
    limits: list[int] = []

    async def apply_pending(*, limit: int) -> ApplyReport:
        limits.append(limit)
        found = min(limit, backlog.pop(0)) if backlog else 0
        return ApplyReport(entries=found)

    world.service.apply_pending = apply_pending  # type: ignore[method-assign]
    world.service.wake.set()
    running = asyncio.create_task(world.service.run(idle_seconds=60))
    for _ in range(100):
        await asyncio.sleep(0)
    running.cancel()
    # Full rounds double up to 200; the first round that is not full, and the next pass,
    # start again from 50.
    assert limits == [50, 100, 200, 200, 200, 50]


class _ConflictingFor(SqlUnitOfWork):
    """A unit of work that meets another writer's change whenever it writes a level of
    ``warehouse``."""

    def __init__(self, *, engine: Any, warehouse: Any) -> None:
        super().__init__(engine=engine)
        self._warehouse = warehouse

    async def save_levels(self, levels: Any) -> None:
        if any(level.warehouse_id == self._warehouse for level, _version in levels):
            raise ConcurrentChange("a level changed under this transaction")
        await super().save_levels(levels)


async def test_an_instance_meeting_a_concurrent_change_holds_back_only_its_own_events(
    world: World,
) -> None:
    from dataclasses import replace

    from stockgraph.domain.ids import WarehouseId

    other_id = WarehouseId(
        await world.scalar("SELECT id FROM warehouses WHERE connector_id = 'acme-wh-01'")
    )
    other = replace(
        world.instance,
        connector_id="acme-wh-01",
        warehouse_id=other_id,
        warehouse_code="WH-01",
        mapping=replace(world.instance.mapping, default_location="WH-01"),
    )
    instances = {"acme-wh-00": world.instance, "acme-wh-01": other}
    engine = world.runtime.engine
    service = IngestionService(
        instances=instances.get,
        inbox=SqlInbox(engine=engine),
        unit_of_work=lambda: _ConflictingFor(engine=engine, warehouse=world.instance.warehouse_id),
    )
    for connector_id, qty in (("acme-wh-00", 70), ("acme-wh-01", 71)):
        body = orjson.dumps(
            {"id": f"{connector_id}-e", "seq": 500, "levels": [{"sku": "W3", "qty": qty}]}
        )
        await service.receive(
            connector_id,
            event_id=f"{connector_id}-e",
            body=body,
            signature=sign(body, SECRET, timestamp=int(time.time())),
        )
    report = await service.apply_pending()
    assert report.entries == 1 and report.applied == 1
    statuses = dict(await world.rows("SELECT connector_id, status FROM inbox_events"))
    assert statuses == {"acme-wh-00": "PENDING", "acme-wh-01": "APPLIED"}
    on_hand = await world.scalar(
        "SELECT on_hand FROM stock_levels WHERE sku = 'SKU-00003'"
        f" AND warehouse_id = {int(other_id)}"
    )
    assert on_hand == 71

"""Webhook ingestion: verified, deduplicated, applied in WMS order, nothing lost or invented."""

from __future__ import annotations

import shutil
import time
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import text

from stockgraph.app import Runtime
from stockgraph.connectors.base import (
    DialectSpec,
    EventKind,
    RatePolicy,
    WmsEvent,
    WmsLevel,
    WmsOrder,
)
from stockgraph.connectors.errors import MalformedPayload
from stockgraph.connectors.signing import InvalidSignature, sign
from stockgraph.domain.ids import TenantId, WarehouseId
from stockgraph.domain.mapping import InstanceMapping
from stockgraph.persistence.inbox_store import SqlInbox
from stockgraph.persistence.unit_of_work import SqlUnitOfWork
from stockgraph.services.ingestion import (
    BadDelivery,
    ConnectorInstance,
    IngestionService,
    Receipt,
    UnknownConnector,
)
from tests.conftest import make_settings

SECRET = "whsec-current"
OLD_SECRET = "whsec-previous"


class JsonConnector:
    """A minimal dialect for these tests: events as plain JSON."""

    spec = DialectSpec(
        name="test",
        push=True,
        poll=False,
        max_batch=10,
        rate=RatePolicy(kind="requests_per_second", rate=10, burst=10),
    )

    def parse_webhook(self, body: bytes) -> Sequence[WmsEvent]:
        try:
            data = orjson.loads(body)
            return [
                WmsEvent(
                    event_id=data["id"],
                    sequence=int(data["seq"]),
                    kind=EventKind(data.get("kind", "ADJUSTMENT")),
                    occurred_at=datetime.now(UTC),
                    levels=tuple(
                        WmsLevel(
                            wms_sku=lv["sku"],
                            location="MAIN",
                            unit=lv.get("unit", "EA"),
                            on_hand=Decimal(str(lv["qty"])),
                        )
                        for lv in data["levels"]
                    ),
                    raw=data,
                )
            ]
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise MalformedPayload(str(exc), raw=body) from exc

    async def fetch_levels(self, wms_skus: Sequence[str]) -> Sequence[WmsLevel]:
        return []

    async def list_levels(self, cursor: str | None) -> tuple[Sequence[WmsLevel], str | None]:
        return [], None

    async def poll_events(self, after: str | None) -> tuple[Sequence[WmsEvent], str | None]:
        return [], after

    async def submit_order(self, order: WmsOrder) -> str:
        return order.external_id

    async def cancel_order(self, order_ref: str) -> None:
        return None

    async def aclose(self) -> None:
        return None


class World:
    def __init__(self, runtime: Runtime, service: IngestionService) -> None:
        self.runtime = runtime
        self.service = service
        self.changed: list[str] = []

    async def deliver(
        self,
        event_id: str,
        seq: int,
        levels: list[dict[str, Any]],
        *,
        secret: str = SECRET,
        body: bytes | None = None,
        at: int | None = None,
    ) -> Receipt:
        raw = (
            body
            if body is not None
            else orjson.dumps({"id": event_id, "seq": seq, "levels": levels})
        )
        header = sign(raw, secret, timestamp=at if at is not None else int(time.time()))
        return await self.service.receive(
            "acme-wh-00", event_id=event_id, body=raw, signature=header
        )

    async def scalar(self, sql: str) -> Any:
        async with self.runtime.engine.connect() as conn:
            return (await conn.execute(text(sql))).scalar()

    async def on_hand(self, sku: str) -> int:
        return int(
            await self.scalar(
                "SELECT on_hand FROM stock_levels l JOIN warehouses w ON w.id = l.warehouse_id"
                f" WHERE w.connector_id = 'acme-wh-00' AND l.sku = '{sku}'"
            )
        )


@pytest.fixture
async def world(demo_database: str, tmp_path: Path) -> AsyncIterator[World]:
    copy = tmp_path / "stockgraph.db"
    shutil.copy(Path(demo_database.removeprefix("sqlite+aiosqlite:///")), copy)
    runtime = Runtime.build(make_settings(f"sqlite+aiosqlite:///{copy}"))
    async with runtime.engine.connect() as conn:
        wid = (
            await conn.execute(text("SELECT id FROM warehouses WHERE connector_id = 'acme-wh-00'"))
        ).scalar_one()
    instance = ConnectorInstance(
        connector_id="acme-wh-00",
        tenant_id=TenantId("acme"),
        warehouse_id=WarehouseId(wid),
        warehouse_code="WH-00",
        connector=JsonConnector(),  # type: ignore[arg-type]
        mapping=InstanceMapping(
            skus={f"W{i}": f"SKU-{i:05d}" for i in range(10)} | {"GHOST": "SKU-99999"},
            unit_defaults={"CS": 12},
            default_location="WH-00",
        ),
        webhook_secrets=(SECRET, OLD_SECRET),
    )
    service = IngestionService(
        instances={"acme-wh-00": instance}.get,
        inbox=SqlInbox(engine=runtime.engine),
        unit_of_work=lambda: SqlUnitOfWork(engine=runtime.engine),
    )
    w = World(runtime, service)
    try:
        yield w
    finally:
        await runtime.close()


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
    await world.deliver("e2", 20, [{"sku": "W3", "qty": 2}])
    await world.deliver("e1", 10, [{"sku": "W3", "qty": 1}])
    report = await world.service.apply_pending()
    assert (report.applied, report.stale) == (1, 2)
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

"""A world for ingestion tests: the demo database, one instance, a JSON dialect."""

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

from stockgraph.connectors.base import (
    DialectSpec,
    EventKind,
    RatePolicy,
    WmsEvent,
    WmsLevel,
    WmsOrder,
)
from stockgraph.connectors.errors import MalformedPayload
from stockgraph.connectors.signing import sign
from stockgraph.domain.ids import TenantId, WarehouseId
from stockgraph.domain.mapping import InstanceMapping
from stockgraph.persistence.inbox_store import SqlConnectorStates, SqlInbox
from stockgraph.persistence.unit_of_work import SqlUnitOfWork
from stockgraph.runtime import Runtime
from stockgraph.services.ingestion import ConnectorInstance, IngestionService, Receipt
from stockgraph.services.sync import SyncService
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

    def __init__(self) -> None:
        self.pages: list[list[WmsLevel]] = []
        self.mailbox: list[WmsEvent] = []

    async def list_levels(self, cursor: str | None) -> tuple[Sequence[WmsLevel], str | None]:
        index = int(cursor or 0)
        if index >= len(self.pages):
            return [], None
        return self.pages[index], (str(index + 1) if index + 1 < len(self.pages) else None)

    async def poll_events(self, after: str | None) -> tuple[Sequence[WmsEvent], str | None]:
        start = int(after or 0)
        return self.mailbox[start:], str(len(self.mailbox))

    async def submit_order(self, order: WmsOrder) -> str:
        return order.external_id

    async def cancel_order(self, order_ref: str) -> None:
        return None

    async def aclose(self) -> None:
        return None


class World:
    def __init__(
        self,
        runtime: Runtime,
        service: IngestionService,
        sync: SyncService,
        instance: ConnectorInstance,
        connector: JsonConnector,
    ) -> None:
        self.runtime = runtime
        self.service = service
        self.sync = sync
        self.instance = instance
        self.connector = connector

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

    async def rows(self, sql: str) -> list[Any]:
        async with self.runtime.engine.connect() as conn:
            return list((await conn.execute(text(sql))).all())

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
    connector = JsonConnector()
    instance = ConnectorInstance(
        connector_id="acme-wh-00",
        tenant_id=TenantId("acme"),
        warehouse_id=WarehouseId(wid),
        warehouse_code="WH-00",
        connector=connector,
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
    sync = SyncService(
        ingestion=service,
        states=SqlConnectorStates(engine=runtime.engine),
        unit_of_work=lambda: SqlUnitOfWork(engine=runtime.engine),
    )
    w = World(runtime, service, sync, instance, connector)
    try:
        yield w
    finally:
        await runtime.close()

"""A runtime over a fresh database, a clock moved by hand and a receiver that records what
arrived: what the outbound webhook tests share."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import insert
from standardwebhooks import Webhook

from stockgraph.domain.ids import CorrelationId, Sku, TenantId
from stockgraph.domain.model import InitialStock, Item, WarehouseSpec
from stockgraph.domain.quantities import StockQuantities
from stockgraph.domain.webhooks import DeliveryStatus, WebhookDelivery
from stockgraph.persistence.event_log import sync_alert_row, take_outbox_turn
from stockgraph.persistence.models import OutboxEventRow
from stockgraph.runtime import Runtime
from tests.conftest import make_settings


class Clock:
    """Now, moved by hand: the sender and dispatcher never read the wall clock in tests."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)

    def to(self, moment: datetime) -> None:
        self.now = max(self.now, moment)


@dataclass
class Arrival:
    message_id: str
    url: str
    answered: int | None
    body: bytes
    headers: dict[str, str]


Answer = Callable[[httpx.Request], Awaitable[httpx.Response]]


@dataclass
class Receiver:
    """Every endpoint's requests, answered by the function set for its URL (200 if none)."""

    answers: dict[str, Answer] = field(default_factory=dict)
    arrivals: list[Arrival] = field(default_factory=list)
    active: dict[str, int] = field(default_factory=dict)
    most_at_once: int = 0
    """The most attempts of one delivery that were in flight at the same moment."""

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        message_id = request.headers["webhook-id"]
        self.active[message_id] = self.active.get(message_id, 0) + 1
        self.most_at_once = max(self.most_at_once, self.active[message_id])
        try:
            answer = self.answers.get(str(request.url))
            response = await answer(request) if answer else httpx.Response(200)
        finally:
            self.active[message_id] -= 1
        self.arrivals.append(
            Arrival(
                message_id,
                str(request.url),
                response.status_code,
                request.content,
                dict(request.headers),
            )
        )
        return response

    def received(self, url: str, *, ok: bool | None = None) -> list[Arrival]:
        return [
            a
            for a in self.arrivals
            if a.url == url and (ok is None or (a.answered is not None and a.answered < 300) == ok)
        ]


def signed_with(arrival: Arrival, secret: str) -> str:
    """The signature standardwebhooks computes with ``secret`` for these headers and body
    (at any time: the clock in these tests is not the wall clock its verifier checks
    against)."""
    at = datetime.fromtimestamp(int(arrival.headers["webhook-timestamp"]), UTC)
    return Webhook(secret).sign(arrival.message_id, at, arrival.body.decode())


def signature_holds(arrival: Arrival, secret: str) -> bool:
    """The request carries exactly one signature, made with ``secret``."""
    return arrival.headers["webhook-signature"] == signed_with(arrival, secret)


def build(database_url: str, receiver: Receiver, clock: Clock, **settings: object) -> Runtime:
    return Runtime.build(
        make_settings(database_url, **settings),
        webhook_transport=httpx.MockTransport(receiver),
        clock=clock,
    )


async def new_tenant(runtime: Runtime) -> TenantId:
    tenant = TenantId(f"t-{uuid.uuid4().hex[:10]}")
    await runtime.catalog_writer.upsert_tenant(tenant, "Webhook tenant")
    return tenant


async def alerts(runtime: Runtime, tenant: TenantId, count: int) -> None:
    """``count`` sync.alert events for ``tenant``, committed to the outbox."""
    async with runtime.engine.begin() as conn:
        await take_outbox_turn(conn)
        await conn.execute(
            insert(OutboxEventRow),
            [
                sync_alert_row(
                    tenant_id=tenant,
                    connector_id="wms-1",
                    code="UNKNOWN_SKU",
                    message=f"alert {uuid.uuid4().hex[:6]}",
                    event_id=None,
                    exception_id=n,
                    created_at=datetime.now(UTC),
                )
                for n in range(count)
            ],
        )


async def stock_changes(runtime: Runtime, tenant: TenantId, skus: list[str]) -> str:
    """A stock.changed event per SKU in a new warehouse; returns the warehouse's code."""
    code = f"WH-{uuid.uuid4().hex[:6]}"
    ids = await runtime.catalog_writer.upsert_warehouses(
        [WarehouseSpec(tenant, code, f"{tenant}-{code}".lower(), "Hook DC", "eu", None, "rest")]
    )
    await runtime.catalog_writer.upsert_items(
        [Item(tenant_id=tenant, sku=Sku(s), name=s) for s in skus]
    )
    await runtime.stock_store.load_initial(
        tenant,
        [
            InitialStock(
                warehouse_id=next(iter(ids.values())),
                sku=Sku(s),
                quantities=StockQuantities.from_physical(on_hand=5),
            )
            for s in skus
        ],
        correlation_id=CorrelationId(uuid.uuid4().hex),
        actor="test",
    )
    return code


async def deliveries(runtime: Runtime, tenant: TenantId) -> list[WebhookDelivery]:
    rows, _ = await runtime.webhooks.deliveries(tenant, before=None, limit=100)
    return list(rows)


async def send_round(runtime: Runtime) -> None:
    """Queue what was committed, then make every due attempt and wait for all of them."""
    await runtime.dispatcher.dispatch_pending()
    await runtime.sender.send_due()
    await runtime.sender.drain()


async def wait_until(check: Callable[[], bool], *, rounds: int = 2000) -> None:
    """Yield to the event loop until ``check`` holds (bounded by rounds, not by time)."""
    for _ in range(rounds):
        if check():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("the condition never held")


def statuses(found: list[WebhookDelivery]) -> set[DeliveryStatus]:
    return {d.status for d in found}

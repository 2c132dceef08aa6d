"""The graphql dialect's connector against its simulator, in process over ASGI."""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import httpx
import orjson
import pytest
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from stockgraph.connectors.base import Connector, EventKind, WmsOrder, WmsOrderLine
from stockgraph.connectors.errors import FatalError, MalformedPayload, RateLimited
from stockgraph.connectors.graphql import SPEC, GraphqlConfig, GraphqlConnector, wire
from stockgraph.connectors.graphql.simulator import build_simulator
from stockgraph.connectors.runtime import InstanceRuntime
from stockgraph.connectors.signing import SIGNATURE_HEADER, InvalidSignature, verify
from stockgraph.connectors.simulation import SimulatedWms

BASE_URL = "http://graphql-sim"
ENDPOINT = f"{BASE_URL}/graphql"
HOOK_URL = "http://stockgraph.test/webhooks/wms/graphql-1"
LOCATIONS = ["BIN-A", "BIN-B"]


def make_wms(*, items: int = 120) -> SimulatedWms:
    stock = {
        (f"GQ-{i:04d}", loc): (i * 7 + j) % 40
        for i in range(items)
        for j, loc in enumerate(LOCATIONS)
    }
    return SimulatedWms(
        name=f"gq-{uuid.uuid4().hex[:6]}", locations=LOCATIONS, stock=stock, seed=11
    )


class RecordingRuntime(InstanceRuntime):
    """The real runtime, keeping what the dialect told it about each call."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.costs: list[float] = []
        self.budgets: list[tuple[float, float | None]] = []

    async def request(
        self, method: str, path: str, *, cost: float = 1.0, **kwargs: Any
    ) -> httpx.Response:
        self.costs.append(cost)
        return await super().request(method, path, cost=cost, **kwargs)

    def report_budget(self, *, remaining: float, restore_rate: float | None = None) -> None:
        self.budgets.append((remaining, restore_rate))
        super().report_budget(remaining=remaining, restore_rate=restore_rate)


class RecordingTransport(httpx.AsyncBaseTransport):
    """The simulator over ASGI, keeping every body it answered."""

    def __init__(self, app: Starlette) -> None:
        self._inner = httpx.ASGITransport(app=app)
        self.bodies: list[bytes] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._inner.handle_async_request(request)
        body = await response.aread()
        self.bodies.append(body)
        return httpx.Response(response.status_code, headers=response.headers, content=body)


@dataclass
class Receiver:
    """Stockgraph's side of the webhooks: keeps each signed body it is sent."""

    pushed: list[tuple[bytes, str]] = field(default_factory=list)

    def client(self) -> httpx.AsyncClient:
        async def receive(request: Request) -> Response:
            self.pushed.append((await request.body(), request.headers[SIGNATURE_HEADER]))
            return Response(status_code=202)

        app = Starlette(routes=[Route("/webhooks/wms/{connector_id}", receive, methods=["POST"])])
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=app))


@dataclass
class World:
    wms: SimulatedWms
    app: Starlette
    connector: GraphqlConnector
    runtime: RecordingRuntime
    transport: RecordingTransport
    control: httpx.AsyncClient
    access_token: str

    @property
    def served(self) -> int:
        served: int = self.app.state.gate.served
        return served

    async def post(self, document: str, variables: dict[str, Any], **headers: str) -> Any:
        """A request of our own to the WMS, with the right token."""
        response = await self.control.post(
            "/graphql",
            content=wire.request_body(document, variables),
            headers={"X-Access-Token": self.access_token, **headers},
        )
        return response.json()


@asynccontextmanager
async def graphql_world(
    *,
    wms: SimulatedWms | None = None,
    client_token: str | None = None,
    bucket_size: float = 1000,
    restore_rate: float = 50,
    receiver: Receiver | None = None,
    webhook_secret: str | None = None,
) -> AsyncIterator[World]:
    """A simulator and a connector speaking to it; everything closed on the way out."""
    wms = wms or make_wms()
    access_token = secrets.token_urlsafe(24)
    app = build_simulator(
        wms=wms,
        access_token=access_token,
        bucket_size=bucket_size,
        restore_rate=restore_rate,
        webhook_url=HOOK_URL if receiver else None,
        webhook_secret=webhook_secret,
        webhook_client=receiver.client() if receiver else None,
    )
    async with app.router.lifespan_context(app):
        transport = RecordingTransport(app)
        runtime = RecordingRuntime(
            instance_id="graphql-1", base_url=BASE_URL, spec=SPEC, transport=transport
        )
        config = GraphqlConfig(
            endpoint=ENDPOINT,
            access_token=SecretStr(client_token or access_token),
            webhook_secrets=[SecretStr(webhook_secret or "unused")],
        )
        connector = GraphqlConnector(config=config, runtime=runtime)
        control = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE_URL)
        try:
            yield World(
                wms=wms,
                app=app,
                connector=connector,
                runtime=runtime,
                transport=transport,
                control=control,
                access_token=access_token,
            )
        finally:
            await connector.aclose()
            await control.aclose()


def order(external_id: str, *lines: tuple[str, int]) -> WmsOrder:
    return WmsOrder(
        external_id=external_id,
        lines=tuple(WmsOrderLine(wms_sku=s, quantity=Decimal(q), unit="EA") for s, q in lines),
        ship_to={"name": "Grace Hopper", "country": "US"},
    )


def cost_of(body: bytes) -> dict[str, Any]:
    cost: dict[str, Any] = orjson.loads(body)["extensions"]["cost"]
    return cost


async def test_connector_declares_a_pushing_credit_priced_dialect_that_is_never_polled() -> None:
    async with graphql_world() as world:
        connector: Connector = world.connector
        assert connector.spec.push and not connector.spec.poll
        assert connector.spec.max_batch == 50
        assert connector.spec.rate.kind == "credits"
        assert await connector.poll_events("since-9") == ((), "since-9")
        assert world.served == 0


async def test_listing_every_page_returns_exactly_the_simulator_state() -> None:
    async with graphql_world() as world:
        listed: dict[tuple[str, str], tuple[Decimal, Decimal, str, int | None]] = {}
        cursor: str | None = None
        while True:
            levels, cursor = await world.connector.list_levels(cursor)
            for level in levels:
                key = (level.wms_sku, level.location)
                assert key not in listed
                listed[key] = (level.on_hand, level.damaged, level.unit, level.sequence)
            if cursor is None:
                break

        expected = {
            key: (Decimal(cell.on_hand), Decimal(cell.damaged), "EA", world.wms.sequence)
            for key, cell in world.wms.cells.items()
        }
        assert listed == expected
        assert world.served == 3  # 120 items, 50 a page


async def test_fetching_fifty_skus_is_one_call_to_the_wms() -> None:
    async with graphql_world() as world:
        skus = world.wms.skus[:50]

        levels = await world.connector.fetch_levels(skus)

        assert world.served == 1
        assert {(level.wms_sku, level.location) for level in levels} == {
            (sku, loc) for sku in skus for loc in LOCATIONS
        }
        for level in levels:
            assert level.on_hand == world.wms.cells[(level.wms_sku, level.location)].on_hand


async def test_fetching_more_skus_than_a_batch_holds_is_refused_before_any_call() -> None:
    async with graphql_world() as world:
        with pytest.raises(ValueError, match="at most 50"):
            await world.connector.fetch_levels(world.wms.skus[:51])
        assert world.served == 0


async def test_every_answer_reports_the_wms_bucket_to_the_runtime() -> None:
    async with graphql_world(restore_rate=25) as world:
        await world.connector.fetch_levels(world.wms.skus[:10])
        await world.connector.list_levels(None)

        answered = [cost_of(body) for body in world.transport.bodies]
        assert world.runtime.budgets == [
            (cost["throttleStatus"]["currentlyAvailable"], 25.0) for cost in answered
        ]
        assert world.runtime.budgets[-1][0] < world.runtime.budgets[0][0] < 1000


async def test_the_connector_prices_each_call_as_the_wms_does() -> None:
    async with graphql_world() as world:
        await world.connector.fetch_levels(world.wms.skus[:50])
        await world.connector.list_levels(None)
        await world.connector.submit_order(order("price-1", (world.wms.skus[0], 1)))
        ref = next(iter(world.wms.orders))
        await world.connector.cancel_order(ref)

        requested = [cost_of(body)["requestedQueryCost"] for body in world.transport.bodies]
        assert world.runtime.costs == requested
        assert requested == [300, 302, 17, 17]


async def test_a_throttled_answer_raises_rate_limited_with_the_wait_the_wms_gave() -> None:
    async with graphql_world(restore_rate=1) as world:
        world.app.state.bucket.take(1000)  # someone else emptied the bucket

        with pytest.raises(RateLimited) as caught:
            await world.connector.fetch_levels(world.wms.skus[:50])

        errors = orjson.loads(world.transport.bodies[-1])["errors"]
        assert errors[0]["extensions"]["code"] == "THROTTLED"
        assert errors[0]["extensions"]["requiredCredits"] == 300
        assert caught.value.retry_after == errors[0]["extensions"]["retryAfterMs"] / 1000
        assert caught.value.retry_after > 290
        assert world.app.state.gate.throttled == 1
        assert world.runtime.budgets[-1][0] < 1


async def test_a_query_dearer_than_the_whole_bucket_is_fatal() -> None:
    async with graphql_world(bucket_size=100) as world:
        with pytest.raises(FatalError, match="MAX_COST_EXCEEDED"):
            await world.connector.fetch_levels(world.wms.skus[:50])


async def test_a_dry_run_prices_a_document_without_running_it_or_spending() -> None:
    async with graphql_world(restore_rate=0.001) as world:
        await world.connector.fetch_levels(world.wms.skus[:5])
        before = world.app.state.bucket.available()
        variables = {
            "input": wire.order_input(order("dry-1", (world.wms.skus[0], 2))),
        }

        answer = await world.post(wire.ORDER_CREATE, variables, **{"X-Dry-Run": "1"})

        assert answer["data"] is None
        assert answer["extensions"]["cost"]["requestedQueryCost"] == wire.ORDER_CREATE_COST
        assert answer["extensions"]["cost"]["actualQueryCost"] == 0
        after = answer["extensions"]["cost"]["throttleStatus"]["currentlyAvailable"]
        assert after == pytest.approx(before, abs=0.01)
        assert world.wms.orders == {}
        assert world.wms.events == []


async def test_webhooks_parse_into_events_with_absolute_levels_in_sequence_order() -> None:
    receiver = Receiver()
    async with graphql_world(receiver=receiver, webhook_secret="whsec-1") as world:
        wms, connector = world.wms, world.connector
        sku = wms.skus[3]
        await wms.receive(sku, "BIN-A", 24)
        await wms.adjust(sku, "BIN-A", -5, kind="PICK")
        await wms.count(sku, "BIN-B", 9)
        ref = await connector.submit_order(order("hook-1", (sku, 2)))
        for _ in range(3):
            await wms.advance_order(ref)

        events = [event for body, _ in receiver.pushed for event in connector.parse_webhook(body)]

        assert [event.kind for event in events] == [
            EventKind.RECEIPT,
            EventKind.PICK,
            EventKind.CYCLE_COUNT,
            EventKind.ORDER_STATUS,
            EventKind.PICK,
            EventKind.PACK,
            EventKind.SHIPMENT,
        ]
        sequences = [event.sequence for event in events]
        assert sequences == sorted(sequences) and len(set(sequences)) == len(sequences)
        assert [event.status for event in events[3:]] == ["RECEIVED", "PICKED", "PACKED", "SHIPPED"]
        assert {event.order_ref for event in events[3:]} == {ref}
        latest = {}
        for event in events:
            for level in event.levels:
                latest[(level.wms_sku, level.location)] = level
        for (wms_sku, location), level in latest.items():
            assert level.on_hand == wms.cells[(wms_sku, location)].on_hand
            assert level.unit == "EA"
        assert latest[(sku, "BIN-A")].on_hand == (3 * 7) % 40 + 24 - 5 - 2


async def test_pushed_webhooks_carry_a_signature_that_verifies() -> None:
    receiver = Receiver()
    async with graphql_world(receiver=receiver, webhook_secret="whsec-2") as world:
        await world.wms.receive(world.wms.skus[0], "BIN-B", 6)

        assert world.app.state.pusher.sent == 1
        ((body, header),) = receiver.pushed
        verify(body, header, ["rotated-out", "whsec-2"], now=time.time())
        with pytest.raises(InvalidSignature):
            verify(body, header, ["someone-else"], now=time.time())
        with pytest.raises(InvalidSignature):
            verify(body.replace(b'"on_hand"', b'"on_hand_"'), header, ["whsec-2"], now=time.time())


async def test_orders_are_idempotent_on_external_id_and_cancellable() -> None:
    async with graphql_world() as world:
        sku = world.wms.skus[1]
        first = await world.connector.submit_order(order("ext-42", (sku, 3)))
        again = await world.connector.submit_order(order("ext-42", (sku, 3)))

        assert first == again
        assert [o.external_id for o in world.wms.orders.values()] == ["ext-42"]

        await world.connector.cancel_order(first)
        await world.connector.cancel_order(first)

        assert world.wms.orders[first].status == "CANCELLED"
        statuses = [event.status for event in world.wms.events if event.order_ref == first]
        assert statuses == ["RECEIVED", "CANCELLED"]


async def test_an_order_the_wms_refuses_is_fatal() -> None:
    async with graphql_world() as world:
        ref = await world.connector.submit_order(order("ship-1", (world.wms.skus[0], 1)))
        for _ in range(3):
            await world.wms.advance_order(ref)

        with pytest.raises(FatalError, match="ALREADY_SHIPPED"):
            await world.connector.cancel_order(ref)
        with pytest.raises(FatalError, match="UNKNOWN_SKU"):
            await world.connector.submit_order(order("ship-2", ("NOT-A-SKU", 1)))
        with pytest.raises(FatalError, match="whole"):
            await world.connector.submit_order(
                WmsOrder(
                    external_id="ship-3",
                    lines=(
                        WmsOrderLine(wms_sku=world.wms.skus[0], quantity=Decimal("0.5"), unit="EA"),
                    ),
                    ship_to={},
                )
            )
        assert world.wms.orders[ref].status == "SHIPPED"


async def test_a_garbled_answer_is_a_malformed_payload_keeping_the_raw_body() -> None:
    async with graphql_world() as world:
        world.wms.faults.update({"malformed_rate": 1.0})

        with pytest.raises(MalformedPayload) as caught:
            await world.connector.fetch_levels(world.wms.skus[:3])

        assert caught.value.raw == world.transport.bodies[-1]
        assert caught.value.raw.startswith(b'{"oops": ')


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'{"topic": "inventory_levels/update", "webhook_id": "w", "sequence": 1}',
        b'{"topic": "bins/exploded", "webhook_id": "w", "sequence": 1,'
        b' "triggered_at": "2025-01-01T00:00:00Z", "payload": {}}',
        b'{"topic": "orders/fulfilled", "webhook_id": "w", "sequence": 1,'
        b' "triggered_at": "2025-01-01T00:00:00Z", "payload": {"levels": []}}',
        b'{"topic": "inventory_levels/update", "webhook_id": "w", "sequence": 1,'
        b' "triggered_at": "2025-01-01T00:00:00", "payload": {"reason": "received"}}',
    ],
)
async def test_an_unreadable_webhook_is_a_malformed_payload_keeping_the_raw_body(
    body: bytes,
) -> None:
    async with graphql_world() as world:
        with pytest.raises(MalformedPayload) as caught:
            world.connector.parse_webhook(body)
        assert caught.value.raw == body


def _levels_data(on_hand: object) -> dict[str, object]:
    level = {
        "locationCode": "MAIN",
        "onHand": on_hand,
        "available": 0,
        "damaged": 0,
        "qualityControl": 0,
        "incoming": 0,
        "version": 3,
    }
    return {"inventoryLevels": [{"sku": "A", "unit": "EA", "levels": [level]}]}


@pytest.mark.parametrize(("sent", "read"), [(7, 7), (2.5, Decimal("2.5")), (7.0, Decimal(7))])
def test_quantities_are_read_as_ints_when_whole_and_exact_decimals_otherwise(
    sent: object, read: object
) -> None:
    [level] = wire.read_levels(_levels_data(sent), raw=b"", instance_id="gql-1")
    assert level.on_hand == read and type(level.on_hand) is type(read)


@pytest.mark.parametrize("sent", [True, None, "many", float("nan")])
def test_a_quantity_that_is_not_a_number_is_malformed(sent: object) -> None:
    with pytest.raises(MalformedPayload):
        wire.read_levels(_levels_data(sent), raw=b"", instance_id="gql-1")


async def test_a_wrong_access_token_is_fatal() -> None:
    async with graphql_world(client_token="not-the-token") as world:
        with pytest.raises(FatalError, match="401"):
            await world.connector.fetch_levels(world.wms.skus[:1])
        assert world.runtime.budgets == []


def test_the_dialect_package_never_shadows_graphql_core() -> None:
    import graphql as graphql_core

    from stockgraph.connectors.graphql import simulator

    assert vars(simulator)["graphql"] is graphql_core
    assert "stockgraph" not in (graphql_core.__file__ or "")


async def test_a_request_the_wms_cannot_read_is_answered_400_without_spending() -> None:
    async with graphql_world() as world:
        response = await world.control.post(
            "/graphql", content=b'{"query": 7}', headers={"X-Access-Token": world.access_token}
        )
        assert response.status_code == 400
        assert world.app.state.bucket.available() == 1000

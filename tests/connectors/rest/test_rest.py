"""The rest dialect's connector against its simulator, in process over ASGI."""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from decimal import Decimal

import httpx
import orjson
import pytest
from pydantic import SecretStr, ValidationError
from starlette.applications import Starlette

from stockgraph.connectors.base import Connector, EventKind, WmsOrder, WmsOrderLine
from stockgraph.connectors.errors import FatalError, MalformedPayload
from stockgraph.connectors.rest import SPEC, RestConfig, RestConnector, wire
from stockgraph.connectors.rest.simulator import TokenBucket, build_simulator
from stockgraph.connectors.runtime import InstanceRuntime
from stockgraph.connectors.signing import (
    EVENT_ID_HEADER,
    SIGNATURE_HEADER,
    InvalidSignature,
    verify,
)
from stockgraph.connectors.simulation import SimulatedWms

BASE_URL = "http://rest-sim"
HOOK_URL = "http://stockgraph.test/webhooks/wms/rest-1"
LOCATIONS = ["DC1", "DC2"]


def make_wms(*, items: int = 30) -> SimulatedWms:
    stock = {(f"ITEM-{i:03d}", loc): 10 + i for i in range(items) for loc in LOCATIONS}
    return SimulatedWms(
        name=f"rest-{uuid.uuid4().hex[:6]}", locations=LOCATIONS, stock=stock, seed=7
    )


@dataclass
class Hooks:
    """Webhook requests the simulator sent, answered 202 by a mock transport."""

    requests: list[httpx.Request] = field(default_factory=list)

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return httpx.Response(202)

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(self.handle))


@dataclass
class World:
    wms: SimulatedWms
    app: Starlette
    connector: RestConnector
    control: httpx.AsyncClient
    api_key: str

    async def state(self) -> dict[str, object]:
        response = await self.control.get("/_control/state")
        state: dict[str, object] = response.json()
        return state

    async def served(self) -> int:
        return int(str((await self.state())["served"]))


@asynccontextmanager
async def rest_world(
    *,
    wms: SimulatedWms | None = None,
    client_key: str | None = None,
    requests_per_second: float = 1000.0,
    page_size: int = 100,
    case_packs: dict[str, int] | None = None,
    hooks: Hooks | None = None,
    webhook_secret: str | None = None,
) -> AsyncIterator[World]:
    """A simulator and a connector speaking to it; everything closed on the way out."""
    wms = wms or make_wms()
    api_key = secrets.token_urlsafe(24)
    app = build_simulator(
        wms=wms,
        api_key=api_key,
        requests_per_second=requests_per_second,
        webhook_url=HOOK_URL if hooks else None,
        webhook_secret=webhook_secret,
        case_packs=case_packs,
        webhook_client=hooks.client() if hooks else None,
    )
    async with app.router.lifespan_context(app):
        runtime = InstanceRuntime(
            instance_id="rest-1",
            base_url=BASE_URL,
            spec=SPEC,
            transport=httpx.ASGITransport(app=app),
        )
        config = RestConfig(
            base_url=BASE_URL,
            api_key=SecretStr(client_key or api_key),
            webhook_secrets=[SecretStr(webhook_secret or "unused")],
            page_size=page_size,
        )
        connector = RestConnector(config=config, runtime=runtime)
        control = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE_URL)
        try:
            yield World(wms=wms, app=app, connector=connector, control=control, api_key=api_key)
        finally:
            await connector.aclose()
            await control.aclose()


def order(external_id: str, *lines: tuple[str, int]) -> WmsOrder:
    return WmsOrder(
        external_id=external_id,
        lines=tuple(WmsOrderLine(wms_sku=s, quantity=Decimal(q), unit="EA") for s, q in lines),
        ship_to={"name": "Ada Lovelace", "country": "GB"},
    )


async def test_connector_declares_a_pushing_dialect_that_is_never_polled() -> None:
    async with rest_world() as world:
        connector: Connector = world.connector
        assert connector.spec.push and not connector.spec.poll
        assert connector.spec.max_batch == 100
        assert await connector.poll_events("cursor-7") == ((), "cursor-7")


async def test_listing_every_page_returns_exactly_the_simulator_state() -> None:
    async with rest_world(page_size=7) as world:
        listed: list[tuple[str, str, Decimal, str, int | None]] = []
        cursor: str | None = None
        pages = 0
        while True:
            levels, cursor = await world.connector.list_levels(cursor)
            pages += 1
            listed += [(x.wms_sku, x.location, x.on_hand, x.unit, x.sequence) for x in levels]
            if cursor is None:
                break

        expected = [
            (sku, loc, Decimal(cell.on_hand), "EA", world.wms.sequence)
            for (sku, loc), cell in sorted(world.wms.cells.items())
        ]
        assert listed == expected
        assert pages == -(-len(expected) // 7)
        assert await world.served() == pages


async def test_listing_neither_skips_nor_repeats_when_stock_appears_mid_listing() -> None:
    async with rest_world(page_size=10) as world:
        before = sorted(world.wms.cells)
        first, cursor = await world.connector.list_levels(None)
        await world.wms.receive("AAA-NEW", "DC1", 5)
        rest: list[tuple[str, str]] = []
        while cursor is not None:
            levels, cursor = await world.connector.list_levels(cursor)
            rest += [(x.wms_sku, x.location) for x in levels]

        assert [(x.wms_sku, x.location) for x in first] + rest == before


async def test_batch_lookup_of_a_hundred_skus_is_one_call_to_the_wms() -> None:
    async with rest_world(wms=make_wms(items=150)) as world:
        wanted = [f"ITEM-{i:03d}" for i in range(0, 150, 3)] + ["NO-SUCH-ITEM"]
        wanted += [f"ITEM-{i:03d}" for i in range(1, 150, 3)][: 100 - len(wanted)]

        levels = await world.connector.fetch_levels(wanted)

        assert await world.served() == 1
        assert {level.wms_sku for level in levels} == set(wanted) - {"NO-SUCH-ITEM"}
        assert len(levels) == 99 * len(LOCATIONS)
        held = {key: Decimal(cell.on_hand) for key, cell in world.wms.cells.items()}
        assert all(held[(x.wms_sku, x.location)] == x.on_hand for x in levels)


async def test_more_than_a_hundred_skus_in_one_lookup_is_refused() -> None:
    async with rest_world(wms=make_wms(items=150)) as world:
        codes = [f"ITEM-{i:03d}" for i in range(101)]
        answer = await world.control.post(
            "/v1/inventory/lookup",
            content=orjson.dumps({"item_codes": codes}),
            headers={"Authorization": f"ApiKey {world.api_key}"},
        )
        with pytest.raises(ValueError, match="101"):
            await world.connector.fetch_levels(codes)

        assert answer.status_code == 400
        assert answer.json()["error"]["code"] == "TOO_MANY_ITEMS"
        assert await world.served() == 1


async def test_case_pack_skus_are_reported_in_cases_with_decimal_quantities() -> None:
    wms = make_wms()
    wms.cells[("ITEM-001", "DC1")].on_hand = 30
    wms.cells[("ITEM-002", "DC1")].on_hand = 24
    wms.cells[("ITEM-002", "DC2")].on_hand = 5
    async with rest_world(wms=wms, case_packs={"ITEM-001": 12, "ITEM-002": 12}) as world:
        levels = await world.connector.fetch_levels(["ITEM-001", "ITEM-002", "ITEM-003"])

    got = {(x.wms_sku, x.location): (x.unit, x.on_hand) for x in levels}
    assert got[("ITEM-001", "DC1")] == ("CS", Decimal("2.5"))
    assert got[("ITEM-002", "DC1")] == ("CS", Decimal(2))
    assert got[("ITEM-002", "DC2")] == ("CS", Decimal("0.4167"))
    assert got[("ITEM-002", "DC2")][1] * 12 != 5
    assert got[("ITEM-003", "DC1")] == ("EA", Decimal(13))


async def test_garbled_answer_raises_malformed_payload_keeping_the_raw_body() -> None:
    async with rest_world() as world:
        await world.control.post("/_control/faults", json={"malformed_rate": 1})

        with pytest.raises(MalformedPayload) as caught:
            await world.connector.list_levels(None)

    assert caught.value.raw.startswith(b'{"oops": ')
    assert caught.value.instance_id == "rest-1"


ITEM = {
    "item_code": "A",
    "location_code": "DC1",
    "uom": "EA",
    "on_hand": 3,
    "version": 1,
}


@pytest.mark.parametrize(
    "item",
    [
        {**ITEM, "on_hand": "3"},
        {**ITEM, "on_hand": True},
        {**ITEM, "on_hand": None},
        {k: v for k, v in ITEM.items() if k != "on_hand"},
        {k: v for k, v in ITEM.items() if k != "item_code"},
        {**ITEM, "item_code": 17},
        {**ITEM, "uom": "PALLET"},
        {**ITEM, "uom": "CS"},
        {**ITEM, "version": -1},
        {**ITEM, "damaged": "none"},
        "A",
    ],
    ids=[
        "string quantity",
        "boolean quantity",
        "null quantity",
        "missing quantity",
        "missing item code",
        "numeric item code",
        "unknown unit",
        "case without case_qty",
        "negative version",
        "non-numeric damaged",
        "item not an object",
    ],
)
def test_inventory_page_with_an_unexpected_item_is_malformed(item: object) -> None:
    body = orjson.dumps({"data": [item], "next_page_token": None, "as_of": "2025-01-01T00:00:00Z"})

    with pytest.raises(MalformedPayload) as caught:
        wire.parse_inventory_page(body)

    assert caught.value.raw == body


def test_whole_quantities_are_read_as_ints_and_fractions_as_exact_decimals() -> None:
    item = {**ITEM, "on_hand": 3, "damaged": 1.5}
    body = orjson.dumps({"data": [item], "next_page_token": None, "as_of": "2025-01-01T00:00:00Z"})

    [level], _ = wire.parse_inventory_page(body)

    assert type(level.on_hand) is int and level.on_hand == 3
    assert level.damaged == Decimal("1.5") and level.incoming == 0
    assert wire.render_item(level)["on_hand"] == 3


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"[]",
        b'{"data": {}, "next_page_token": null, "as_of": "2025-01-01T00:00:00Z"}',
        b'{"data": [], "next_page_token": null}',
        b'{"data": [], "next_page_token": null, "as_of": "yesterday"}',
        b'{"data": [], "next_page_token": 5, "as_of": "2025-01-01T00:00:00Z"}',
    ],
    ids=["empty", "array", "data not a list", "no as_of", "bad timestamp", "numeric token"],
)
def test_inventory_page_with_an_unexpected_shape_is_malformed(body: bytes) -> None:
    with pytest.raises(MalformedPayload) as caught:
        wire.parse_inventory_page(body)

    assert caught.value.raw == body


@pytest.mark.parametrize(
    "change",
    [
        {"type": "inventory.teleported"},
        {"sequence": "12"},
        {"created_at": None},
        {"data": {"inventory": []}, "type": "order.shipped"},
        {"data": {"order": {"order_ref": "R1", "status": "LOST"}, "inventory": []}},
    ],
    ids=["unknown type", "string sequence", "null time", "order event without order", "status"],
)
def test_webhook_with_an_unexpected_field_is_malformed(change: dict[str, object]) -> None:
    event = {
        "id": "e1",
        "type": "inventory.received",
        "sequence": 12,
        "created_at": "2025-01-01T00:00:00Z",
        "data": {"inventory": [ITEM]},
    }
    body = orjson.dumps({**event, **change})

    with pytest.raises(MalformedPayload) as caught:
        wire.parse_event(body)

    assert caught.value.raw == body


async def test_pushed_webhooks_parse_into_events_with_absolute_levels_in_sequence() -> None:
    hooks = Hooks()
    wms = make_wms()
    async with rest_world(
        wms=wms, hooks=hooks, webhook_secret="whsec-test", case_packs={"ITEM-004": 12}
    ) as world:
        await wms.receive("ITEM-003", "DC1", 5)
        await wms.adjust("ITEM-003", "DC1", -2)
        await wms.count("ITEM-004", "DC2", 18)
        ref = await world.connector.submit_order(order("ext-1", ("ITEM-003", 4)))
        await wms.advance_order(ref)
        await wms.advance_order(ref)
        await wms.advance_order(ref)

        events = [e for r in hooks.requests for e in world.connector.parse_webhook(r.content)]

    assert [e.kind for e in events] == [
        EventKind.RECEIPT,
        EventKind.ADJUSTMENT,
        EventKind.CYCLE_COUNT,
        EventKind.ORDER_STATUS,
        EventKind.PICK,
        EventKind.PACK,
        EventKind.SHIPMENT,
    ]
    sequences = [e.sequence for e in events]
    assert sequences == sorted(set(sequences))
    on_hand = [(x.wms_sku, x.unit, x.on_hand) for e in events for x in e.levels]
    assert on_hand == [
        ("ITEM-003", "EA", Decimal(18)),
        ("ITEM-003", "EA", Decimal(16)),
        ("ITEM-004", "CS", Decimal("1.5")),
        ("ITEM-003", "EA", Decimal(12)),
    ]
    assert [(e.order_ref, e.status) for e in events[3:]] == [
        (ref, "RECEIVED"),
        (ref, "PICKED"),
        (ref, "PACKED"),
        (ref, "SHIPPED"),
    ]
    assert events[-1].raw["type"] == "order.shipped"


async def test_pushed_webhook_is_signed_with_the_instance_secret() -> None:
    hooks = Hooks()
    async with rest_world(hooks=hooks, webhook_secret="whsec-current") as world:
        event = await world.wms.receive("ITEM-001", "DC1", 12)

    [request] = hooks.requests
    assert str(request.url) == HOOK_URL
    assert request.headers[EVENT_ID_HEADER] == event.event_id
    signature = request.headers[SIGNATURE_HEADER]
    verify(request.content, signature, ["whsec-old", "whsec-current"], now=time.time())
    with pytest.raises(InvalidSignature):
        verify(request.content, signature, ["whsec-other"], now=time.time())


async def test_submitting_an_order_twice_with_one_external_id_creates_one_order() -> None:
    async with rest_world() as world:
        first = await world.connector.submit_order(order("ext-9", ("ITEM-001", 2)))
        again = await world.connector.submit_order(order("ext-9", ("ITEM-001", 2)))

        assert again == first
        assert [o.external_id for o in world.wms.orders.values()] == ["ext-9"]
        assert (await world.connector.fetch_order(first)).status == "RECEIVED"


async def test_reusing_an_external_id_for_other_lines_is_refused() -> None:
    async with rest_world() as world:
        await world.connector.submit_order(order("ext-3", ("ITEM-001", 2)))

        with pytest.raises(FatalError):
            await world.connector.submit_order(order("ext-3", ("ITEM-001", 5)))

        assert len(world.wms.orders) == 1


async def test_cancelling_an_unshipped_order_cancels_it() -> None:
    async with rest_world() as world:
        ref = await world.connector.submit_order(order("ext-4", ("ITEM-002", 1)))
        await world.wms.advance_order(ref)

        await world.connector.cancel_order(ref)

        assert world.wms.orders[ref].status == "CANCELLED"
        assert (await world.connector.fetch_order(ref)).status == "CANCELLED"


async def test_cancelling_a_shipped_order_is_refused() -> None:
    async with rest_world() as world:
        ref = await world.connector.submit_order(order("ext-5", ("ITEM-002", 1)))
        for _ in range(3):
            await world.wms.advance_order(ref)

        with pytest.raises(FatalError):
            await world.connector.cancel_order(ref)

        assert world.wms.orders[ref].status == "SHIPPED"


async def test_wrong_api_key_is_fatal() -> None:
    async with rest_world(client_key="not-the-key") as world:
        with pytest.raises(FatalError):
            await world.connector.list_levels(None)
        unsigned = await world.control.get("/v1/inventory")

    assert unsigned.status_code == 401


async def test_simulator_answers_429_with_retry_after_beyond_its_rate() -> None:
    async with rest_world(requests_per_second=2) as world:
        headers = {"Authorization": f"ApiKey {world.api_key}"}
        answers = [await world.control.get("/v1/inventory", headers=headers) for _ in range(5)]
        state = await world.state()

    assert [a.status_code for a in answers] == [200, 200, 429, 429, 429]
    assert all(int(a.headers["Retry-After"]) >= 1 for a in answers[2:])
    assert state["throttled"] == 3


def test_token_bucket_refills_at_its_rate_up_to_its_burst() -> None:
    now = [0.0]
    bucket = TokenBucket(rate=4, burst=2, clock=lambda: now[0])

    assert [bucket.take() for _ in range(3)] == [0.0, 0.0, 0.25]
    now[0] = 10.0
    assert [bucket.take() for _ in range(3)] == [0.0, 0.0, 0.25]


def test_config_keeps_secrets_out_of_its_repr_and_needs_a_webhook_secret() -> None:
    config = RestConfig(
        base_url=BASE_URL, api_key=SecretStr("k-live-123"), webhook_secrets=[SecretStr("whsec")]
    )

    assert "k-live-123" not in repr(config) and "whsec" not in repr(config)
    with pytest.raises(ValidationError):
        RestConfig(base_url=BASE_URL, api_key=SecretStr("k"), webhook_secrets=[])

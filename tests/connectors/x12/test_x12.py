"""The x12 dialect: its maps over committed documents, and its connector against its mailbox."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr, ValidationError

from stockgraph.connectors.base import (
    DialectSpec,
    EventKind,
    RatePolicy,
    WmsOrder,
    WmsOrderLine,
)
from stockgraph.connectors.errors import FatalError, MalformedPayload, RateLimited
from stockgraph.connectors.runtime import InstanceRuntime, deadline
from stockgraph.connectors.simulation import SimulatedWms
from stockgraph.connectors.x12 import SPEC, X12Config, X12Connector
from stockgraph.connectors.x12.simulator import Mailbox, MailboxDocument, build_simulator
from stockgraph.connectors.x12.wire import (
    AdjustmentLine,
    ControlNumbers,
    Document,
    FunctionalAcknowledgment,
    InventoryAdjustment,
    InventoryAdvice,
    InventoryInquiry,
    OrderLine,
    Party,
    SetAcknowledgment,
    ShippedLine,
    ShippingAdvice,
    ShippingOrder,
    StockItem,
    build_interchange,
    parse_interchange,
    read_documents,
    render_interchange,
)

FIXTURES = Path(__file__).parent / "fixtures"
WAREHOUSE, DEPOSITOR = "3PLWEST", "STOCKGRAPH"
LOCATIONS = ["DC1", "DC2"]


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def documents_in(raw: bytes) -> list[Document]:
    return [item.document for item in read_documents(parse_interchange(raw))]


# The maps, over committed documents


def test_an_846_advice_reads_as_absolute_levels_per_location() -> None:
    interchange = parse_interchange(fixture("846_inventory_advice.edi"))
    (advice,) = [item.document for item in read_documents(interchange)]

    assert (interchange.sender, interchange.receiver) == (Party(WAREHOUSE), Party(DEPOSITOR))
    assert interchange.control_number == 1001
    assert interchange.prepared_at == datetime(2025, 3, 14, 9, 26, tzinfo=UTC)
    assert advice == InventoryAdvice(
        "SNAP2025031401",
        date(2025, 3, 14),
        (
            StockItem("WIDGET-RED", "DC1", "EA", Decimal(120), damaged=Decimal(3)),
            StockItem("WIDGET-RED", "DC2", "EA", Decimal(48)),
            StockItem("GADGET-XL", "DC1", "CA", Decimal("12.5"), incoming=Decimal(24)),
        ),
    )


def test_a_940_reads_back_the_order_lines_and_where_they_go() -> None:
    (order,) = documents_in(fixture("940_shipping_order.edi"))

    assert isinstance(order, ShippingOrder)
    assert order.depositor_order == "SO-10042"
    assert not order.cancel
    assert order.lines == (
        OrderLine("WIDGET-RED", Decimal(6), "EA"),
        OrderLine("GADGET-XL", Decimal(1), "CA"),
    )
    assert order.ship_to == {
        "name": "Ada Lovelace",
        "line1": "12 Analytical Row",
        "city": "London",
        "region": "LDN",
        "postal_code": "N1 9GU",
        "country": "GB",
    }


def test_a_945_reads_as_what_shipped_against_the_depositor_order() -> None:
    (advice,) = documents_in(fixture("945_shipping_advice.edi"))

    assert advice == ShippingAdvice(
        "SO-10042",
        "3PLWEST-000017",
        date(2025, 3, 14),
        (
            ShippedLine("WIDGET-RED", Decimal(6), Decimal(6), "EA"),
            ShippedLine("GADGET-XL", Decimal(1), Decimal(1), "CA"),
        ),
    )


def test_a_947_carries_each_change_and_the_on_hand_it_left() -> None:
    (adjustment,) = documents_in(fixture("947_inventory_adjustment.edi"))

    assert adjustment == InventoryAdjustment(
        "ADJ-88",
        date(2025, 3, 14),
        (
            AdjustmentLine("AA", "WIDGET-RED", "DC1", "EA", Decimal(-2), Decimal(118)),
            AdjustmentLine("56", "GADGET-XL", "DC1", "CA", Decimal(24), Decimal("36.5")),
        ),
    )


def test_a_997_names_the_group_and_sets_it_acknowledges() -> None:
    (ack,) = documents_in(fixture("997_functional_acknowledgment.edi"))

    assert ack == FunctionalAcknowledgment(
        "OW", 5001, "A", (SetAcknowledgment("940", "0001", "A"),)
    )
    assert isinstance(ack, FunctionalAcknowledgment) and ack.accepted


def test_separators_are_taken_from_the_isa() -> None:
    usual = documents_in(fixture("947_inventory_adjustment.edi"))
    other = parse_interchange(fixture("947_other_separators.edi"))

    assert other.component == ":"
    assert [item.document for item in read_documents(other)] == usual


@pytest.mark.parametrize(
    ("name", "complaint"),
    [
        ("broken_segment_count.edi", "SE01"),
        ("broken_truncated.edi", "terminator"),
        ("broken_quantity.edi", "FORTY-EIGHT"),
        ("broken_unknown_set.edi", "850"),
    ],
)
def test_a_broken_document_is_malformed_and_keeps_its_raw_text(name: str, complaint: str) -> None:
    raw = fixture(name)

    with pytest.raises(MalformedPayload, match=complaint) as caught:
        documents_in(raw)

    assert caught.value.raw == raw


ROUND_TRIPS: list[Document] = [
    InventoryAdvice(
        "R1",
        date(2025, 1, 2),
        (StockItem("A", "DC1", "EA", Decimal("7.25"), Decimal(1), Decimal(2), Decimal(3)),),
    ),
    InventoryInquiry("Q1", date(2025, 1, 2), ("A", "B")),
    InventoryInquiry("Q2", date(2025, 1, 2)),
    ShippingOrder("SO-1", (OrderLine("A", Decimal(2), "EA"),), {"name": "Bo", "country": "SE"}),
    ShippingOrder("SO-1", cancel=True),
    ShippingAdvice(
        "SO-1", "SHP-9", date(2025, 1, 3), (ShippedLine("A", Decimal(2), Decimal(1), "EA"),)
    ),
    InventoryAdjustment(
        "ADJ-1",
        date(2025, 1, 4),
        (AdjustmentLine("55", "A", "DC2", "EA", Decimal(-3), Decimal(0)),),
    ),
    FunctionalAcknowledgment("SW", 77, "R", (SetAcknowledgment("945", "0001", "R"),)),
]


@pytest.mark.parametrize("document", ROUND_TRIPS, ids=lambda d: type(d).__name__)
def test_a_rendered_document_parses_back_to_itself(document: Document) -> None:
    interchange = build_interchange(
        sender=Party(DEPOSITOR),
        receiver=Party(WAREHOUSE, "01"),
        control_number=42,
        documents=[document, document],
        prepared_at=datetime(2025, 1, 2, 3, 4, tzinfo=UTC),
        usage="T",
    )

    parsed = parse_interchange(render_interchange(interchange))

    assert [item.document for item in read_documents(parsed)] == [document, document]
    assert (parsed.sender, parsed.receiver) == (Party(DEPOSITOR), Party(WAREHOUSE, "01"))
    assert (parsed.control_number, parsed.usage) == (42, "T")
    assert [ts.control_number for g in parsed.groups for ts in g.sets] == ["0001", "0002"]


def test_rendering_refuses_a_value_holding_a_separator() -> None:
    interchange = build_interchange(
        sender=Party(DEPOSITOR),
        receiver=Party(WAREHOUSE),
        control_number=1,
        documents=[ShippingOrder("SO*1", cancel=True)],
        prepared_at=datetime.now(UTC),
    )

    with pytest.raises(ValueError, match="separator"):
        render_interchange(interchange)


def test_control_numbers_rise_and_wrap_within_nine_digits() -> None:
    numbers = ControlNumbers(start=999_999_998)

    assert [numbers.next() for _ in range(4)] == [999_999_998, 999_999_999, 1, 2]


def test_a_config_keeps_its_password_secret_and_refuses_overlong_ids() -> None:
    config = X12Config(
        mailbox_url="https://edi.example.com",
        username="acme",
        password=SecretStr("pw"),
        our_id=DEPOSITOR,
        their_id=WAREHOUSE,
    )

    assert "pw" not in repr(config)
    with pytest.raises(ValidationError):
        X12Config(
            mailbox_url="https://edi.example.com",
            username="acme",
            password=SecretStr("pw"),
            our_id="X" * 16,
            their_id=WAREHOUSE,
        )


# The connector against its mailbox, in process


class FakeTime:
    """The runtime's clock and sleep: sleeping moves the clock on at once."""

    def __init__(self) -> None:
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class World:
    wms: SimulatedWms
    mailbox: Mailbox
    connector: X12Connector
    time: FakeTime


@asynccontextmanager
async def make_world(
    *, password: str = "right", snapshot_every: int = 1000, spec: DialectSpec = SPEC
) -> AsyncIterator[World]:
    """A mailbox over a fresh warehouse, and a connector reaching it in process."""
    stock = {(f"SKU-{i:02d}", loc): 10 + i for i in range(4) for loc in LOCATIONS}
    wms = SimulatedWms(name=f"x12-{uuid.uuid4().hex[:6]}", locations=LOCATIONS, stock=stock)
    app = build_simulator(
        wms=wms,
        username="acme",
        password="right",
        interchange_ids=(WAREHOUSE, DEPOSITOR),
        snapshot_every=snapshot_every,
    )
    config = X12Config(
        mailbox_url="http://x12-sim",
        username="acme",
        password=SecretStr(password),
        our_id=DEPOSITOR,
        their_id=WAREHOUSE,
    )
    time = FakeTime()
    runtime = InstanceRuntime(
        instance_id="x12-1",
        base_url=str(config.mailbox_url),
        spec=spec,
        transport=httpx.ASGITransport(app=app),
        clock=time.clock,
        sleep=time.sleep,
    )
    connector = X12Connector(config=config, runtime=runtime)
    try:
        yield World(wms, app.state.mailbox, connector, time)
    finally:
        await connector.aclose()


@pytest.fixture
async def world() -> AsyncIterator[World]:
    async with make_world() as made:
        yield made


def on_hand(wms: SimulatedWms) -> dict[tuple[str, str], Decimal]:
    return {key: Decimal(cell.on_hand) for key, cell in wms.cells.items()}


async def test_polled_events_come_in_order_and_their_levels_rebuild_the_warehouse(
    world: World,
) -> None:
    await world.wms.receive("SKU-00", "DC1", 24)
    await world.wms.adjust("SKU-01", "DC2", -3)
    await world.wms.count("SKU-00", "DC1", 30)
    for _ in range(20):
        await world.wms.activity()

    events, _ = await world.connector.poll_events(None)

    assert events[0].kind is EventKind.SNAPSHOT
    assert {e.kind for e in events[1:]} == {EventKind.ADJUSTMENT}
    sequences = [e.sequence for e in events]
    assert sequences == sorted(sequences) and len(set(sequences)) == len(sequences)
    held: dict[tuple[str, str], Decimal] = {}
    for event in events:
        for level in event.levels:
            assert level.sequence == event.sequence and level.unit == "EA"
            held[(level.wms_sku, level.location)] = level.on_hand
    assert held == on_hand(world.wms)


async def test_polling_again_from_the_returned_cursor_gives_nothing_new(world: World) -> None:
    await world.wms.adjust("SKU-02", "DC1", -1)
    first, cursor = await world.connector.poll_events(None)

    again, same = await world.connector.poll_events(cursor)
    await world.wms.adjust("SKU-02", "DC1", -1)
    later, _ = await world.connector.poll_events(same)

    assert len(first) == 2 and cursor is not None
    assert (again, same) == ([], cursor)
    assert [e.kind for e in later] == [EventKind.ADJUSTMENT]
    assert later[0].sequence > first[-1].sequence
    assert later[0].levels[0].on_hand == on_hand(world.wms)[("SKU-02", "DC1")]


async def test_every_polled_document_is_acknowledged_with_a_997(world: World) -> None:
    for _ in range(5):
        await world.wms.activity()

    await world.connector.poll_events(None)

    written = {doc.control_number for doc in world.mailbox.outbound}
    assert len(written) == 6
    assert world.mailbox.acknowledged == written
    assert world.mailbox.rejected == set()


async def test_a_submitted_order_is_accepted_by_the_warehouse_and_held_there(world: World) -> None:
    order = WmsOrder(
        external_id="SO-1",
        lines=(WmsOrderLine("SKU-01", Decimal(2), "EA"), WmsOrderLine("SKU-03", Decimal(1), "EA")),
        ship_to={"name": "Ada", "line1": "1 Road", "city": "Leeds", "country": "GB"},
    )

    ref = await world.connector.submit_order(order)

    assert ref == "SO-1"
    (held,) = world.wms.orders.values()
    assert (held.external_id, held.lines, held.status) == (
        "SO-1",
        [("SKU-01", 2), ("SKU-03", 1)],
        "RECEIVED",
    )
    (sent,) = documents_in(world.mailbox.received[-1])
    assert sent == ShippingOrder(
        "SO-1",
        (OrderLine("SKU-01", Decimal(2), "EA"), OrderLine("SKU-03", Decimal(1), "EA")),
        {"name": "Ada", "line1": "1 Road", "city": "Leeds", "country": "GB"},
    )


async def test_a_shipped_order_comes_back_as_its_pick_and_its_shipment(world: World) -> None:
    ref = await world.connector.submit_order(
        WmsOrder("SO-2", (WmsOrderLine("SKU-00", Decimal(4), "EA"),), {})
    )
    (held,) = world.wms.orders.values()
    for _ in range(3):
        await world.wms.advance_order(held.ref)

    events, _ = await world.connector.poll_events(None)

    pick, shipment = events[-2:]
    assert pick.kind is EventKind.ADJUSTMENT
    assert [(lv.wms_sku, lv.location, lv.on_hand) for lv in pick.levels] == [
        ("SKU-00", "DC1", Decimal(6))
    ]
    assert (shipment.kind, shipment.order_ref, shipment.status) == (
        EventKind.SHIPMENT,
        ref,
        "SHIPPED",
    )
    assert shipment.sequence > pick.sequence


async def test_cancelling_an_order_cancels_it_in_the_warehouse(world: World) -> None:
    ref = await world.connector.submit_order(
        WmsOrder("SO-3", (WmsOrderLine("SKU-00", Decimal(1), "EA"),), {})
    )

    await world.connector.cancel_order(ref)

    (held,) = world.wms.orders.values()
    assert held.status == "CANCELLED"


async def test_the_warehouse_refusing_a_cancellation_is_fatal(world: World) -> None:
    ref = await world.connector.submit_order(
        WmsOrder("SO-4", (WmsOrderLine("SKU-00", Decimal(1), "EA"),), {})
    )
    (held,) = world.wms.orders.values()
    for _ in range(3):
        await world.wms.advance_order(held.ref)

    with pytest.raises(FatalError, match="rejected"):
        await world.connector.cancel_order(ref)
    with pytest.raises(FatalError, match="rejected"):
        await world.connector.cancel_order("NO-SUCH-ORDER")
    assert held.status == "SHIPPED"


async def test_an_order_in_cases_the_warehouse_cannot_take_is_refused(world: World) -> None:
    order = WmsOrder("SO-5", (WmsOrderLine("SKU-00", Decimal(1), "CA"),), {})

    with pytest.raises(FatalError, match="rejected"):
        await world.connector.submit_order(order)

    assert world.wms.orders == {}


async def test_fetch_levels_answers_from_an_846_of_the_current_state(world: World) -> None:
    await world.wms.adjust("SKU-01", "DC1", -5)
    events, _ = await world.connector.poll_events(None)

    levels = await world.connector.fetch_levels(["SKU-01", "UNKNOWN"])

    assert {(lv.wms_sku, lv.location): lv.on_hand for lv in levels} == {
        ("SKU-01", "DC1"): Decimal(6),
        ("SKU-01", "DC2"): Decimal(11),
    }
    assert all(lv.sequence is not None and lv.sequence > events[-1].sequence for lv in levels)
    assert await world.connector.fetch_levels([]) == []
    with pytest.raises(ValueError, match="500"):
        await world.connector.fetch_levels([f"S{i}" for i in range(501)])


async def test_list_levels_returns_every_level_in_one_page(world: World) -> None:
    levels, cursor = await world.connector.list_levels(None)

    assert cursor is None
    assert {(lv.wms_sku, lv.location): lv.on_hand for lv in levels} == on_hand(world.wms)


async def test_wrong_credentials_are_fatal() -> None:
    async with make_world(password="wrong") as world:
        with pytest.raises(FatalError, match="401"):
            await world.connector.poll_events(None)
        with pytest.raises(FatalError, match="401"):
            await world.connector.submit_order(
                WmsOrder("SO-6", (WmsOrderLine("SKU-00", Decimal(1), "EA"),), {})
            )
        assert world.wms.orders == {}


async def test_a_garbled_document_is_malformed_and_loses_nothing_once_readable(
    world: World,
) -> None:
    await world.wms.adjust("SKU-00", "DC2", -2)
    world.wms.faults.update({"malformed_rate": 1.0})

    with pytest.raises(MalformedPayload) as caught:
        await world.connector.poll_events(None)

    assert caught.value.raw.startswith(b'{"oops": ISA*')
    assert caught.value.instance_id == "x12-1"
    assert world.mailbox.acknowledged == set()
    world.wms.faults.update({"malformed_rate": 0.0})
    events, _ = await world.connector.poll_events(None)
    assert [e.kind for e in events] == [EventKind.SNAPSHOT, EventKind.ADJUSTMENT]


async def test_a_broken_document_stops_the_poll_just_before_it(world: World) -> None:
    await world.wms.adjust("SKU-00", "DC2", -2)
    broken = fixture("broken_quantity.edi")
    world.mailbox.outbound.append(MailboxDocument(3, 999_000, "846", broken))
    await world.wms.adjust("SKU-00", "DC2", -2)

    events, cursor = await world.connector.poll_events(None)
    with pytest.raises(MalformedPayload, match="FORTY-EIGHT") as caught:
        await world.connector.poll_events(cursor)

    assert [e.kind for e in events] == [EventKind.SNAPSHOT, EventKind.ADJUSTMENT]
    assert cursor == "2"
    assert caught.value.raw == broken


async def test_a_document_for_another_depositor_is_refused(world: World) -> None:
    stray = fixture("947_inventory_adjustment.edi").replace(b"STOCKGRAPH", b"OTHERPARTY")
    world.mailbox.outbound[0] = MailboxDocument(1, 999_001, "947", stray)

    with pytest.raises(MalformedPayload, match="OTHERPARTY") as caught:
        await world.connector.poll_events(None)

    assert caught.value.raw == stray


async def test_polls_keep_to_the_mailbox_interval_and_its_retry_after(world: World) -> None:
    await world.connector.poll_events(None)
    world.wms.faults.update({"burst_429": 1, "retry_after_s": 20})

    events, _ = await world.connector.poll_events(None)

    assert [e.kind for e in events] == [EventKind.SNAPSHOT]
    # The second poll waits out the interval, then the 429's Retry-After; the 997s
    # acknowledging each poll's documents spend the inquiry limit, not the interval.
    assert world.time.now >= 1 / SPEC.rate.rate + 20
    with pytest.raises(RateLimited):
        world.wms.faults.update({"burst_429": 100})
        await world.connector.poll_events(None)


async def test_the_dialect_never_takes_webhooks(world: World) -> None:
    with pytest.raises(FatalError, match="does not push"):
        world.connector.parse_webhook(fixture("947_inventory_adjustment.edi"))
    assert (SPEC.push, SPEC.poll, SPEC.max_batch, SPEC.rate.kind) == (
        False,
        True,
        500,
        "polling_interval",
    )


async def test_periodic_snapshots_reach_the_mailbox() -> None:
    async with make_world(snapshot_every=3) as world:
        for _ in range(6):
            await world.wms.adjust("SKU-03", "DC1", 1)

        events, _ = await world.connector.poll_events(None)

    kinds = [e.kind for e in events]
    assert kinds.count(EventKind.SNAPSHOT) == 3
    assert kinds[-1] is EventKind.SNAPSHOT
    assert {(lv.wms_sku, lv.location): lv.on_hand for lv in events[-1].levels} == on_hand(world.wms)


async def test_an_inquiry_goes_out_while_the_poll_interval_runs(world: World) -> None:
    await world.connector.poll_events(None)
    served = len(world.mailbox.received)

    with deadline(0.1):
        levels = await world.connector.fetch_levels(["SKU-00", "SKU-01"])

    assert {lv.wms_sku for lv in levels} == {"SKU-00", "SKU-01"}
    assert len(world.mailbox.received) == served + 1
    assert world.time.now == 0.0
    # The poll interval still holds for the next poll.
    with deadline(0.1), pytest.raises(RateLimited) as refused:
        await world.connector.poll_events(None)
    assert refused.value.retry_after == pytest.approx(1 / SPEC.rate.rate)


async def test_inquiries_beyond_the_inquiry_limit_are_refused_without_sending() -> None:
    limit = RatePolicy(kind="requests_per_second", rate=2.0, burst=3.0)
    async with make_world(spec=replace(SPEC, inquiries=limit)) as world:
        for _ in range(3):
            with deadline(0.1):
                await world.connector.fetch_levels(["SKU-00"])
        sent = len(world.mailbox.received)

        with deadline(0.1), pytest.raises(RateLimited, match="inquiries budget") as refused:
            await world.connector.fetch_levels(["SKU-00"])

        assert len(world.mailbox.received) == sent
        assert refused.value.retry_after == pytest.approx(0.5)
        # Without a deadline the inquiry waits its turn, 1 / rate later.
        await world.connector.fetch_levels(["SKU-00"])
        assert world.time.now == pytest.approx(0.5)

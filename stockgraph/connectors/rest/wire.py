"""The ``rest`` dialect's JSON, both ways: what its endpoints and webhooks carry.

An inventory item (in listings, lookups and webhooks)::

    {"item_code": "TEE-RED-M", "location_code": "DC1", "uom": "CS", "case_qty": 12,
     "on_hand": 2.5, "damaged": 0, "qc_hold": 0, "inbound": 1, "version": 41}

``uom`` is ``EA`` or ``CS``; ``CS`` items carry ``case_qty`` and may report fractional
cases. ``version`` is the WMS event sequence the numbers reflect. Quantities are JSON
numbers. Bodies::

    GET  /v1/inventory            {"data": [item], "next_page_token": "..." | null, "as_of": ts}
    POST /v1/inventory/lookup     {"item_codes": [code]}
                               -> {"data": [item], "not_found": [code], "as_of": ts}
    POST /v1/orders               {"external_id", "lines": [line], "ship_to": {str: str}}
                               -> order
    order                         {"order_ref", "external_id", "status", "lines": [line]}
    line                          {"item_code", "quantity", "uom"}
    webhook                       {"id", "type", "sequence", "created_at",
                                   "data": {"inventory": [item], "order"?: {"order_ref", "status"}}}
    error                         {"error": {"code", "message"}}

Webhook ``type`` is ``inventory.{received,adjusted,picked,counted,returned,snapshot}`` or
``order.{created,updated,cancelled,picked,packed,shipped}``. Order statuses are
``RECEIVED``, ``PICKED``, ``PACKED``, ``SHIPPED`` and ``CANCELLED``.

Reading raises :class:`~stockgraph.connectors.errors.MalformedPayload` (keeping the raw
body) on anything unexpected; this module does no I/O and maps nothing to our SKUs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import NoReturn

import orjson

from stockgraph.connectors.base import EventKind, WmsEvent, WmsLevel, WmsOrder, WmsOrderLine
from stockgraph.connectors.errors import MalformedPayload

EACH = "EA"
CASE = "CS"
UNITS = (EACH, CASE)
STATUSES = ("RECEIVED", "PICKED", "PACKED", "SHIPPED", "CANCELLED")

INVENTORY_TYPES: Mapping[str, EventKind] = {
    "inventory.received": EventKind.RECEIPT,
    "inventory.adjusted": EventKind.ADJUSTMENT,
    "inventory.picked": EventKind.PICK,
    "inventory.counted": EventKind.CYCLE_COUNT,
    "inventory.returned": EventKind.RETURN,
    "inventory.snapshot": EventKind.SNAPSHOT,
}
ORDER_TYPES: Mapping[str, EventKind] = {
    "order.created": EventKind.ORDER_STATUS,
    "order.updated": EventKind.ORDER_STATUS,
    "order.cancelled": EventKind.ORDER_STATUS,
    "order.picked": EventKind.PICK,
    "order.packed": EventKind.PACK,
    "order.shipped": EventKind.SHIPMENT,
}


@dataclass(frozen=True, slots=True)
class OrderRecord:
    """An order as the WMS reports it; lines in the WMS's units."""

    order_ref: str
    external_id: str
    status: str
    lines: tuple[WmsOrderLine, ...]


class _Reader:
    """Typed access to a decoded body; every failure names the field and keeps ``raw``."""

    def __init__(self, raw: bytes) -> None:
        self.raw = raw

    def fail(self, message: str) -> NoReturn:
        raise MalformedPayload(f"rest: {message}", raw=self.raw)

    def document(self) -> Mapping[str, object]:
        try:
            value = orjson.loads(self.raw)
        except orjson.JSONDecodeError as exc:
            self.fail(f"body is not JSON ({exc})")
        return self.mapping(value, "body")

    def mapping(self, value: object, where: str) -> Mapping[str, object]:
        if not isinstance(value, dict):
            self.fail(f"{where} is {type(value).__name__}, expected an object")
        return value

    def field(self, source: Mapping[str, object], name: str, where: str) -> object:
        if name not in source:
            self.fail(f"{where}.{name} is missing")
        return source[name]

    def array(self, source: Mapping[str, object], name: str, where: str) -> list[object]:
        value = self.field(source, name, where)
        if not isinstance(value, list):
            self.fail(f"{where}.{name} is {type(value).__name__}, expected an array")
        return value

    def text(self, source: Mapping[str, object], name: str, where: str) -> str:
        value = self.field(source, name, where)
        if not isinstance(value, str) or not value:
            self.fail(f"{where}.{name} is {value!r}, expected a non-empty string")
        return value

    def optional_text(self, source: Mapping[str, object], name: str, where: str) -> str | None:
        if source.get(name) is None:
            return None
        return self.text(source, name, where)

    def whole(self, source: Mapping[str, object], name: str, where: str, *, least: int) -> int:
        value = self.field(source, name, where)
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            self.fail(f"{where}.{name} is {value!r}, expected a whole number >= {least}")
        return value

    def quantity(
        self, source: Mapping[str, object], name: str, where: str, *, required: bool = True
    ) -> Decimal | int:
        """A number as sent: an ``int`` when it is one, else an exact ``Decimal``."""
        if not required and name not in source:
            return 0
        value = self.field(source, name, where)
        if type(value) is int:
            return value
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail(f"{where}.{name} is {value!r}, expected a number")
        try:
            number = Decimal(value) if isinstance(value, int) else Decimal(repr(value))
        except InvalidOperation:
            self.fail(f"{where}.{name} is {value!r}, expected a finite number")
        if not number.is_finite():
            self.fail(f"{where}.{name} is {value!r}, expected a finite number")
        return number

    def timestamp(self, source: Mapping[str, object], name: str, where: str) -> datetime:
        text = self.text(source, name, where)
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            self.fail(f"{where}.{name} is {text!r}, expected an ISO 8601 timestamp")
        if moment.tzinfo is None:
            self.fail(f"{where}.{name} is {text!r}, expected a timestamp with a UTC offset")
        return moment

    def choice(
        self, source: Mapping[str, object], name: str, where: str, allowed: Sequence[str]
    ) -> str:
        value = self.text(source, name, where)
        if value not in allowed:
            self.fail(f"{where}.{name} is {value!r}, expected one of {', '.join(allowed)}")
        return value

    def item(self, value: object, where: str, observed_at: datetime | None) -> WmsLevel:
        item = self.mapping(value, where)
        unit = self.choice(item, "uom", where, UNITS)
        if unit == CASE:
            self.whole(item, "case_qty", where, least=1)
        return WmsLevel(
            wms_sku=self.text(item, "item_code", where),
            location=self.text(item, "location_code", where),
            unit=unit,
            on_hand=self.quantity(item, "on_hand", where),
            damaged=self.quantity(item, "damaged", where, required=False),
            quality_control=self.quantity(item, "qc_hold", where, required=False),
            incoming=self.quantity(item, "inbound", where, required=False),
            sequence=self.whole(item, "version", where, least=0),
            observed_at=observed_at,
        )

    def items(
        self, source: Mapping[str, object], name: str, where: str, observed_at: datetime | None
    ) -> list[WmsLevel]:
        values = self.array(source, name, where)
        return [self.item(v, f"{where}.{name}[{i}]", observed_at) for i, v in enumerate(values)]

    def line(self, value: object, where: str) -> WmsOrderLine:
        line = self.mapping(value, where)
        quantity = Decimal(self.quantity(line, "quantity", where))
        if quantity <= 0:
            self.fail(f"{where}.quantity is {quantity}, expected more than zero")
        return WmsOrderLine(
            wms_sku=self.text(line, "item_code", where),
            quantity=quantity,
            unit=self.choice(line, "uom", where, UNITS),
        )

    def lines(self, source: Mapping[str, object], where: str) -> tuple[WmsOrderLine, ...]:
        values = self.array(source, "lines", where)
        if not values:
            self.fail(f"{where}.lines is empty")
        return tuple(self.line(v, f"{where}.lines[{i}]") for i, v in enumerate(values))


def _number(quantity: Decimal | int) -> int | float:
    if isinstance(quantity, int):
        return quantity
    if not quantity.is_finite():
        raise ValueError(f"quantity {quantity} is not finite")
    if quantity == quantity.to_integral_value():
        return int(quantity)
    return float(quantity)


def _timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def parse_inventory_page(body: bytes) -> tuple[list[WmsLevel], str | None]:
    """Levels on one page of ``GET /v1/inventory`` and the next page's token (None: last)."""
    reader = _Reader(body)
    doc = reader.document()
    as_of = reader.timestamp(doc, "as_of", "body")
    levels = reader.items(doc, "data", "body", as_of)
    return levels, reader.optional_text(doc, "next_page_token", "body")


def parse_lookup(body: bytes) -> tuple[list[WmsLevel], list[str]]:
    """Levels in an answer to ``POST /v1/inventory/lookup``, and the codes it did not know."""
    reader = _Reader(body)
    doc = reader.document()
    as_of = reader.timestamp(doc, "as_of", "body")
    levels = reader.items(doc, "data", "body", as_of)
    not_found = reader.array(doc, "not_found", "body")
    if not all(isinstance(code, str) for code in not_found):
        reader.fail("body.not_found holds something other than strings")
    return levels, [str(code) for code in not_found]


def parse_order(body: bytes) -> OrderRecord:
    """An order as ``/v1/orders`` endpoints answer it."""
    reader = _Reader(body)
    doc = reader.document()
    return OrderRecord(
        order_ref=reader.text(doc, "order_ref", "body"),
        external_id=reader.text(doc, "external_id", "body"),
        status=reader.choice(doc, "status", "body", STATUSES),
        lines=reader.lines(doc, "body"),
    )


def parse_order_request(body: bytes) -> WmsOrder:
    """The body of ``POST /v1/orders`` (what the WMS reads)."""
    reader = _Reader(body)
    doc = reader.document()
    ship_to = reader.mapping(reader.field(doc, "ship_to", "body"), "body.ship_to")
    if not all(isinstance(value, str) for value in ship_to.values()):
        reader.fail("body.ship_to holds something other than strings")
    return WmsOrder(
        external_id=reader.text(doc, "external_id", "body"),
        lines=reader.lines(doc, "body"),
        ship_to={key: str(value) for key, value in ship_to.items()},
    )


def parse_lookup_request(body: bytes) -> list[str]:
    """The item codes in the body of ``POST /v1/inventory/lookup`` (what the WMS reads)."""
    reader = _Reader(body)
    codes = reader.array(reader.document(), "item_codes", "body")
    if not all(isinstance(code, str) and code for code in codes):
        reader.fail("body.item_codes holds something other than non-empty strings")
    return [str(code) for code in codes]


def parse_event(body: bytes) -> WmsEvent:
    """One webhook body: the event and the absolute levels it left behind."""
    reader = _Reader(body)
    doc = reader.document()
    kind_of = {**INVENTORY_TYPES, **ORDER_TYPES}
    type_name = reader.choice(doc, "type", "body", tuple(kind_of))
    occurred_at = reader.timestamp(doc, "created_at", "body")
    data = reader.mapping(reader.field(doc, "data", "body"), "body.data")
    order_ref: str | None = None
    status: str | None = None
    if type_name in ORDER_TYPES or data.get("order") is not None:
        order = reader.mapping(reader.field(data, "order", "body.data"), "body.data.order")
        order_ref = reader.text(order, "order_ref", "body.data.order")
        status = reader.choice(order, "status", "body.data.order", STATUSES)
    return WmsEvent(
        event_id=reader.text(doc, "id", "body"),
        sequence=reader.whole(doc, "sequence", "body", least=0),
        kind=kind_of[type_name],
        occurred_at=occurred_at,
        levels=tuple(reader.items(data, "inventory", "body.data", occurred_at)),
        order_ref=order_ref,
        status=status,
        raw=doc,
    )


def render_item(level: WmsLevel, *, case_qty: int | None = None) -> dict[str, object]:
    """One inventory item; ``case_qty`` is required when ``level.unit`` is ``CS``."""
    if level.unit not in UNITS:
        raise ValueError(f"unit {level.unit!r} is not one of {', '.join(UNITS)}")
    if level.sequence is None:
        raise ValueError(f"level of {level.wms_sku!r} has no version")
    item: dict[str, object] = {
        "item_code": level.wms_sku,
        "location_code": level.location,
        "uom": level.unit,
    }
    if level.unit == CASE:
        if case_qty is None or case_qty < 1:
            raise ValueError(f"{level.wms_sku!r} is reported in cases but has no case_qty")
        item["case_qty"] = case_qty
    item.update(
        on_hand=_number(level.on_hand),
        damaged=_number(level.damaged),
        qc_hold=_number(level.quality_control),
        inbound=_number(level.incoming),
        version=level.sequence,
    )
    return item


def _items(levels: Sequence[WmsLevel], case_qty: Mapping[str, int]) -> list[dict[str, object]]:
    return [render_item(level, case_qty=case_qty.get(level.wms_sku)) for level in levels]


def render_inventory_page(
    levels: Sequence[WmsLevel],
    *,
    case_qty: Mapping[str, int],
    next_page_token: str | None,
    as_of: datetime,
) -> bytes:
    """One page of ``GET /v1/inventory``."""
    return orjson.dumps(
        {
            "data": _items(levels, case_qty),
            "next_page_token": next_page_token,
            "as_of": _timestamp(as_of),
        }
    )


def render_lookup(
    levels: Sequence[WmsLevel],
    *,
    case_qty: Mapping[str, int],
    not_found: Sequence[str],
    as_of: datetime,
) -> bytes:
    """An answer to ``POST /v1/inventory/lookup``."""
    return orjson.dumps(
        {"data": _items(levels, case_qty), "not_found": list(not_found), "as_of": _timestamp(as_of)}
    )


def render_lookup_request(wms_skus: Sequence[str]) -> bytes:
    """The body of ``POST /v1/inventory/lookup``."""
    return orjson.dumps({"item_codes": list(wms_skus)})


def _line(line: WmsOrderLine) -> dict[str, object]:
    return {"item_code": line.wms_sku, "quantity": _number(line.quantity), "uom": line.unit}


def render_order_request(order: WmsOrder) -> bytes:
    """The body of ``POST /v1/orders``."""
    return orjson.dumps(
        {
            "external_id": order.external_id,
            "lines": [_line(line) for line in order.lines],
            "ship_to": dict(order.ship_to),
        }
    )


def render_order(order: OrderRecord) -> bytes:
    """An order as ``/v1/orders`` endpoints answer it."""
    return orjson.dumps(
        {
            "order_ref": order.order_ref,
            "external_id": order.external_id,
            "status": order.status,
            "lines": [_line(line) for line in order.lines],
        }
    )


def event_type(event: WmsEvent) -> str:
    """The webhook ``type`` an event is sent as."""
    if event.order_ref is not None and event.kind is EventKind.ORDER_STATUS:
        named = {"RECEIVED": "order.created", "CANCELLED": "order.cancelled"}
        return named.get(event.status or "", "order.updated")
    candidates = {**(ORDER_TYPES if event.order_ref is not None else {}), **INVENTORY_TYPES}
    for name, kind in candidates.items():
        if kind is event.kind:
            return name
    raise ValueError(f"no webhook type for a {event.kind.value} event without an order")


def render_event(event: WmsEvent, *, case_qty: Mapping[str, int]) -> bytes:
    """One webhook body."""
    data: dict[str, object] = {"inventory": _items(event.levels, case_qty)}
    if event.order_ref is not None:
        data["order"] = {"order_ref": event.order_ref, "status": event.status}
    return orjson.dumps(
        {
            "id": event.event_id,
            "type": event_type(event),
            "sequence": event.sequence,
            "created_at": _timestamp(event.occurred_at),
            "data": data,
        }
    )


def render_error(code: str, message: str) -> bytes:
    """An error answer."""
    return orjson.dumps({"error": {"code": code, "message": message}})

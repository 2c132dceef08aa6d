"""Our maps of the transaction sets we exchange with the warehouse.

As agreed with the warehouse (segments inside ST…SE)::

    846 Inventory Inquiry/Advice   BIA*00|13*SI*ref*CCYYMMDD          (13: an inquiry)
        per item                   LIN**SK*sku  REF*WS*location  QTY*qualifier*qty*unit
                                   (QTY 17 on hand, 74 damaged, QH on hold, 63 incoming)
    940 Warehouse Shipping Order   W05*N|F*depositor order             (F: cancel it)
                                   N1*ST*name  N3*line1*line2  N4*city*region*postal*country
        per line                   LX*n  W01*qty*unit**SK*sku           then W76*total
    945 Warehouse Shipping Advice  W06*F*depositor order*CCYYMMDD*shipment id
        per line                   LX*n  W12*CC*ordered*shipped*short*unit**SK*sku  W03*total
    947 Inventory Adjustment       W15*CCYYMMDD*adjustment number
        per line                   W19*reason*delta*unit**SK*sku  N9*WS*location
                                   QTY*17*on hand afterwards*unit
    997 Functional Acknowledgment  AK1*group code*group control  (AK2*set*control AK5*status)…
                                   AK9*status*sets*received*accepted

A set that breaks its map (a quantity that is not a number, a missing item id or location)
is a :class:`MalformedPayload` keeping the raw interchange.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal

from stockgraph.connectors.errors import MalformedPayload
from stockgraph.connectors.x12.wire.envelope import (
    COMPONENT,
    FUNCTIONAL_CODES,
    FunctionalGroup,
    Interchange,
    Party,
    Segment,
    TransactionSet,
    control_number,
)

LEVEL_QUANTITIES = {"17": "on_hand", "74": "damaged", "QH": "quality_control", "63": "incoming"}
"""QTY01 qualifiers of an 846 item, and the level each one fills."""
_NUMBER = re.compile(r"-?(?:\d+(?:\.\d*)?|\.\d+)")


@dataclass(frozen=True, slots=True)
class StockItem:
    sku: str
    location: str
    unit: str
    on_hand: Decimal
    damaged: Decimal = Decimal(0)
    quality_control: Decimal = Decimal(0)
    incoming: Decimal = Decimal(0)


@dataclass(frozen=True, slots=True)
class InventoryAdvice:
    """846: what the warehouse holds of each item (a report, or the answer to an inquiry)."""

    reference: str
    reported_on: date
    items: tuple[StockItem, ...]


@dataclass(frozen=True, slots=True)
class InventoryInquiry:
    """846 with purpose 13: asks for an advice of these SKUs (none: every SKU)."""

    reference: str
    reported_on: date
    skus: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class OrderLine:
    sku: str
    quantity: Decimal
    unit: str


@dataclass(frozen=True, slots=True)
class ShippingOrder:
    """940: ship these lines to ``ship_to``; with ``cancel`` set, cancel that order instead."""

    depositor_order: str
    lines: tuple[OrderLine, ...] = ()
    ship_to: Mapping[str, str] = field(default_factory=dict)
    cancel: bool = False


@dataclass(frozen=True, slots=True)
class ShippedLine:
    sku: str
    ordered: Decimal
    shipped: Decimal
    unit: str


@dataclass(frozen=True, slots=True)
class ShippingAdvice:
    """945: what left the warehouse for one order."""

    depositor_order: str
    shipment_id: str
    shipped_on: date
    lines: tuple[ShippedLine, ...]


@dataclass(frozen=True, slots=True)
class AdjustmentLine:
    reason: str
    sku: str
    location: str
    unit: str
    delta: Decimal
    on_hand: Decimal
    """What the location holds after the adjustment."""


@dataclass(frozen=True, slots=True)
class InventoryAdjustment:
    """947: quantity changes the warehouse made, each with the on-hand it left."""

    adjustment_number: str
    adjusted_on: date
    lines: tuple[AdjustmentLine, ...]


@dataclass(frozen=True, slots=True)
class SetAcknowledgment:
    code: str
    control_number: str
    status: str
    """AK5-01: ``A`` accepted, ``E`` accepted with errors, ``R`` rejected."""


@dataclass(frozen=True, slots=True)
class FunctionalAcknowledgment:
    """997: how one functional group was received."""

    functional_code: str
    group_control_number: int
    status: str
    """AK9-01: ``A``, ``E``, ``P`` (partly accepted) or ``R`` (rejected)."""
    sets: tuple[SetAcknowledgment, ...] = ()

    @property
    def accepted(self) -> bool:
        return self.status in ("A", "E")


Document = (
    InventoryAdvice
    | InventoryInquiry
    | ShippingOrder
    | ShippingAdvice
    | InventoryAdjustment
    | FunctionalAcknowledgment
)


@dataclass(frozen=True, slots=True)
class Received:
    """One transaction set of a parsed interchange, with its group and its meaning."""

    group: FunctionalGroup
    transaction_set: TransactionSet
    document: Document


def read_documents(interchange: Interchange) -> list[Received]:
    """Every set of ``interchange`` through our maps; :class:`MalformedPayload` if one fails."""
    received: list[Received] = []
    for group in interchange.groups:
        for ts in group.sets:
            try:
                document = decode(ts, component=interchange.component)
            except (ValueError, IndexError) as exc:
                raise MalformedPayload(
                    f"transaction set {ts.code} #{ts.control_number}: {exc}", raw=interchange.raw
                ) from exc
            received.append(Received(group=group, transaction_set=ts, document=document))
    return received


def build_interchange(
    *,
    sender: Party,
    receiver: Party,
    control_number: int,
    documents: Sequence[Document],
    prepared_at: datetime,
    usage: str = "P",
) -> Interchange:
    """One interchange holding ``documents`` in one functional group (GS06 = ISA13)."""
    bodies = [encode(document) for document in documents]
    functional = {FUNCTIONAL_CODES[code] for code, _ in bodies}
    if len(functional) != 1:
        raise ValueError("one interchange carries documents of one functional group")
    sets = tuple(
        TransactionSet(code=code, control_number=f"{n:04d}", body=body)
        for n, (code, body) in enumerate(bodies, start=1)
    )
    group = FunctionalGroup(functional.pop(), control_number, sets)
    return Interchange(sender, receiver, control_number, prepared_at, (group,), usage)


def encode(document: Document) -> tuple[str, tuple[Segment, ...]]:
    """A document's transaction set code and the segments between its ST and SE."""
    match document:
        case InventoryAdvice() | InventoryInquiry():
            return "846", _write_846(document)
        case ShippingOrder():
            return "940", _write_940(document)
        case ShippingAdvice():
            return "945", _write_945(document)
        case InventoryAdjustment():
            return "947", _write_947(document)
        case FunctionalAcknowledgment():
            return "997", _write_997(document)


def decode(ts: TransactionSet, *, component: str = COMPONENT) -> Document:
    """One transaction set through its map; ``ValueError`` when the set breaks it."""
    readers = {"846": _read_846, "940": _read_940, "945": _read_945, "947": _read_947}
    if ts.code == "997":
        return _read_997(ts.body)
    if ts.code not in readers:
        raise ValueError(f"unknown transaction set {ts.code!r}")
    return readers[ts.code](ts.body, component)


def _write_846(doc: InventoryAdvice | InventoryInquiry) -> tuple[Segment, ...]:
    day = f"{doc.reported_on:%Y%m%d}"
    if isinstance(doc, InventoryInquiry):
        return (("BIA", "13", "SI", doc.reference, day), *(("LIN", "", "SK", s) for s in doc.skus))
    out: list[Segment] = [("BIA", "00", "SI", doc.reference, day)]
    for item in doc.items:
        out += [("LIN", "", "SK", item.sku), ("REF", "WS", item.location)]
        for qualifier, name in LEVEL_QUANTITIES.items():
            value: Decimal = getattr(item, name)
            if qualifier == "17" or value:
                out.append(("QTY", qualifier, _num(value), item.unit))
    return tuple(out)


def _read_846(body: tuple[Segment, ...], component: str) -> InventoryAdvice | InventoryInquiry:
    head, loops = _loops(body, "LIN")
    bia = _first(head, "BIA")
    reference, day = _el(bia, 3), _date(_need(bia, 4, "BIA04"))
    if _need(bia, 1, "BIA01") == "13":
        return InventoryInquiry(reference, day, tuple(_product(loop[0], 2) for loop in loops))
    items = []
    for loop in loops:
        sku = _product(loop[0], 2)
        refs = [s for s in loop if s[0] == "REF" and _el(s, 1) == "WS"]
        if not refs:
            raise ValueError(f"item {sku!r} has no location (REF*WS)")
        amounts: dict[str, Decimal] = {}
        units = set()
        for s in loop:
            if s[0] == "QTY" and _el(s, 1) in LEVEL_QUANTITIES:
                amounts[LEVEL_QUANTITIES[s[1]]] = _number(_need(s, 2, "QTY02"), sku)
                units.add(_el(s, 3).split(component)[0])
        if "on_hand" not in amounts or len(units) != 1 or "" in units:
            raise ValueError(f"item {sku!r} needs QTY*17 and one unit of measure")
        location = _need(refs[0], 2, "REF02")
        items.append(StockItem(sku, location, units.pop(), **amounts))
    return InventoryAdvice(reference, day, tuple(items))


_ADDRESS = (("N3", ("line1", "line2")), ("N4", ("city", "region", "postal_code", "country")))


def _write_940(doc: ShippingOrder) -> tuple[Segment, ...]:
    out: list[Segment] = [("W05", "F" if doc.cancel else "N", doc.depositor_order)]
    if doc.ship_to:
        out.append(("N1", "ST", doc.ship_to.get("name", "")))
        for tag, keys in _ADDRESS:
            if any(doc.ship_to.get(k) for k in keys):
                out.append((tag, *(doc.ship_to.get(k, "") for k in keys)))
    for n, line in enumerate(doc.lines, start=1):
        out += [("LX", str(n)), ("W01", _num(line.quantity), line.unit, "", "SK", line.sku)]
    if doc.lines:
        out.append(("W76", _num(sum((line.quantity for line in doc.lines), Decimal(0)))))
    return tuple(out)


def _read_940(body: tuple[Segment, ...], component: str) -> ShippingOrder:
    w05 = _first(body, "W05")
    ship_to: dict[str, str] = {}
    for s in body:
        if s[0] == "N1" and _el(s, 1) == "ST":
            ship_to["name"] = _el(s, 2)
        for tag, keys in _ADDRESS:
            if s[0] == tag:
                ship_to.update({k: v for k, v in zip(keys, s[1:], strict=False) if v})
    lines = []
    for s in body:
        if s[0] == "W01":
            sku = _product(s, 4)
            lines.append(OrderLine(sku, _number(_need(s, 1, "W0101"), sku), _need(s, 2, "W0102")))
    totals = [s for s in body if s[0] == "W76"]
    if totals and _number(_need(totals[0], 1, "W7601"), "W76") != sum(
        (line.quantity for line in lines), Decimal(0)
    ):
        raise ValueError("W76 total does not match the lines")
    cancel = _need(w05, 1, "W0501") == "F"
    if not lines and not cancel:
        raise ValueError("a shipping order without lines")
    return ShippingOrder(_need(w05, 2, "W0502"), tuple(lines), ship_to, cancel)


def _write_945(doc: ShippingAdvice) -> tuple[Segment, ...]:
    out: list[Segment] = [
        ("W06", "F", doc.depositor_order, f"{doc.shipped_on:%Y%m%d}", doc.shipment_id)
    ]
    for n, line in enumerate(doc.lines, start=1):
        short = _num(line.ordered - line.shipped)
        shipped = (_num(line.ordered), _num(line.shipped), short, line.unit, "", "SK", line.sku)
        out += [("LX", str(n)), ("W12", "CC", *shipped)]
    out.append(("W03", _num(sum((line.shipped for line in doc.lines), Decimal(0)))))
    return tuple(out)


def _read_945(body: tuple[Segment, ...], component: str) -> ShippingAdvice:
    w06 = _first(body, "W06")
    lines = []
    for s in body:
        if s[0] == "W12":
            sku = _product(s, 7)
            ordered, shipped = (
                _number(_need(s, 2, "W1202"), sku),
                _number(_need(s, 3, "W1203"), sku),
            )
            lines.append(ShippedLine(sku, ordered, shipped, _need(s, 5, "W1205")))
    day = _date(_need(w06, 3, "W0603"))
    return ShippingAdvice(_need(w06, 2, "W0602"), _el(w06, 4), day, tuple(lines))


def _write_947(doc: InventoryAdjustment) -> tuple[Segment, ...]:
    out: list[Segment] = [("W15", f"{doc.adjusted_on:%Y%m%d}", doc.adjustment_number)]
    for line in doc.lines:
        out += [
            ("W19", line.reason, _num(line.delta), line.unit, "", "SK", line.sku),
            ("N9", "WS", line.location),
            ("QTY", "17", _num(line.on_hand), line.unit),
        ]
    return tuple(out)


def _read_947(body: tuple[Segment, ...], component: str) -> InventoryAdjustment:
    head, loops = _loops(body, "W19")
    w15 = _first(head, "W15")
    lines = []
    for loop in loops:
        w19, sku = loop[0], _product(loop[0], 5)
        locations = [_el(s, 2) for s in loop if s[0] == "N9" and _el(s, 1) == "WS"]
        after = [s for s in loop if s[0] == "QTY" and _el(s, 1) == "17"]
        if not locations or not locations[0] or not after:
            raise ValueError(f"adjustment of {sku!r} needs N9*WS and QTY*17")
        delta = _number(_need(w19, 2, "W1902"), sku)
        on_hand = _number(_need(after[0], 2, "QTY02"), sku)
        lines.append(
            AdjustmentLine(
                _need(w19, 1, "W1901"), sku, locations[0], _need(w19, 3, "W1903"), delta, on_hand
            )
        )
    if not lines:
        raise ValueError("an adjustment advice without W19 lines")
    return InventoryAdjustment(_el(w15, 2), _date(_need(w15, 1, "W1501")), tuple(lines))


def _write_997(doc: FunctionalAcknowledgment) -> tuple[Segment, ...]:
    out: list[Segment] = [("AK1", doc.functional_code, str(doc.group_control_number))]
    for ack in doc.sets:
        out += [("AK2", ack.code, ack.control_number), ("AK5", ack.status)]
    accepted = sum(ack.status in ("A", "E") for ack in doc.sets)
    count = str(len(doc.sets))
    return (*out, ("AK9", doc.status, count, count, str(accepted)))


def _read_997(body: tuple[Segment, ...]) -> FunctionalAcknowledgment:
    ak1, ak9 = _first(body, "AK1"), _first(body, "AK9")
    sets = []
    pending: Segment | None = None
    for s in body:
        if s[0] == "AK2":
            pending = s
        elif s[0] == "AK5" and pending is not None:
            sets.append(SetAcknowledgment(_el(pending, 1), _el(pending, 2), _need(s, 1, "AK501")))
            pending = None
    group = control_number(_need(ak1, 2, "AK102"), "AK102")
    return FunctionalAcknowledgment(
        _need(ak1, 1, "AK101"), group, _need(ak9, 1, "AK901"), tuple(sets)
    )


def _el(segment: Segment, position: int) -> str:
    return segment[position] if position < len(segment) else ""


def _need(segment: Segment, position: int, name: str) -> str:
    if not (value := _el(segment, position)):
        raise ValueError(f"{name} is missing")
    return value


def _first(segments: Sequence[Segment], tag: str) -> Segment:
    for segment in segments:
        if segment[0] == tag:
            return segment
    raise ValueError(f"no {tag} segment")


def _loops(body: Sequence[Segment], start: str) -> tuple[list[Segment], list[list[Segment]]]:
    """The segments before the first ``start``, and each loop that ``start`` opens."""
    head: list[Segment] = []
    loops: list[list[Segment]] = []
    for segment in body:
        if segment[0] == start:
            loops.append([segment])
        elif loops:
            loops[-1].append(segment)
        else:
            head.append(segment)
    return head, loops


def _product(segment: Segment, position: int) -> str:
    """The item id from the qualifier/id pairs starting at ``position``: SK first."""
    if position + 1 < len(segment) and segment[position] == "SK" and segment[position + 1]:
        return segment[position + 1]  # the usual LIN: its first pair is the SKU
    pairs = [(segment[i], _el(segment, i + 1)) for i in range(position, len(segment), 2)]
    ids = [value for qualifier, value in pairs if qualifier == "SK" and value]
    ids += [value for _, value in pairs if value]
    if not ids:
        raise ValueError(f"{segment[0]} names no item")
    return ids[0]


def _number(value: str, what: str) -> Decimal:
    if not _NUMBER.fullmatch(value):
        raise ValueError(f"quantity {value!r} of {what} is not a number")
    return Decimal(value)


def _num(value: Decimal) -> str:
    if not value.is_finite():
        raise ValueError(f"{value} is not a quantity")
    return format(value, "f")


def _date(value: str) -> date:
    return datetime.strptime(value, "%Y%m%d").replace(tzinfo=UTC).date()

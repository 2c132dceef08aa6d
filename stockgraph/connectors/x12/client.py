"""The ``x12`` dialect's connector: an EDI warehouse reached through an HTTP mailbox.

The mailbox has two doors (HTTP Basic credentials on both)::

    GET  /mailbox/outbound?after=&limit=   what the warehouse produced since ``after``,
                                           oldest first: {"documents": [{"id", "body"}],
                                           "cursor"}
    POST /mailbox/inbound                  one X12 interchange we send; answered
                                           {"id", "acknowledgment", "reply"}: the
                                           warehouse's 997 for our group and, for an 846
                                           inquiry, the 846 that answers it

Ordering: each interchange the warehouse sends has a larger ISA13 than the one before, so
an event's ``sequence`` is ISA13 * 1000 + the position of its transaction set in the
interchange, and a level's ``sequence`` is its 846's.

Levels (:meth:`X12Connector.fetch_levels`, :meth:`X12Connector.list_levels`) come from an
846 inquiry posted to the inbound door, answered by an 846 of the warehouse's current
state. We chose that over the newest 846 in the outbound mailbox, which may be hours old
and can only be found by reading the whole mailbox.

Budgets: reading the outbound mailbox is the poll, held to the poll interval
(``SPEC.rate``); whatever is posted to the inbound door (846 inquiries, 940s, 997s) spends
the separate inquiry limit (``SPEC.inquiries``), so a live read is not refused because the
mailbox was polled a moment ago.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from stockgraph.connectors.base import DialectSpec, EventKind, WmsEvent, WmsLevel, WmsOrder
from stockgraph.connectors.errors import FatalError, MalformedPayload
from stockgraph.connectors.runtime import InstanceRuntime
from stockgraph.connectors.x12.spec import SPEC, X12Config
from stockgraph.connectors.x12.wire import (
    ControlNumbers,
    Document,
    FunctionalAcknowledgment,
    Interchange,
    InventoryAdjustment,
    InventoryAdvice,
    InventoryInquiry,
    OrderLine,
    Party,
    Received,
    SetAcknowledgment,
    ShippingAdvice,
    ShippingOrder,
    build_interchange,
    parse_interchange,
    read_documents,
    render_interchange,
)

SETS_PER_INTERCHANGE = 1000
"""Sequence room per interchange: set ``n`` of interchange ``c`` is ``c * 1000 + n``."""
SHIPPED = "SHIPPED"
_EDI = {"Content-Type": "application/edi-x12"}
_Answer = TypeVar("_Answer", bound=BaseModel)


class _Document(BaseModel):
    id: str
    body: str


class _Page(BaseModel):
    documents: list[_Document]
    cursor: str | None = None


class _Receipt(BaseModel):
    id: str
    acknowledgment: str | None = None
    reply: str | None = None


class X12Connector:
    """An EDI warehouse behind ``runtime``, which it owns and closes.

    Nothing is pushed: :meth:`poll_events` reads the outbound mailbox. 846 advices become
    ``SNAPSHOT`` events, 947 adjustments ``ADJUSTMENT`` events (each line carrying the
    on-hand it left), 945 shipping advices ``SHIPMENT`` events with the order's new status.
    The warehouse knows our orders by their depositor order number (W05-02), and quotes it
    back in its 945s (W06-02), so that number is the order ref.
    """

    spec: DialectSpec = SPEC

    def __init__(
        self,
        *,
        config: X12Config,
        runtime: InstanceRuntime,
        control_numbers: ControlNumbers | None = None,
    ) -> None:
        self.config = config
        self._runtime = runtime
        self._numbers = control_numbers or ControlNumbers()
        self._auth = (config.username, config.password.get_secret_value())
        self._us = Party(config.our_id, config.our_qualifier)
        self._them = Party(config.their_id, config.their_qualifier)

    async def poll_events(self, after: str | None) -> tuple[Sequence[WmsEvent], str | None]:
        """Events of the documents after ``after``, each acknowledged with a 997.

        A document that cannot be read stops the poll there, unacknowledged: the events
        before it come back with the cursor just before it, and the next poll raises
        :class:`MalformedPayload` holding its raw text and the cursor just past it.
        """
        params = {"limit": str(self.config.page_size)}
        if after is not None:
            params["after"] = after
        response = await self._runtime.request(
            "GET", "/mailbox/outbound", params=params, auth=self._auth
        )
        page = self._read(_Page, response.content)
        events: list[WmsEvent] = []
        acknowledgments: list[FunctionalAcknowledgment] = []
        cursor = after
        for document in page.documents:
            raw = document.body.encode("utf-8")
            try:
                interchange, received = self._accept(raw)
                events += self._events(interchange, received, mailbox_id=document.id)
            except MalformedPayload as exc:
                if cursor != after:
                    return events, cursor
                raise MalformedPayload(
                    f"mailbox document {document.id}: {exc}",
                    raw=raw,
                    instance_id=self._runtime.instance_id,
                    resume_after=document.id,
                ) from exc
            acknowledgments += _acknowledge(interchange)
            cursor = document.id
        if acknowledgments:
            await self._post(acknowledgments)
        if page.documents:
            return events, cursor
        return events, page.cursor or after

    async def fetch_levels(self, wms_skus: Sequence[str]) -> Sequence[WmsLevel]:
        """Levels of up to ``spec.max_batch`` SKUs from one 846 inquiry and its answer."""
        if len(wms_skus) > self.spec.max_batch:
            raise ValueError(f"{len(wms_skus)} SKUs asked for; one 846 takes {self.spec.max_batch}")
        if not wms_skus:
            return []
        wanted = set(wms_skus)
        return [level for level in await self._inquire(tuple(wms_skus)) if level.wms_sku in wanted]

    async def list_levels(self, cursor: str | None) -> tuple[Sequence[WmsLevel], str | None]:
        """Every level the warehouse holds, from one 846 of all its items: a single page."""
        return await self._inquire(()), None

    def parse_webhook(self, body: bytes) -> Sequence[WmsEvent]:
        """Always :class:`FatalError`: this dialect never pushes; poll its mailbox."""
        raise FatalError(
            "the x12 dialect does not push; its events come from polling the mailbox",
            instance_id=self._runtime.instance_id,
        )

    async def submit_order(self, order: WmsOrder) -> str:
        """Send a 940 and return its depositor order number once the warehouse accepts it."""
        lines = tuple(OrderLine(line.wms_sku, line.quantity, line.unit) for line in order.lines)
        await self._send(ShippingOrder(order.external_id, lines, dict(order.ship_to)))
        return order.external_id

    async def cancel_order(self, order_ref: str) -> None:
        """Send a 940 with order status F (cancel); :class:`FatalError` if it is refused."""
        await self._send(ShippingOrder(order_ref, cancel=True))

    async def aclose(self) -> None:
        """Close the runtime and its connections."""
        await self._runtime.aclose()

    async def _inquire(self, skus: tuple[str, ...]) -> list[WmsLevel]:
        number = self._numbers.next()
        inquiry = InventoryInquiry(f"INQ{number}", datetime.now(UTC).date(), skus)
        receipt = await self._send(inquiry, control_number=number)
        if receipt.reply is None:
            raise MalformedPayload(
                "the mailbox answered an 846 inquiry without an 846",
                raw=receipt.model_dump_json().encode(),
                instance_id=self._runtime.instance_id,
            )
        interchange, received = self._accept(receipt.reply.encode("utf-8"))
        levels: list[WmsLevel] = []
        for position, item in enumerate(received, start=1):
            if isinstance(item.document, InventoryAdvice):
                sequence = self._sequence(interchange, position)
                levels += _levels(item.document, sequence, interchange.prepared_at)
        return levels

    async def _send(self, document: Document, *, control_number: int | None = None) -> _Receipt:
        """Post one document; the warehouse's 997 must accept it."""
        number = control_number or self._numbers.next()
        receipt = await self._post([document], control_number=number)
        if receipt.acknowledgment is None:
            raise MalformedPayload(
                f"no 997 for interchange {number}",
                raw=receipt.model_dump_json().encode(),
                instance_id=self._runtime.instance_id,
            )
        raw = receipt.acknowledgment.encode("utf-8")
        answers = [
            item.document
            for item in self._accept(raw)[1]
            if isinstance(item.document, FunctionalAcknowledgment)
            and item.document.group_control_number == number
        ]
        if not answers:
            raise MalformedPayload(
                f"the 997 does not acknowledge group {number}",
                raw=raw,
                instance_id=self._runtime.instance_id,
            )
        if not answers[0].accepted:
            refused = ", ".join(
                f"{s.code} #{s.control_number}: {s.status}" for s in answers[0].sets
            )
            raise FatalError(
                f"the warehouse rejected interchange {number} ({refused or answers[0].status})",
                instance_id=self._runtime.instance_id,
            )
        return receipt

    async def _post(
        self, documents: Sequence[Document], *, control_number: int | None = None
    ) -> _Receipt:
        interchange = build_interchange(
            sender=self._us,
            receiver=self._them,
            control_number=control_number or self._numbers.next(),
            documents=documents,
            prepared_at=datetime.now(UTC),
            usage=self.config.usage,
        )
        try:
            body = render_interchange(interchange)
        except ValueError as exc:
            raise FatalError(
                f"cannot be written as X12: {exc}", instance_id=self._runtime.instance_id
            ) from exc
        response = await self._runtime.request(
            "POST", "/mailbox/inbound", content=body, headers=_EDI, auth=self._auth, inquiry=True
        )
        return self._read(_Receipt, response.content)

    def _accept(self, raw: bytes) -> tuple[Interchange, list[Received]]:
        """Read an interchange from the warehouse, addressed to us, through our maps."""
        try:
            interchange = parse_interchange(raw)
            received = read_documents(interchange)
        except MalformedPayload as exc:
            exc.instance_id = self._runtime.instance_id
            raise
        if (interchange.sender.id, interchange.receiver.id) != (self._them.id, self._us.id):
            raise MalformedPayload(
                f"interchange {interchange.control_number} goes from "
                f"{interchange.sender.id!r} to {interchange.receiver.id!r}, "
                f"not from {self._them.id!r} to {self._us.id!r}",
                raw=raw,
                instance_id=self._runtime.instance_id,
            )
        return interchange, received

    def _sequence(self, interchange: Interchange, position: int) -> int:
        if position >= SETS_PER_INTERCHANGE:
            raise MalformedPayload(
                f"interchange {interchange.control_number} holds {position} or more sets",
                raw=interchange.raw,
                instance_id=self._runtime.instance_id,
            )
        return interchange.control_number * SETS_PER_INTERCHANGE + position

    def _read(self, model: type[_Answer], body: bytes) -> _Answer:
        try:
            return model.model_validate_json(body)
        except ValidationError as exc:
            raise MalformedPayload(
                f"unexpected mailbox answer: {exc.error_count()} problems",
                raw=body,
                instance_id=self._runtime.instance_id,
            ) from exc

    def _events(
        self, interchange: Interchange, received: list[Received], *, mailbox_id: str
    ) -> list[WmsEvent]:
        events: list[WmsEvent] = []
        at = interchange.prepared_at
        for position, item in enumerate(received, start=1):
            ts = item.transaction_set
            sequence = self._sequence(interchange, position)
            event_id = f"{interchange.sender.id}-{interchange.control_number}-{ts.control_number}"
            raw: dict[str, object] = {
                "mailbox_id": mailbox_id,
                "transaction_set": ts.code,
                "interchange": interchange.control_number,
                "group": item.group.control_number,
                "set": ts.control_number,
            }
            match item.document:
                case InventoryAdvice() as advice:
                    raw["reference"] = advice.reference
                    levels = tuple(_levels(advice, sequence, at))
                    kind, order_ref, status = EventKind.SNAPSHOT, None, None
                case InventoryAdjustment() as adjustment:
                    raw["adjustment_number"] = adjustment.adjustment_number
                    raw["reasons"] = [line.reason for line in adjustment.lines]
                    latest = {
                        (line.sku, line.location): WmsLevel(
                            wms_sku=line.sku,
                            location=line.location,
                            unit=line.unit,
                            on_hand=line.on_hand,
                            sequence=sequence,
                            observed_at=at,
                        )
                        for line in adjustment.lines
                    }
                    levels = tuple(latest.values())
                    kind, order_ref, status = EventKind.ADJUSTMENT, None, None
                case ShippingAdvice() as shipment:
                    raw["shipment_id"] = shipment.shipment_id
                    levels = ()
                    kind, order_ref, status = EventKind.SHIPMENT, shipment.depositor_order, SHIPPED
                case _:
                    continue
            events.append(
                WmsEvent(
                    event_id=event_id,
                    sequence=sequence,
                    kind=kind,
                    occurred_at=at,
                    levels=levels,
                    order_ref=order_ref,
                    status=status,
                    raw=raw,
                )
            )
        return events


def _acknowledge(interchange: Interchange) -> list[FunctionalAcknowledgment]:
    """A 997 accepting each of the interchange's groups (997s are never acknowledged)."""
    return [
        FunctionalAcknowledgment(
            group.functional_code,
            group.control_number,
            "A",
            tuple(SetAcknowledgment(ts.code, ts.control_number, "A") for ts in group.sets),
        )
        for group in interchange.groups
        if group.functional_code != "FA"
    ]


def _levels(advice: InventoryAdvice, sequence: int, at: datetime) -> list[WmsLevel]:
    return [
        WmsLevel(
            wms_sku=item.sku,
            location=item.location,
            unit=item.unit,
            on_hand=item.on_hand,
            damaged=item.damaged,
            quality_control=item.quality_control,
            incoming=item.incoming,
            sequence=sequence,
            observed_at=at,
        )
        for item in advice.items
    ]

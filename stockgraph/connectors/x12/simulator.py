"""An EDI warehouse's HTTP mailbox over a ``SimulatedWms``.

Endpoints (HTTP Basic credentials on the mailbox, 401 otherwise)::

    GET  /mailbox/outbound?after=&limit=   X12 documents the warehouse produced, oldest first
    POST /mailbox/inbound                  940s, 846 inquiries and 997s from the depositor
    /_control/*                            faults, activity, state (no credentials needed)

What the warehouse writes to its outbound mailbox, from the ``SimulatedWms``'s events: a
full 846 when the app is built and again every ``snapshot_every`` events; a 947 for each
receipt, adjustment, pick and count (W19 delta, QTY*17 on hand afterwards); a 945 for each
shipment. Packing and order acknowledgements produce no document. Every interchange takes
the next control number (ISA13 = GS06) from one counter, so they rise in the order written.

What it does with what it receives: a 940 places (W05 N) or cancels (W05 F) an order keyed
by its depositor order number, in eaches (``EA``) only; an 846 inquiry is answered with an
846 of the SKUs asked for; each of those groups gets a 997 in the answer, rejecting the
sets it could not apply. A 997 from the depositor is recorded in ``acknowledged``.

Every mailbox request passes the fault gate first, and every X12 body it hands out passes
its ``garble``. The :class:`Mailbox` is on ``app.state.mailbox``.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from stockgraph.connectors.errors import MalformedPayload
from stockgraph.connectors.simulation import FaultGate, SimEvent, SimulatedWms, control_routes
from stockgraph.connectors.x12.spec import MAX_PAGE_SIZE
from stockgraph.connectors.x12.wire import (
    AdjustmentLine,
    ControlNumbers,
    Document,
    FunctionalAcknowledgment,
    InventoryAdjustment,
    InventoryAdvice,
    InventoryInquiry,
    Party,
    Received,
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

EACH = "EA"
REASONS = {"RECEIPT": "56", "CYCLE_COUNT": "AA", "RETURN": "56"}
"""W19-01 per event kind; other stock changes are book adjustments, up (56) or down (55)."""
_ADJUSTED = {"RECEIPT", "ADJUSTMENT", "PICK", "CYCLE_COUNT", "RETURN"}


@dataclass(frozen=True, slots=True)
class MailboxDocument:
    id: int
    control_number: int
    transaction_set: str
    body: bytes


class Mailbox:
    """The warehouse's side of the exchange: what it wrote, received and had acknowledged."""

    def __init__(
        self, *, wms: SimulatedWms, warehouse: Party, depositor: Party, snapshot_every: int
    ) -> None:
        self.wms = wms
        self.warehouse = warehouse
        self.depositor = depositor
        self.snapshot_every = snapshot_every
        self.outbound: list[MailboxDocument] = []
        self.received: list[bytes] = []
        self.acknowledged: set[int] = set()
        """Group control numbers the depositor's 997s accepted."""
        self.rejected: set[int] = set()
        self._numbers = ControlNumbers(start=1)
        self._published = {key: cell.on_hand for key, cell in wms.cells.items()}
        self._since_snapshot = 0

    def write(self, documents: Sequence[Document]) -> tuple[int, bytes]:
        """One interchange to the depositor: its control number and its text."""
        number = self._numbers.next()
        interchange = build_interchange(
            sender=self.warehouse,
            receiver=self.depositor,
            control_number=number,
            documents=documents,
            prepared_at=datetime.now(UTC),
        )
        return number, render_interchange(interchange)

    def post(self, document: Document, code: str) -> MailboxDocument:
        number, body = self.write([document])
        entry = MailboxDocument(len(self.outbound) + 1, number, code, body)
        self.outbound.append(entry)
        return entry

    def advice(self, skus: Sequence[str] = ()) -> InventoryAdvice:
        """An 846 of ``skus`` (all of them when empty) at every location that holds them."""
        held = self.wms.cells_of(skus) if skus else sorted(self.wms.cells.items())
        items = tuple(
            StockItem(
                sku,
                location,
                EACH,
                Decimal(cell.on_hand),
                Decimal(cell.damaged),
                Decimal(cell.quality_control),
                Decimal(cell.incoming),
            )
            for (sku, location), cell in held
        )
        return InventoryAdvice(f"SNAP{self.wms.sequence}", datetime.now(UTC).date(), items)

    def snapshot(self) -> MailboxDocument:
        self._since_snapshot = 0
        for key, cell in self.wms.cells.items():
            self._published[key] = cell.on_hand
        return self.post(self.advice(), "846")

    async def on_event(self, event: SimEvent) -> None:
        """The ``SimulatedWms`` listener: write what this event means to the depositor."""
        today = event.occurred_at.date()
        if event.kind in _ADJUSTED and event.levels:
            lines = []
            for level in event.levels:
                key = (level["sku"], level["location"])
                delta = level["on_hand"] - self._published.get(key, 0)
                self._published[key] = level["on_hand"]
                reason = REASONS.get(event.kind, "56" if delta >= 0 else "55")
                lines.append(
                    AdjustmentLine(reason, *key, EACH, Decimal(delta), Decimal(level["on_hand"]))
                )
            self.post(InventoryAdjustment(event.event_id, today, tuple(lines)), "947")
        elif event.kind == "SHIPMENT" and event.order_ref in self.wms.orders:
            order = self.wms.orders[event.order_ref]
            shipped = tuple(
                ShippedLine(sku, Decimal(qty), Decimal(qty), EACH) for sku, qty in order.lines
            )
            self.post(ShippingAdvice(order.external_id, order.ref, today, shipped), "945")
        self._since_snapshot += 1
        if self._since_snapshot >= self.snapshot_every:
            self.snapshot()

    async def receive(self, raw: bytes) -> dict[str, str]:
        """Apply an interchange from the depositor; the answer's fields (997, 846 reply)."""
        interchange = parse_interchange(raw)
        if interchange.receiver.id != self.warehouse.id:
            raise MalformedPayload(f"addressed to {interchange.receiver.id!r}", raw=raw)
        received = read_documents(interchange)
        self.received.append(raw)
        answer = {"id": f"in-{len(self.received)}"}
        replies: list[Document] = []
        statuses: dict[int, list[SetAcknowledgment]] = {}
        for item in received:
            status = await self._apply(item, replies)
            if status is not None:
                ack = SetAcknowledgment(
                    item.transaction_set.code, item.transaction_set.control_number, status
                )
                statuses.setdefault(item.group.control_number, []).append(ack)
        if statuses:
            acks = [
                FunctionalAcknowledgment(
                    group.functional_code,
                    group.control_number,
                    _group_status(statuses[group.control_number]),
                    tuple(statuses[group.control_number]),
                )
                for group in interchange.groups
                if group.control_number in statuses
            ]
            answer["acknowledgment"] = self.write(acks)[1].decode("ascii")
        if replies:
            answer["reply"] = self.write(replies)[1].decode("ascii")
        return answer

    async def _apply(self, item: Received, replies: list[Document]) -> str | None:
        """Apply one set; its AK5 status, or None for a 997 (never acknowledged)."""
        document = item.document
        if isinstance(document, FunctionalAcknowledgment):
            target = self.acknowledged if document.accepted else self.rejected
            target.add(document.group_control_number)
            return None
        if isinstance(document, InventoryInquiry):
            replies.append(self.advice(document.skus))
            return "A"
        if isinstance(document, ShippingOrder) and document.cancel:
            orders = [
                o for o in self.wms.orders.values() if o.external_id == document.depositor_order
            ]
            if not orders:
                return "R"
            try:
                await self.wms.cancel_order(orders[0].ref)
            except ValueError:
                return "R"
            return "A"
        if isinstance(document, ShippingOrder):
            lines = [(line.sku, line.quantity) for line in document.lines]
            units = {line.unit for line in document.lines}
            if units != {EACH} or any(q != q.to_integral_value() or q <= 0 for _, q in lines):
                return "R"
            await self.wms.submit_order(
                document.depositor_order, [(sku, int(q)) for sku, q in lines]
            )
            return "A"
        return "R"


def _group_status(acks: Sequence[SetAcknowledgment]) -> str:
    accepted = sum(ack.status == "A" for ack in acks)
    if accepted == len(acks):
        return "A"
    return "P" if accepted else "R"


def build_simulator(
    *,
    wms: SimulatedWms,
    username: str,
    password: str,
    interchange_ids: tuple[str, str],
    snapshot_every: int = 50,
) -> Starlette:
    """The mailbox app. ``interchange_ids`` is (the warehouse's ISA id, the depositor's).

    The app writes its first 846 here and listens to ``wms`` from now on: build it once
    per ``SimulatedWms``.
    """
    if snapshot_every < 1:
        raise ValueError("snapshot_every must be at least 1")
    warehouse_id, depositor_id = interchange_ids
    mailbox = Mailbox(
        wms=wms,
        warehouse=Party(warehouse_id),
        depositor=Party(depositor_id),
        snapshot_every=snapshot_every,
    )
    gate = FaultGate(wms.faults, wms.rng)
    expected = f"{username}:{password}".encode()

    def authorised(request: Request) -> bool:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        try:
            given = base64.b64decode(token, validate=True)
        except (binascii.Error, ValueError):
            return False
        return scheme.lower() == "basic" and hmac.compare_digest(given, expected)

    def guard(request: Request) -> Response | None:
        if not authorised(request):
            return JSONResponse(
                {"error": "unauthorised"},
                status_code=401,
                headers={"WWW-Authenticate": 'Basic realm="mailbox"'},
            )
        return None

    async def outbound(request: Request) -> Response:
        return await gate.answer(lambda: read_outbound(request))

    async def read_outbound(request: Request) -> Response:
        if (refusal := guard(request)) is not None:
            return refusal
        try:
            after = int(request.query_params.get("after", "0"))
            limit = int(request.query_params.get("limit", "100"))
        except ValueError:
            return JSONResponse({"error": "after and limit are numbers"}, status_code=400)
        limit = max(1, min(limit, MAX_PAGE_SIZE))
        page = [doc for doc in mailbox.outbound if doc.id > after][:limit]
        documents = [
            {
                "id": str(doc.id),
                "transaction_set": doc.transaction_set,
                "body": gate.garble(doc.body).decode("utf-8", errors="replace"),
            }
            for doc in page
        ]
        cursor = str(page[-1].id if page else after)
        return JSONResponse({"documents": documents, "cursor": cursor})

    async def inbound(request: Request) -> Response:
        return await gate.answer(lambda: receive(request))

    async def receive(request: Request) -> Response:
        if (refusal := guard(request)) is not None:
            return refusal
        try:
            answer = await mailbox.receive(await request.body())
        except MalformedPayload as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        for name in ("acknowledgment", "reply"):
            if name in answer:
                answer[name] = gate.garble(answer[name].encode()).decode(errors="replace")
        return JSONResponse(answer)

    mailbox.snapshot()
    wms.listeners.append(mailbox.on_event)
    app = Starlette(
        routes=[
            Route("/mailbox/outbound", outbound, methods=["GET"]),
            Route("/mailbox/inbound", inbound, methods=["POST"]),
            *control_routes(wms, gate),
        ]
    )
    app.state.mailbox = mailbox
    return app

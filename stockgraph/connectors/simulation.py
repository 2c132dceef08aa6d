"""What every dialect's simulator shares: a warehouse's state, faults, and a webhook pusher.

A simulator is a real HTTP app with its own wire format (each dialect's ``simulator.py``);
underneath, :class:`SimulatedWms` holds what a warehouse holds — stock per (WMS SKU,
location) in eaches, orders, and a log of events numbered by one sequence — and
:class:`Faults` says how badly it should behave right now; :class:`WebhookPusher` pushes its
events through those faults, each retried until acknowledged
(:mod:`stockgraph.connectors.delivery`). Nothing here knows Stockgraph's SKUs or tenants: a
simulator only speaks its WMS's own codes.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from stockgraph.connectors.delivery import DeliveryRecord, RetrySchedule, WebhookSender

ORDER_FLOW = ("RECEIVED", "PICKED", "PACKED", "SHIPPED")


@dataclass
class Faults:
    """Misbehaviour on command; every rate is a probability from 0 to 1."""

    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    error_rate: float = 0.0
    """Requests answered 503."""
    burst_429: int = 0
    """The next N requests are answered 429 with Retry-After."""
    retry_after_s: float = 1.0
    malformed_rate: float = 0.0
    """Answers and pushed bodies replaced by garbage."""
    drop_rate: float = 0.0
    """Webhooks never sent."""
    duplicate_rate: float = 0.0
    """Webhooks sent twice."""
    reorder_rate: float = 0.0
    """Webhooks held back and sent after the next one."""
    drift_rate: float = 0.0
    """Activity that changes stock without any event (lost scans, theft)."""
    send_failure_rate: float = 0.0
    """Webhook attempts that fail in transit, half before reaching Stockgraph and half on
    the way back (Stockgraph kept it, the sender never heard); the sender retries."""

    def update(self, changes: Mapping[str, Any]) -> None:
        known = {f.name: f.type for f in fields(self)}
        for name, value in changes.items():
            if name not in known:
                raise ValueError(f"unknown fault {name!r}; known: {', '.join(known)}")
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                raise ValueError(f"fault {name!r} takes a number >= 0")
            if name.endswith("_rate") and value > 1:
                raise ValueError(f"fault {name!r} is a probability between 0 and 1")
            setattr(self, name, int(value) if name == "burst_429" else float(value))


@dataclass
class Cell:
    """One SKU at one location, in eaches."""

    on_hand: int = 0
    damaged: int = 0
    quality_control: int = 0
    incoming: int = 0


@dataclass
class SimOrder:
    ref: str
    external_id: str
    lines: list[tuple[str, int]]
    status: str = "RECEIVED"
    location: str = ""


@dataclass
class SimEvent:
    event_id: str
    sequence: int
    kind: str
    occurred_at: datetime
    levels: list[dict[str, Any]]
    order_ref: str | None = None
    status: str | None = None

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["occurred_at"] = self.occurred_at.isoformat().replace("+00:00", "Z")
        return data


Listener = Callable[[SimEvent], Awaitable[None]]


class SimulatedWms:
    """A warehouse's state and the events its changes produce, numbered by one sequence."""

    def __init__(
        self,
        *,
        name: str,
        locations: list[str],
        stock: Mapping[tuple[str, str], int],
        seed: int | str = 0,
    ) -> None:
        self.name = name
        self.locations = list(locations)
        self.cells: dict[tuple[str, str], Cell] = {key: Cell(on_hand=q) for key, q in stock.items()}
        self.orders: dict[str, SimOrder] = {}
        self.events: list[SimEvent] = []
        self.sequence = 0
        self.faults = Faults()
        self.rng = random.Random(seed)
        self.listeners: list[Listener] = []
        self._by_sku: dict[str, list[str]] = {}
        self._indexed = -1

    def _index(self) -> dict[str, list[str]]:
        """Each SKU's locations, in order; rebuilt when a cell was added (none is removed)."""
        if self._indexed != len(self.cells):
            by_sku: dict[str, list[str]] = {}
            for sku, location in sorted(self.cells):
                by_sku.setdefault(sku, []).append(location)
            self._by_sku, self._indexed = by_sku, len(self.cells)
        return self._by_sku

    @property
    def skus(self) -> list[str]:
        return list(self._index())

    def cells_of(self, skus: Iterable[str]) -> list[tuple[tuple[str, str], Cell]]:
        """The cells holding any of ``skus``, by SKU and then location."""
        index = self._index()
        return [
            ((sku, location), self.cells[(sku, location)])
            for sku in sorted(set(skus))
            for location in index.get(sku, ())
        ]

    def level(self, sku: str, location: str) -> dict[str, Any]:
        cell = self.cells.setdefault((sku, location), Cell())
        return {"sku": sku, "location": location, **asdict(cell), "sequence": self.sequence}

    async def _emit(
        self,
        kind: str,
        touched: list[tuple[str, str]],
        *,
        order_ref: str | None = None,
        status: str | None = None,
    ) -> SimEvent:
        self.sequence += 1
        event = SimEvent(
            event_id=f"{self.name}-{self.sequence}-{uuid.uuid4().hex[:8]}",
            sequence=self.sequence,
            kind=kind,
            occurred_at=datetime.now(UTC),
            levels=[self.level(sku, loc) for sku, loc in touched],
            order_ref=order_ref,
            status=status,
        )
        self.events.append(event)
        for listener in self.listeners:
            await listener(event)
        return event

    async def receive(self, sku: str, location: str, quantity: int) -> SimEvent:
        self.cells.setdefault((sku, location), Cell()).on_hand += quantity
        return await self._emit("RECEIPT", [(sku, location)])

    async def adjust(
        self, sku: str, location: str, delta: int, kind: str = "ADJUSTMENT"
    ) -> SimEvent:
        cell = self.cells.setdefault((sku, location), Cell())
        cell.on_hand = max(0, cell.on_hand + delta)
        return await self._emit(kind, [(sku, location)])

    async def count(self, sku: str, location: str, counted: int) -> SimEvent:
        self.cells.setdefault((sku, location), Cell()).on_hand = max(0, counted)
        return await self._emit("CYCLE_COUNT", [(sku, location)])

    def drift(self, sku: str, location: str, delta: int) -> None:
        """Change stock without any event: what reconciliation exists to find."""
        cell = self.cells.setdefault((sku, location), Cell())
        cell.on_hand = max(0, cell.on_hand + delta)

    async def submit_order(self, external_id: str, lines: list[tuple[str, int]]) -> SimOrder:
        for order in self.orders.values():
            if order.external_id == external_id:
                return order
        ref = f"{self.name.upper()}-{len(self.orders) + 1:06d}"
        order = SimOrder(ref, external_id, lines, location=self.locations[0])
        self.orders[ref] = order
        await self._emit("ORDER_STATUS", [], order_ref=ref, status=order.status)
        return order

    async def cancel_order(self, ref: str) -> SimOrder:
        order = self.orders[ref]
        if order.status == "SHIPPED":
            raise ValueError(f"order {ref} has shipped")
        order.status = "CANCELLED"
        await self._emit("ORDER_STATUS", [], order_ref=ref, status=order.status)
        return order

    async def advance_order(self, ref: str) -> SimOrder:
        """Move an order one step: picked, packed, shipped (stock leaves on pick)."""
        order = self.orders[ref]
        if order.status in ("SHIPPED", "CANCELLED"):
            return order
        order.status = ORDER_FLOW[ORDER_FLOW.index(order.status) + 1]
        touched: list[tuple[str, str]] = []
        if order.status == "PICKED":
            for sku, qty in order.lines:
                cell = self.cells.setdefault((sku, order.location), Cell())
                cell.on_hand = max(0, cell.on_hand - qty)
                touched.append((sku, order.location))
        kind = {"PICKED": "PICK", "PACKED": "PACK", "SHIPPED": "SHIPMENT"}[order.status]
        await self._emit(kind, touched, order_ref=ref, status=order.status)
        return order

    async def activity(self) -> None:
        """One plausible thing happening on the warehouse floor."""
        sku = self.rng.choice(self.skus)
        location = self.rng.choice(self.locations)
        roll = self.rng.random()
        if self.faults.drift_rate and self.rng.random() < self.faults.drift_rate:
            self.drift(sku, location, -self.rng.randint(1, 3))
        elif roll < 0.35:
            await self.receive(sku, location, self.rng.choice((6, 12, 24, 48)))
        elif roll < 0.85:
            await self.adjust(sku, location, -self.rng.randint(1, 4), kind="PICK")
        else:
            cell = self.cells.setdefault((sku, location), Cell())
            await self.count(sku, location, max(0, cell.on_hand + self.rng.randint(-2, 2)))


ARRIVALS_FIRST_S = 0.0001
"""How long a simulator's work on an answer steps aside for requests arriving with it."""


class FaultGate:
    """Applies latency, 5xx, 429 bursts and garbage to a simulator's answers."""

    def __init__(self, faults: Faults, rng: random.Random) -> None:
        self.faults = faults
        self.rng = rng
        self.served = 0
        self.throttled = 0

    async def answer(self, produce: Callable[[], Awaitable[Response]]) -> Response:
        """The answer to one request: a fault, or what ``produce`` makes, sent once the
        latency (and jitter) has passed since the request arrived.

        The answer is worked out while the latency runs, as a WMS's own processing is part
        of its response time: a fleet of simulators in one process answers each request
        after its latency, not after the latency plus every other request's work. Nor does
        the latency start late: the work waits until every request already at the process
        has been taken up and has its own arrival time (24 instances asked at once by one
        live read otherwise start their clocks one after another's work, up to 20 ms apart,
        where a real fleet works side by side).
        """
        loop = asyncio.get_running_loop()
        f = self.faults
        delay = f.latency_ms + (self.rng.uniform(0, f.jitter_ms) if f.jitter_ms else 0.0)
        due = loop.time() + delay / 1000
        self.served += 1
        if delay > 0:
            # A timer, unlike sleep(0), resumes only after the loop has polled its sockets
            # and run the handlers of the requests waiting there.
            await asyncio.sleep(ARRIVALS_FIRST_S)
        response = self._fault() or await produce()
        wait = due - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        return response

    def _fault(self) -> Response | None:
        f = self.faults
        if f.burst_429 > 0:
            f.burst_429 -= 1
            self.throttled += 1
            return JSONResponse(
                {"error": "rate limited"},
                status_code=429,
                headers={"Retry-After": f"{f.retry_after_s:g}"},
            )
        if f.error_rate and self.rng.random() < f.error_rate:
            return JSONResponse({"error": "service unavailable"}, status_code=503)
        return None

    def garble(self, body: bytes) -> bytes:
        if self.faults.malformed_rate and self.rng.random() < self.faults.malformed_rate:
            return b'{"oops": ' + body[: len(body) // 3]
        return body


class WebhookPusher:
    """Sends each event to Stockgraph signed, through the drop, duplicate, reorder and
    transit faults, each delivery retried until acknowledged (see
    :class:`~stockgraph.connectors.delivery.WebhookSender`, whose ``history`` this keeps).

    With ``in_flight`` above 1 the events are handed to up to that many concurrent
    deliveries and the caller only waits for a free one; :meth:`drain` sends what is held
    back and waits for every delivery. With 1 (the default) each call waits for its delivery.
    """

    def __init__(
        self,
        *,
        url: str,
        secret: str,
        faults: Faults,
        rng: random.Random,
        render: Callable[[SimEvent], bytes],
        client: httpx.AsyncClient | None = None,
        schedule: RetrySchedule | None = None,
        in_flight: int = 1,
    ) -> None:
        if in_flight < 1:
            raise ValueError(f"in_flight must be at least 1, not {in_flight}")
        self.faults = faults
        self.rng = rng
        self.render = render
        self.client = client or httpx.AsyncClient(timeout=5.0)
        self.sender = WebhookSender(
            url=url, secret=secret, client=self.client, faults=faults, rng=rng, schedule=schedule
        )
        self.in_flight = in_flight
        self._slots = asyncio.Semaphore(in_flight)
        self._deliveries: set[asyncio.Task[None]] = set()
        self.held: list[tuple[str, bytes]] = []
        self.sent = 0
        """Deliveries acknowledged."""
        self.failed = 0
        """Deliveries given up (rejected, or unacknowledged at their deadline)."""

    @property
    def history(self) -> dict[str, DeliveryRecord]:
        """Every attempt at every event id sent so far."""
        return self.sender.history

    async def __call__(self, event: SimEvent) -> None:
        f = self.faults
        if f.drop_rate and self.rng.random() < f.drop_rate:
            return
        body = self.render(event)
        if f.malformed_rate and self.rng.random() < f.malformed_rate:
            body = body[: len(body) // 2]
        if f.reorder_rate and self.rng.random() < f.reorder_rate:
            self.held.append((event.event_id, body))
            return
        await self._send(event.event_id, body)
        if f.duplicate_rate and self.rng.random() < f.duplicate_rate:
            await self._send(event.event_id, body)
        while self.held:
            await self._send(*self.held.pop(0))

    async def _send(self, event_id: str, body: bytes) -> None:
        if self.in_flight == 1:
            await self._deliver(event_id, body)
            return
        await self._slots.acquire()
        task = asyncio.create_task(self._deliver(event_id, body))
        self._deliveries.add(task)
        task.add_done_callback(self._delivered)

    def _delivered(self, task: asyncio.Task[None]) -> None:
        self._deliveries.discard(task)
        self._slots.release()

    async def _deliver(self, event_id: str, body: bytes) -> None:
        if await self.sender.deliver(event_id, body):
            self.sent += 1
        else:
            self.failed += 1

    async def drain(self) -> None:
        """Send what is held back, then wait until every delivery has ended."""
        while self.held:
            await self._send(*self.held.pop(0))
        while self._deliveries:
            await asyncio.gather(*self._deliveries, return_exceptions=True)

    async def aclose(self) -> None:
        for task in list(self._deliveries):
            task.cancel()
        await asyncio.gather(*self._deliveries, return_exceptions=True)
        await self.client.aclose()


def control_routes(wms: SimulatedWms, gate: FaultGate) -> list[Route]:
    """``/_control/*``: set faults, make activity happen, look at the state."""

    async def faults(request: Request) -> Response:
        if request.method == "POST":
            try:
                wms.faults.update(orjson.loads(await request.body()))
            except (ValueError, orjson.JSONDecodeError) as exc:
                return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse(asdict(wms.faults))

    async def activity(request: Request) -> Response:
        count = int(request.query_params.get("n", "1"))
        for _ in range(max(0, min(count, 10_000))):
            await wms.activity()
        return JSONResponse({"sequence": wms.sequence})

    async def state(_: Request) -> Response:
        return JSONResponse(
            {
                "name": wms.name,
                "sequence": wms.sequence,
                "served": gate.served,
                "throttled": gate.throttled,
                "levels": [wms.level(sku, loc) for sku, loc in sorted(wms.cells)],
                "orders": {ref: asdict(o) for ref, o in wms.orders.items()},
            }
        )

    return [
        Route("/_control/faults", faults, methods=["GET", "POST"]),
        Route("/_control/activity", activity, methods=["POST"]),
        Route("/_control/state", state, methods=["GET"]),
    ]


__all__ = [
    "Cell",
    "FaultGate",
    "Faults",
    "SimEvent",
    "SimOrder",
    "SimulatedWms",
    "WebhookPusher",
    "control_routes",
]

"""A ``rest`` WMS as a real HTTP app over a ``SimulatedWms``.

Endpoints (``Authorization: ApiKey <key>`` on all of them, 401 otherwise)::

    GET  /v1/inventory?page_size=&page_token=   every level, in (item, location) order
    POST /v1/inventory/lookup                   up to 100 item codes (400 beyond)
    POST /v1/orders                             idempotent on external_id (201, then 200)
    GET  /v1/orders/{ref}
    POST /v1/orders/{ref}/cancel                409 once shipped
    /_control/*                                 faults, activity, state (no key needed)

Items listed in ``case_packs`` are reported in cases (``"uom": "CS"``), to four decimal
places when the eaches on hand are not a whole number of cases, as some WMSs do. The app
limits itself to ``requests_per_second`` with a token bucket and answers 429 with
``Retry-After`` beyond it (counted as ``throttled`` in ``/_control/state``); every API
request also passes the fault gate. With ``webhook_url`` set, every event is pushed there
signed, through the drop, duplicate and reorder faults; the app's lifespan closes the pusher.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal

import httpx
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from stockgraph.connectors.base import EventKind, WmsEvent, WmsLevel, WmsOrderLine
from stockgraph.connectors.errors import MalformedPayload
from stockgraph.connectors.rest import wire
from stockgraph.connectors.rest.spec import MAX_BATCH, MAX_PAGE_SIZE
from stockgraph.connectors.simulation import (
    Cell,
    FaultGate,
    SimEvent,
    SimOrder,
    SimulatedWms,
    WebhookPusher,
    control_routes,
)

DEFAULT_PAGE_SIZE = 50
_CASE_PLACES = Decimal("0.0001")

Handler = Callable[[Request], Awaitable[Response]]


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up; one request takes one."""

    def __init__(
        self, *, rate: float, burst: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a token bucket needs rate > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self._clock = clock
        self._updated = clock()

    def take(self) -> float:
        """Take a token and return 0, or return the seconds until one is available."""
        now = self._clock()
        self.tokens = min(self.burst, self.tokens + (now - self._updated) * self.rate)
        self._updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


def _encode_token(key: tuple[str, str]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(list(key))).decode().rstrip("=")


def _decode_token(token: str) -> tuple[str, str]:
    try:
        value = orjson.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (binascii.Error, ValueError):
        raise ValueError("page_token is not one this API issued") from None
    if not (isinstance(value, list) and len(value) == 2 and all(isinstance(v, str) for v in value)):
        raise ValueError("page_token is not one this API issued")
    return value[0], value[1]


class _RestApi:
    """The endpoints; state lives in the SimulatedWms, units and limits here."""

    def __init__(
        self,
        *,
        wms: SimulatedWms,
        gate: FaultGate,
        api_key: str,
        bucket: TokenBucket,
        case_packs: Mapping[str, int],
    ) -> None:
        self.wms = wms
        self.gate = gate
        self.bucket = bucket
        self.case_packs = dict(case_packs)
        self._expected = f"ApiKey {api_key}".encode()

    def _respond(
        self, body: bytes, status: int = 200, headers: Mapping[str, str] | None = None
    ) -> Response:
        return Response(
            self.gate.garble(body),
            status_code=status,
            media_type="application/json",
            headers=dict(headers or {}),
        )

    def _error(self, status: int, code: str, message: str, **headers: str) -> Response:
        return self._respond(wire.render_error(code, message), status, headers)

    def guarded(self, handler: Handler) -> Handler:
        """Faults, then authentication, then the rate limit, then ``handler``."""

        async def endpoint(request: Request) -> Response:
            return await self.gate.answer(lambda: checked(request))

        async def checked(request: Request) -> Response:
            given = request.headers.get("authorization", "").encode()
            if not hmac.compare_digest(given, self._expected):
                return self._error(401, "UNAUTHORIZED", "missing or wrong API key")
            wait = self.bucket.take()
            limit = {"X-RateLimit-Limit": f"{self.bucket.rate:g}"}
            if wait:
                self.gate.throttled += 1
                return self._error(
                    429,
                    "RATE_LIMITED",
                    "too many requests",
                    **limit,
                    **{"Retry-After": str(max(1, math.ceil(wait))), "X-RateLimit-Remaining": "0"},
                )
            response = await handler(request)
            response.headers.update(
                {**limit, "X-RateLimit-Remaining": str(math.floor(self.bucket.tokens))}
            )
            return response

        return endpoint

    def quantity(self, sku: str, eaches: int) -> Decimal:
        case = self.case_packs.get(sku)
        if case is None:
            return Decimal(eaches)
        return (Decimal(eaches) / case).quantize(_CASE_PLACES, rounding=ROUND_HALF_EVEN).normalize()

    def unit(self, sku: str) -> str:
        return wire.CASE if sku in self.case_packs else wire.EACH

    def level(self, sku: str, location: str, cell: Cell, sequence: int) -> WmsLevel:
        return WmsLevel(
            wms_sku=sku,
            location=location,
            unit=self.unit(sku),
            on_hand=self.quantity(sku, cell.on_hand),
            damaged=self.quantity(sku, cell.damaged),
            quality_control=self.quantity(sku, cell.quality_control),
            incoming=self.quantity(sku, cell.incoming),
            sequence=sequence,
        )

    def order(self, order: SimOrder) -> wire.OrderRecord:
        lines = tuple(
            WmsOrderLine(wms_sku=sku, quantity=self.quantity(sku, qty), unit=self.unit(sku))
            for sku, qty in order.lines
        )
        return wire.OrderRecord(
            order_ref=order.ref, external_id=order.external_id, status=order.status, lines=lines
        )

    def render_event(self, event: SimEvent) -> bytes:
        levels = tuple(
            self.level(
                str(level["sku"]),
                str(level["location"]),
                Cell(
                    on_hand=int(level["on_hand"]),
                    damaged=int(level["damaged"]),
                    quality_control=int(level["quality_control"]),
                    incoming=int(level["incoming"]),
                ),
                int(level["sequence"]),
            )
            for level in event.levels
        )
        return wire.render_event(
            WmsEvent(
                event_id=event.event_id,
                sequence=event.sequence,
                kind=EventKind(event.kind),
                occurred_at=event.occurred_at,
                levels=levels,
                order_ref=event.order_ref,
                status=event.status,
            ),
            case_qty=self.case_packs,
        )

    async def inventory(self, request: Request) -> Response:
        try:
            size = int(request.query_params.get("page_size", DEFAULT_PAGE_SIZE))
            if not 1 <= size <= MAX_PAGE_SIZE:
                raise ValueError(f"page_size must be between 1 and {MAX_PAGE_SIZE}")
            token = request.query_params.get("page_token")
            after = _decode_token(token) if token else None
        except ValueError as exc:
            return self._error(400, "BAD_REQUEST", str(exc))
        keys = sorted(key for key in self.wms.cells if after is None or key > after)
        page = keys[:size]
        next_token = _encode_token(page[-1]) if len(keys) > size else None
        levels = [self.level(*key, self.wms.cells[key], self.wms.sequence) for key in page]
        body = wire.render_inventory_page(
            levels, case_qty=self.case_packs, next_page_token=next_token, as_of=datetime.now(UTC)
        )
        return self._respond(body)

    async def lookup(self, request: Request) -> Response:
        try:
            codes = list(dict.fromkeys(wire.parse_lookup_request(await request.body())))
        except MalformedPayload as exc:
            return self._error(400, "BAD_REQUEST", str(exc))
        if len(codes) > MAX_BATCH:
            return self._error(400, "TOO_MANY_ITEMS", f"at most {MAX_BATCH} item codes a lookup")
        held = self.wms.cells_of(codes)
        found = {sku for (sku, _), _cell in held}
        levels = [self.level(*key, cell, self.wms.sequence) for key, cell in held]
        body = wire.render_lookup(
            levels,
            case_qty=self.case_packs,
            not_found=[code for code in codes if code not in found],
            as_of=datetime.now(UTC),
        )
        return self._respond(body)

    def _eaches(self, line: WmsOrderLine) -> int:
        if line.wms_sku not in self.wms.skus:
            raise ValueError(f"unknown item_code {line.wms_sku!r}")
        if line.unit == wire.CASE and line.wms_sku not in self.case_packs:
            raise ValueError(f"{line.wms_sku!r} is not stocked in cases")
        eaches = line.quantity * (self.case_packs[line.wms_sku] if line.unit == wire.CASE else 1)
        if eaches != eaches.to_integral_value():
            raise ValueError(f"{line.quantity} {line.unit} of {line.wms_sku!r} is not whole eaches")
        return int(eaches)

    async def create_order(self, request: Request) -> Response:
        try:
            submitted = wire.parse_order_request(await request.body())
        except MalformedPayload as exc:
            return self._error(400, "BAD_REQUEST", str(exc))
        try:
            lines = [(line.wms_sku, self._eaches(line)) for line in submitted.lines]
        except ValueError as exc:
            return self._error(422, "INVALID_LINE", str(exc))
        for existing in self.wms.orders.values():
            if existing.external_id == submitted.external_id:
                if existing.lines != lines:
                    return self._error(
                        409, "DUPLICATE_EXTERNAL_ID", "external_id was used for another order"
                    )
                return self._respond(wire.render_order(self.order(existing)))
        created = await self.wms.submit_order(submitted.external_id, lines)
        return self._respond(wire.render_order(self.order(created)), 201)

    async def get_order(self, request: Request) -> Response:
        order = self.wms.orders.get(request.path_params["ref"])
        if order is None:
            return self._error(404, "NOT_FOUND", "no such order")
        return self._respond(wire.render_order(self.order(order)))

    async def cancel_order(self, request: Request) -> Response:
        ref = request.path_params["ref"]
        order = self.wms.orders.get(ref)
        if order is None:
            return self._error(404, "NOT_FOUND", "no such order")
        if order.status == "SHIPPED":
            return self._error(409, "ORDER_SHIPPED", "a shipped order cannot be cancelled")
        if order.status != "CANCELLED":
            order = await self.wms.cancel_order(ref)
        return self._respond(wire.render_order(self.order(order)))


def build_simulator(
    *,
    wms: SimulatedWms,
    api_key: str,
    requests_per_second: float = 10,
    webhook_url: str | None = None,
    webhook_secret: str | None = None,
    case_packs: Mapping[str, int] | None = None,
    webhook_client: httpx.AsyncClient | None = None,
) -> Starlette:
    """A ``rest`` WMS serving ``wms``'s state.

    ``webhook_client`` (owned by the pusher from then on) replaces the pusher's own HTTP
    client, e.g. one with an ``httpx.MockTransport``. ``app.state.gate`` and
    ``app.state.pusher`` (None without ``webhook_url``) are there for whoever runs the app.
    """
    if not api_key:
        raise ValueError("the simulator needs an API key")
    if webhook_url is not None and not webhook_secret:
        raise ValueError("webhook_url needs a webhook_secret to sign with")
    packs = dict(case_packs or {})
    if any(qty < 1 for qty in packs.values()):
        raise ValueError("case pack quantities must be at least 1")
    gate = FaultGate(wms.faults, wms.rng)
    bucket = TokenBucket(rate=requests_per_second, burst=max(1.0, requests_per_second))
    api = _RestApi(wms=wms, gate=gate, api_key=api_key, bucket=bucket, case_packs=packs)
    pusher: WebhookPusher | None = None
    if webhook_url is not None and webhook_secret:
        pusher = WebhookPusher(
            url=webhook_url,
            secret=webhook_secret,
            faults=wms.faults,
            rng=wms.rng,
            render=api.render_event,
            client=webhook_client,
        )
        wms.listeners.append(pusher)

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            if pusher is not None:
                if pusher in wms.listeners:
                    wms.listeners.remove(pusher)
                await pusher.aclose()

    routes = [
        Route("/v1/inventory", api.guarded(api.inventory), methods=["GET"]),
        Route("/v1/inventory/lookup", api.guarded(api.lookup), methods=["POST"]),
        Route("/v1/orders", api.guarded(api.create_order), methods=["POST"]),
        Route("/v1/orders/{ref}", api.guarded(api.get_order), methods=["GET"]),
        Route("/v1/orders/{ref}/cancel", api.guarded(api.cancel_order), methods=["POST"]),
        *control_routes(wms, gate),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.gate = gate
    app.state.pusher = pusher
    return app

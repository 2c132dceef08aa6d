"""The GraphQL HTTP endpoint: authentication first, then strawberry, then error shaping.

A request without valid credentials never reaches GraphQL: it gets HTTP 401 with a
GraphQL-shaped body. Everything that reaches execution answers HTTP 200 with coded
errors (see :mod:`stockgraph.schema.errors`) and ``extensions.cost`` (see
:mod:`stockgraph.schema.throttle`), including answers served from the response cache:
those are priced and spent as if they had run.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import orjson
from cross_web import HTTPException
from graphql import ExecutionResult
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.http.typevars import RootValue
from strawberry.schema import BaseSchema
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL
from strawberry.types.unset import UNSET, UnsetType

from stockgraph.auth.principal import Principal
from stockgraph.cache.reads import from_the_source
from stockgraph.cache.response import ResponseCache
from stockgraph.cache.shared import SharedAnswers
from stockgraph.schema.cacheable import is_cacheable
from stockgraph.schema.context import NOBODY, Context, CostRecord, Limits, Services, bucket_key
from stockgraph.schema.errors import ErrorCode, error_body, format_errors
from stockgraph.schema.stream import event_stream, wants_event_stream
from stockgraph.schema.throttle import throttled
from stockgraph.schema.transport import TextFrames, TransportHandler

log = logging.getLogger("stockgraph.http")

Authenticate = Callable[[Mapping[str, str]], Awaitable[Principal | None]]
"""The caller named by credentials (``Authorization: Bearer …`` or ``X-API-Key``, names in
any case), from an HTTP request's headers or a WebSocket's ``connection_init`` payload; None
when there are no valid ones."""

UNAUTHENTICATED_BODY = orjson.dumps(
    error_body("valid credentials are required", ErrorCode.UNAUTHENTICATED)
)


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    """An encoded answer without its cost, and what it cost when it ran."""

    head: bytes
    """The response object's bytes up to (not including) its closing brace, no extensions."""
    extras: bytes
    """Other extensions (``"warnings":[...]``) as object members, or empty."""
    requested: int
    actual: int

    def encode(self, tags: frozenset[str]) -> bytes:
        """This answer and the SKUs it covers, for other processes (see ``decode``)."""
        return orjson.dumps(
            {
                "head": self.head.decode(),
                "extras": self.extras.decode(),
                "requested": self.requested,
                "actual": self.actual,
                "tags": sorted(tags),
            }
        )

    @classmethod
    def decode(cls, raw: bytes) -> tuple[CachedAnswer, frozenset[str]] | None:
        """What :meth:`encode` wrote, or None for anything else."""
        try:
            found = orjson.loads(raw)
            answer = cls(
                head=str(found["head"]).encode(),
                extras=str(found["extras"]).encode(),
                requested=int(found["requested"]),
                actual=int(found["actual"]),
            )
            return answer, frozenset(str(t) for t in found["tags"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None

    def render(self, cost: dict[str, Any]) -> bytes:
        extras = self.extras + b"," if self.extras else b""
        return b"".join(
            (self.head, b',"extensions":{', extras, b'"cost":', orjson.dumps(cost), b"}}")
        )


_Shared = tuple[CachedAnswer, frozenset[str]]
"""An answer computed for several identical requests, and the SKUs it covers."""


class GraphQLView(GraphQL[Context, RootValue]):
    """Strawberry's ASGI view with Stockgraph's authentication and response shape."""

    graphql_transport_ws_handler_class = TransportHandler
    websocket_adapter_class = TextFrames

    def __init__(
        self,
        schema: BaseSchema,
        *,
        authenticate: Authenticate,
        services: Services,
        limits: Limits,
        graphiql: bool,
        cache: ResponseCache[CachedAnswer] | None = None,
        shared: SharedAnswers | None = None,
        max_tokens: int = 4000,
        init_timeout_seconds: float = 10.0,
        max_subscriptions: int = 20,
        max_connections_per_tenant: int = 1000,
        stopping: asyncio.Event | None = None,
    ) -> None:
        super().__init__(
            schema,
            graphql_ide="graphiql" if graphiql else None,
            # graphql-transport-ws only: the legacy graphql-ws protocol is refused.
            subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL,),
            connection_init_wait_timeout=timedelta(seconds=init_timeout_seconds),
            max_subscriptions_per_connection=max_subscriptions,
            # Credentials travel in connection_init, never in cookies, so a page on another
            # origin gains nothing it could abuse: dashboards may live anywhere.
            allowed_origins=("*",),
            multipart_uploads_enabled=False,
        )
        self._authenticate = authenticate
        self._services = services
        self._limits = limits
        self._graphiql = graphiql
        self._cache = cache
        self._shared = shared
        self._connections: dict[str, int] = {}
        """Open, authenticated WebSocket connections per tenant."""
        self._max_connections = max_connections_per_tenant
        self._inflight: dict[Hashable, asyncio.Future[_Shared | None]] = {}
        self._max_tokens = max_tokens
        self._stopping = stopping

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            try:
                await super().__call__(scope, receive, send)
            finally:
                # The connection is over: its tenant may open another.
                counted = scope.get("stockgraph.tenant")
                if counted is not None:
                    self._connections[counted] -= 1
                    if not self._connections[counted]:
                        del self._connections[counted]
            return
        request = Request(scope, receive)
        if self._wants_ide(request):
            await (await self.render_graphql_ide(request))(scope, receive, send)
            return
        response: Response
        principal = await self._authenticate(request.headers)
        if principal is None:
            response = Response(
                UNAUTHENTICATED_BODY,
                status_code=401,
                media_type="application/json",
                headers={"WWW-Authenticate": 'Bearer realm="stockgraph"'},
            )
        elif wants_event_stream(request):
            context = Context(principal=principal, services=self._services, limits=self._limits)
            response = await event_stream(self.schema, request, context, stopping=self._stopping)
        else:
            response = await self._answer(request, principal)
        await response(scope, receive, send)

    async def _answer(self, request: Request, principal: Principal) -> Response:
        """From the response cache when it holds this request, else by executing it.

        Identical requests that miss at the same time share one execution (single flight):
        the first computes the answer, the others wait for it and replay it, each priced
        and spent on its own.
        """
        cache = self._cache
        key = await self._cache_key(request, principal) if cache is not None else None
        if cache is None or key is None:
            return await self._execute(request, principal)
        cached = cache.get(key)
        if cached is not None:
            return await self._replay(cached, principal)
        # Noted before executing or waiting: a change committed meanwhile to what the
        # answer covers keeps that answer from this request and from the cache.
        ticket = cache.begin(principal.tenant_id)
        leader = self._inflight.get(key)
        if leader is not None:
            led = await asyncio.shield(leader)
            if led is not None and cache.unchanged_since(ticket, led[1]):
                return await self._replay(led[0], principal)
            return await self._execute(request, principal)
        flight: asyncio.Future[_Shared | None] = asyncio.get_running_loop().create_future()
        self._inflight[key] = flight
        shared: _Shared | None = None
        tenant = principal.tenant_id
        store = self._shared
        try:
            version = None
            if store is not None:
                # Another process may have computed it: served if nothing it covers changed.
                found = await store.get(key, tenant)
                shared = CachedAnswer.decode(found) if found is not None else None
                if shared is not None:
                    cache.put(key, ticket, shared[1], shared[0])
                    return await self._replay(shared[0], principal)
                version = await store.version(tenant)
            if version is not None:
                with from_the_source():
                    response = await self._execute(request, principal)
            else:
                response = await self._execute(request, principal)
            context = request.state.graphql_context
            answer = getattr(request.state, "answer", None)
            if response.status_code == 200 and context.cacheable and answer is not None:
                shared = (answer, frozenset(context.covered))
                kept = cache.put(key, ticket, shared[1], answer)
                if kept and store is not None and version is not None:
                    await store.put(key, tenant, shared[1], version, answer.encode(shared[1]))
            return response
        finally:
            del self._inflight[key]
            flight.set_result(shared)

    async def _replay(self, cached: CachedAnswer, principal: Principal) -> Response:
        """A cached answer, priced and spent like the operation it answers."""
        buckets = self._services.buckets
        key = bucket_key(principal)
        throttle = await buckets.take(key, cached.requested)
        record = CostRecord(requested=cached.requested)
        if not throttle.allowed:
            body = {
                "data": None,
                "errors": format_errors([throttled(cached.requested, throttle)]),
                "extensions": {"cost": record.envelope(throttle)},
            }
            return Response(orjson.dumps(body), media_type="application/json")
        if cached.requested > cached.actual:
            throttle = await buckets.refund(key, cached.requested - cached.actual)
        record.actual = cached.actual
        return Response(cached.render(record.envelope(throttle)), media_type="application/json")

    async def _execute(self, request: Request, principal: Principal) -> Response:
        context = Context(principal=principal, services=self._services, limits=self._limits)
        request.state.graphql_context = context
        try:
            return await self.run(request, context=context)
        except HTTPException as exc:
            return JSONResponse(
                error_body(exc.reason, ErrorCode.BAD_USER_INPUT), status_code=exc.status_code
            )

    async def _cache_key(self, request: Request, principal: Principal) -> Hashable | None:
        """The response-cache key of a cacheable POST, or None to execute as usual."""
        if request.method != "POST":
            return None
        if not request.headers.get("content-type", "").startswith("application/json"):
            return None
        try:
            payload = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            return None
        if not isinstance(payload, dict):
            return None
        query = payload.get("query")
        operation = payload.get("operationName")
        if not isinstance(query, str) or not (operation is None or isinstance(operation, str)):
            return None
        if not is_cacheable(query, operation, self._max_tokens):
            return None
        variables = orjson.dumps(payload.get("variables") or {}, option=orjson.OPT_SORT_KEYS)
        # Only plain values, in a fixed order: other processes compute the same key.
        scopes = tuple(sorted(scope.value for scope in principal.scopes))
        return (principal.tenant_id, scopes, query, operation, variables.decode())

    async def get_context(
        self, request: Request | WebSocket, response: Response | WebSocket
    ) -> Context:
        """A WebSocket's context: nobody until its ``connection_init`` is authenticated."""
        return Context(
            principal=NOBODY,
            services=self._services,
            limits=self._limits,
            request=request,
            response=response,
        )

    async def on_ws_connect(self, context: Context) -> UnsetType | dict[str, object] | None:
        """Authenticates ``connection_init`` and holds each tenant to its number of open
        connections; refused ones are closed with 4403 Forbidden."""
        params = context.connection_params or {}
        credentials = {str(k): v for k, v in params.items() if isinstance(v, str)}
        principal = await self._authenticate(credentials)
        if principal is None:
            raise ConnectionRejectionError()
        tenant = principal.tenant_id
        if self._connections.get(tenant, 0) >= self._max_connections:
            log.warning("refused a WebSocket: %s has %d open", tenant, self._max_connections)
            raise ConnectionRejectionError()
        self._connections[tenant] = self._connections.get(tenant, 0) + 1
        if isinstance(context.request, WebSocket):
            context.request.scope["stockgraph.tenant"] = tenant
        context.principal = principal
        unset: UnsetType = UNSET
        return unset

    def _wants_ide(self, request: Request) -> bool:
        return (
            self._graphiql
            and request.method == "GET"
            and "query" not in request.query_params
            and "text/html" in request.headers.get("accept", "")
        )

    async def process_result(self, request: Request, result: ExecutionResult) -> dict[str, Any]:  # type: ignore[override]
        body: dict[str, Any] = {"data": result.data}
        context = getattr(request.state, "graphql_context", None)
        if result.errors:
            body["errors"] = format_errors(result.errors)
            if isinstance(context, Context):
                context.cacheable = False
        extensions = dict(result.extensions or {})
        if not isinstance(context, Context):
            if extensions:
                body["extensions"] = extensions
            return body
        if context.warnings:
            extensions["warnings"] = context.warnings
        cost = context.cost
        if context.cacheable and cost.actual is not None:
            request.state.answer = CachedAnswer(
                head=orjson.dumps(body)[:-1],
                extras=orjson.dumps(extensions)[1:-1],
                requested=cost.requested,
                actual=cost.actual,
            )
        throttle = cost.throttle or await self._services.buckets.peek(context.bucket_key)
        extensions["cost"] = cost.envelope(throttle)
        body["extensions"] = extensions
        return body

    def encode_json(self, data: object) -> bytes:
        return orjson.dumps(data)


__all__ = ["Authenticate", "GraphQLView"]

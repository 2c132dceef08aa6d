"""The GraphQL HTTP endpoint: authentication first, then strawberry, then error shaping.

A request without valid credentials never reaches GraphQL: it gets HTTP 401 with a
GraphQL-shaped body. Everything that reaches execution answers HTTP 200 with coded
errors (see :mod:`stockgraph.schema.errors`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from cross_web import HTTPException
from graphql import ExecutionResult
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send
from strawberry.asgi import GraphQL
from strawberry.http.typevars import RootValue
from strawberry.schema import BaseSchema

from stockgraph.auth.principal import Principal
from stockgraph.schema.context import Context, Limits, Services
from stockgraph.schema.errors import ErrorCode, error_body, format_errors

log = logging.getLogger("stockgraph.http")

Authenticate = Callable[[Request], Awaitable[Principal | None]]
"""Returns the caller, or None when the request carries no valid credentials."""

UNAUTHENTICATED_BODY = orjson.dumps(
    error_body("valid credentials are required", ErrorCode.UNAUTHENTICATED)
)


class GraphQLView(GraphQL[Context, RootValue]):
    """Strawberry's ASGI view with Stockgraph's authentication and response shape."""

    def __init__(
        self,
        schema: BaseSchema,
        *,
        authenticate: Authenticate,
        services: Services,
        limits: Limits,
        graphiql: bool,
    ) -> None:
        super().__init__(
            schema,
            graphql_ide="graphiql" if graphiql else None,
            subscription_protocols=(),
            multipart_uploads_enabled=False,
        )
        self._authenticate = authenticate
        self._services = services
        self._limits = limits
        self._graphiql = graphiql

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        request = Request(scope, receive)
        if self._wants_ide(request):
            await (await self.render_graphql_ide(request))(scope, receive, send)
            return
        response: Response
        principal = await self._authenticate(request)
        if principal is None:
            response = Response(
                UNAUTHENTICATED_BODY,
                status_code=401,
                media_type="application/json",
                headers={"WWW-Authenticate": 'Bearer realm="stockgraph"'},
            )
        else:
            context = Context(principal=principal, services=self._services, limits=self._limits)
            request.state.graphql_context = context
            try:
                response = await self.run(request, context=context)
            except HTTPException as exc:
                response = JSONResponse(
                    error_body(exc.reason, ErrorCode.BAD_USER_INPUT), status_code=exc.status_code
                )
        await response(scope, receive, send)

    def _wants_ide(self, request: Request) -> bool:
        return (
            self._graphiql
            and request.method == "GET"
            and "query" not in request.query_params
            and "text/html" in request.headers.get("accept", "")
        )

    async def process_result(self, request: Request, result: ExecutionResult) -> dict[str, Any]:  # type: ignore[override]
        body: dict[str, Any] = {"data": result.data}
        if result.errors:
            body["errors"] = format_errors(result.errors)
        extensions = dict(result.extensions or {})
        context = getattr(request.state, "graphql_context", None)
        if isinstance(context, Context) and context.warnings:
            extensions["warnings"] = context.warnings
        if extensions:
            body["extensions"] = extensions
        return body

    def encode_json(self, data: object) -> bytes:
        return orjson.dumps(data)


__all__ = ["Authenticate", "GraphQLView"]

"""Subscriptions over Server-Sent Events, for clients that cannot hold a WebSocket.

The graphql-sse protocol's "distinct connections" mode: the client POSTs an operation to
``/graphql`` with ``Accept: text/event-stream`` and credentials in its headers; each result
comes back as an ``event: next`` whose data is the JSON result, and the stream ends with
``event: complete``. A query or mutation sent this way gets its one result, then
``complete``. A comment line every ``keep_alive_seconds`` keeps idle proxies from closing it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import orjson
from graphql import GraphQLError, OperationType
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from strawberry.schema import BaseSchema

from stockgraph.schema.context import Context
from stockgraph.schema.documents import parsed_operation
from stockgraph.schema.errors import ErrorCode, error_body, format_errors

EVENT_STREAM = "text/event-stream"


def wants_event_stream(request: Request) -> bool:
    return request.method == "POST" and EVENT_STREAM in request.headers.get("accept", "")


def _event(kind: str, data: dict[str, Any] | None = None) -> bytes:
    payload = b"" if data is None else orjson.dumps(data)
    return b"event: " + kind.encode() + b"\ndata: " + payload + b"\n\n"


def _is_subscription(query: str, operation_name: str | None) -> bool:
    """Whether the operation to run is a subscription (an unreadable document is not)."""
    operation = parsed_operation(query, operation_name)
    return operation is not None and operation.operation is OperationType.SUBSCRIPTION


def _body(result: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"data": getattr(result, "data", None)}
    errors: list[GraphQLError] | None = getattr(result, "errors", None)
    if errors:
        body["errors"] = format_errors(errors)
    return body


async def event_stream(
    schema: BaseSchema,
    request: Request,
    context: Context,
    *,
    keep_alive_seconds: float = 15.0,
    stopping: asyncio.Event | None = None,
) -> Response:
    """Run the operation in ``request`` and stream its results as Server-Sent Events.

    A subscription's stream ends with ``complete`` once ``stopping`` is set (the server is
    stopping), so that the server need not cut it: the client may reconnect elsewhere.
    """
    try:
        payload = orjson.loads(await request.body())
        query = payload["query"]
        if not isinstance(query, str):
            raise TypeError("query")
    except (orjson.JSONDecodeError, KeyError, TypeError):
        body = error_body("expected a JSON body with a query", ErrorCode.BAD_USER_INPUT)
        return JSONResponse(body, status_code=400)
    variables = payload.get("variables")
    operation = payload.get("operationName")
    options: dict[str, Any] = {
        "variable_values": variables if isinstance(variables, dict) else None,
        "context_value": context,
        "operation_name": operation if isinstance(operation, str) else None,
    }
    results: Any
    if _is_subscription(query, options["operation_name"]):
        results = await schema.subscribe(query, **options)
    else:
        results = await schema.execute(query, **options)

    async def events() -> AsyncIterator[bytes]:
        if not hasattr(results, "__anext__"):
            yield _event("next", _body(results))
            yield _event("complete")
            return
        pending: asyncio.Future[Any] | None = None
        stop = asyncio.ensure_future((stopping or asyncio.Event()).wait())
        try:
            while True:
                pending = pending or asyncio.ensure_future(results.__anext__())
                done, _ = await asyncio.wait(
                    {pending, stop}, timeout=keep_alive_seconds, return_when=asyncio.FIRST_COMPLETED
                )
                if not done:
                    yield b": keep-alive\n\n"
                    continue
                if pending not in done:  # stopping
                    break
                try:
                    result = pending.result()
                except StopAsyncIteration:
                    break
                finally:
                    pending = None
                yield _event("next", _body(result))
            yield _event("complete")
        finally:
            stop.cancel()
            if pending is not None:
                pending.cancel()
                with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                    await pending
            await results.aclose()

    return StreamingResponse(
        events(),
        media_type=EVENT_STREAM,
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


__all__ = ["EVENT_STREAM", "event_stream", "wants_event_stream"]

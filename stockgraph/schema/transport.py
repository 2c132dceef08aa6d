"""graphql-transport-ws as strawberry speaks it, with shared results sent as encoded once.

Subscribers of the same subscription share one execution (:mod:`stockgraph.schema.sharing`);
this handler also shares the encoding: a :class:`~stockgraph.schema.sharing.SharedResult`
is written to each socket as its ready-made payload inside the subscriber's own ``next``
message, instead of being turned into a dict and JSON again per subscriber.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import Any

import orjson
from starlette.websockets import WebSocketDisconnect
from strawberry.asgi import ASGIWebSocketAdapter
from strawberry.http.exceptions import WebSocketDisconnected
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
    Operation,
)

from stockgraph.schema.context import Context
from stockgraph.schema.sharing import SharedResult


class TransportHandler(BaseGraphQLTransportWSHandler[Context, Any]):
    """Strawberry's handler; shared results skip the per-subscriber encoding."""

    async def _send_result_stream(
        self, operation: Operation[Context, Any], result_source: Any
    ) -> None:
        await super()._send_result_stream(
            operation, self._sent_when_shared(operation, result_source)
        )

    async def _sent_when_shared(
        self, operation: Operation[Context, Any], results: AsyncIterator[Any]
    ) -> AsyncGenerator[Any, None]:
        """Passes on what strawberry must handle itself; writes shared results directly."""
        adapter = self.websocket
        async for result in results:
            if not isinstance(result, SharedResult) or not isinstance(
                adapter, ASGIWebSocketAdapter
            ):
                yield result
                continue
            if operation.completed:
                return
            message = "".join(
                (
                    '{"id":',
                    orjson.dumps(operation.id).decode(),
                    ',"type":"next","payload":',
                    result.payload,
                    "}",
                )
            )
            try:
                await adapter.ws.send_text(message)
            except WebSocketDisconnect as exc:
                raise WebSocketDisconnected from exc


class TextFrames(ASGIWebSocketAdapter):
    """Every graphql-transport-ws message as a text frame.

    The protocol's messages are JSON text, and clients read them so: the reference client
    (graphql-ws) parses only string data and closes the socket (4400) on a binary frame,
    which is what strawberry sends when the view encodes JSON to bytes, as ours does.
    """

    async def send_json(self, message: Mapping[str, object]) -> None:
        try:
            await self.ws.send_text(orjson.dumps(message).decode())
        except WebSocketDisconnect as exc:
            raise WebSocketDisconnected from exc


__all__ = ["TextFrames", "TransportHandler"]

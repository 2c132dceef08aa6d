"""A backend that receives Stockgraph's webhooks, for the demo: a real HTTP app on loopback.

It verifies every request with the ``standardwebhooks`` package (401 when the signature does
not hold), keeps what arrived, and answers ``503`` to a share of requests so retries show
in ``deliveries``. ``GET /received`` tells what it saw.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field

import uvicorn
from standardwebhooks import Webhook, WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


@dataclass
class Received:
    verified: int = 0
    refused: int = 0
    unavailable: int = 0
    """Requests answered 503 on purpose."""
    ids: set[str] = field(default_factory=set)
    """``webhook-id`` of every delivery accepted (each counted once)."""


class _QuietServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class DemoReceiver:
    """The demo's webhook receiver; :meth:`start` serves it, :meth:`stop` ends it."""

    def __init__(self, *, secret: str, unavailable: float = 0.25, seed: int = 0) -> None:
        if not 0 <= unavailable < 1:
            raise ValueError("unavailable is a share of requests, from 0 up to 1")
        self._verifier = Webhook(secret)
        self._unavailable = unavailable
        self._rng = random.Random(seed)
        self.received = Received()
        self._sock: socket.socket | None = None
        self._server: _QuietServer | None = None
        self._task: asyncio.Task[None] | None = None
        self.app = Starlette(
            routes=[
                Route("/hooks", self._hook, methods=["POST"]),
                Route("/received", self._summary, methods=["GET"]),
            ]
        )

    @property
    def url(self) -> str:
        if self._sock is None:
            raise RuntimeError("the receiver is not started")
        host, port = self._sock.getsockname()[:2]
        return f"http://{host}:{port}/hooks"

    async def _hook(self, request: Request) -> Response:
        body = await request.body()
        try:
            self._verifier.verify(body, dict(request.headers))
        except WebhookVerificationError:
            self.received.refused += 1
            return JSONResponse({"error": "bad signature"}, status_code=401)
        if self._rng.random() < self._unavailable:
            self.received.unavailable += 1
            return JSONResponse({"error": "busy"}, status_code=503, headers={"Retry-After": "2"})
        self.received.verified += 1
        self.received.ids.add(request.headers["webhook-id"])
        return Response(status_code=204)

    async def _summary(self, _: Request) -> Response:
        r = self.received
        return JSONResponse(
            {
                "verified": r.verified,
                "refused": r.refused,
                "unavailable": r.unavailable,
                "deliveries": len(r.ids),
            }
        )

    async def start(self, host: str = "127.0.0.1") -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, 0))
        sock.listen(128)
        sock.setblocking(False)
        self._sock = sock
        config = uvicorn.Config(self.app, log_level="warning", access_log=False, lifespan="off")
        self._server = _QuietServer(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:
            if self._task.done():
                raise RuntimeError("the demo webhook receiver did not start")
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._sock is not None:
            self._sock.close()


__all__ = ["DemoReceiver", "Received"]

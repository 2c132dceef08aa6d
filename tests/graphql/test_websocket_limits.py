"""WebSocket limits: connections per tenant, and the init timeout."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from stockgraph.app import create_app
from stockgraph.auth.principal import Principal
from stockgraph.auth.scopes import Scope
from stockgraph.domain.ids import TenantId
from stockgraph.runtime import Runtime
from tests.conftest import make_settings
from tests.e2e.conftest import free_port

PROTOCOL: Any = ["graphql-transport-ws"]


class Server:
    def __init__(self, url: str, init: dict[str, Any]) -> None:
        self.url = url
        self.init = init

    async def connect(self) -> ClientConnection:
        return await connect(self.url, subprotocols=PROTOCOL)

    async def introduce(self, ws: ClientConnection) -> dict[str, Any]:
        await ws.send(json.dumps(self.init))
        answer: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), 5))
        return answer


@pytest.fixture
async def server(demo_database: str, tmp_path: Path) -> AsyncIterator[Server]:
    copy = tmp_path / "stockgraph.db"
    shutil.copy(Path(demo_database.removeprefix("sqlite+aiosqlite:///")), copy)
    settings = make_settings(
        f"sqlite+aiosqlite:///{copy}",
        max_connections_per_tenant=1,
        connection_init_timeout_seconds=0.5,
    )
    runtime = Runtime.build(settings)
    principal = Principal(TenantId("acme"), "dashboard", frozenset(Scope))
    token = runtime.tokens.issue(principal).access_token
    port = free_port()
    config = uvicorn.Config(
        create_app(settings, runtime=runtime), port=port, log_level="warning", lifespan="on"
    )
    running = uvicorn.Server(config)
    task = asyncio.ensure_future(running.serve())
    for _ in range(250):  # uvicorn says it has started by a flag only
        if running.started:
            break
        await asyncio.sleep(0.02)
    try:
        init = {"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}}
        yield Server(f"ws://127.0.0.1:{port}/graphql", init)
    finally:
        running.should_exit = True
        await task


async def _close_code(ws: ClientConnection) -> int | None:
    with pytest.raises(ConnectionClosed) as closed:
        await asyncio.wait_for(ws.recv(), 5)
    return closed.value.rcvd.code if closed.value.rcvd else None


async def test_a_tenant_holds_at_most_its_connections(server: Server) -> None:
    first = await server.connect()
    assert (await server.introduce(first))["type"] == "connection_ack"
    second = await server.connect()
    await second.send(json.dumps(server.init))
    assert await _close_code(second) == 4403
    await first.close()
    await asyncio.sleep(0.1)
    third = await server.connect()
    assert (await server.introduce(third))["type"] == "connection_ack"
    await third.close()


async def test_a_connection_that_never_says_who_it_is_is_closed(server: Server) -> None:
    silent = await server.connect()
    assert await _close_code(silent) == 4408

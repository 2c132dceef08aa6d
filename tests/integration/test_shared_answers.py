"""Answers one process computed serve the others through Redis, until what they cover changes."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from stockgraph.app import create_app
from stockgraph.auth.principal import Principal
from stockgraph.auth.scopes import Scope
from stockgraph.domain.ids import Sku, TenantId
from stockgraph.runtime import Runtime
from tests.conftest import make_settings
from tests.graphql.helpers import counted_statements
from tests.services import redis_url

pytestmark = pytest.mark.redis

AVAILABILITY = {"query": '{ availability(skus: ["SKU-00001"]) { sku onHand } }'}


class Process:
    def __init__(self, runtime: Runtime, http: httpx.AsyncClient) -> None:
        self.runtime = runtime
        self.http = http

    async def ask(self, document: dict[str, Any] = AVAILABILITY) -> dict[str, Any]:
        principal = Principal(TenantId("acme"), "storefront", frozenset({Scope.INVENTORY_READ}))
        token = self.runtime.tokens.issue(principal).access_token
        response = await self.http.post(
            "/graphql", json=document, headers={"Authorization": f"Bearer {token}"}
        )
        body: dict[str, Any] = response.json()
        assert "errors" not in body, body
        return body


async def _set_on_hand(process: Process, value: int) -> None:
    async with process.runtime.engine.begin() as conn:
        await conn.execute(
            text(
                "UPDATE stock_levels SET on_hand = :v, available = :v, committed = 0,"
                " reserved = 0, damaged = 0, safety_stock = 0, quality_control = 0"
                " WHERE tenant_id = 'acme' AND sku = 'SKU-00001'"
            ),
            {"v": value},
        )


@pytest.fixture
async def processes(demo_database: str, tmp_path: Path) -> AsyncIterator[list[Process]]:
    copy = tmp_path / "stockgraph.db"
    shutil.copy(Path(demo_database.removeprefix("sqlite+aiosqlite:///")), copy)
    # Both read one database and one Redis, in a namespace of this test's own.
    settings = make_settings(
        f"sqlite+aiosqlite:///{copy}",
        redis_url=redis_url(),
        redis_namespace=f"test-{uuid.uuid4().hex}",
    )
    async with AsyncExitStack() as stack:
        made = []
        for _ in range(2):
            runtime = Runtime.build(settings)
            app = create_app(settings, runtime=runtime)
            await stack.enter_async_context(app.router.lifespan_context(app))
            http = await stack.enter_async_context(
                httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sg")
            )
            await asyncio.wait_for(runtime.invalidations.subscribed.wait(), 5)
            made.append(Process(runtime, http))
        yield made


async def test_an_answer_computed_by_one_process_serves_another_without_executing(
    processes: list[Process],
) -> None:
    a, b = processes
    first = await a.ask()
    with counted_statements(b.runtime) as statements:
        second = await b.ask()
    assert second["data"] == first["data"]
    # The outbox relay polls in the background; nothing else may touch the database.
    assert [s for s in statements if "outbox_events" not in s] == []
    assert b.runtime.shared_answers is not None and b.runtime.shared_answers.hits == 1


async def test_a_change_in_one_process_retires_the_shared_and_the_local_answers(
    processes: list[Process],
) -> None:
    a, b = processes
    await a.ask()
    before = await b.ask()
    await _set_on_hand(a, 3)
    a.runtime.projection_changed(TenantId("acme"), {Sku("SKU-00001")})
    await a.runtime.invalidations.flush()
    for _ in range(100):  # B hears of it through the channel
        after = await b.ask()
        if after["data"] != before["data"]:
            break
        await asyncio.sleep(0.01)
    assert after["data"]["availability"][0]["onHand"] == 3 * 24
    again = await a.ask()
    assert again["data"] == after["data"]


async def test_an_answer_shared_with_others_is_never_made_from_stale_local_copies(
    processes: list[Process],
) -> None:
    a, b = processes
    await b.ask()  # B now keeps SKU-00001's levels in memory
    # B stops hearing other processes' changes: its own copies go stale.
    for task in b.runtime.tasks:
        if task.get_name() == "invalidations":
            task.cancel()
    await _set_on_hand(a, 3)
    a.runtime.projection_changed(TenantId("acme"), {Sku("SKU-00001")})
    await a.runtime.invalidations.flush()
    other = {"query": '{ availability(skus: ["SKU-00001"]) { sku available onHand } }'}
    await b.ask(other)  # computed by B for everyone, so from the database
    shared = await a.ask(other)
    assert a.runtime.shared_answers is not None and a.runtime.shared_answers.hits == 1
    assert shared["data"]["availability"][0]["onHand"] == 3 * 24

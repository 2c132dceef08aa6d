"""Repeated storefront reads come from the response cache, and never outlive their data."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
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

AVAILABILITY = {"query": 'query { availability(skus: ["SKU-00001"]) { sku available onHand } }'}


class Client:
    def __init__(self, http: httpx.AsyncClient, runtime: Runtime) -> None:
        self.http = http
        self.runtime = runtime

    def token(self, tenant: str = "acme", scopes: frozenset[Scope] = frozenset(Scope)) -> str:
        principal = Principal(TenantId(tenant), f"test-{tenant}", scopes)
        return self.runtime.tokens.issue(principal).access_token

    async def post(self, body: dict[str, Any], token: str | None = None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token or self.token()}"}
        return await self.http.post("/graphql", json=body, headers=headers)

    @property
    def hits(self) -> int:
        assert self.runtime.response_cache is not None
        return self.runtime.response_cache.stats().hits


@pytest.fixture
async def client(demo_database: str, tmp_path: Path) -> AsyncIterator[Client]:
    source = Path(demo_database.removeprefix("sqlite+aiosqlite:///"))
    copy = tmp_path / "stockgraph.db"
    shutil.copy(source, copy)
    settings = make_settings(f"sqlite+aiosqlite:///{copy}")
    runtime = Runtime.build(settings)
    app = create_app(settings, runtime=runtime)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://sg") as http:
            yield Client(http, runtime)


async def _set_on_hand(runtime: Runtime, value: int) -> None:
    async with runtime.engine.begin() as conn:
        await conn.execute(
            text(
                "UPDATE stock_levels SET on_hand = :v, available = :v, committed = 0,"
                " reserved = 0, damaged = 0, safety_stock = 0, quality_control = 0"
                " WHERE tenant_id = 'acme' AND sku = 'SKU-00001'"
            ),
            {"v": value},
        )


async def test_a_repeated_read_is_served_from_the_cache_and_priced_again(client: Client) -> None:
    first = await client.post(AVAILABILITY)
    second = await client.post(AVAILABILITY)
    assert first.status_code == second.status_code == 200
    head = first.content.split(b',"extensions":')[0]
    assert second.content.split(b',"extensions":')[0] == head
    assert client.hits == 1
    costs = [r.json()["extensions"]["cost"] for r in (first, second)]
    assert costs[0]["requestedQueryCost"] == costs[1]["requestedQueryCost"] == 1
    assert costs[0]["actualQueryCost"] == costs[1]["actualQueryCost"] == 1


async def test_cached_answers_spend_the_callers_bucket_like_executed_ones(client: Client) -> None:
    skus = ", ".join(f'"SKU-{i:05d}"' for i in range(20))
    levels = {"query": f"{{ inventoryLevels(skus: [{skus}]) {{ sku onHand }} }}"}
    answers = [(await client.post(levels)).json()["extensions"]["cost"] for _ in range(3)]
    assert client.hits == 2
    assert {a["requestedQueryCost"] for a in answers} == {a["actualQueryCost"] for a in answers}
    cost = answers[0]["requestedQueryCost"]
    left = [a["throttleStatus"]["currentlyAvailable"] for a in answers]
    # 100 points a second come back: some between these requests, far fewer than a request.
    assert left[1] == pytest.approx(left[0] - cost, abs=cost / 4)
    assert left[2] == pytest.approx(left[1] - cost, abs=cost / 4)


async def test_a_change_to_the_projection_is_seen_at_once(client: Client) -> None:
    before = (await client.post(AVAILABILITY)).json()
    await _set_on_hand(client.runtime, 7)
    client.runtime.projection_changed(TenantId("acme"))
    after = (await client.post(AVAILABILITY)).json()
    assert after["data"]["availability"][0]["onHand"] == 7 * 24
    assert after != before


async def test_another_tenant_or_fewer_scopes_never_get_a_cached_answer(client: Client) -> None:
    await client.post(AVAILABILITY)
    globex = await client.post(AVAILABILITY, client.token("globex"))
    weaker = await client.post(AVAILABILITY, client.token(scopes=frozenset({Scope.ORDERS_READ})))
    assert globex.json()["data"] == {"availability": []}
    assert weaker.json()["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    assert client.hits == 0


async def test_errors_and_clock_dependent_reads_are_not_kept(client: Client) -> None:
    forbidden = client.token(scopes=frozenset({Scope.ORDERS_READ}))
    await client.post(AVAILABILITY, forbidden)
    await client.post(AVAILABILITY, forbidden)
    aged = {"query": '{ inventoryLevels(skus: ["SKU-00001"], maxAge: 0) { stale } }'}
    await client.post(aged)
    await client.post(aged)
    assert client.hits == 0


async def test_different_variables_are_different_entries(client: Client) -> None:
    query = "query($s: [String!]!) { availability(skus: $s) { sku } }"
    one = await client.post({"query": query, "variables": {"s": ["SKU-00001"]}})
    two = await client.post({"query": query, "variables": {"s": ["SKU-00002"]}})
    assert one.json() != two.json()
    assert client.hits == 0


def _availability(sku: str) -> dict[str, Any]:
    return {"query": f'{{ availability(skus: ["{sku}"]) {{ sku available onHand }} }}'}


async def test_a_change_drops_only_the_answers_covering_the_changed_skus(client: Client) -> None:
    await client.post(_availability("SKU-00001"))
    await client.post(_availability("SKU-00002"))
    levels = {"query": '{ inventoryLevels(skus: ["SKU-00002"]) { sku onHand } }'}
    await client.post(levels)
    await _set_on_hand(client.runtime, 7)  # SKU-00001
    client.runtime.projection_changed(TenantId("acme"), {Sku("SKU-00001")})
    changed = (await client.post(_availability("SKU-00001"))).json()
    assert changed["data"]["availability"][0]["onHand"] == 7 * 24
    assert client.hits == 0
    await client.post(_availability("SKU-00002"))
    await client.post(levels)
    assert client.hits == 2


async def test_an_alias_is_covered_by_its_items_sku(client: Client) -> None:
    alias = await _an_alias(client.runtime, "SKU-00001")
    before = (await client.post(_availability(alias))).json()
    await _set_on_hand(client.runtime, 3)
    client.runtime.projection_changed(TenantId("acme"), {Sku("SKU-00001")})
    after = (await client.post(_availability(alias))).json()
    assert after["data"]["availability"][0]["onHand"] == 3 * 24 != before["data"]
    assert client.hits == 0


async def _an_alias(runtime: Runtime, sku: str) -> str:
    async with runtime.engine.connect() as conn:
        alias = (
            await conn.execute(
                text("SELECT alias FROM item_aliases WHERE tenant_id = 'acme' AND sku = :s"),
                {"s": sku},
            )
        ).scalar()
    if alias is None:
        pytest.skip(f"the demo gives {sku} no alias")
    return str(alias)


async def test_identical_misses_at_once_share_one_execution(client: Client) -> None:
    query = _availability("SKU-00003")
    with counted_statements(client.runtime) as statements:
        answers = await asyncio.gather(*(client.post(query) for _ in range(10)))
    assert {a.status_code for a in answers} == {200}
    assert len({a.content.split(b',"extensions":')[0] for a in answers}) == 1
    # One execution: one read of the tenant's warehouses and one of the stock.
    assert len(statements) <= 2, statements
    # Each was priced and spent on its own.
    assert {a.json()["extensions"]["cost"]["actualQueryCost"] for a in answers} == {1}

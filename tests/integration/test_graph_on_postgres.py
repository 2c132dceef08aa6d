"""The graph served from a real PostgreSQL: same answers, same statement counts, same walls."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from stockgraph.runtime import Runtime
from tests.conftest import build_world, make_settings
from tests.graphql.helpers import counted_statements, generous, run
from tests.graphql.test_tenant_isolation import CASES

pytestmark = pytest.mark.postgres


@pytest.fixture
async def pg_runtime(postgres_database_url: str) -> AsyncIterator[Runtime]:
    await build_world(postgres_database_url)
    rt = Runtime.build(make_settings(postgres_database_url))
    try:
        yield rt
    finally:
        await rt.close()


async def test_postgres_answers_every_query_and_keeps_tenants_apart(pg_runtime: Runtime) -> None:
    levels = await run(
        pg_runtime,
        '{ inventoryLevels(skus: ["SKU-00001", "AC000002"]) { sku warehouse { code } onHand'
        " available committed reserved damaged safetyStock qualityControl asOf source } }",
    )
    assert levels.errors == []
    assert len(levels.data["inventoryLevels"]) == 48
    for lv in levels.data["inventoryLevels"]:
        assert lv["asOf"].endswith("Z")
        assert lv["onHand"] == (
            lv["available"]
            + lv["committed"]
            + lv["reserved"]
            + lv["damaged"]
            + lv["safetyStock"]
            + lv["qualityControl"]
        )
    ledger = await run(
        pg_runtime,
        '{ inventoryLevels(skus: ["SKU-00001", "AC000002"], asOf: "2999-01-01T00:00:00Z")'
        " { sku warehouse { code } onHand available committed reserved damaged safetyStock"
        " qualityControl } }",
    )
    assert [
        {k: v for k, v in lv.items() if k not in ("asOf", "source")}
        for lv in levels.data["inventoryLevels"]
    ] == ledger.data["inventoryLevels"]
    for name, (query, variables, expected) in CASES.items():
        result = await run(pg_runtime, query, variables, tenant="globex")
        assert result.errors == [], name
        if expected is not None:
            assert result.data == expected, name


async def test_postgres_reads_levels_of_50_skus_in_two_statements(pg_runtime: Runtime) -> None:
    with counted_statements(pg_runtime) as statements:
        result = await run(
            pg_runtime,
            "query($s: [String!]!){ inventoryLevels(skus: $s) { sku onHand warehouse { code } } }",
            {"s": [f"SKU-{i:05d}" for i in range(50)]},
            **generous(),
        )
    assert len(result.data["inventoryLevels"]) == 50 * 24
    assert len(statements) == 2, statements


async def test_seeding_twice_creates_nothing_new(postgres_database_url: str) -> None:
    await build_world(postgres_database_url)
    rt = Runtime.build(make_settings(postgres_database_url))
    try:
        from stockgraph.services.demo import seed_demo

        created = await seed_demo(catalog=rt.catalog_writer, stock=rt.stock_store)
    finally:
        await rt.close()
    assert created == {"acme": 0, "globex": 0}

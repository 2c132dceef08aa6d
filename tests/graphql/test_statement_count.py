"""No query issues a SQL statement per row."""

from __future__ import annotations

from stockgraph.runtime import Runtime
from tests.graphql.helpers import counted_statements, generous, run

ALL_LEVEL_FIELDS = """sku warehouse { id code name region location { lat lng } dialect }
    onHand available committed reserved incoming damaged safetyStock qualityControl
    asOf source stale"""


async def test_inventory_levels_for_50_skus_in_24_warehouses_take_two_statements(
    runtime: Runtime,
) -> None:
    skus = [f"SKU-{i:05d}" for i in range(50)]
    with counted_statements(runtime) as statements:
        result = await run(
            runtime,
            f"query($s:[String!]!){{ inventoryLevels(skus:$s){{ {ALL_LEVEL_FIELDS} }} }}",
            {"s": skus},
            **generous(),
        )
    assert result.errors == []
    assert len(result.data["inventoryLevels"]) > 50 * 20
    # The tenant's warehouses once, and the levels of every SKU at once.
    assert len(statements) == 2, statements


async def test_availability_with_warehouses_near_a_point_takes_two_statements(
    runtime: Runtime,
) -> None:
    skus = [f"SKU-{i:05d}" for i in range(50)]
    with counted_statements(runtime) as statements:
        result = await run(
            runtime,
            "query($s:[String!]!){ availability(skus:$s, near:{lat:50, lng:8}){ sku available"
            " warehouses { warehouse { code } distanceKm } } }",
            {"s": skus},
            **generous(),
        )
    assert result.errors == []
    assert len(statements) == 2, statements


async def test_items_page_takes_five_statements_whatever_its_size(runtime: Runtime) -> None:
    with counted_statements(runtime) as statements:
        result = await run(
            runtime, "{ items(first: 100) { edges { node { sku aliases units { name } } } } }"
        )
    assert len(result.data["items"]["edges"]) == 100
    assert len(statements) == 5, statements


async def test_a_repeated_read_of_the_same_skus_issues_no_statement(runtime: Runtime) -> None:
    query = f"query($s:[String!]!){{ inventoryLevels(skus:$s){{ {ALL_LEVEL_FIELDS} }} }}"
    skus = {"s": [f"SKU-{i:05d}" for i in range(20)]}
    first = await run(runtime, query, skus, **generous())
    with counted_statements(runtime) as statements:
        again = await run(runtime, query, skus, **generous())
    assert again.data == first.data
    assert statements == []

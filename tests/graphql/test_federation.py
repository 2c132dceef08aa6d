"""Stockgraph as an Apollo Federation v2 subgraph."""

from __future__ import annotations

from stockgraph.runtime import Runtime
from stockgraph.schema.relay import to_global_id
from tests.graphql.helpers import counted_statements, run


async def test_service_sdl_declares_federation_2_keys(runtime: Runtime) -> None:
    result = await run(runtime, "{ _service { sdl } }")
    sdl = result.data["_service"]["sdl"]
    assert '@link(url: "https://specs.apollo.dev/federation/v2' in sdl
    assert 'type Warehouse @key(fields: "id")' in sdl
    assert 'type Item @key(fields: "sku")' in sdl


async def test_entity_references_resolve_in_one_batch(runtime: Runtime) -> None:
    reps = [{"__typename": "Item", "sku": f"SKU-{i:05d}"} for i in range(30)] + [
        {"__typename": "Warehouse", "id": to_global_id("Warehouse", "acme", f"WH-{i:02d}")}
        for i in range(24)
    ]
    with counted_statements(runtime) as statements:
        result = await run(
            runtime,
            "query($r: [_Any!]!){ _entities(representations: $r) {"
            " ... on Item { sku name } ... on Warehouse { code } } }",
            {"r": reps},
        )
    assert result.errors == []
    assert [e.get("sku") or e.get("code") for e in result.data["_entities"]] == [
        f"SKU-{i:05d}" for i in range(30)
    ] + [f"WH-{i:02d}" for i in range(24)]
    # The tenant's warehouses once; the items in one batch: codes, items, aliases, units,
    # components.
    assert len(statements) == 6, statements

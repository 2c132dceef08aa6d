"""Limits, error codes and scopes."""

from __future__ import annotations

import pytest

from stockgraph.auth.scopes import Scope
from stockgraph.runtime import Runtime
from stockgraph.schema.build import SchemaLimits, build_schema
from stockgraph.schema.context import Context, Limits
from stockgraph.schema.errors import format_errors
from tests.graphql.helpers import run

READ_QUERIES = [
    "{ warehouses { edges { node { id } } } }",
    '{ warehouse(id: "V2FyZWhvdXNlOmFjbWU6V0gtMDA") { id } }',
    '{ item(sku: "SKU-00001") { sku } }',
    "{ items { edges { node { sku } } } }",
    '{ inventoryLevels(skus: ["SKU-00001"]) { sku } }',
    '{ availability(skus: ["SKU-00001"]) { sku } }',
]


@pytest.mark.parametrize("query", READ_QUERIES)
async def test_every_read_needs_the_inventory_read_scope(runtime: Runtime, query: str) -> None:
    denied = await run(runtime, query, scopes={Scope.ORDERS_READ})
    allowed = await run(runtime, query, scopes={Scope.INVENTORY_READ})
    assert denied.codes == ["FORBIDDEN"]
    assert "inventory:read" in denied.errors[0]["message"]
    assert allowed.errors == []


async def test_entities_need_the_inventory_read_scope(runtime: Runtime) -> None:
    result = await run(
        runtime,
        '{ _entities(representations: [{__typename: "Item", sku: "SKU-00001"}])'
        " { ... on Item { sku } } }",
        scopes={Scope.ORDERS_READ},
    )
    assert result.codes == ["FORBIDDEN"]


async def test_more_skus_than_the_limit_is_bad_user_input(runtime: Runtime) -> None:
    result = await run(
        runtime,
        "query($s:[String!]!){ inventoryLevels(skus:$s){ sku } }",
        {"s": [f"SKU-{i:05d}" for i in range(11)]},
        limits=Limits(max_list_size=10),
    )
    assert result.codes == ["BAD_USER_INPUT"]
    assert "at most 10" in result.errors[0]["message"]


async def test_a_page_larger_than_the_limit_is_bad_user_input(runtime: Runtime) -> None:
    result = await run(runtime, "{ items(first: 1000) { edges { cursor } } }")
    assert result.codes == ["BAD_USER_INPUT"]


async def test_a_malformed_id_or_cursor_is_bad_user_input(runtime: Runtime) -> None:
    bad_id = await run(runtime, '{ warehouse(id: "not-an-id") { id } }')
    bad_cursor = await run(runtime, '{ items(after: "zzz") { edges { cursor } } }')
    assert bad_id.codes == ["BAD_USER_INPUT"]
    assert bad_cursor.codes == ["BAD_USER_INPUT"]


async def test_syntax_and_validation_errors_are_bad_user_input(runtime: Runtime) -> None:
    assert (await run(runtime, "{ items { ")).codes == ["BAD_USER_INPUT"]
    assert (await run(runtime, "{ noSuchField }")).codes == ["BAD_USER_INPUT"]


async def _run_limited(runtime: Runtime, query: str, limits: SchemaLimits) -> list[str]:
    from stockgraph.auth.principal import Principal
    from stockgraph.domain.ids import TenantId

    schema = build_schema(limits)
    context = Context(
        principal=Principal(TenantId("acme"), "t", frozenset(Scope)),
        services=runtime.services(),
    )
    result = await schema.execute(query, context_value=context)
    assert result.data is None
    return [e["extensions"]["code"] for e in format_errors(result.errors or [])]


async def test_too_deep_too_many_aliases_or_tokens_is_query_too_complex(runtime: Runtime) -> None:
    deep = "{ warehouses { edges { node { location { lat } } } } }"
    aliased = "{ " + " ".join(f"a{i}: items {{ edges {{ cursor }} }}" for i in range(5)) + " }"
    long = "{ items { edges { " + " ".join(["cursor"] * 300) + " } } }"
    assert await _run_limited(runtime, deep, SchemaLimits(max_depth=3)) == ["QUERY_TOO_COMPLEX"]
    assert await _run_limited(runtime, aliased, SchemaLimits(max_aliases=3)) == [
        "QUERY_TOO_COMPLEX"
    ]
    assert await _run_limited(runtime, long, SchemaLimits(max_tokens=200)) == ["QUERY_TOO_COMPLEX"]


async def test_unexpected_errors_are_masked_as_internal(runtime: Runtime) -> None:
    class Broken:
        async def warehouses(self, tenant_id: object) -> object:
            raise RuntimeError("secret database detail")

    broken = Runtime.build(runtime.settings)
    broken.catalog = Broken()  # type: ignore[assignment]
    try:
        result = await run(broken, "{ warehouses { edges { cursor } } }")
    finally:
        await broken.close()
    assert result.codes == ["INTERNAL"]
    assert "secret" not in result.errors[0]["message"]

"""The plain-field executor answers exactly what graphql-core's own executor answers."""

from __future__ import annotations

from typing import Any

import pytest
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

from stockgraph.auth.principal import Principal
from stockgraph.auth.scopes import Scope
from stockgraph.domain.ids import TenantId
from stockgraph.runtime import Runtime
from stockgraph.schema.build import build_schema
from stockgraph.schema.context import Context
from stockgraph.schema.errors import format_errors
from stockgraph.schema.relay import to_global_id
from tests.graphql.helpers import run

FAST = build_schema()
STANDARD = build_schema()
STANDARD.execution_context_class = StrawberryGraphQLCoreExecutionContext

DOCUMENTS = [
    """query($s: [String!]!) { inventoryLevels(skus: $s) { sku warehouse { id code name region
        location { lat lng } dialect __typename } onHand available committed reserved incoming
        damaged safetyStock qualityControl asOf source stale __typename } }""",
    """query($s: [String!]!) { inventoryLevels(skus: $s) { ...L w2: warehouse { code } } }
       fragment L on InventoryLevel { sku q: onHand warehouse { name } }""",
    """query($s: [String!]!, $on: Boolean!) { inventoryLevels(skus: $s) {
        sku onHand @include(if: $on) available @skip(if: $on) } }""",
    """query($s: [String!]!) { availability(skus: $s, near: {lat: 50, lng: 9}) { sku available
        onHand warehouses { warehouse { code location { lat } } available distanceKm } } }""",
    """query($s: [String!]!) { items(skus: $s) { edges { cursor node { sku name aliases
        baseUnit units { name factor } components { sku quantity } } }
        pageInfo { hasNextPage endCursor } } }""",
    """query { warehouses(first: 30) { edges { node { ... on Warehouse { id code } } } } }""",
    """query($w: ID!) { warehouse(id: $w) { id code location { lat lng } } }""",
]


async def _execute(runtime: Runtime, schema: Any, document: str, variables: dict[str, Any]) -> Any:
    context = Context(
        principal=Principal(TenantId("acme"), "t", frozenset(Scope)),
        services=runtime.services(),
    )
    result = await schema.execute(document, variable_values=variables, context_value=context)
    return result.data, format_errors(result.errors or [])


@pytest.mark.parametrize("document", DOCUMENTS)
async def test_the_fast_path_answers_like_the_standard_executor(
    runtime: Runtime, document: str
) -> None:
    variables = {
        "s": [f"SKU-{i:05d}" for i in range(6)] + ["AC000010", "NOPE"],
        "on": True,
        "w": to_global_id("Warehouse", "acme", "WH-04"),
    }
    fast = await _execute(runtime, FAST, document, variables)
    standard = await _execute(runtime, STANDARD, document, variables)
    assert fast == standard
    assert fast[0] is not None and fast[1] == []


async def test_a_null_in_a_non_null_field_errors_like_the_standard_executor(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stockgraph.schema import types

    original = types.Warehouse.of

    def broken(w: Any) -> Any:
        made = original(w)
        made.name = None  # type: ignore[assignment]
        return made

    monkeypatch.setattr(types.Warehouse, "of", broken)
    document = '{ inventoryLevels(skus: ["SKU-00001"]) { sku warehouse { name } } }'
    fast = await _execute(runtime, FAST, document, {})
    standard = await _execute(runtime, STANDARD, document, {})
    assert fast == standard
    assert fast[1][0]["extensions"]["code"] == "INTERNAL"


async def test_plain_lists_take_the_compiled_path(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stockgraph.schema.execution import PlainFieldExecutor

    compiled: list[str] = []
    original = PlainFieldExecutor._compile

    def spy(self: PlainFieldExecutor, return_type: Any, details: Any) -> Any:
        plan = original(self, return_type, details)
        if plan is not None:
            compiled.append(return_type.name)
        return plan

    monkeypatch.setattr(PlainFieldExecutor, "_compile", spy)
    await _execute(runtime, FAST, DOCUMENTS[0], {"s": ["SKU-00001"]})
    assert set(compiled) == {"InventoryLevel", "Warehouse", "GeoPoint"}


async def test_a_plan_kept_from_an_earlier_execution_follows_the_variables(
    runtime: Runtime,
) -> None:
    # The same document (the same nodes, from the parser cache) run with other variables:
    # a fragment that @include drops must not come back from a plan made when it was there.
    document = (
        'query($full: Boolean!) { inventoryLevels(skus: ["SKU-00001"]) '
        "{ sku ... on InventoryLevel @include(if: $full) { onHand available } } }"
    )
    full = await run(runtime, document, {"full": True})
    bare = await run(runtime, document, {"full": False})
    again = await run(runtime, document, {"full": True})
    assert set(full.data["inventoryLevels"][0]) == {"sku", "onHand", "available"}
    assert set(bare.data["inventoryLevels"][0]) == {"sku"}
    assert again.data == full.data

"""A principal of one tenant gets "not found" for everything of another, whatever it asks.

Both demo tenants have warehouses coded ``WH-00`` … so a lookup that forgot the tenant
would find the wrong one; every query field of the schema must have a case here.
"""

from __future__ import annotations

from typing import Any

from stockgraph.runtime import Runtime
from stockgraph.schema.relay import to_global_id
from tests.graphql.helpers import _SCHEMA, run

ACME_WH = to_global_id("Warehouse", "acme", "WH-00")
ACME_ITEM_ALIAS = "AC000001"
ACME_ENDPOINT = to_global_id("WebhookEndpoint", "acme", "1")

# Each case: a query of globex asking for acme's things, and what globex must get.
CASES: dict[str, tuple[str, dict[str, Any], Any]] = {
    "warehouse": (
        "query($id: ID!){ warehouse(id: $id) { id code } }",
        {"id": ACME_WH},
        {"warehouse": None},
    ),
    "warehouses": (
        "{ warehouses(first: 100) { edges { node { code name } } } }",
        {},
        {
            "warehouses": {
                "edges": [
                    {"node": {"code": "WH-00", "name": "Paris DC"}},
                    {"node": {"code": "WH-01", "name": "Lyon DC"}},
                    {"node": {"code": "WH-02", "name": "Madrid DC"}},
                ]
            }
        },
    ),
    "item": (
        'query($s: String!){ a: item(sku: $s) { sku } b: item(sku: "SKU-00001") { sku } }',
        {"s": ACME_ITEM_ALIAS},
        {"a": None, "b": None},
    ),
    "items": (
        '{ items(skus: ["SKU-00001", "AC000002"]) { edges { node { sku } } } }',
        {},
        {"items": {"edges": []}},
    ),
    "inventoryLevels": (
        'query($w: [ID!]){ a: inventoryLevels(skus: ["SKU-00001", "AC000001"]) { sku }'
        ' b: inventoryLevels(skus: ["GX-00001"], warehouseIds: $w) { sku }'
        ' c: inventoryLevels(skus: ["SKU-00001"], asOf: "2999-01-01T00:00:00Z") { sku } }',
        {"w": [ACME_WH]},
        {"a": [], "b": [], "c": []},
    ),
    "availability": (
        '{ availability(skus: ["SKU-00001", "AC000001"]) { sku available } }',
        {},
        {"availability": []},
    ),
    "_entities": (
        "query($reps: [_Any!]!){ _entities(representations: $reps) {"
        " ... on Warehouse { code } ... on Item { sku } } }",
        {
            "reps": [
                {"__typename": "Warehouse", "id": ACME_WH},
                {"__typename": "Item", "sku": "SKU-00001"},
            ]
        },
        {"_entities": [None, None]},
    ),
    "syncExceptions": (
        "{ syncExceptions(open: false) { edges { node { id connectorId } } } }",
        {},
        {"syncExceptions": {"edges": []}},
    ),
    "syncHealth": ("{ syncHealth { connectorId } }", {}, {"syncHealth": []}),
    "_service": ("{ _service { sdl } }", {}, None),
    "webhookEndpoints": (
        "{ webhookEndpoints { edges { node { id url } } } }",
        {},
        {"webhookEndpoints": {"edges": []}},
    ),
    "deliveries": (
        "query($e: ID){ a: deliveries { edges { node { id } } }"
        " b: deliveries(endpointId: $e) { edges { node { id } } } }",
        {"e": ACME_ENDPOINT},
        {"a": {"edges": []}, "b": {"edges": []}},
    ),
}


def test_every_query_field_has_an_isolation_case() -> None:
    query_type = _SCHEMA._schema.query_type
    assert query_type is not None
    assert set(query_type.fields) == set(CASES)


async def test_another_tenants_ids_skus_and_aliases_find_nothing(runtime: Runtime) -> None:
    for name, (query, variables, expected) in CASES.items():
        result = await run(runtime, query, variables, tenant="globex")
        assert result.errors == [], name
        if expected is not None:
            assert result.data == expected, name


async def test_the_same_queries_find_them_for_their_own_tenant(runtime: Runtime) -> None:
    result = await run(runtime, CASES["warehouse"][0], {"id": ACME_WH}, tenant="acme")
    assert result.data == {"warehouse": {"id": ACME_WH, "code": "WH-00"}}
    entities = await run(runtime, *CASES["_entities"][:2], tenant="acme")
    assert entities.data == {"_entities": [{"code": "WH-00"}, {"sku": "SKU-00001"}]}

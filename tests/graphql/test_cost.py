"""Operation cost: priced before anything runs, spent from the caller's bucket, reported."""

from __future__ import annotations

import math
from typing import Any

import pytest
from graphql import parse

from stockgraph.cache.buckets import MemoryBuckets
from stockgraph.domain.bucket import BucketPolicy
from stockgraph.runtime import Runtime
from stockgraph.schema.build import build_schema
from stockgraph.schema.context import Limits
from stockgraph.schema.cost import Sizes, WarehouseCountNeeded, actual_cost, analyse
from tests.graphql.helpers import counted_statements, run

SCHEMA = build_schema()._schema
SIZES = Sizes(warehouses=24, live_instances=20)
ITEM = '{__typename: "Item", sku: "SKU-00001"}'

# Every Query field of the contract, priced: objects 1, scalars 0, lists times their size,
# each upstream WMS call 10.
PRICES: dict[str, list[tuple[str, dict[str, Any], int]]] = {
    "warehouses": [
        # connection 1 + 5 edges x (edge 1 + node 1 + location 1) + pageInfo 1
        (
            "{ warehouses(first: 5) { edges { node { id location { lat } } } "
            "pageInfo { hasNextPage } } }",
            {},
            17,
        ),
        ("{ warehouses { edges { cursor } } }", {}, 21),  # 20 edges by default
    ],
    "warehouse": [('{ warehouse(id: "x") { id name } }', {}, 1)],
    "item": [  # item 1 + units and components assumed 5 each
        ('{ item(sku: "a") { sku aliases units { name } components { sku } } }', {}, 11)
    ],
    "items": [
        ("{ items(first: 3) { edges { node { sku } } } }", {}, 7),
        ("{ items(first: 1000) { edges { node { sku } } } }", {}, 201),  # capped at 100
    ],
    "inventoryLevels": [
        ('{ inventoryLevels(skus: ["a", "b"]) { sku warehouse { id } } }', {}, 96),
        (
            "query($s: [String!]!, $w: [ID!]) "
            "{ inventoryLevels(skus: $s, warehouseIds: $w) { sku onHand } }",
            {"s": ["a", "b", "c"], "w": ["x", "y"]},
            6,
        ),
        # 2 SKUs x 20 connected instances... of 24 warehouses: 48 rows + 20 calls x 10
        ('{ inventoryLevels(skus: ["a", "b"], maxAge: 0) { sku } }', {}, 48 + 200),
        (
            '{ inventoryLevels(skus: ["a"], maxAge: 0, asOf: "2026-01-01T00:00:00Z") { sku } }',
            {},
            24,
        ),
    ],
    "availability": [
        (
            '{ availability(skus: ["a", "b", "c"]) '
            "{ sku warehouses { warehouse { id } available } } }",
            {},
            3 * (1 + 24 * 2),
        ),
        ("query($s: [String!]!) { availability(skus: $s) { sku } }", {"s": ["a"] * 4}, 4),
    ],
    "syncExceptions": [("{ syncExceptions(first: 2) { edges { node { id } } } }", {}, 5)],
    "syncHealth": [("{ syncHealth { connectorId } }", {}, 24)],
    "_entities": [
        (
            f"{{ _entities(representations: [{ITEM}, {ITEM}]) {{ ... on Item {{ sku }} }} }}",
            {},
            2,
        )
    ],
    "_service": [("{ _service { sdl } }", {}, 1)],
    # connection 1 + 2 edges x (edge 1 + node 1)
    "webhookEndpoints": [("{ webhookEndpoints(first: 2) { edges { node { id url } } } }", {}, 5)],
    "deliveries": [
        # connection 1 + 2 edges x (edge 1 + node 1 + endpoint 1 + 5 attempts assumed)
        (
            "{ deliveries(first: 2, status: [DEAD]) { edges { node { id endpoint { id } "
            "attempts { statusCode } } } } }",
            {},
            17,
        )
    ],
}

# Every Mutation field, priced: 10 each on top of its selection (payload 1, its objects,
# lists of user errors assumed 5).
MUTATION_PRICES: dict[str, tuple[str, int]] = {
    "replayDelivery": (
        'mutation { replayDelivery(input: {id: "x"}) { delivery { id } userErrors { code } } }',
        1 + 1 + 5 + 10,
    ),
    "createWebhookEndpoint": (
        'mutation { createWebhookEndpoint(input: {url: "https://a.example", eventTypes: []}) '
        "{ endpoint { id } secret userErrors { code } } }",
        1 + 1 + 5 + 10,
    ),
    "updateWebhookEndpoint": (
        'mutation { updateWebhookEndpoint(input: {id: "x", enabled: true}) '
        "{ endpoint { id } userErrors { code } } }",
        1 + 1 + 5 + 10,
    ),
    "deleteWebhookEndpoint": (
        'mutation { deleteWebhookEndpoint(input: {id: "x"}) { deletedId userErrors { code } } }',
        1 + 5 + 10,
    ),
}


def _cases() -> list[tuple[str, dict[str, Any], int]]:
    return [case for cases in PRICES.values() for case in cases]


def test_every_query_field_has_a_price() -> None:
    query = SCHEMA.query_type
    assert query is not None
    assert set(query.fields) == set(PRICES)


@pytest.mark.parametrize(("document", "variables", "cost"), _cases())
def test_the_requested_cost_follows_the_rules(
    document: str, variables: dict[str, Any], cost: int
) -> None:
    assert analyse(SCHEMA, parse(document), None, variables, SIZES).requested == cost


def test_every_mutation_field_has_a_price() -> None:
    mutation = SCHEMA.mutation_type
    assert mutation is not None
    assert set(mutation.fields) == set(MUTATION_PRICES)


@pytest.mark.parametrize(("document", "cost"), list(MUTATION_PRICES.values()))
def test_mutations_are_priced_at_ten_on_top_of_their_selection(document: str, cost: int) -> None:
    analysis = analyse(SCHEMA, parse(document), None, {}, SIZES)
    assert (analysis.requested, analysis.mutations) == (cost, 1)


def test_introspection_is_free() -> None:
    document = parse("{ __schema { types { name fields { name } } } __typename }")
    assert analyse(SCHEMA, document, None, {}, SIZES).requested == 0


def test_fragments_are_priced_once_per_field_they_select() -> None:
    document = parse(
        "query Q { ...A ...A } "
        'fragment A on Query { availability(skus: ["a", "b"]) { sku ...B } } '
        "fragment B on SkuAvailability { warehouses { available } }"
    )
    assert analyse(SCHEMA, document, "Q", {}, SIZES).requested == 2 * (1 + 24)


def test_variables_that_execution_refuses_cost_nothing() -> None:
    document = parse("query($s: [String!]!) { availability(skus: $s) { sku } }")
    assert analyse(SCHEMA, document, None, {"s": 7}, SIZES).requested == 0


def test_the_warehouse_count_is_asked_for_only_when_a_list_needs_it() -> None:
    unknown = Sizes(warehouses=None)
    assert analyse(SCHEMA, parse('{ item(sku: "a") { sku } }'), None, {}, unknown).requested == 1
    with pytest.raises(WarehouseCountNeeded):
        analyse(SCHEMA, parse('{ inventoryLevels(skus: ["a"]) { sku } }'), None, {}, unknown)


def test_mutations_cost_ten_on_top_of_their_selection() -> None:
    from graphql import build_schema as from_sdl

    schema = from_sdl(
        "type Payload { ok: Boolean item: Thing } type Thing { id: ID } "
        "type Query { x: Int } type Mutation { adjust(n: Int): Payload! }"
    )
    document = parse("mutation { a: adjust(n: 1) { ok item { id } } b: adjust(n: 2) { ok } }")
    analysis = analyse(schema, document, None, {}, SIZES)
    assert (analysis.requested, analysis.mutations) == ((1 + 1) + 1 + 2 * 10, 2)


def test_the_actual_cost_counts_objects_calls_and_mutations() -> None:
    document = parse('{ levels: inventoryLevels(skus: ["a"]) { sku warehouse { id } } }')
    shape = analyse(SCHEMA, document, None, {}, SIZES).shape
    data = {"levels": [{"sku": "a", "warehouse": {"id": "1"}}, {"sku": "b", "warehouse": None}]}
    assert actual_cost(data, shape, upstream_calls=0, mutations=0) == 3
    assert actual_cost(data, shape, upstream_calls=2, mutations=1) == 3 + 20 + 10
    assert actual_cost(None, shape, upstream_calls=0, mutations=0) == 0


def test_the_actual_cost_of_a_connection_counts_its_edges_nodes_and_page_info() -> None:
    document = parse(
        "{ items(first: 5) { edges { cursor node { sku units { name } } } "
        "pageInfo { hasNextPage } } }"
    )
    analysis = analyse(SCHEMA, document, None, {}, SIZES)
    node = {"sku": "a", "units": [{"name": "each"}, {"name": "case"}]}
    data = {"items": {"edges": [{"cursor": "c", "node": node}], "pageInfo": {"x": 1}}}
    # connection + edge + node + 2 units + pageInfo
    assert actual_cost(data, analysis.shape, upstream_calls=0, mutations=0) == 6
    assert analysis.requested >= 6


async def test_an_operation_over_the_maximum_is_refused_before_anything_runs(
    runtime: Runtime,
) -> None:
    with counted_statements(runtime) as statements:
        result = await run(
            runtime,
            '{ inventoryLevels(skus: ["SKU-00001", "SKU-00002"]) { sku warehouse { id } } }',
            limits=Limits(max_cost=50),
        )
    assert result.codes == ["MAX_COST_EXCEEDED"]
    assert result.errors[0]["extensions"]["requestedQueryCost"] == 96
    assert result.data is None
    # Only the tenant's warehouses were read, to size the list; no stock at all.
    assert len(statements) == 1
    assert "stock_levels" not in statements[0]


async def test_a_bucket_short_of_the_cost_throttles_and_refunds_what_was_not_used(
    runtime: Runtime,
) -> None:
    now = [0.0]
    buckets = MemoryBuckets(
        policy=BucketPolicy(capacity=100, restore_rate=10), clock=lambda: now[0]
    )
    query = '{ availability(skus: ["SKU-00001", "nope"]) { sku warehouses { available } } }'
    first = await run(runtime, query, buckets=buckets)
    # Requested 2 x (1 + 24) = 50; the unknown SKU returns nothing, the other one row per
    # warehouse stocking it: the difference is given back.
    assert first.errors == []
    actual = 1 + len(first.data["availability"][0]["warehouses"])
    assert (first.context.cost.requested, first.context.cost.actual) == (50, actual)
    assert first.context.cost.throttle is not None
    assert first.context.cost.throttle.available == 100 - actual
    for _ in range(5):
        refused = await run(runtime, query, buckets=buckets)
        if refused.errors:
            break
    assert refused.codes == ["THROTTLED"]
    assert refused.data is None
    assert refused.context.cost.actual is None
    throttle = refused.context.cost.throttle
    assert throttle is not None and not throttle.allowed
    wait_ms = refused.errors[0]["extensions"]["retryAfterMs"]
    assert wait_ms == math.ceil((50 - throttle.available) / 10 * 1000)
    now[0] += wait_ms / 1000
    assert (await run(runtime, query, buckets=buckets)).errors == []


async def test_each_client_has_its_own_bucket(runtime: Runtime) -> None:
    buckets = MemoryBuckets(policy=BucketPolicy(capacity=30, restore_rate=0.001))
    query = '{ availability(skus: ["SKU-00001"]) { sku warehouses { available } } }'
    assert (await run(runtime, query, buckets=buckets)).errors == []
    assert (await run(runtime, query, buckets=buckets)).codes == ["THROTTLED"]
    other = await run(runtime, query, buckets=buckets, tenant="globex")
    assert other.errors == []

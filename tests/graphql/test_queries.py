"""The contract's queries, run through ``schema.execute`` against the demo world."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from stockgraph.runtime import Runtime
from stockgraph.schema.relay import to_global_id
from tests.graphql.helpers import assert_on_hand_identity, run

LEVEL_FIELDS = """
    sku warehouse { id code name } onHand available committed reserved incoming damaged
    safetyStock qualityControl asOf source stale
"""


async def test_inventory_levels_answer_every_contract_field_from_the_projection(
    runtime: Runtime,
) -> None:
    result = await run(
        runtime,
        f"query($s:[String!]!){{ inventoryLevels(skus:$s){{ {LEVEL_FIELDS} }} }}",
        {"s": ["SKU-00001", "SKU-00002"]},
    )
    assert result.errors == []
    levels = result.data["inventoryLevels"]
    assert {lv["sku"] for lv in levels} == {"SKU-00001", "SKU-00002"}
    assert 30 < len(levels) <= 48
    for lv in levels:
        assert_on_hand_identity(lv)
        assert lv["source"] == "PROJECTION"
        assert lv["stale"] is False
        assert lv["asOf"].endswith("Z")
        assert lv["warehouse"]["code"].startswith("WH-")


async def test_inventory_levels_accept_an_alias_and_answer_with_the_sku(runtime: Runtime) -> None:
    by_sku = await run(runtime, '{ inventoryLevels(skus:["SKU-00007"]) { sku onHand } }')
    by_alias = await run(runtime, '{ inventoryLevels(skus:["AC000007"]) { sku onHand } }')
    assert by_alias.errors == []
    assert by_alias.data == by_sku.data
    assert by_alias.data["inventoryLevels"]


async def test_inventory_levels_keep_to_the_warehouses_asked_for(runtime: Runtime) -> None:
    wanted = [
        to_global_id("Warehouse", "acme", "WH-03"),
        to_global_id("Warehouse", "acme", "WH-05"),
    ]
    result = await run(
        runtime,
        'query($w:[ID!]){ inventoryLevels(skus:["SKU-00010","SKU-00011"], warehouseIds:$w)'
        "{ warehouse { code } } }",
        {"w": wanted},
    )
    assert {lv["warehouse"]["code"] for lv in result.data["inventoryLevels"]} <= {"WH-03", "WH-05"}
    assert result.data["inventoryLevels"]


async def test_max_age_marks_levels_older_than_asked_as_stale(runtime: Runtime) -> None:
    query = '{ inventoryLevels(skus:["SKU-00001"], maxAge: %d) { stale } }'
    fresh = await run(runtime, query % 10**8)
    old = await run(runtime, query % 0)
    assert {lv["stale"] for lv in fresh.data["inventoryLevels"]} == {False}
    assert {lv["stale"] for lv in old.data["inventoryLevels"]} == {True}


async def test_as_of_folds_the_ledger_to_the_projection_and_to_nothing_before_it(
    runtime: Runtime,
) -> None:
    query = """query($at: DateTime){ inventoryLevels(skus:["SKU-00003","SKU-00004"], asOf:$at)
        { sku warehouse { code } onHand available committed reserved damaged safetyStock
          incoming source } }"""
    now = await run(runtime, query, {"at": datetime.now(UTC).isoformat()})
    current = await run(runtime, query.replace("asOf:$at", "").replace("($at: DateTime)", ""))
    past = await run(runtime, query, {"at": (datetime.now(UTC) - timedelta(days=3650)).isoformat()})
    assert {lv["source"] for lv in now.data["inventoryLevels"]} == {"LEDGER"}

    def strip(levels: list[dict[str, object]]) -> list[dict[str, object]]:
        return [{k: v for k, v in lv.items() if k != "source"} for lv in levels]

    assert strip(now.data["inventoryLevels"]) == strip(current.data["inventoryLevels"])
    assert past.data["inventoryLevels"] == []


async def test_as_of_without_a_time_zone_is_bad_user_input(runtime: Runtime) -> None:
    result = await run(
        runtime, '{ inventoryLevels(skus:["SKU-00001"], asOf:"2026-01-01T00:00:00") { sku } }'
    )
    assert result.codes == ["BAD_USER_INPUT"]


async def test_availability_sums_every_warehouse_of_each_sku_in_the_order_asked(
    runtime: Runtime,
) -> None:
    skus = ["SKU-00020", "SKU-00005", "SKU-00013"]
    result = await run(
        runtime,
        "query($s:[String!]!){ availability(skus:$s){ sku available onHand warehouses"
        "{ warehouse { id } available distanceKm } } }",
        {"s": skus},
    )
    levels = await run(
        runtime,
        "query($s:[String!]!){ inventoryLevels(skus:$s){ sku available onHand } }",
        {"s": skus},
    )
    assert [a["sku"] for a in result.data["availability"]] == skus
    for entry in result.data["availability"]:
        rows = [lv for lv in levels.data["inventoryLevels"] if lv["sku"] == entry["sku"]]
        assert entry["available"] == sum(lv["available"] for lv in rows)
        assert entry["onHand"] == sum(lv["onHand"] for lv in rows)
        assert sum(w["available"] for w in entry["warehouses"]) == entry["available"]
        assert all(w["available"] > 0 and w["distanceKm"] is None for w in entry["warehouses"])


async def test_availability_near_a_point_lists_the_nearest_warehouse_first(
    runtime: Runtime,
) -> None:
    # Munich (WH-02) is the demo's warehouse nearest to this point.
    result = await run(
        runtime,
        '{ availability(skus:["SKU-00001","SKU-00002","SKU-00003"], near:{lat:48.14, lng:11.58})'
        "{ warehouses { warehouse { code } distanceKm } } }",
    )
    for entry in result.data["availability"]:
        distances = [w["distanceKm"] for w in entry["warehouses"]]
        assert distances == sorted(distances)
    first = [e["warehouses"][0] for e in result.data["availability"] if e["warehouses"]]
    assert any(w["warehouse"]["code"] == "WH-02" and w["distanceKm"] < 5 for w in first)


async def test_availability_names_unknown_skus_in_a_warning(runtime: Runtime) -> None:
    result = await run(runtime, '{ availability(skus:["SKU-00001","NOPE-1"]) { sku } }')
    assert [a["sku"] for a in result.data["availability"]] == ["SKU-00001"]
    assert result.context.warnings[0]["code"] == "UNKNOWN_SKU"
    assert result.context.warnings[0]["skus"] == ["NOPE-1"]


async def test_inventory_levels_name_unknown_skus_in_a_warning(runtime: Runtime) -> None:
    """A code naming no item answers no level and says so; a SKU and an alias that name
    items are not named, whether read from the projection or from the ledger."""
    for when in ("", ', asOf: "2030-01-01T00:00:00Z"'):
        result = await run(
            runtime,
            f'{{ inventoryLevels(skus:["SKU-00001","NOPE-1","AC000007","NOPE-1"]{when})'
            " { sku } }",
        )
        assert result.errors == []
        assert {level["sku"] for level in result.data["inventoryLevels"]} == {
            "SKU-00001",
            "SKU-00007",
        }
        assert result.context.warnings == [
            {
                "code": "UNKNOWN_SKU",
                "message": "these SKUs name no item of yours",
                "skus": ["NOPE-1"],
            }
        ]


async def test_inventory_levels_of_known_skus_carry_no_warning(runtime: Runtime) -> None:
    result = await run(runtime, '{ inventoryLevels(skus:["SKU-00001","AC000007"]) { sku } }')
    assert result.data["inventoryLevels"]
    assert result.context.warnings == []


async def test_warehouses_page_through_with_cursors(runtime: Runtime) -> None:
    query = """query($after: String){ warehouses(first: 10, after: $after) {
        edges { cursor node { code name region location { lat lng } dialect } }
        pageInfo { hasNextPage endCursor } } }"""
    codes: list[str] = []
    after = None
    pages = 0
    while True:
        page = (await run(runtime, query, {"after": after})).data["warehouses"]
        codes += [e["node"]["code"] for e in page["edges"]]
        pages += 1
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert pages == 3
    assert codes == [f"WH-{i:02d}" for i in range(24)]


async def test_warehouse_by_id_round_trips_its_global_id(runtime: Runtime) -> None:
    first = await run(runtime, "{ warehouses(first: 1) { edges { node { id code } } } }")
    node = first.data["warehouses"]["edges"][0]["node"]
    again = await run(runtime, "query($id: ID!){ warehouse(id: $id) { code } }", {"id": node["id"]})
    assert again.data["warehouse"] == {"code": node["code"]}


async def test_item_is_found_by_sku_or_alias_with_its_units(runtime: Runtime) -> None:
    query = (
        "query($s: String!){ item(sku: $s) { sku name aliases baseUnit"
        " units { name factor } components { sku } } }"
    )
    by_sku = await run(runtime, query, {"s": "SKU-00003"})
    item = by_sku.data["item"]
    assert item["sku"] == "SKU-00003"
    assert {"name": "each", "factor": 1} in item["units"]
    assert any(u["name"] == "case" and u["factor"] > 1 for u in item["units"])
    by_alias = await run(runtime, query, {"s": item["aliases"][0]})
    assert by_alias.data["item"] == item
    assert (await run(runtime, query, {"s": "NOPE"})).data["item"] is None


async def test_items_page_in_sku_order_and_filter_by_code(runtime: Runtime) -> None:
    page = await run(
        runtime, "{ items(first: 5) { edges { node { sku } } pageInfo { hasNextPage } } }"
    )
    assert [e["node"]["sku"] for e in page.data["items"]["edges"]] == [
        f"SKU-{i:05d}" for i in range(5)
    ]
    assert page.data["items"]["pageInfo"]["hasNextPage"] is True
    picked = await run(
        runtime, '{ items(skus: ["SKU-00009", "AC000002"]) { edges { node { sku } } } }'
    )
    assert [e["node"]["sku"] for e in picked.data["items"]["edges"]] == ["SKU-00002", "SKU-00009"]

"""``schema.graphql`` at the repository root is the live schema, to the character."""

from __future__ import annotations

from pathlib import Path

from stockgraph.schema.build import build_schema

SDL_FILE = Path(__file__).resolve().parents[2] / "schema.graphql"


def test_checked_in_sdl_matches_the_live_schema() -> None:
    live = build_schema().as_str() + "\n"
    assert SDL_FILE.read_text(encoding="utf-8") == live, (
        "schema.graphql is out of date: run `stockgraph schema print > schema.graphql`"
    )


def test_sdl_names_the_contract_queries() -> None:
    sdl = SDL_FILE.read_text(encoding="utf-8")
    for signature in (
        "warehouses(first: Int",
        "warehouse(id: ID!): Warehouse",
        "item(sku: String!): Item",
        "items(first: Int",
        "inventoryLevels(skus: [String!]!, warehouseIds: [ID!]",
        "maxAge: Int",
        "asOf: DateTime",
        "availability(skus: [String!]!, near: GeoPointInput",
    ):
        assert signature in sdl

"""Codes named in a request, resolved to SKUs: SKUs remembered, aliases asked every time."""

from __future__ import annotations

from collections.abc import Sequence

from stockgraph.domain.ids import Sku, TenantId
from stockgraph.domain.model import Item, Warehouse
from stockgraph.services.catalog import CatalogService

ACME = TenantId("acme")


class Catalogue:
    """Items SKU-1 (alias "blue-mug") and SKU-2; every lookup noted."""

    def __init__(self) -> None:
        self.items = {
            "SKU-1": Item(ACME, Sku("SKU-1"), "Mug", aliases=("blue-mug",)),
            "SKU-2": Item(ACME, Sku("SKU-2"), "Plate"),
        }
        self.asked: list[list[str]] = []

    async def items_by_code(self, tenant_id: TenantId, codes: Sequence[str]) -> dict[str, Item]:
        self.asked.append(list(codes))
        found: dict[str, Item] = {}
        for code in codes:
            for item in self.items.values():
                if code == item.sku or code in item.aliases:
                    found[code] = item
        return found

    async def list_warehouses(self, tenant_id: TenantId) -> Sequence[Warehouse]:
        return []

    async def page_items(
        self, tenant_id: TenantId, *, after_sku: Sku | None, limit: int
    ) -> Sequence[Item]:
        return []


async def test_skus_are_found_once_and_aliases_every_time() -> None:
    catalogue = Catalogue()
    service = CatalogService(reader=catalogue)
    codes = ["SKU-2", "blue-mug", "nothing", "SKU-1", "SKU-2"]
    assert await service.skus_named(ACME, codes) == ["SKU-2", "SKU-1"]
    assert await service.skus_named(ACME, codes) == ["SKU-2", "SKU-1"]
    assert catalogue.asked == [codes, ["blue-mug", "nothing"]]
    # An alias moved to another item is found there at once.
    catalogue.items["SKU-1"] = Item(ACME, Sku("SKU-1"), "Mug")
    catalogue.items["SKU-2"] = Item(ACME, Sku("SKU-2"), "Plate", aliases=("blue-mug",))
    assert await service.skus_named(ACME, ["blue-mug"]) == ["SKU-2"]


async def test_tenants_are_apart() -> None:
    catalogue = Catalogue()
    service = CatalogService(reader=catalogue)
    await service.skus_named(ACME, ["SKU-1"])
    assert await service.skus_named(TenantId("other"), ["SKU-1"]) == ["SKU-1"]
    assert len(catalogue.asked) == 2


async def test_unknown_codes_are_those_naming_nothing_and_skus_are_not_asked_again() -> None:
    catalogue = Catalogue()
    service = CatalogService(reader=catalogue)
    codes = ["SKU-2", "nothing", "blue-mug", "nothing", "typo"]
    assert await service.unknown_codes(ACME, codes) == ["nothing", "typo"]
    assert await service.unknown_codes(ACME, ["SKU-2", "typo"]) == ["typo"]
    # SKU-2 was found to be a SKU the first time (by either call): only "typo" is asked.
    assert await service.skus_named(ACME, ["SKU-2"]) == ["SKU-2"]
    assert catalogue.asked == [codes, ["typo"]]

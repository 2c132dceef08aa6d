"""Read-through caches of levels and warehouses: fast repeats, never older than a change."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from stockgraph.cache.reads import CachedCatalogReader, CachedStockReader
from stockgraph.cache.response import ResponseCache
from stockgraph.domain.ids import Sku, TenantId, WarehouseId
from stockgraph.domain.model import Item, StockLevel, StockTotals, Warehouse
from stockgraph.domain.quantities import StockQuantities

ACME = TenantId("acme")
NOW = datetime(2026, 11, 24, tzinfo=UTC)
ALIASES = {"ALIAS-1": "SKU-1"}


def _level(sku: str, warehouse: str, on_hand: int) -> StockLevel:
    return StockLevel(
        tenant_id=ACME,
        warehouse_id=WarehouseId(warehouse),
        sku=Sku(sku),
        quantities=StockQuantities(on_hand=on_hand, available=on_hand),
        as_of=NOW,
        source_sequence=1,
    )


class FakeStore:
    """The projection as a dict; counts the reads that reach it."""

    def __init__(self) -> None:
        self.on_hand = {("SKU-1", "W1"): 5, ("SKU-1", "W2"): 6, ("SKU-2", "W1"): 7}
        self.reads: list[list[str]] = []
        self.total_reads: list[list[str]] = []
        self.warehouse_reads = 0

    async def levels(
        self, tenant_id: TenantId, codes: Sequence[str], warehouse_ids: Sequence[WarehouseId] | None
    ) -> Sequence[StockLevel]:
        self.reads.append(list(codes))
        skus = {ALIASES.get(c, c) for c in codes}
        return [
            _level(sku, w, q)
            for (sku, w), q in sorted(self.on_hand.items())
            if sku in skus and (warehouse_ids is None or w in warehouse_ids)
        ]

    async def levels_as_of(
        self,
        tenant_id: TenantId,
        codes: Sequence[str],
        warehouse_ids: Sequence[WarehouseId] | None,
        at: datetime,
    ) -> Sequence[StockLevel]:
        return []

    async def totals(self, tenant_id: TenantId, codes: Sequence[str]) -> Sequence[StockTotals]:
        self.total_reads.append(list(codes))
        return [
            StockTotals(code, Sku(sku), WarehouseId(w), q, q)
            for code in codes
            for (sku, w), q in sorted(self.on_hand.items())
            if sku == ALIASES.get(code, code)
        ]

    async def sums(self, tenant_id: TenantId, codes: Sequence[str]) -> Sequence[StockTotals]:
        return []

    async def list_warehouses(self, tenant_id: TenantId) -> Sequence[Warehouse]:
        self.warehouse_reads += 1
        return []

    async def page_items(
        self, tenant_id: TenantId, *, after_sku: Sku | None, limit: int
    ) -> Sequence[Item]:
        return []

    async def items_by_code(self, tenant_id: TenantId, codes: Sequence[str]) -> dict[str, Item]:
        return {}


def _reader(store: FakeStore) -> CachedStockReader:
    return CachedStockReader(reader=store, cache=ResponseCache(max_entries=100, ttl_seconds=60))


def _on_hand(levels: Sequence[StockLevel]) -> list[tuple[str, str, int]]:
    return [(lv.sku, lv.warehouse_id, lv.quantities.on_hand) for lv in levels]


async def test_repeated_reads_of_a_sku_come_from_memory_in_the_databases_order() -> None:
    store = FakeStore()
    reader = _reader(store)
    first = await reader.levels(ACME, ["SKU-2", "SKU-1"], None)
    again = await reader.levels(ACME, ["SKU-1", "SKU-2", "SKU-1"], None)
    assert (
        _on_hand(first)
        == _on_hand(again)
        == [
            ("SKU-1", "W1", 5),
            ("SKU-1", "W2", 6),
            ("SKU-2", "W1", 7),
        ]
    )
    assert store.reads == [["SKU-2", "SKU-1"]]
    only_w2 = await reader.levels(ACME, ["SKU-1"], [WarehouseId("W2")])
    assert _on_hand(only_w2) == [("SKU-1", "W2", 6)]
    assert len(store.reads) == 1


async def test_a_change_to_a_sku_is_read_again_and_others_stay() -> None:
    store = FakeStore()
    reader = _reader(store)
    await reader.levels(ACME, ["SKU-1", "SKU-2"], None)
    store.on_hand[("SKU-1", "W1")] = 50
    reader.invalidate(ACME, ["SKU-1"])
    levels = await reader.levels(ACME, ["SKU-1", "SKU-2"], None)
    assert _on_hand(levels)[0] == ("SKU-1", "W1", 50)
    assert store.reads[-1] == ["SKU-1"]


async def test_an_alias_is_always_read_from_the_database() -> None:
    store = FakeStore()
    reader = _reader(store)
    await reader.levels(ACME, ["ALIAS-1"], None)
    levels = await reader.levels(ACME, ["ALIAS-1"], None)
    assert [lv.sku for lv in levels] == ["SKU-1", "SKU-1"]
    assert store.reads == [["ALIAS-1"], ["ALIAS-1"]]


async def test_levels_read_while_their_sku_changed_are_not_kept() -> None:
    store = FakeStore()
    reader = _reader(store)
    original = store.levels

    async def slow_read(
        tenant_id: TenantId, codes: Sequence[str], warehouse_ids: Sequence[WarehouseId] | None
    ) -> Sequence[StockLevel]:
        levels = await original(tenant_id, codes, warehouse_ids)
        reader.invalidate(ACME, ["SKU-1"])  # a change commits while the read is in flight
        return levels

    store.levels = slow_read  # type: ignore[method-assign]
    await reader.levels(ACME, ["SKU-1"], None)
    store.levels = original  # type: ignore[method-assign]
    await reader.levels(ACME, ["SKU-1"], None)
    assert len(store.reads) == 2


async def test_warehouses_are_kept_until_the_catalogue_changes() -> None:
    store = FakeStore()
    catalog = CachedCatalogReader(reader=store, cache=ResponseCache(max_entries=8, ttl_seconds=60))
    await catalog.list_warehouses(ACME)
    await catalog.list_warehouses(ACME)
    catalog.invalidate(ACME, ["SKU-1"])  # stock moved: the warehouses did not
    await catalog.list_warehouses(ACME)
    assert store.warehouse_reads == 1
    catalog.invalidate(ACME, None)
    await catalog.list_warehouses(ACME)
    assert store.warehouse_reads == 2


async def test_availability_totals_and_sums_come_from_the_kept_levels() -> None:
    store = FakeStore()
    reader = _reader(store)
    totals = await reader.totals(ACME, ["SKU-1", "ALIAS-1", "NOPE"])
    assert sorted((t.code, t.warehouse_id, t.available) for t in totals) == [
        ("ALIAS-1", "W1", 5),
        ("ALIAS-1", "W2", 6),
        ("SKU-1", "W1", 5),
        ("SKU-1", "W2", 6),
    ]
    assert store.total_reads == [["ALIAS-1", "NOPE"]]  # the SKU came from its levels
    sums = await reader.sums(ACME, ["SKU-1", "SKU-2"])
    assert sorted((s.code, s.available, s.on_hand) for s in sums) == [
        ("SKU-1", 11, 11),
        ("SKU-2", 7, 7),
    ]
    assert len(store.reads) == 2  # SKU-2's levels once; SKU-1's were kept

"""Read-through caches in front of the projection and the catalogue.

The hottest reads are a storefront's levels of a few SKUs and, on every request, the
tenant's warehouses. Both change rarely compared with how often they are read, so each
process keeps them, tagged the way answers are (:mod:`stockgraph.cache.response`):

- :class:`CachedStockReader` keeps every warehouse's level of a SKU, per tenant and SKU.
  A change that writes a SKU drops it; a level read while such a change committed is not
  kept. Only codes that are SKUs are kept (an alias is read from the database each time,
  since the change that makes its entry old names the SKU, not the alias).
- :class:`CachedCatalogReader` keeps a tenant's warehouses until the tenant's catalogue
  changes (a change that names no SKUs).

Availability's per-warehouse totals and sums are made from the same kept levels; point-in-time
reads (``levels_as_of``) are passed through.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime
from typing import Protocol

from stockgraph.cache.response import ResponseCache
from stockgraph.domain.ids import Sku, TenantId, WarehouseId
from stockgraph.domain.model import Item, StockLevel, StockTotals, Warehouse

_FROM_THE_SOURCE: ContextVar[bool] = ContextVar("stockgraph_read_from_source", default=False)


@contextmanager
def from_the_source() -> Iterator[None]:
    """Within this block, reads skip what this process keeps (and still refresh it).

    An answer shared with other processes (:mod:`stockgraph.cache.shared`) is trusted by the
    versions in Redis, which say nothing of this process's own copies: a change another
    process made may not have reached them yet. Such answers are computed from the database.
    """
    token = _FROM_THE_SOURCE.set(True)
    try:
        yield
    finally:
        _FROM_THE_SOURCE.reset(token)


class StockReader(Protocol):
    """What is read through: the projection's reads (the services' port of that name)."""

    async def levels(
        self, tenant_id: TenantId, codes: Sequence[str], warehouse_ids: Sequence[WarehouseId] | None
    ) -> Sequence[StockLevel]: ...

    async def levels_as_of(
        self,
        tenant_id: TenantId,
        codes: Sequence[str],
        warehouse_ids: Sequence[WarehouseId] | None,
        at: datetime,
    ) -> Sequence[StockLevel]: ...

    async def totals(self, tenant_id: TenantId, codes: Sequence[str]) -> Sequence[StockTotals]: ...

    async def sums(self, tenant_id: TenantId, codes: Sequence[str]) -> Sequence[StockTotals]: ...


class CatalogReader(Protocol):
    """What is read through: the catalogue's reads (the services' port of that name)."""

    async def list_warehouses(self, tenant_id: TenantId) -> Sequence[Warehouse]: ...

    async def page_items(
        self, tenant_id: TenantId, *, after_sku: Sku | None, limit: int
    ) -> Sequence[Item]: ...

    async def items_by_code(self, tenant_id: TenantId, codes: Sequence[str]) -> dict[str, Item]: ...


class CachedStockReader:
    """A :class:`StockReader` that answers ``levels`` from memory where it can."""

    def __init__(self, *, reader: StockReader, cache: ResponseCache[tuple[StockLevel, ...]]):
        self._reader = reader
        self._cache = cache

    def invalidate(self, tenant_id: str, skus: Collection[str] | None) -> None:
        self._cache.invalidate(tenant_id, skus)

    def clear(self) -> None:
        self._cache.clear()

    async def levels(
        self,
        tenant_id: TenantId,
        codes: Sequence[str],
        warehouse_ids: Sequence[WarehouseId] | None,
    ) -> Sequence[StockLevel]:
        found: dict[str, tuple[StockLevel, ...]] = {}
        missing: list[str] = []
        skip = _FROM_THE_SOURCE.get()
        for code in dict.fromkeys(codes):
            held = None if skip else self._cache.get((tenant_id, code))
            if held is None:
                missing.append(code)
            else:
                found[code] = held
        if missing:
            ticket = self._cache.begin(tenant_id)
            read = await self._reader.levels(tenant_id, missing, None)
            by_sku: dict[str, list[StockLevel]] = {}
            for level in read:
                by_sku.setdefault(level.sku, []).append(level)
            for sku, levels in by_sku.items():
                found[sku] = held = tuple(levels)
                self._cache.put((tenant_id, sku), ticket, (sku,), held)
        wanted = None if warehouse_ids is None else set(warehouse_ids)
        # The database's order: by SKU, then warehouse; each SKU once, however it was named.
        return [
            level
            for sku in sorted(found)
            for level in found[sku]
            if wanted is None or level.warehouse_id in wanted
        ]

    async def levels_as_of(
        self,
        tenant_id: TenantId,
        codes: Sequence[str],
        warehouse_ids: Sequence[WarehouseId] | None,
        at: datetime,
    ) -> Sequence[StockLevel]:
        return await self._reader.levels_as_of(tenant_id, codes, warehouse_ids, at)

    async def totals(self, tenant_id: TenantId, codes: Sequence[str]) -> Sequence[StockTotals]:
        """Per-warehouse figures from the kept levels; the database only for the rest."""
        codes = list(dict.fromkeys(codes))
        by_sku: dict[str, list[StockLevel]] = {}
        for level in await self.levels(tenant_id, codes, None):
            by_sku.setdefault(level.sku, []).append(level)
        rows = [
            StockTotals(
                code,
                level.sku,
                level.warehouse_id,
                level.quantities.available,
                level.quantities.on_hand,
            )
            for code in codes
            for level in by_sku.get(code, ())
        ]
        rest = [code for code in codes if code not in by_sku]  # aliases, unknown, no stock
        if rest:
            rows += await self._reader.totals(tenant_id, rest)
        return rows

    async def sums(self, tenant_id: TenantId, codes: Sequence[str]) -> Sequence[StockTotals]:
        """Network-wide sums from the kept levels; the database only for the rest."""
        by_code: dict[str, StockTotals] = {}
        for row in await self.totals(tenant_id, codes):
            held = by_code.get(row.code)
            available = row.available + (held.available if held else 0)
            on_hand = row.on_hand + (held.on_hand if held else 0)
            by_code[row.code] = StockTotals(row.code, row.sku, None, available, on_hand)
        return list(by_code.values())


class CachedCatalogReader:
    """A :class:`CatalogReader` that keeps each tenant's warehouses."""

    def __init__(
        self, *, reader: CatalogReader, cache: ResponseCache[tuple[Warehouse, ...]]
    ) -> None:
        self._reader = reader
        self._cache = cache

    def invalidate(self, tenant_id: str, skus: Collection[str] | None) -> None:
        if skus is None:  # stock changes leave the catalogue as it is
            self._cache.invalidate(tenant_id, None)

    def clear(self) -> None:
        self._cache.clear()

    async def list_warehouses(self, tenant_id: TenantId) -> Sequence[Warehouse]:
        held = None if _FROM_THE_SOURCE.get() else self._cache.get(tenant_id)
        if held is None:
            ticket = self._cache.begin(tenant_id)
            held = tuple(await self._reader.list_warehouses(tenant_id))
            self._cache.put(tenant_id, ticket, (), held)
        return held

    async def page_items(
        self, tenant_id: TenantId, *, after_sku: Sku | None, limit: int
    ) -> Sequence[Item]:
        return await self._reader.page_items(tenant_id, after_sku=after_sku, limit=limit)

    async def items_by_code(self, tenant_id: TenantId, codes: Sequence[str]) -> dict[str, Item]:
        return await self._reader.items_by_code(tenant_id, codes)


__all__ = ["CachedCatalogReader", "CachedStockReader", "from_the_source"]

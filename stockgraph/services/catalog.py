"""Reading the catalogue: warehouses and items of a tenant."""

from __future__ import annotations

from collections.abc import Sequence

from stockgraph.domain.ids import Sku, TenantId
from stockgraph.domain.model import Item, Warehouse
from stockgraph.services.ports import CatalogReader


class CatalogService:
    """Warehouses and items, always within one tenant."""

    def __init__(self, *, reader: CatalogReader) -> None:
        self._reader = reader

    async def warehouses(self, tenant_id: TenantId) -> Sequence[Warehouse]:
        """Every warehouse of the tenant, ordered by code (there are dozens, not millions)."""
        return await self._reader.list_warehouses(tenant_id)

    async def warehouse_page(
        self, tenant_id: TenantId, *, after_code: str | None, limit: int
    ) -> tuple[Sequence[Warehouse], bool]:
        """Up to ``limit`` warehouses after ``after_code``, and whether more follow."""
        rows = [
            w for w in await self.warehouses(tenant_id) if after_code is None or w.code > after_code
        ]
        return rows[:limit], len(rows) > limit

    async def items_page(
        self, tenant_id: TenantId, *, after_sku: Sku | None, limit: int
    ) -> tuple[Sequence[Item], bool]:
        """Up to ``limit`` items after ``after_sku``, and whether more follow."""
        rows = await self._reader.page_items(tenant_id, after_sku=after_sku, limit=limit + 1)
        return rows[:limit], len(rows) > limit

    async def items_by_code(self, tenant_id: TenantId, codes: Sequence[str]) -> dict[str, Item]:
        """Items named by SKU or alias, keyed by the code asked for."""
        return await self._reader.items_by_code(tenant_id, codes)

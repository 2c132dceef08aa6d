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
        self._skus: dict[TenantId, set[str]] = {}
        """Codes seen to be SKUs, per tenant: a SKU names its item for good."""

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

    async def skus_named(self, tenant_id: TenantId, codes: Sequence[str]) -> list[Sku]:
        """The SKUs ``codes`` name (a SKU itself, or an alias's item), each once, in order;
        codes that name nothing are left out (see :meth:`_named`)."""
        return list(dict.fromkeys((await self._named(tenant_id, codes)).values()))

    async def unknown_codes(self, tenant_id: TenantId, codes: Sequence[str]) -> list[str]:
        """Those of ``codes`` that name no item of the tenant (neither a SKU nor an alias),
        each once, in order."""
        named = await self._named(tenant_id, codes)
        return list(dict.fromkeys(code for code in codes if code not in named))

    async def _named(self, tenant_id: TenantId, codes: Sequence[str]) -> dict[str, Sku]:
        """The SKU each of ``codes`` names; a code that names nothing is not a key.

        A code once found to be a SKU is known without asking again: a SKU is an item's
        identity and no alias can take it. Aliases (which can move to another item) are
        looked up every time.
        """
        known = self._skus.setdefault(tenant_id, set())
        rest = [code for code in codes if code not in known]
        items = await self.items_by_code(tenant_id, rest) if rest else {}
        named: dict[str, Sku] = {}
        for code in codes:
            item = items.get(code)
            if item is None and code in known:
                named[code] = Sku(code)
            elif item is not None:
                named[code] = item.sku
                if item.sku == code:
                    known.add(code)
        return named

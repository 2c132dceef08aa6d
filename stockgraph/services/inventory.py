"""Reading stock: levels from the projection or the ledger, and network availability."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from stockgraph.domain.availability import SkuAvailability, WarehouseStock, aggregate_availability
from stockgraph.domain.ids import Sku, TenantId, WarehouseId
from stockgraph.domain.model import GeoPoint, LevelSource, StockLevel, Warehouse
from stockgraph.services.catalog import CatalogService
from stockgraph.services.live import LiveLoader
from stockgraph.services.ports import StockReader


@dataclass(frozen=True, slots=True)
class LevelAnswer:
    """A stock level as answered to a caller, with whether it is older than asked."""

    level: StockLevel
    stale: bool


@dataclass(frozen=True, slots=True)
class AvailabilityAnswer:
    entries: Sequence[SkuAvailability]
    unknown_codes: Sequence[str]
    skus: frozenset[Sku] = frozenset()
    """The items the codes named (an alias names its item's SKU)."""


def _distinct(codes: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(codes))


class InventoryService:
    """Stock levels and availability for one tenant at a time."""

    def __init__(
        self,
        *,
        stock: StockReader,
        catalog: CatalogService,
        written_back: Callable[[TenantId], Awaitable[None]] | None = None,
    ) -> None:
        self._stock = stock
        self._catalog = catalog
        self._written_back = written_back
        """Waits for the tenant's live answers still being written back (see
        :class:`~stockgraph.services.live.LiveReads`): a caller who has just been answered
        live never reads the projection from before that answer."""

    async def levels(
        self,
        tenant_id: TenantId,
        codes: Sequence[str],
        *,
        warehouse_ids: Sequence[WarehouseId] | None = None,
        max_age_seconds: int | None = None,
        as_of: datetime | None = None,
        now: datetime | None = None,
        live: LiveLoader | None = None,
    ) -> list[LevelAnswer]:
        """Levels of the SKUs named by ``codes`` (SKUs or aliases) in the tenant's warehouses.

        With ``as_of`` the ledger is folded up to that instant (``source`` LEDGER).
        Otherwise the projection answers. Levels older than ``max_age_seconds`` are read
        from their WMS through ``live`` (a per-request loader, see
        :mod:`stockgraph.services.live`); those it cannot refresh are marked stale.
        """
        if max_age_seconds is not None and max_age_seconds < 0:
            raise ValueError("maxAge must be zero or more seconds")
        codes = _distinct(codes)
        if as_of is not None:
            if as_of.tzinfo is None:
                raise ValueError("asOf must carry a time zone")
            rows = await self._stock.levels_as_of(tenant_id, codes, warehouse_ids, as_of)
            return [LevelAnswer(level, False) for level in rows]
        if max_age_seconds is None and self._written_back is not None:
            await self._written_back(tenant_id)
        if max_age_seconds == 0 and live is not None:
            # Every level will be asked for: the WMS calls need not wait for the projection.
            live.ask_early(await self._catalog.skus_named(tenant_id, codes), warehouse_ids)
            try:
                return await self._levels(
                    tenant_id, codes, warehouse_ids, max_age_seconds, now, live
                )
            finally:
                await live.finish()
        return await self._levels(tenant_id, codes, warehouse_ids, max_age_seconds, now, live)

    async def _levels(
        self,
        tenant_id: TenantId,
        codes: Sequence[str],
        warehouse_ids: Sequence[WarehouseId] | None,
        max_age_seconds: int | None,
        now: datetime | None,
        live: LiveLoader | None,
    ) -> list[LevelAnswer]:
        rows = await self._stock.levels(tenant_id, codes, warehouse_ids)
        if max_age_seconds is None:
            return [LevelAnswer(level, False) for level in rows]
        moment = now or datetime.now(UTC)

        def too_old(level: StockLevel) -> bool:
            return (moment - level.as_of).total_seconds() > max_age_seconds

        if live is not None:
            # Paired by position: hashing every whole level (quantities, time) to match
            # them up again costs more than the rest of this step for a thousand levels.
            old = [i for i, level in enumerate(rows) if too_old(level)]
            if old:
                rows = list(rows)
                loaded = await live.load_many([rows[i] for i in old])
                for i, fresh in zip(old, loaded, strict=True):
                    if fresh is not None:
                        rows[i] = fresh
        # A level the WMS has just answered for is fresh, whatever its own clock says.
        return [
            LevelAnswer(level, level.source is not LevelSource.LIVE and too_old(level))
            for level in rows
        ]

    async def availability(
        self,
        tenant_id: TenantId,
        codes: Sequence[str],
        *,
        near: GeoPoint | None = None,
        warehouses: Sequence[Warehouse] | None = None,
        per_warehouse: bool = True,
    ) -> AvailabilityAnswer:
        """Network-wide availability per requested SKU, in the order asked.

        Each entry names the SKU as asked (an alias stays an alias). Codes that name no
        item are listed in ``unknown_codes`` and get no entry. ``warehouses`` saves a
        lookup when the caller already holds the tenant's warehouses. Without
        ``per_warehouse`` the database sums and no warehouse is listed.
        """
        codes = _distinct(codes)
        if self._written_back is not None:
            await self._written_back(tenant_id)
        if not per_warehouse:
            sums = {row.code: row for row in await self._stock.sums(tenant_id, codes)}
            return AvailabilityAnswer(
                [
                    SkuAvailability(Sku(code), sums[code].available, sums[code].on_hand, ())
                    for code in codes
                    if code in sums
                ],
                [c for c in codes if c not in sums],
                frozenset(row.sku for row in sums.values()),
            )
        totals = await self._stock.totals(tenant_id, codes)
        locations: dict[WarehouseId, GeoPoint | None] = {}
        if near is not None:
            if warehouses is None:
                warehouses = await self._catalog.warehouses(tenant_id)
            locations = {w.id: w.location for w in warehouses}
        by_code: dict[str, list[WarehouseStock]] = defaultdict(list)
        for row in totals:
            rows = by_code[row.code]
            if row.warehouse_id is not None:
                rows.append(
                    WarehouseStock(
                        row.warehouse_id,
                        row.available,
                        row.on_hand,
                        locations.get(row.warehouse_id),
                    )
                )
        entries = [
            aggregate_availability(Sku(code), by_code[code], near)
            for code in codes
            if code in by_code
        ]
        return AvailabilityAnswer(
            entries,
            [c for c in codes if c not in by_code],
            frozenset(row.sku for row in totals),
        )

"""Network-wide availability: what a storefront can sell of a SKU, and from where.

>>> rows = [WarehouseStock(WarehouseId(1), 5, 9, GeoPoint(52.5, 13.4)),
...         WarehouseStock(WarehouseId(2), 7, 7, GeoPoint(48.1, 11.6))]
>>> result = aggregate_availability(Sku("A"), rows, near=GeoPoint(48.2, 11.5))
>>> (result.available, result.on_hand, [w.warehouse_id for w in result.warehouses])
(12, 16, [2, 1])
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from stockgraph.domain.ids import Sku, WarehouseId
from stockgraph.domain.model import GeoPoint, KitComponent

EARTH_RADIUS_KM = 6371.0088


def distance_km(a: GeoPoint, b: GeoPoint) -> float:
    """Great-circle distance by the haversine formula."""
    lat1, lat2 = math.radians(a.lat), math.radians(b.lat)
    dlat = lat2 - lat1
    dlng = math.radians(b.lng - a.lng)
    h = math.sin(dlat / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin(dlng / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))


@dataclass(frozen=True, slots=True)
class WarehouseStock:
    warehouse_id: WarehouseId
    available: int
    on_hand: int
    location: GeoPoint | None = None


@dataclass(frozen=True, slots=True)
class WarehouseAvailability:
    warehouse_id: WarehouseId
    available: int
    distance_km: float | None


@dataclass(frozen=True, slots=True)
class SkuAvailability:
    sku: Sku
    available: int
    on_hand: int
    warehouses: tuple[WarehouseAvailability, ...]


def aggregate_availability(
    sku: Sku, rows: Iterable[WarehouseStock], near: GeoPoint | None = None
) -> SkuAvailability:
    """Sum a SKU over its warehouses and list those that can sell it.

    Warehouses with nothing available are left out of the list (they still count in
    ``on_hand``). With ``near`` the list is ordered nearest first, warehouses without a
    location last; without it, most available first. Ties fall back to the warehouse id so
    the order is stable.
    """
    available = 0
    on_hand = 0
    selling: list[WarehouseAvailability] = []
    for row in rows:
        available += row.available
        on_hand += row.on_hand
        if row.available <= 0:
            continue
        distance = distance_km(near, row.location) if near is not None and row.location else None
        selling.append(WarehouseAvailability(row.warehouse_id, row.available, distance))
    if near is not None:
        selling.sort(key=lambda w: (w.distance_km is None, w.distance_km or 0.0, w.warehouse_id))
    else:
        selling.sort(key=lambda w: (-w.available, w.warehouse_id))
    return SkuAvailability(sku, available, on_hand, tuple(selling))


def kit_available(components: Iterable[KitComponent], available_by_sku: Mapping[Sku, int]) -> int:
    """How many whole kits the components' available stock can make in one warehouse."""
    kits: int | None = None
    for component in components:
        if component.quantity < 1:
            raise ValueError(f"component {component.sku} has quantity {component.quantity}")
        can_make = available_by_sku.get(component.sku, 0) // component.quantity
        kits = can_make if kits is None else min(kits, can_make)
    return kits or 0

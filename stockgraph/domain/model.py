"""The entities Stockgraph reasons about, as plain immutable values."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum

from stockgraph.domain.ids import CorrelationId, Sku, TenantId, WarehouseId
from stockgraph.domain.quantities import StockDelta, StockQuantities
from stockgraph.domain.units import UnitOfMeasure


@dataclass(frozen=True, slots=True)
class GeoPoint:
    lat: float
    lng: float

    def __post_init__(self) -> None:
        if not -90.0 <= self.lat <= 90.0 or not -180.0 <= self.lng <= 180.0:
            raise ValueError(f"({self.lat}, {self.lng}) is not a point on Earth")


@dataclass(frozen=True, slots=True)
class Warehouse:
    """One WMS instance or site of a tenant."""

    id: WarehouseId
    tenant_id: TenantId
    code: str
    name: str
    region: str
    location: GeoPoint | None
    dialect: str


@dataclass(frozen=True, slots=True)
class KitComponent:
    sku: Sku
    quantity: int


@dataclass(frozen=True, slots=True)
class Item:
    tenant_id: TenantId
    sku: Sku
    name: str
    base_unit: str = "each"
    aliases: tuple[str, ...] = ()
    units: tuple[UnitOfMeasure, ...] = field(default=())
    components: tuple[KitComponent, ...] = ()


class LevelSource(Enum):
    """Where an answered stock level came from."""

    LIVE = "LIVE"
    CACHE = "CACHE"
    PROJECTION = "PROJECTION"
    LEDGER = "LEDGER"


class MovementCause(Enum):
    """Why the projection changed; every ledger movement names one."""

    SEED = "SEED"
    WEBHOOK = "WEBHOOK"
    POLL = "POLL"
    RECONCILIATION = "RECONCILIATION"
    ADJUSTMENT = "ADJUSTMENT"
    ORDER = "ORDER"


@dataclass(frozen=True, slots=True)
class StockLevel:
    """Stockgraph's belief of one (tenant, warehouse, SKU) quantity set."""

    tenant_id: TenantId
    warehouse_id: WarehouseId
    sku: Sku
    quantities: StockQuantities
    as_of: datetime
    source_sequence: int | None
    source: LevelSource = LevelSource.PROJECTION


@dataclass(frozen=True, slots=True)
class StockTotals:
    """One warehouse's sellable and physical stock of a requested SKU code.

    ``code`` is what the caller asked for (a SKU or an alias), ``sku`` the item it names.
    A known item without any stock row comes back once with ``warehouse_id`` None.
    """

    code: str
    sku: Sku
    warehouse_id: WarehouseId | None
    available: int
    on_hand: int


@dataclass(frozen=True, slots=True)
class WarehouseSpec:
    """A warehouse as configured: what the topology file or the demo declares."""

    tenant_id: TenantId
    code: str
    connector_id: str
    name: str
    region: str
    location: GeoPoint | None
    dialect: str
    settings: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class InitialStock:
    """Stock to load where none is held yet (first sync, demo seed)."""

    warehouse_id: WarehouseId
    sku: Sku
    quantities: StockQuantities


@dataclass(frozen=True, slots=True)
class StockMovement:
    """One ledger row: how a level changed, why, and on whose word."""

    level: StockLevel
    delta: StockDelta
    cause: MovementCause
    correlation_id: CorrelationId
    actor: str
    occurred_at: datetime
    reason: str | None = None
    reference: str | None = None


@dataclass(frozen=True, slots=True)
class SyncExceptionRecord:
    """Something a WMS sent that could not be applied: the raw payload and why."""

    tenant_id: TenantId
    id: int
    connector_id: str
    event_id: str | None
    code: str
    reason: str
    raw: str
    created_at: datetime
    resolved_at: datetime | None


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One audit event: what happened, who did it, why, tied to its cause."""

    tenant_id: TenantId
    kind: str
    actor: str
    correlation_id: CorrelationId
    message: str
    detail: Mapping[str, object]
    sku: Sku | None = None
    warehouse_id: WarehouseId | None = None
    reference: str | None = None

"""The contract's object types."""

from __future__ import annotations

from datetime import datetime
from enum import Enum

import strawberry

from stockgraph.auth.scopes import Scope
from stockgraph.domain import model
from stockgraph.domain.availability import WarehouseAvailability as DomainWarehouseAvailability
from stockgraph.domain.global_ids import warehouse_id
from stockgraph.schema.context import Info
from stockgraph.schema.relay import from_global_id, to_global_id


@strawberry.enum(description="Where an answered stock level came from.")
class LevelSource(Enum):
    LIVE = "LIVE"
    CACHE = "CACHE"
    PROJECTION = "PROJECTION"
    LEDGER = "LEDGER"


@strawberry.type
class GeoPoint:
    lat: float
    lng: float


@strawberry.federation.type(keys=["id"], description="One WMS instance or site of the tenant.")
class Warehouse:
    id: strawberry.ID
    code: str
    name: str
    region: str
    location: GeoPoint | None
    dialect: str

    @classmethod
    def of(cls, w: model.Warehouse) -> Warehouse:
        return cls(
            id=strawberry.ID(warehouse_id(w.tenant_id, w.code)),
            code=w.code,
            name=w.name,
            region=w.region,
            location=GeoPoint(lat=w.location.lat, lng=w.location.lng) if w.location else None,
            dialect=w.dialect,
        )

    @classmethod
    async def resolve_reference(cls, info: Info, id: strawberry.ID) -> Warehouse | None:
        """Federation entity lookup; batched, since the tenant's warehouses load once."""
        info.context.require(Scope.INVENTORY_READ)
        return await warehouse_by_global_id(info, id)


async def warehouse_by_global_id(info: Info, id: str) -> Warehouse | None:
    """The caller's warehouse with this id, or None, whoever's id it is."""
    tenant, code = from_global_id(id, "Warehouse")
    if tenant != info.context.principal.tenant_id:
        return None
    found = (await info.context.warehouses()).by_code.get(code)
    return Warehouse.of(found) if found else None


@strawberry.type(description="A unit of measure: `factor` base units make one of it.")
class Unit:
    name: str
    factor: int


@strawberry.type
class KitComponent:
    sku: str
    quantity: int


@strawberry.federation.type(keys=["sku"], description="A stock-keeping unit of the tenant.")
class Item:
    id: strawberry.ID
    sku: str
    name: str
    aliases: list[str]
    base_unit: str
    units: list[Unit]
    components: list[KitComponent]

    @classmethod
    def of(cls, item: model.Item) -> Item:
        return cls(
            id=strawberry.ID(to_global_id("Item", item.tenant_id, item.sku)),
            sku=item.sku,
            name=item.name,
            aliases=list(item.aliases),
            base_unit=item.base_unit,
            units=[Unit(name=u.name, factor=u.factor) for u in item.units],
            components=[KitComponent(sku=c.sku, quantity=c.quantity) for c in item.components],
        )

    @classmethod
    async def resolve_reference(cls, info: Info, sku: str) -> Item | None:
        """Federation entity lookup by SKU (or alias), batched through the item loader."""
        info.context.require(Scope.INVENTORY_READ)
        found = await info.context.items.load(sku)
        return Item.of(found) if found else None


@strawberry.type(description="One warehouse's quantities of one SKU, in base units.")
class InventoryLevel:
    sku: str
    warehouse: Warehouse
    on_hand: int
    available: int
    committed: int
    reserved: int
    incoming: int
    damaged: int
    safety_stock: int
    quality_control: int
    as_of: datetime
    source: LevelSource
    stale: bool
    source_sequence: strawberry.Private[int | None] = None


@strawberry.type
class WarehouseAvailability:
    warehouse: Warehouse
    available: int
    distance_km: float | None

    @classmethod
    def of(cls, w: DomainWarehouseAvailability, warehouse: Warehouse) -> WarehouseAvailability:
        return cls(
            warehouse=warehouse,
            available=w.available,
            distance_km=None if w.distance_km is None else round(w.distance_km, 1),
        )


@strawberry.type(description="What the whole network can sell of one SKU.")
class SkuAvailability:
    sku: str
    available: int
    on_hand: int
    warehouses: list[WarehouseAvailability]


@strawberry.input
class GeoPointInput:
    lat: float
    lng: float


@strawberry.type(
    description=(
        "Something a WMS sent that could not be applied: the raw payload and the reason. "
        "Nothing else in the same delivery was held back by it."
    )
)
class SyncException:
    id: strawberry.ID
    connector_id: str
    event_id: str | None
    code: str
    reason: str
    raw: str
    created_at: datetime
    resolved_at: datetime | None

    @classmethod
    def of(cls, record: model.SyncExceptionRecord) -> SyncException:
        return cls(
            id=strawberry.ID(to_global_id("SyncException", record.tenant_id, str(record.id))),
            connector_id=record.connector_id,
            event_id=record.event_id,
            code=record.code,
            reason=record.reason,
            raw=record.raw,
            created_at=record.created_at,
            resolved_at=record.resolved_at,
        )


@strawberry.enum(description="A WMS instance's circuit breaker.")
class CircuitState(Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@strawberry.type(description="How syncing one WMS instance is going, riskiest first.")
class ConnectorHealth:
    connector_id: str
    dialect: str
    circuit_state: CircuitState
    budget_remaining: float | None
    last_event_at: datetime | None
    lag_ms: int | None
    error_rate: float
    risk_score: float
    last_error: str | None
    warehouse: Warehouse | None


@strawberry.type(description="A business rule refused a mutation; nothing was changed.")
class UserError:
    field: list[str] | None = strawberry.field(
        description='The path to the input at fault, such as `["input", "url"]`.'
    )
    message: str
    code: str = strawberry.field(description="NOT_FOUND, INVALID_URL, ENDPOINT_DISABLED, ...")

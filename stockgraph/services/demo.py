"""The demo world: two tenants with warehouses, a catalogue and plausible stock.

Everything is generated from a fixed seed, so every demo and every test that uses it
sees the same world: ``acme`` with 24 warehouses (``WH-00`` … ``WH-23``) across regions
and 500 SKUs (``SKU-00000`` … ``SKU-00499``), and ``globex`` with 3 warehouses and 50
SKUs of its own.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from stockgraph.auth.scopes import Scope, format_scopes
from stockgraph.domain.ids import CorrelationId, Sku, TenantId, WarehouseId
from stockgraph.domain.model import GeoPoint, InitialStock, Item, WarehouseSpec
from stockgraph.domain.quantities import StockQuantities
from stockgraph.domain.units import UnitOfMeasure
from stockgraph.services.access import AccessService
from stockgraph.services.ports import CatalogWriter, StockWriter

SITES: tuple[tuple[str, str, float, float], ...] = (
    ("Berlin", "eu-central", 52.52, 13.405),
    ("Hamburg", "eu-central", 53.551, 9.993),
    ("Munich", "eu-central", 48.137, 11.575),
    ("Warsaw", "eu-central", 52.229, 21.012),
    ("Paris", "eu-west", 48.857, 2.352),
    ("Lyon", "eu-west", 45.764, 4.836),
    ("Madrid", "eu-west", 40.417, -3.704),
    ("Rotterdam", "eu-west", 51.924, 4.478),
    ("London", "uk", 51.507, -0.128),
    ("Manchester", "uk", 53.481, -2.243),
    ("Milan", "eu-south", 45.464, 9.19),
    ("Stockholm", "eu-north", 59.329, 18.069),
    ("New Jersey", "us-east", 40.058, -74.406),
    ("Atlanta", "us-east", 33.749, -84.388),
    ("Chicago", "us-central", 41.878, -87.63),
    ("Dallas", "us-central", 32.777, -96.797),
    ("Denver", "us-west", 39.739, -104.99),
    ("Los Angeles", "us-west", 34.052, -118.244),
    ("Seattle", "us-west", 47.606, -122.332),
    ("Toronto", "ca-east", 43.653, -79.383),
    ("Mexico City", "latam", 19.433, -99.133),
    ("São Paulo", "latam", -23.551, -46.633),
    ("Singapore", "apac", 1.352, 103.82),
    ("Sydney", "apac", -33.869, 151.209),
)
DIALECTS = ("rest", "graphql", "x12")
_ADJECTIVES = ("Trail", "Urban", "Classic", "Alpine", "Coastal", "Studio", "Everyday", "Pro")
_NOUNS = (
    "Runner Shoe",
    "Rain Jacket",
    "Backpack",
    "Water Bottle",
    "Desk Lamp",
    "Wool Socks",
    "Yoga Mat",
    "Headphones",
    "Coffee Grinder",
    "Cast Iron Pan",
    "Camp Chair",
    "Sunglasses",
)
_CASE_SIZES = (6, 12, 24)


@dataclass(frozen=True, slots=True)
class DemoTenant:
    tenant_id: TenantId
    name: str
    warehouse_prefix: str
    warehouses: int
    sku_prefix: str
    skus: int
    sites: Sequence[tuple[str, str, float, float]]


ACME = DemoTenant(TenantId("acme"), "Acme Retail", "WH", 24, "SKU", 500, SITES)
GLOBEX = DemoTenant(TenantId("globex"), "Globex Outfitters", "WH", 3, "GX", 50, SITES[4:7])
DEMO_TENANTS = (ACME, GLOBEX)

CLIENT_ROLES: dict[str, frozenset[Scope]] = {
    "read-only": frozenset({Scope.INVENTORY_READ, Scope.ORDERS_READ}),
    "read-write": frozenset(
        {Scope.INVENTORY_READ, Scope.INVENTORY_WRITE, Scope.ORDERS_READ, Scope.ORDERS_WRITE}
    ),
    "admin": frozenset(Scope),
}


def demo_warehouses(tenant: DemoTenant) -> list[WarehouseSpec]:
    specs = []
    for i in range(tenant.warehouses):
        city, region, lat, lng = tenant.sites[i % len(tenant.sites)]
        code = f"{tenant.warehouse_prefix}-{i:02d}"
        specs.append(
            WarehouseSpec(
                tenant_id=tenant.tenant_id,
                code=code,
                connector_id=f"{tenant.tenant_id}-{code}".lower(),
                name=f"{city} DC",
                region=region,
                location=GeoPoint(lat, lng),
                dialect=DIALECTS[i % len(DIALECTS)],
            )
        )
    return specs


def demo_items(tenant: DemoTenant) -> list[Item]:
    rng = random.Random(f"items:{tenant.tenant_id}")
    items = []
    for i in range(tenant.skus):
        sku = Sku(f"{tenant.sku_prefix}-{i:05d}")
        units = [UnitOfMeasure("each", 1)]
        if i % 3 == 0:
            units.append(UnitOfMeasure("case", _CASE_SIZES[i % len(_CASE_SIZES)]))
        items.append(
            Item(
                tenant_id=tenant.tenant_id,
                sku=sku,
                name=f"{rng.choice(_ADJECTIVES)} {rng.choice(_NOUNS)} #{i}",
                aliases=(
                    f"{tenant.tenant_id[:2].upper()}{i:06d}",
                    f"400{rng.randrange(10**9, 10**10)}",
                ),
                units=tuple(units),
            )
        )
    return items


def demo_stock(
    tenant: DemoTenant, warehouse_ids: Sequence[WarehouseId], items: Sequence[Item]
) -> list[InitialStock]:
    """Plausible quantities: every SKU listed in every warehouse, about one in eight sold out."""
    rng = random.Random(f"stock:{tenant.tenant_id}")
    entries = []
    for item in items:
        for wid in warehouse_ids:
            on_hand = 0 if rng.random() < 0.12 else rng.randrange(1, 250)
            committed = rng.randrange(0, on_hand // 8 + 1)
            reserved = rng.randrange(0, on_hand // 20 + 1)
            damaged = rng.randrange(0, on_hand // 40 + 1)
            entries.append(
                InitialStock(
                    warehouse_id=wid,
                    sku=item.sku,
                    quantities=StockQuantities.from_physical(
                        on_hand=on_hand,
                        committed=committed,
                        reserved=reserved,
                        damaged=damaged,
                        safety_stock_target=2 if on_hand > 20 else 0,
                        incoming=rng.choice((0, 0, 0, 12, 24, 48)),
                    ),
                )
            )
    return entries


async def seed_demo(
    *, catalog: CatalogWriter, stock: StockWriter, simulated: Collection[str] = ()
) -> dict[TenantId, int]:
    """Create the demo world where it is missing; returns stock levels created per tenant.

    Warehouses whose connector id is in ``simulated`` get no seeded stock: theirs comes
    from their simulated WMS.
    """
    created: dict[TenantId, int] = {}
    for tenant in DEMO_TENANTS:
        await catalog.upsert_tenant(tenant.tenant_id, tenant.name)
        ids = await catalog.upsert_warehouses(demo_warehouses(tenant))
        items = demo_items(tenant)
        await catalog.upsert_items(items)
        seeded = sorted(wid for cid, wid in ids.items() if cid not in simulated)
        entries = demo_stock(tenant, seeded, items)
        created[tenant.tenant_id] = await stock.load_initial(
            tenant.tenant_id,
            entries,
            correlation_id=CorrelationId(f"demo-seed-{tenant.tenant_id}"),
            actor="system:demo",
        )
    return created


async def demo_clients(access: AccessService) -> list[dict[str, str]]:
    """One read-only, one read-write and one admin client per demo tenant."""
    credentials = []
    for tenant in DEMO_TENANTS:
        for role, scopes in CLIENT_ROLES.items():
            client_id, secret = await access.create_client(
                tenant_id=tenant.tenant_id, name=f"demo {role}", scopes=scopes
            )
            credentials.append(
                {
                    "tenant": tenant.tenant_id,
                    "role": role,
                    "client_id": client_id,
                    "client_secret": secret,
                    "scopes": format_scopes(scopes),
                }
            )
    return credentials

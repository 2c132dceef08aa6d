"""Reading warehouses and items."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime
from functools import cache
from typing import Any, cast

from sqlalchemy import (
    BindParameter,
    Select,
    Subquery,
    Table,
    bindparam,
    delete,
    insert,
    select,
    union_all,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from stockgraph.domain.ids import Sku, TenantId, WarehouseId
from stockgraph.domain.model import GeoPoint, Item, KitComponent, Warehouse, WarehouseSpec
from stockgraph.domain.units import UnitOfMeasure
from stockgraph.persistence.models import (
    ItemAliasRow,
    ItemComponentRow,
    ItemRow,
    ItemUnitRow,
    Tenant,
    WarehouseRow,
)

_items = cast(Table, ItemRow.__table__)
_aliases = cast(Table, ItemAliasRow.__table__)
_units = cast(Table, ItemUnitRow.__table__)
_components = cast(Table, ItemComponentRow.__table__)
_warehouses = cast(Table, WarehouseRow.__table__)
_tenants = cast(Table, Tenant.__table__)


@cache
def code_to_sku() -> Subquery:
    """A subquery ``(code, sku)`` naming each requested code's item, by SKU or by alias.

    It takes the bound parameters ``tenant_id`` and ``codes`` (expanding). Statements
    built on it are made once, so SQLAlchemy's compiled cache serves every request.
    """
    tenant: BindParameter[str] = bindparam("tenant_id")
    codes: BindParameter[list[str]] = bindparam("codes", expanding=True)
    by_sku = select(_items.c.sku.label("code"), _items.c.sku.label("sku")).where(
        _items.c.tenant_id == tenant, _items.c.sku.in_(codes)
    )
    by_alias = select(_aliases.c.alias.label("code"), _aliases.c.sku.label("sku")).where(
        _aliases.c.tenant_id == tenant, _aliases.c.alias.in_(codes)
    )
    return union_all(by_sku, by_alias).subquery("requested")


@cache
def _code_pairs() -> Select[tuple[str, str]]:
    requested = code_to_sku()
    return select(requested.c.code, requested.c.sku)


class SqlCatalogStore:
    """Implements :class:`stockgraph.services.ports.CatalogReader` on SQLAlchemy Core."""

    def __init__(self, *, engine: AsyncEngine) -> None:
        self._engine = engine

    async def list_warehouses(self, tenant_id: TenantId) -> Sequence[Warehouse]:
        query = (
            select(
                _warehouses.c.id,
                _warehouses.c.code,
                _warehouses.c.name,
                _warehouses.c.region,
                _warehouses.c.lat,
                _warehouses.c.lng,
                _warehouses.c.dialect,
            )
            .where(_warehouses.c.tenant_id == tenant_id)
            .order_by(_warehouses.c.code)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [
            Warehouse(
                id=WarehouseId(r.id),
                tenant_id=tenant_id,
                code=r.code,
                name=r.name,
                region=r.region,
                location=GeoPoint(r.lat, r.lng)
                if r.lat is not None and r.lng is not None
                else None,
                dialect=r.dialect,
            )
            for r in rows
        ]

    async def page_items(
        self, tenant_id: TenantId, *, after_sku: Sku | None, limit: int
    ) -> Sequence[Item]:
        query = select(_items.c.sku).where(_items.c.tenant_id == tenant_id)
        if after_sku is not None:
            query = query.where(_items.c.sku > after_sku)
        query = query.order_by(_items.c.sku).limit(limit)
        async with self._engine.connect() as conn:
            skus = [Sku(s) for s in (await conn.execute(query)).scalars()]
            items = await _load_items(conn, tenant_id, skus)
        return [items[s] for s in skus if s in items]

    async def items_by_code(self, tenant_id: TenantId, codes: Sequence[str]) -> dict[str, Item]:
        if not codes:
            return {}
        async with self._engine.connect() as conn:
            pairs = (
                await conn.execute(_code_pairs(), {"tenant_id": tenant_id, "codes": list(codes)})
            ).all()
            sku_of = {str(p.code): Sku(p.sku) for p in pairs}
            items = await _load_items(conn, tenant_id, sorted(set(sku_of.values())))
        return {code: items[sku] for code, sku in sku_of.items() if sku in items}


async def _load_items(
    conn: AsyncConnection, tenant_id: TenantId, skus: Sequence[Sku]
) -> dict[Sku, Item]:
    """Items with their aliases, units and components: four statements for any number."""
    if not skus:
        return {}
    rows = (
        await conn.execute(
            select(_items.c.sku, _items.c.name, _items.c.base_unit).where(
                _items.c.tenant_id == tenant_id, _items.c.sku.in_(skus)
            )
        )
    ).all()
    aliases: dict[str, list[str]] = defaultdict(list)
    for a in await conn.execute(
        select(_aliases.c.sku, _aliases.c.alias)
        .where(_aliases.c.tenant_id == tenant_id, _aliases.c.sku.in_(skus))
        .order_by(_aliases.c.alias)
    ):
        aliases[a.sku].append(a.alias)
    units: dict[str, list[UnitOfMeasure]] = defaultdict(list)
    for u in await conn.execute(
        select(_units.c.sku, _units.c.name, _units.c.factor)
        .where(_units.c.tenant_id == tenant_id, _units.c.sku.in_(skus))
        .order_by(_units.c.factor, _units.c.name)
    ):
        units[u.sku].append(UnitOfMeasure(u.name, u.factor))
    components: dict[str, list[KitComponent]] = defaultdict(list)
    for c in await conn.execute(
        select(_components.c.kit_sku, _components.c.component_sku, _components.c.quantity)
        .where(_components.c.tenant_id == tenant_id, _components.c.kit_sku.in_(skus))
        .order_by(_components.c.component_sku)
    ):
        components[c.kit_sku].append(KitComponent(Sku(c.component_sku), c.quantity))
    return {
        Sku(r.sku): Item(
            tenant_id=tenant_id,
            sku=Sku(r.sku),
            name=r.name,
            base_unit=r.base_unit,
            aliases=tuple(aliases[r.sku]),
            units=tuple(units[r.sku]) or (UnitOfMeasure(r.base_unit, 1),),
            components=tuple(components[r.sku]),
        )
        for r in rows
    }


def upsert(engine: AsyncEngine, table: Table) -> Any:
    """``INSERT ... ON CONFLICT`` for the engine's dialect (SQLite and PostgreSQL)."""
    if engine.dialect.name == "postgresql":
        return pg_insert(table)
    return sqlite_insert(table)


class SqlCatalogWriter:
    """Implements :class:`stockgraph.services.ports.CatalogWriter`."""

    def __init__(self, *, engine: AsyncEngine) -> None:
        self._engine = engine

    async def upsert_tenant(self, tenant_id: TenantId, name: str) -> None:
        stmt = upsert(self._engine, _tenants).values(
            id=tenant_id, name=name, created_at=datetime.now(UTC)
        )
        stmt = stmt.on_conflict_do_update(index_elements=["id"], set_={"name": stmt.excluded.name})
        async with self._engine.begin() as conn:
            await conn.execute(stmt)

    async def upsert_warehouses(self, specs: Sequence[WarehouseSpec]) -> dict[str, WarehouseId]:
        if not specs:
            return {}
        now = datetime.now(UTC)
        stmt = upsert(self._engine, _warehouses)
        stmt = stmt.on_conflict_do_update(
            index_elements=["tenant_id", "code"],
            set_={
                name: stmt.excluded[name]
                for name in ("connector_id", "name", "region", "lat", "lng", "dialect", "settings")
            },
        )
        rows = [
            {
                "tenant_id": s.tenant_id,
                "code": s.code,
                "connector_id": s.connector_id,
                "name": s.name,
                "region": s.region,
                "lat": s.location.lat if s.location else None,
                "lng": s.location.lng if s.location else None,
                "dialect": s.dialect,
                "settings": dict(s.settings),
                "created_at": now,
            }
            for s in specs
        ]
        async with self._engine.begin() as conn:
            await conn.execute(stmt, rows)
            found = await conn.execute(
                select(_warehouses.c.connector_id, _warehouses.c.id).where(
                    _warehouses.c.connector_id.in_([s.connector_id for s in specs])
                )
            )
            return {r.connector_id: WarehouseId(r.id) for r in found}

    async def upsert_items(self, items: Sequence[Item]) -> None:
        if not items:
            return
        now = datetime.now(UTC)
        item_stmt = upsert(self._engine, _items)
        item_stmt = item_stmt.on_conflict_do_update(
            index_elements=["tenant_id", "sku"],
            set_={"name": item_stmt.excluded.name, "base_unit": item_stmt.excluded.base_unit},
        )
        async with self._engine.begin() as conn:
            for chunk in _chunks(items, 500):
                tenants = {i.tenant_id for i in chunk}
                skus = [i.sku for i in chunk]
                await conn.execute(
                    item_stmt,
                    [
                        {
                            "tenant_id": i.tenant_id,
                            "sku": i.sku,
                            "name": i.name,
                            "base_unit": i.base_unit,
                            "created_at": now,
                        }
                        for i in chunk
                    ],
                )
                for table, column in (
                    (_aliases, _aliases.c.sku),
                    (_units, _units.c.sku),
                    (_components, _components.c.kit_sku),
                ):
                    await conn.execute(
                        delete(table).where(table.c.tenant_id.in_(tenants), column.in_(skus))
                    )
                aliases = [
                    {"tenant_id": i.tenant_id, "alias": a, "sku": i.sku}
                    for i in chunk
                    for a in i.aliases
                ]
                units = [
                    {"tenant_id": i.tenant_id, "sku": i.sku, "name": u.name, "factor": u.factor}
                    for i in chunk
                    for u in i.units
                ]
                components = [
                    {
                        "tenant_id": i.tenant_id,
                        "kit_sku": i.sku,
                        "component_sku": c.sku,
                        "quantity": c.quantity,
                    }
                    for i in chunk
                    for c in i.components
                ]
                for table, values in (
                    (_aliases, aliases),
                    (_units, units),
                    (_components, components),
                ):
                    if values:
                        await conn.execute(insert(table), values)


def _chunks(values: Sequence[Item], size: int) -> list[Sequence[Item]]:
    return [values[i : i + size] for i in range(0, len(values), size)]

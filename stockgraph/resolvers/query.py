"""The root ``Query`` type."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import strawberry
from strawberry.types.nodes import FragmentSpread, InlineFragment, SelectedField

from stockgraph.auth.scopes import Scope
from stockgraph.domain.ids import Sku, WarehouseId
from stockgraph.domain.model import GeoPoint as DomainGeoPoint
from stockgraph.domain.model import LevelSource as DomainLevelSource
from stockgraph.domain.webhooks import DeliveryStatus as DomainDeliveryStatus
from stockgraph.resolvers.mutation import webhook_service
from stockgraph.schema.context import Info
from stockgraph.schema.errors import BadUserInput
from stockgraph.schema.relay import Connection, connection, from_cursor, from_global_id
from stockgraph.schema.types import (
    CircuitState,
    ConnectorHealth,
    GeoPointInput,
    InventoryLevel,
    Item,
    LevelSource,
    SkuAvailability,
    SyncException,
    Warehouse,
    WarehouseAvailability,
    warehouse_by_global_id,
)
from stockgraph.schema.webhooks import (
    ENDPOINT_TYPE,
    DeliveryStatus,
    WebhookDelivery,
    WebhookEndpoint,
    endpoint_key,
)

_SOURCES = {source: LevelSource(source.value) for source in DomainLevelSource}


async def warehouse_filter(info: Info, ids: list[strawberry.ID] | None) -> list[WarehouseId] | None:
    """Database ids of the caller's warehouses among ``ids``; others' ids match nothing."""
    if ids is None:
        return None
    info.context.limits.check_list("warehouseIds", ids)
    mine = (await info.context.warehouses()).by_code
    tenant = info.context.principal.tenant_id
    found: list[WarehouseId] = []
    for gid in ids:
        owner, code = from_global_id(gid, "Warehouse")
        if owner == tenant and code in mine:
            found.append(mine[code].id)
    return found


def _geo(near: GeoPointInput | None) -> DomainGeoPoint | None:
    if near is None:
        return None
    try:
        return DomainGeoPoint(near.lat, near.lng)
    except ValueError as exc:
        raise BadUserInput(str(exc), argument="near") from None


def _selects(info: Info, name: str) -> bool:
    """Whether the current field's selection asks for the sub-field ``name``."""

    def walk(selections: list[Any]) -> bool:
        for selection in selections:
            if isinstance(selection, SelectedField) and selection.name == name:
                return True
            if isinstance(selection, (FragmentSpread, InlineFragment)) and walk(
                selection.selections
            ):
                return True
        return False

    return any(walk(field.selections) for field in info.selected_fields)


def warn_unknown(info: Info, codes: Sequence[str]) -> None:
    """Tell the caller which of the codes asked name no item: a typo answers nothing, not
    silently."""
    if codes:
        info.context.warn("UNKNOWN_SKU", "these SKUs name no item of yours", skus=list(codes))


def check_skus(info: Info, skus: list[str]) -> None:
    info.context.limits.check_list("skus", skus)
    if any(not s for s in skus):
        raise BadUserInput("skus must not contain empty strings", argument="skus")


@strawberry.type
class Query:
    @strawberry.field(description="The caller's warehouses, one per WMS instance or site.")
    async def warehouses(
        self, info: Info, first: int | None = None, after: str | None = None
    ) -> Connection[Warehouse]:
        info.context.require(Scope.INVENTORY_READ)
        limit = info.context.limits.page_size(first)
        after_code = from_cursor(after)
        ordered = (await info.context.warehouses()).ordered
        rest = [w for w in ordered if after_code is None or w.code > after_code]
        page = rest[:limit]
        return connection(
            [(w.code, Warehouse.of(w)) for w in page],
            has_next=len(rest) > limit,
            has_previous=after_code is not None,
        )

    @strawberry.field(description="One of the caller's warehouses by id.")
    async def warehouse(self, info: Info, id: strawberry.ID) -> Warehouse | None:
        info.context.require(Scope.INVENTORY_READ)
        return await warehouse_by_global_id(info, id)

    @strawberry.field(description="An item by its SKU or any alias of it.")
    async def item(self, info: Info, sku: str) -> Item | None:
        info.context.require(Scope.INVENTORY_READ)
        found = await info.context.items.load(sku)
        return Item.of(found) if found else None

    @strawberry.field(description="Items ordered by SKU; `skus` picks items by SKU or alias.")
    async def items(
        self,
        info: Info,
        first: int | None = None,
        after: str | None = None,
        skus: list[str] | None = None,
    ) -> Connection[Item]:
        info.context.require(Scope.INVENTORY_READ)
        limit = info.context.limits.page_size(first)
        after_sku = from_cursor(after)
        tenant = info.context.principal.tenant_id
        if skus is not None:
            check_skus(info, skus)
            found = await info.context.services.catalog.items_by_code(tenant, skus)
            chosen = sorted({i.sku: i for i in found.values()}.values(), key=lambda i: i.sku)
            rest = [i for i in chosen if after_sku is None or i.sku > after_sku]
            page, has_next = rest[:limit], len(rest) > limit
        else:
            rows, has_next = await info.context.services.catalog.items_page(
                tenant, after_sku=Sku(after_sku) if after_sku else None, limit=limit
            )
            page = list(rows)
        return connection(
            [(i.sku, Item.of(i)) for i in page],
            has_next=has_next,
            has_previous=after_sku is not None,
        )

    @strawberry.field(
        description=(
            "Quantities per warehouse of the SKUs (or aliases) asked for. `maxAge` (seconds) "
            "marks levels older than that `stale`; `asOf` answers from the ledger as of "
            "that instant."
        )
    )
    async def inventory_levels(
        self,
        info: Info,
        skus: list[str],
        warehouse_ids: list[strawberry.ID] | None = None,
        max_age: int | None = None,
        as_of: datetime | None = None,
    ) -> list[InventoryLevel]:
        info.context.require(Scope.INVENTORY_READ)
        check_skus(info, skus)
        if max_age is not None and max_age < 0:
            raise BadUserInput("maxAge must be zero or more seconds", argument="maxAge")
        warehouses = await info.context.warehouses()
        ids = await warehouse_filter(info, warehouse_ids)
        answers = await info.context.services.inventory.levels(
            info.context.principal.tenant_id,
            skus,
            warehouse_ids=ids,
            max_age_seconds=max_age,
            as_of=as_of,
            live=info.context.live() if max_age is not None and as_of is None else None,
        )
        # An alias with no level yet is covered by the code asked; others by their SKU.
        info.context.cover(skus)
        answered = {answer.level.sku for answer in answers}
        info.context.cover(answered)
        # A code with levels names an item; of the others, some may name none at all.
        if unanswered := [code for code in skus if code not in answered]:
            tenant = info.context.principal.tenant_id
            warn_unknown(
                info, await info.context.services.catalog.unknown_codes(tenant, unanswered)
            )
        views: dict[WarehouseId, Warehouse] = {}
        levels: list[InventoryLevel] = []
        for answer in answers:
            level = answer.level
            view = views.get(level.warehouse_id)
            if view is None:
                view = views[level.warehouse_id] = Warehouse.of(
                    warehouses.by_id[level.warehouse_id]
                )
            q = level.quantities
            levels.append(
                InventoryLevel(
                    sku=level.sku,
                    warehouse=view,
                    on_hand=q.on_hand,
                    available=q.available,
                    committed=q.committed,
                    reserved=q.reserved,
                    incoming=q.incoming,
                    damaged=q.damaged,
                    safety_stock=q.safety_stock,
                    quality_control=q.quality_control,
                    as_of=level.as_of,
                    source=_SOURCES[level.source],
                    stale=answer.stale,
                    source_sequence=level.source_sequence,
                )
            )
        return levels

    @strawberry.field(
        description=(
            "Network-wide availability per SKU (or alias), in the order asked. With `near`, "
            "each SKU's warehouses are listed nearest first."
        )
    )
    async def availability(
        self, info: Info, skus: list[str], near: GeoPointInput | None = None
    ) -> list[SkuAvailability]:
        info.context.require(Scope.INVENTORY_READ)
        check_skus(info, skus)
        point = _geo(near)
        listed = _selects(info, "warehouses")
        mine = await info.context.warehouses() if listed or point else None
        answer = await info.context.services.inventory.availability(
            info.context.principal.tenant_id,
            skus,
            near=point,
            warehouses=mine.ordered if mine else None,
            per_warehouse=listed,
        )
        info.context.cover(skus)
        info.context.cover(answer.skus)
        warn_unknown(info, answer.unknown_codes)
        by_id = mine.by_id if mine else {}
        views: dict[WarehouseId, Warehouse] = {}

        def view(wid: WarehouseId) -> Warehouse:
            found = views.get(wid)
            if found is None:
                found = views[wid] = Warehouse.of(by_id[wid])
            return found

        return [
            SkuAvailability(
                sku=entry.sku,
                available=entry.available,
                on_hand=entry.on_hand,
                warehouses=[
                    WarehouseAvailability.of(w, view(w.warehouse_id)) for w in entry.warehouses
                ]
                if listed
                else [],
            )
            for entry in answer.entries
        ]

    @strawberry.field(
        description=(
            "What WMS instances sent that could not be applied, newest first (ops:admin). "
            "`open` (default true) leaves out resolved ones."
        )
    )
    async def sync_exceptions(
        self,
        info: Info,
        first: int | None = None,
        after: str | None = None,
        connector_id: str | None = None,
        open: bool = True,
    ) -> Connection[SyncException]:
        info.context.require(Scope.OPS_ADMIN)
        limit = info.context.limits.page_size(first)
        cursor = from_cursor(after)
        if cursor is not None and not cursor.isdigit():
            raise BadUserInput(f"{after!r} is not a cursor of this list", argument="after")
        rows, has_next = await info.context.services.operations.sync_exceptions(
            info.context.principal.tenant_id,
            before_id=int(cursor) if cursor else None,
            limit=limit,
            connector_id=connector_id,
            open_only=open,
        )
        return connection(
            [(str(r.id), SyncException.of(r)) for r in rows],
            has_next=has_next,
            has_previous=cursor is not None,
        )

    @strawberry.field(description="Sync health of every WMS instance, riskiest first (ops:admin).")
    async def sync_health(self, info: Info) -> list[ConnectorHealth]:
        info.context.require(Scope.OPS_ADMIN)
        mine = (await info.context.warehouses()).by_code

        def warehouse(code: str) -> Warehouse | None:
            return Warehouse.of(mine[code]) if code in mine else None

        return [
            ConnectorHealth(
                connector_id=h.connector_id,
                dialect=h.dialect,
                circuit_state=CircuitState(h.circuit_state),
                budget_remaining=h.budget_remaining,
                last_event_at=h.last_event_at,
                lag_ms=None if h.lag_ms is None else round(h.lag_ms),
                error_rate=h.error_rate,
                risk_score=h.risk_score,
                last_error=h.last_error,
                warehouse=Warehouse.of(mine[h.warehouse_code])
                if h.warehouse_code in mine
                else None,
            )
            for h in info.context.services.operations.health(info.context.principal.tenant_id)
        ]

    @strawberry.field(description="The tenant's webhook endpoints, oldest first (ops:admin).")
    async def webhook_endpoints(
        self, info: Info, first: int | None = None, after: str | None = None
    ) -> Connection[WebhookEndpoint]:
        service = webhook_service(info)
        limit = info.context.limits.page_size(first)
        cursor = from_cursor(after)
        if cursor is not None and not cursor.isdigit():
            raise BadUserInput(f"{after!r} is not a cursor of this list", argument="after")
        rows, has_next = await service.endpoints(
            info.context.principal.tenant_id,
            after_id=int(cursor) if cursor else None,
            limit=limit,
        )
        return connection(
            [(str(e.id), WebhookEndpoint.of(e)) for e in rows],
            has_next=has_next,
            has_previous=cursor is not None,
        )

    @strawberry.field(
        description=(
            "Outbound webhook deliveries, newest first, with their attempts (ops:admin); "
            "`endpointId` and `status` narrow them."
        )
    )
    async def deliveries(
        self,
        info: Info,
        first: int | None = None,
        after: str | None = None,
        endpoint_id: strawberry.ID | None = None,
        status: list[DeliveryStatus] | None = None,
    ) -> Connection[WebhookDelivery]:
        service = webhook_service(info)
        limit = info.context.limits.page_size(first)
        tenant = info.context.principal.tenant_id
        before = _delivery_position(after)
        endpoint: int | None = None
        if endpoint_id is not None:
            from_global_id(endpoint_id, ENDPOINT_TYPE)  # a malformed id is bad input
            endpoint = endpoint_key(tenant, endpoint_id)
            if endpoint is None:  # another tenant's endpoint: none of its deliveries
                return connection([], has_next=False, has_previous=before is not None)
        rows, has_next = await service.deliveries(
            tenant,
            before=before,
            limit=limit,
            endpoint_id=endpoint,
            statuses=None if status is None else [DomainDeliveryStatus(s.value) for s in status],
        )
        return connection(
            [(f"{d.event_id}:{d.endpoint.id}", WebhookDelivery.of(d)) for d in rows],
            has_next=has_next,
            has_previous=before is not None,
        )


def _delivery_position(after: str | None) -> tuple[int, int] | None:
    cursor = from_cursor(after)
    if cursor is None:
        return None
    event, _, endpoint = cursor.partition(":")
    if not event.isdigit() or not endpoint.isdigit():
        raise BadUserInput(f"{after!r} is not a cursor of this list", argument="after")
    return int(event), int(endpoint)

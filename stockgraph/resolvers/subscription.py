"""The root Subscription: committed changes, replayed from a cursor and then live."""

from __future__ import annotations

from collections.abc import AsyncGenerator

import strawberry

from stockgraph.auth.scopes import Scope
from stockgraph.domain.events import CursorExpired, OutboxEvent, SubscriberTooSlow, Topic
from stockgraph.domain.ids import WarehouseId
from stockgraph.resolvers.query import check_skus, warehouse_filter
from stockgraph.schema.context import Info
from stockgraph.schema.errors import BadUserInput, SubscriptionLagging
from stockgraph.schema.events import StockChange, SyncAlert, event_cursor
from stockgraph.schema.relay import from_cursor
from stockgraph.schema.types import Warehouse


def _event_id(after: str | None) -> int | None:
    value = from_cursor(after)
    if value is None:
        return None
    kind, _, number = value.partition(":")
    if kind != "event" or not number.isdigit():
        raise BadUserInput(f"{after!r} is not a cursor of a change", argument="after")
    return int(number)


@strawberry.type
class Subscription:
    @strawberry.subscription(
        description=(
            "Every committed change to the levels of the SKUs (or aliases) and warehouses "
            "asked for (all when omitted), in order. With `after` (a change's cursor) the "
            "changes since that one come first, then live ones, none twice and none missed."
        )
    )
    async def stock_changed(
        self,
        info: Info,
        skus: list[str] | None = None,
        warehouse_ids: list[strawberry.ID] | None = None,
        after: str | None = None,
    ) -> AsyncGenerator[StockChange, None]:
        context = info.context
        context.require(Scope.INVENTORY_READ)
        feed = context.services.feed
        if feed is None:
            raise BadUserInput("this server publishes no changes")
        after_id = _event_id(after)
        wanted_skus: set[str] | None = None
        if skus is not None:
            check_skus(info, skus)
            found = await context.services.catalog.items_by_code(context.principal.tenant_id, skus)
            wanted_skus = {item.sku for item in found.values()}
        wanted_warehouses = await warehouse_filter(info, warehouse_ids)
        allowed = None if wanted_warehouses is None else set(wanted_warehouses)

        def accept(event: OutboxEvent) -> bool:
            if wanted_skus is not None and event.sku not in wanted_skus:
                return False
            return allowed is None or event.warehouse_id in allowed

        views: dict[WarehouseId, Warehouse] = {}
        tenant = context.principal.tenant_id
        last = after
        events = feed.follow(tenant, Topic.STOCK_CHANGED, after=after_id, accept=accept)
        try:
            async for event in events:
                if event.warehouse_id is None:
                    continue
                view = views.get(event.warehouse_id)
                if view is None:
                    mine = {w.id: w for w in await context.services.catalog.warehouses(tenant)}
                    if event.warehouse_id not in mine:
                        continue
                    view = views[event.warehouse_id] = Warehouse.of(mine[event.warehouse_id])
                change = StockChange.of(event, view)
                last = change.cursor
                context.event_id = event.id
                yield change
        except SubscriberTooSlow:
            raise SubscriptionLagging.resume_after(last) from None
        except CursorExpired as exc:
            raise _expired(exc) from None

    @strawberry.subscription(
        description=(
            "Sync alerts of the tenant's WMS instances (ops:admin), live; with `after` (an "
            "alert's cursor) the ones since then first."
        )
    )
    async def sync_alerts(
        self, info: Info, after: str | None = None
    ) -> AsyncGenerator[SyncAlert, None]:
        context = info.context
        context.require(Scope.OPS_ADMIN)
        feed = context.services.feed
        if feed is None:
            raise BadUserInput("this server publishes no alerts")
        last = after
        tenant = context.principal.tenant_id
        try:
            async for event in feed.follow(tenant, Topic.SYNC_ALERT, after=_event_id(after)):
                alert = SyncAlert.of(event)
                last = alert.cursor
                context.event_id = event.id
                yield alert
        except SubscriberTooSlow:
            raise SubscriptionLagging.resume_after(last) from None
        except CursorExpired as exc:
            raise _expired(exc) from None


def _expired(exc: CursorExpired) -> BadUserInput:
    """A replay that would skip what retention deleted is refused, never shortened."""
    return BadUserInput(
        "`after` is older than the events kept; reload the current state and subscribe "
        "without `after` (or after a newer cursor)",
        argument="after",
        reason="CURSOR_EXPIRED",
        oldestCursor=event_cursor(exc.pruned_through),
    )


__all__ = ["Subscription"]

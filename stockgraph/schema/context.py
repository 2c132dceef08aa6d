"""The per-request context every resolver receives, and its ``Info`` alias."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeAlias

import strawberry
from aiodataloader import DataLoader

from stockgraph.auth.principal import Principal
from stockgraph.auth.scopes import Scope
from stockgraph.domain.bucket import Throttle
from stockgraph.domain.ids import TenantId, WarehouseId
from stockgraph.domain.model import Item, Warehouse
from stockgraph.schema.errors import BadUserInput, Forbidden
from stockgraph.services.catalog import CatalogService
from stockgraph.services.feed import EventFeed
from stockgraph.services.inventory import InventoryService
from stockgraph.services.live import LiveLoader, LiveReads, UpstreamUse
from stockgraph.services.operations import OperationsService
from stockgraph.services.ports import CostBuckets
from stockgraph.services.webhooks import WebhookService


@dataclass(frozen=True, slots=True)
class Limits:
    """Guardrails on arguments, from settings."""

    max_list_size: int = 250
    max_page_size: int = 100
    max_cost: int = 1000
    """The most an operation may cost (see :mod:`stockgraph.schema.cost`)."""

    def check_list(self, argument: str, values: Sequence[object] | None) -> None:
        if values is not None and len(values) > self.max_list_size:
            raise BadUserInput(
                f"{argument} takes at most {self.max_list_size} values; got {len(values)}",
                argument=argument,
            )

    def page_size(self, first: int | None, default: int = 20) -> int:
        size = default if first is None else first
        if size < 0 or size > self.max_page_size:
            raise BadUserInput(
                f"first must be between 0 and {self.max_page_size}; got {size}", argument="first"
            )
        return size


@dataclass(frozen=True, slots=True)
class Services:
    """The use-cases resolvers may call; built once by the composition root."""

    catalog: CatalogService
    inventory: InventoryService
    operations: OperationsService
    buckets: CostBuckets
    """Every client's bucket of query cost."""
    live: LiveReads | None = None
    feed: EventFeed | None = None
    """Committed events for subscriptions; None where nothing is published."""
    webhooks: WebhookService | None = None
    """Outbound webhook endpoints and deliveries; None where none are sent."""


@dataclass
class CostRecord:
    """What one request cost and what is left of its caller's bucket: ``extensions.cost``."""

    requested: int = 0
    actual: int | None = None
    """None until the operation has run; it stays None when it was refused."""
    throttle: Throttle | None = None
    upstreams: dict[str, UpstreamUse] = field(default_factory=dict)

    def record(self, use: UpstreamUse) -> None:
        """Note what one WMS instance was asked; a second ask of it adds its calls."""
        before = self.upstreams.get(use.connector_id)
        if before is not None:
            use = replace(use, calls=before.calls + use.calls)
        self.upstreams[use.connector_id] = use

    @property
    def upstream_calls(self) -> int:
        return sum(use.calls for use in self.upstreams.values())

    def envelope(self, throttle: Throttle) -> dict[str, Any]:
        """The contract's ``extensions.cost`` object."""
        return {
            "requestedQueryCost": self.requested,
            "actualQueryCost": self.actual,
            "throttleStatus": throttle.envelope(),
            "upstreams": [
                {
                    "connectorId": use.connector_id,
                    "calls": use.calls,
                    "servedFromCache": use.served_from_cache,
                    "budgetRemaining": use.budget_remaining,
                    "retryAfterMs": use.retry_after_ms,
                }
                for use in self.upstreams.values()
            ],
        }


@dataclass(frozen=True, slots=True)
class TenantWarehouses:
    ordered: Sequence[Warehouse]
    by_id: dict[WarehouseId, Warehouse]
    by_code: dict[str, Warehouse]


@dataclass
class Context:
    """One request's principal, services, loaders and response extras."""

    principal: Principal
    services: Services
    limits: Limits = field(default_factory=Limits)
    request: Any = None
    response: Any = None
    warnings: list[dict[str, Any]] = field(default_factory=list)
    cacheable: bool = True
    """Cleared when the answer must not be kept by the response cache (it has errors)."""
    cost: CostRecord = field(default_factory=CostRecord)
    connection_params: dict[str, Any] | None = None
    """A WebSocket's ``connection_init`` payload, where its credentials are."""
    covered: set[str] = field(default_factory=set)
    """The SKUs whose stock the answer shows: a cached answer is dropped when they change."""
    event_id: int | None = None
    """A subscription's: the outbox id of the change it is answering now."""
    _warehouses: asyncio.Future[TenantWarehouses] | None = None
    _item_loader: DataLoader[str, Item | None] | None = None
    _live_loader: LiveLoader | None = None

    @property
    def bucket_key(self) -> str:
        return bucket_key(self.principal)

    def require(self, scope: Scope) -> None:
        if not self.principal.can(scope):
            raise Forbidden(f"this operation needs the {scope.value} scope", scope=scope.value)

    async def warehouses(self) -> TenantWarehouses:
        """The tenant's warehouses, loaded once per request with one statement.

        Concurrent resolvers (a batch of federation references, say) share the one load.
        """
        if self._warehouses is None:
            self._warehouses = asyncio.ensure_future(self._load_warehouses())
        return await asyncio.shield(self._warehouses)

    async def _load_warehouses(self) -> TenantWarehouses:
        ordered = await self.services.catalog.warehouses(self.principal.tenant_id)
        return TenantWarehouses(ordered, {w.id: w for w in ordered}, {w.code: w for w in ordered})

    @property
    def items(self) -> DataLoader[str, Item | None]:
        """Items by SKU or alias, batched per request."""
        if self._item_loader is None:
            catalog = self.services.catalog
            tenant = self.principal.tenant_id

            async def load(codes: list[str]) -> list[Item | None]:
                found = await catalog.items_by_code(tenant, codes)
                return [found.get(code) for code in codes]

            self._item_loader = DataLoader(load, max_batch_size=self.limits.max_list_size)
        return self._item_loader

    def live(self) -> LiveLoader | None:
        """Live WMS reads for this request, batched per instance; None without connectors."""
        if self.services.live is None:
            return None
        if self._live_loader is None:
            self._live_loader = self.services.live.loader(
                self.principal.tenant_id, self.cost.record
            )
        return self._live_loader

    def cover(self, skus: Iterable[str]) -> None:
        """Say that the answer shows the stock of ``skus`` (SKUs, and the codes asked)."""
        self.covered.update(skus)

    def warn(self, code: str, message: str, **detail: Any) -> None:
        """A non-fatal remark returned in ``extensions.warnings``."""
        self.warnings.append({"code": code, "message": message, **detail})


NOBODY = Principal(TenantId(""), "nobody", frozenset())
"""A WebSocket's caller until its ``connection_init`` is authenticated: holds no scope."""


def bucket_key(principal: Principal) -> str:
    """Whose cost bucket a request spends: one per client (token subject or API key)."""
    return f"{principal.tenant_id}/{principal.actor}"


Info: TypeAlias = strawberry.Info[Context, None]

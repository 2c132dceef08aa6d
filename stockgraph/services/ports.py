"""What the use-cases need from storage, as protocols.

The composition root (``stockgraph.app``) passes concrete implementations from
``stockgraph.persistence``; tests pass fakes that implement the same protocols.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Protocol, Self

from stockgraph.domain.bucket import Throttle
from stockgraph.domain.events import OutboxEvent, Topic
from stockgraph.domain.ids import CorrelationId, Sku, TenantId, WarehouseId
from stockgraph.domain.model import (
    AuditEntry,
    InitialStock,
    Item,
    StockLevel,
    StockMovement,
    StockTotals,
    Warehouse,
    WarehouseSpec,
)
from stockgraph.domain.webhooks import DeliveryStatus, WebhookDelivery, WebhookEndpoint


class CatalogReader(Protocol):
    """Warehouses and items of a tenant."""

    async def list_warehouses(self, tenant_id: TenantId) -> Sequence[Warehouse]:
        """Every warehouse of the tenant, ordered by code."""

    async def page_items(
        self, tenant_id: TenantId, *, after_sku: Sku | None, limit: int
    ) -> Sequence[Item]:
        """Items ordered by SKU, strictly after ``after_sku``, at most ``limit``."""

    async def items_by_code(self, tenant_id: TenantId, codes: Sequence[str]) -> dict[str, Item]:
        """Items found by SKU or by alias, keyed by the code that found them."""


class StockReader(Protocol):
    """The projection and the ledger."""

    async def levels(
        self,
        tenant_id: TenantId,
        codes: Sequence[str],
        warehouse_ids: Sequence[WarehouseId] | None,
    ) -> Sequence[StockLevel]:
        """Projection rows of the SKUs named by ``codes`` (SKUs or aliases), in one query."""

    async def levels_as_of(
        self,
        tenant_id: TenantId,
        codes: Sequence[str],
        warehouse_ids: Sequence[WarehouseId] | None,
        at: datetime,
    ) -> Sequence[StockLevel]:
        """The ledger folded up to ``at`` (inclusive), one row per warehouse and SKU."""

    async def totals(self, tenant_id: TenantId, codes: Sequence[str]) -> Sequence[StockTotals]:
        """Available and on-hand per warehouse for the SKUs named by ``codes``, in one query."""

    async def sums(self, tenant_id: TenantId, codes: Sequence[str]) -> Sequence[StockTotals]:
        """Available and on-hand summed over every warehouse, one row per known code."""


class CatalogWriter(Protocol):
    """Creating and updating tenants, warehouses and items (idempotent upserts)."""

    async def upsert_tenant(self, tenant_id: TenantId, name: str) -> None: ...

    async def upsert_warehouses(self, specs: Sequence[WarehouseSpec]) -> dict[str, WarehouseId]:
        """Create or update warehouses; returns the id of each, keyed by connector id."""

    async def upsert_items(self, items: Sequence[Item]) -> None: ...


class StockWriter(Protocol):
    async def load_initial(
        self,
        tenant_id: TenantId,
        entries: Sequence[InitialStock],
        *,
        correlation_id: CorrelationId,
        actor: str,
    ) -> int:
        """Set stock where none is held yet, with a ledger row and one audit event.

        Levels that already exist are left alone; returns how many were created.
        """


class InboxEntry(Protocol):
    @property
    def id(self) -> int: ...
    @property
    def tenant_id(self) -> TenantId: ...
    @property
    def connector_id(self) -> str: ...
    @property
    def event_id(self) -> str: ...
    @property
    def body(self) -> bytes: ...


class Inbox(Protocol):
    async def add(
        self, *, tenant_id: TenantId, connector_id: str, event_id: str, body: bytes
    ) -> bool:
        """Keep a received event; False when the same event was received before."""

    async def pending(self, limit: int) -> Sequence[InboxEntry]:
        """Received events not applied yet, oldest first."""


class UnitOfWork(Protocol):
    """One transaction: everything written through it commits together or not at all."""

    async def __aenter__(self) -> Self: ...
    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...
    async def commit(self) -> None: ...
    async def known_skus(self, tenant_id: TenantId, skus: Sequence[Sku]) -> set[Sku]: ...
    async def levels_for_update(
        self, tenant_id: TenantId, skus: Mapping[WarehouseId, Sequence[Sku]]
    ) -> dict[tuple[WarehouseId, Sku], tuple[StockLevel, int]]:
        """The held levels and versions of ``skus`` in each warehouse, locked until the
        transaction ends; one statement."""

    async def save_levels(self, levels: Sequence[tuple[StockLevel, int | None]]) -> None: ...
    async def touch_levels(self, levels: Sequence[tuple[StockLevel, int]]) -> None:
        """Bring held levels whose quantities did not change up to date: their ``as_of``
        and source sequence, each against the version read."""

    async def confirm_levels(self, levels: Sequence[StockLevel]) -> None:
        """Bring levels a WMS reports with the physical counts held up to its ``as_of`` and
        sequence, each row only if it holds those counts at that sequence or an older one;
        no read first. Raises ``ConcurrentChange`` if one does not."""

    async def add_movements(self, movements: Sequence[StockMovement]) -> None: ...
    async def add_exception(
        self,
        *,
        tenant_id: TenantId,
        connector_id: str,
        event_id: str | None,
        code: str,
        reason: str,
        raw: str,
    ) -> None: ...
    async def add_audits(self, entries: Sequence[AuditEntry]) -> None: ...
    async def finish_inbox(
        self, inbox_ids: Sequence[int], *, status: str, error: str | None = None
    ) -> None: ...


class CostBuckets(Protocol):
    """Per-client buckets of query cost; shared by every process when kept in Redis.

    ``key`` names the client (a tenant and caller, say); a bucket never seen before is full.
    Before an operation runs, take its requested cost; afterwards refund what it did not use::

        throttle = await buckets.take(key, requested)
        if not throttle.allowed:
            ...  # refuse, saying to retry after throttle.retry_after seconds
        ...  # run the operation
        throttle = await buckets.refund(key, requested - actual)
    """

    async def take(self, key: str, cost: float) -> Throttle:
        """Take ``cost`` points, or refuse and take nothing; ValueError if ``cost`` < 0."""

    async def refund(self, key: str, amount: float) -> Throttle:
        """Give back ``amount`` points, never beyond capacity; ValueError if ``amount`` < 0."""

    async def peek(self, key: str) -> Throttle:
        """The bucket as it is now, unchanged."""


ProjectionChanged = Callable[[TenantId, Collection[Sku] | None], None]
"""Told after every committed change to a tenant's projection: the SKUs whose levels were
written, or None when anything of the tenant may have changed (its catalogue, say)."""


class EventLog(Protocol):
    """The outbox, read in order: what was committed, for relays and replays."""

    async def after(
        self,
        after_id: int,
        *,
        tenant_id: TenantId | None = None,
        topic: Topic | None = None,
        limit: int = 500,
    ) -> Sequence[OutboxEvent]:
        """Events with an id above ``after_id`` (of one tenant and topic if given), oldest
        first, at most ``limit``."""

    async def last_id(self) -> int:
        """The newest event's id (0 when there is none)."""

    async def pruned_through(self) -> int:
        """The highest event id retention has deleted (0 before any): a replay must start
        at or after it."""


class EventStream(Protocol):
    """One subscriber's live events, in order; raises when it fell too far behind."""

    def __aiter__(self) -> AsyncIterator[OutboxEvent]: ...

    def close(self) -> None: ...


class EventBus(Protocol):
    """Committed events, live, to this process's subscribers."""

    def subscribe(
        self, tenant_id: TenantId, accept: Callable[[OutboxEvent], bool] = ...
    ) -> EventStream:
        """Live events of the tenant that ``accept`` takes (all by default)."""


class WebhookStore(Protocol):
    """Outbound webhook endpoints and their deliveries, always within one tenant.

    Methods that find nothing of the tenant return None (or False); business refusals
    (a URL the tenant already uses, a replay to a disabled endpoint) raise
    :class:`~stockgraph.domain.webhooks.WebhookRefused`.
    """

    async def create_endpoint(
        self,
        tenant_id: TenantId,
        *,
        url: str,
        secret: str,
        event_types: Sequence[str],
        description: str,
        now: datetime,
    ) -> WebhookEndpoint:
        """A new, enabled endpoint; ``URL_TAKEN`` if the tenant has one with this URL."""

    async def endpoint_by_url(self, tenant_id: TenantId, url: str) -> WebhookEndpoint | None: ...

    async def endpoints(
        self, tenant_id: TenantId, *, after_id: int | None, limit: int
    ) -> Sequence[WebhookEndpoint]:
        """In the order they were created, strictly after ``after_id``."""

    async def update_endpoint(
        self,
        tenant_id: TenantId,
        endpoint_id: int,
        *,
        now: datetime,
        url: str | None = None,
        event_types: Sequence[str] | None = None,
        description: str | None = None,
        enabled: bool | None = None,
        disabled_reason: str = ...,
        secret: str | None = None,
        previous_until: datetime | None = None,
    ) -> WebhookEndpoint | None:
        """Change what is given. Enabling requeues the endpoint's ``DISABLED`` deliveries,
        due now; disabling parks its undelivered ones as ``DISABLED``. A new ``secret``
        keeps the replaced one signing too until ``previous_until``."""

    async def delete_endpoint(self, tenant_id: TenantId, endpoint_id: int) -> bool:
        """Remove the endpoint, its deliveries and their attempts."""

    async def deliveries(
        self,
        tenant_id: TenantId,
        *,
        before: tuple[int, int] | None,
        limit: int,
        endpoint_id: int | None = None,
        statuses: Sequence[DeliveryStatus] | None = None,
    ) -> Sequence[WebhookDelivery]:
        """Newest first by (event id, endpoint id), strictly before ``before``, each with
        its attempts."""

    async def replay(
        self, tenant_id: TenantId, delivery_id: str, *, now: datetime
    ) -> WebhookDelivery:
        """Queue a fresh attempt now (same ``webhook-id``); ``NOT_FOUND`` or
        ``ENDPOINT_DISABLED`` refuse it."""

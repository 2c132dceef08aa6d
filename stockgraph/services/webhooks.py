"""Managing outbound webhooks: endpoints, their deliveries, replays.

Endpoints are a tenant's own: every use-case takes the tenant and finds nothing of
another's. Delivering is the events layer's work (``stockgraph.events.dispatch`` and
``stockgraph.events.delivery``); this service only tells it, through ``on_queued``, when
something became due (a replay, an endpoint enabled again).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

from stockgraph.domain.ids import TenantId
from stockgraph.domain.webhooks import (
    DeliveryStatus,
    RefusalCode,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookRefused,
    check_event_types,
    check_secret,
    check_url,
    new_secret,
)
from stockgraph.services.ports import WebhookStore

MAX_DESCRIPTION = 500


DEFAULT_SECRET_OVERLAP = timedelta(hours=24)
"""How long a rotated-out secret keeps signing, unless configured otherwise."""


def _now() -> datetime:
    return datetime.now(UTC)


class WebhookService:
    """The webhook use-cases; refusals raise :class:`WebhookRefused` with a code.

    Example::

        endpoint, secret = await service.create_endpoint(
            tenant, url="https://oms.example.com/hooks", event_types=["stock.changed"]
        )
        # secret ("whsec_...") is shown this once; sign checks use it
    """

    def __init__(
        self,
        *,
        store: WebhookStore,
        clock: Callable[[], datetime] = _now,
        on_queued: Callable[[], None] = lambda: None,
        secret_overlap: timedelta = DEFAULT_SECRET_OVERLAP,
    ) -> None:
        """``secret_overlap``: how long a secret replaced by a rotation still signs."""
        self._store = store
        self._clock = clock
        self._on_queued = on_queued
        self._overlap = secret_overlap

    async def endpoints(
        self, tenant_id: TenantId, *, after_id: int | None, limit: int
    ) -> tuple[Sequence[WebhookEndpoint], bool]:
        """A page of the tenant's endpoints, oldest first, and whether more follow."""
        rows = await self._store.endpoints(tenant_id, after_id=after_id, limit=limit + 1)
        return rows[:limit], len(rows) > limit

    async def create_endpoint(
        self,
        tenant_id: TenantId,
        *,
        url: str,
        event_types: Sequence[str],
        description: str | None = None,
        secret: str | None = None,
    ) -> tuple[WebhookEndpoint, str]:
        """A new endpoint and its signing secret (given, or made here)."""
        checked_url = check_url(url)
        types = check_event_types(event_types)
        key = check_secret(secret) if secret is not None else new_secret()
        endpoint = await self._store.create_endpoint(
            tenant_id,
            url=checked_url,
            secret=key,
            event_types=types,
            description=_checked_description(description) or "",
            now=self._clock(),
        )
        return endpoint, key

    async def update_endpoint(
        self,
        tenant_id: TenantId,
        endpoint_id: int,
        *,
        url: str | None = None,
        event_types: Sequence[str] | None = None,
        description: str | None = None,
        enabled: bool | None = None,
        rotate_secret: bool = False,
        actor: str = "an operator",
    ) -> tuple[WebhookEndpoint, str | None]:
        """The endpoint as changed, and its new secret when ``rotate_secret``.

        Enabling a disabled endpoint (after a 410, say) queues its parked deliveries again.
        A rotated secret signs every request at once; the one it replaces signs them too
        for ``secret_overlap``, so the receiver can switch without refusing any.
        """
        now = self._clock()
        secret = new_secret() if rotate_secret else None
        overlap = secret is not None and self._overlap > timedelta(0)
        updated = await self._store.update_endpoint(
            tenant_id,
            endpoint_id,
            now=now,
            url=check_url(url) if url is not None else None,
            event_types=check_event_types(event_types) if event_types is not None else None,
            description=_checked_description(description),
            enabled=enabled,
            disabled_reason=f"disabled by {actor}",
            secret=secret,
            previous_until=now + self._overlap if overlap else None,
        )
        if updated is None:
            raise WebhookRefused.not_found("webhook endpoint")
        if enabled:
            self._on_queued()
        return updated, secret

    async def delete_endpoint(self, tenant_id: TenantId, endpoint_id: int) -> None:
        if not await self._store.delete_endpoint(tenant_id, endpoint_id):
            raise WebhookRefused.not_found("webhook endpoint")

    async def declare(
        self,
        tenant_id: TenantId,
        *,
        url: str,
        event_types: Sequence[str],
        secret: str | None = None,
        description: str | None = None,
    ) -> WebhookEndpoint:
        """Create or update the tenant's endpoint at ``url`` (idempotent; configuration).

        Whether it is enabled is left alone: an endpoint that answered 410 stays disabled
        until an operator enables it.
        """
        checked_url = check_url(url)
        found = await self._store.endpoint_by_url(tenant_id, checked_url)
        if found is None:
            endpoint, _ = await self.create_endpoint(
                tenant_id,
                url=checked_url,
                event_types=event_types,
                description=description,
                secret=secret,
            )
            return endpoint
        updated = await self._store.update_endpoint(
            tenant_id,
            found.id,
            now=self._clock(),
            event_types=check_event_types(event_types),
            description=_checked_description(description),
            secret=check_secret(secret) if secret is not None else None,
        )
        if updated is None:
            raise WebhookRefused.not_found("webhook endpoint")
        return updated

    async def deliveries(
        self,
        tenant_id: TenantId,
        *,
        before: tuple[int, int] | None,
        limit: int,
        endpoint_id: int | None = None,
        statuses: Sequence[DeliveryStatus] | None = None,
    ) -> tuple[Sequence[WebhookDelivery], bool]:
        """A page of the tenant's deliveries, newest first, and whether more follow."""
        rows = await self._store.deliveries(
            tenant_id, before=before, limit=limit + 1, endpoint_id=endpoint_id, statuses=statuses
        )
        return rows[:limit], len(rows) > limit

    async def replay(self, tenant_id: TenantId, delivery_id: str) -> WebhookDelivery:
        """Send a delivery again now, whatever its state, with the same ``webhook-id``."""
        delivery = await self._store.replay(tenant_id, delivery_id, now=self._clock())
        self._on_queued()
        return delivery


def _checked_description(text: str | None) -> str | None:
    if text is None:
        return None
    text = text.strip()
    if len(text) > MAX_DESCRIPTION:
        raise WebhookRefused(
            RefusalCode.INVALID_DESCRIPTION,
            f"a description takes at most {MAX_DESCRIPTION} characters; got {len(text)}",
            field="description",
        )
    return text


__all__ = ["WebhookService"]

"""Webhook endpoints and deliveries as operators manage them (the services' port).

What the dispatcher and the sender do to deliveries is in :mod:`.webhook_queue`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Select, Table, and_, delete, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from stockgraph.domain.ids import TenantId
from stockgraph.domain.webhooks import (
    OPEN_STATUSES,
    AttemptTrigger,
    DeliveryAttempt,
    DeliveryStatus,
    RefusalCode,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookRefused,
)
from stockgraph.persistence.models import (
    OutboxEventRow,
    WebhookAttemptRow,
    WebhookDeliveryRow,
    WebhookEndpointRow,
)

_outbox = cast(Table, OutboxEventRow.__table__)
_endpoints = cast(Table, WebhookEndpointRow.__table__)
_deliveries = cast(Table, WebhookDeliveryRow.__table__)
_attempts = cast(Table, WebhookAttemptRow.__table__)

_ENDPOINT_COLUMNS = (
    _endpoints.c.id,
    _endpoints.c.tenant_id,
    _endpoints.c.url,
    _endpoints.c.event_types,
    _endpoints.c.description,
    _endpoints.c.enabled,
    _endpoints.c.disabled_reason,
    _endpoints.c.disabled_at,
    _endpoints.c.created_at,
    _endpoints.c.updated_at,
    _endpoints.c.previous_secret_until,
)

_DELIVERY_COLUMNS = (
    *(column.label(f"endpoint_{column.name}") for column in _ENDPOINT_COLUMNS),
    _deliveries.c.id,
    _deliveries.c.tenant_id,
    _deliveries.c.event_id,
    _deliveries.c.event_type,
    _deliveries.c.body,
    _deliveries.c.status,
    _deliveries.c.attempt_count,
    _deliveries.c.next_attempt_at,
    _deliveries.c.created_at,
    _deliveries.c.delivered_at,
)


def endpoint_of(row: Any, *, prefix: str = "") -> WebhookEndpoint:
    """The endpoint in ``row``, whose columns are named ``prefix`` + the column's name."""

    def column(name: str) -> Any:
        return getattr(row, prefix + name)

    return WebhookEndpoint(
        id=int(column("id")),
        tenant_id=TenantId(column("tenant_id")),
        url=column("url"),
        event_types=tuple(column("event_types")),
        description=column("description"),
        enabled=bool(column("enabled")),
        disabled_reason=column("disabled_reason"),
        disabled_at=column("disabled_at"),
        created_at=column("created_at"),
        updated_at=column("updated_at"),
        previous_secret_until=column("previous_secret_until"),
    )


def _holder_of(tenant_id: TenantId, url: str) -> Select[Any]:
    """The id of the tenant's endpoint with ``url``, if it has one."""
    return select(_endpoints.c.id).where(
        _endpoints.c.tenant_id == tenant_id, _endpoints.c.url == url
    )


def _url_taken(url: str) -> WebhookRefused:
    return WebhookRefused(
        RefusalCode.URL_TAKEN, f"an endpoint of yours already has the URL {url!r}", field="url"
    )


async def disable_endpoint(
    conn: AsyncConnection, endpoint_id: int, *, reason: str, now: datetime
) -> None:
    """Disable an endpoint and park its undelivered deliveries as ``DISABLED``."""
    await conn.execute(
        update(_endpoints)
        .where(_endpoints.c.id == endpoint_id)
        .values(enabled=False, disabled_reason=reason, disabled_at=now, updated_at=now)
    )
    await conn.execute(
        update(_deliveries)
        .where(
            _deliveries.c.endpoint_id == endpoint_id,
            _deliveries.c.status.in_([s.value for s in OPEN_STATUSES]),
        )
        .values(status=DeliveryStatus.DISABLED.value, next_attempt_at=None)
    )


class SqlWebhookStore:
    """Implements the services' ``WebhookStore`` port; every query names the tenant."""

    def __init__(self, *, engine: AsyncEngine) -> None:
        self._engine = engine

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
        try:
            async with self._engine.begin() as conn:
                if await conn.scalar(_holder_of(tenant_id, url)) is not None:
                    raise _url_taken(url)
                since = await conn.scalar(select(func.coalesce(func.max(_outbox.c.id), 0)))
                new_id = await conn.scalar(
                    insert(_endpoints)
                    .values(
                        tenant_id=tenant_id,
                        url=url,
                        secret=secret,
                        event_types=list(event_types),
                        description=description,
                        enabled=True,
                        since_event_id=int(since or 0),
                        disabled_reason=None,
                        disabled_at=None,
                        created_at=now,
                        updated_at=now,
                    )
                    .returning(_endpoints.c.id)
                )
                found = await self._endpoint(conn, tenant_id, int(cast(int, new_id)))
        except IntegrityError:
            await self._refuse_if_taken(tenant_id, url)
            raise
        if found is None:
            raise RuntimeError(f"endpoint {new_id} vanished inside its own transaction")
        return found

    async def _endpoint(
        self, conn: AsyncConnection, tenant_id: TenantId, endpoint_id: int
    ) -> WebhookEndpoint | None:
        row = (
            await conn.execute(
                select(*_ENDPOINT_COLUMNS).where(
                    _endpoints.c.tenant_id == tenant_id, _endpoints.c.id == endpoint_id
                )
            )
        ).first()
        return None if row is None else endpoint_of(row)

    async def endpoint_by_url(self, tenant_id: TenantId, url: str) -> WebhookEndpoint | None:
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    select(*_ENDPOINT_COLUMNS).where(
                        _endpoints.c.tenant_id == tenant_id, _endpoints.c.url == url
                    )
                )
            ).first()
        return None if row is None else endpoint_of(row)

    async def endpoints(
        self, tenant_id: TenantId, *, after_id: int | None, limit: int
    ) -> Sequence[WebhookEndpoint]:
        """The tenant's endpoints in the order they were created, after ``after_id``."""
        query = select(*_ENDPOINT_COLUMNS).where(_endpoints.c.tenant_id == tenant_id)
        if after_id is not None:
            query = query.where(_endpoints.c.id > after_id)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query.order_by(_endpoints.c.id).limit(limit))).all()
        return [endpoint_of(row) for row in rows]

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
        disabled_reason: str = "disabled by an operator",
        secret: str | None = None,
        previous_until: datetime | None = None,
    ) -> WebhookEndpoint | None:
        """Change what is given; None when the tenant has no such endpoint.

        A new ``secret`` keeps the one it replaces signing too until ``previous_until``
        (None: not at all).

        Enabling a disabled endpoint queues its ``DISABLED`` deliveries again, due now;
        disabling one parks its undelivered deliveries as ``DISABLED``.
        """
        try:
            async with self._engine.begin() as conn:
                before = await self._endpoint(conn, tenant_id, endpoint_id)
                if before is None:
                    return None
                values: dict[str, Any] = {"updated_at": now}
                if url is not None and url != before.url:
                    if await conn.scalar(_holder_of(tenant_id, url)) is not None:
                        raise _url_taken(url)
                    values["url"] = url
                if event_types is not None:
                    values["event_types"] = list(event_types)
                if description is not None:
                    values["description"] = description
                if secret is not None:
                    # The right side reads the row as it was: the secret being replaced.
                    values["secret"] = secret
                    values["previous_secret"] = (
                        None if previous_until is None else _endpoints.c.secret
                    )
                    values["previous_secret_until"] = previous_until
                await conn.execute(
                    update(_endpoints).where(_endpoints.c.id == endpoint_id).values(**values)
                )
                if enabled is True and not before.enabled:
                    await self._enable(conn, endpoint_id, now)
                elif enabled is False and before.enabled:
                    await disable_endpoint(conn, endpoint_id, reason=disabled_reason, now=now)
                return await self._endpoint(conn, tenant_id, endpoint_id)
        except IntegrityError:
            if url is not None:
                await self._refuse_if_taken(tenant_id, url, other_than=endpoint_id)
            raise

    async def _refuse_if_taken(
        self, tenant_id: TenantId, url: str, *, other_than: int | None = None
    ) -> None:
        """``URL_TAKEN`` when the constraint a write broke is that another endpoint of the
        tenant took ``url`` between the look and the write; any other broken constraint is
        not the caller's doing and is not reported as if it were."""
        async with self._engine.connect() as conn:
            holder = await conn.scalar(_holder_of(tenant_id, url))
        if holder is not None and holder != other_than:
            raise _url_taken(url) from None

    async def _enable(self, conn: AsyncConnection, endpoint_id: int, now: datetime) -> None:
        await conn.execute(
            update(_endpoints)
            .where(_endpoints.c.id == endpoint_id)
            .values(enabled=True, disabled_reason=None, disabled_at=None, updated_at=now)
        )
        await conn.execute(
            update(_deliveries)
            .where(
                _deliveries.c.endpoint_id == endpoint_id,
                _deliveries.c.status == DeliveryStatus.DISABLED.value,
            )
            .values(status=DeliveryStatus.PENDING.value, next_attempt_at=now)
        )

    async def delete_endpoint(self, tenant_id: TenantId, endpoint_id: int) -> bool:
        """Remove an endpoint with its deliveries and their attempts (the foreign keys
        cascade)."""
        async with self._engine.begin() as conn:
            gone = await conn.execute(
                delete(_endpoints).where(
                    _endpoints.c.tenant_id == tenant_id, _endpoints.c.id == endpoint_id
                )
            )
        return bool(gone.rowcount)

    async def deliveries(
        self,
        tenant_id: TenantId,
        *,
        before: tuple[int, int] | None,
        limit: int,
        endpoint_id: int | None = None,
        statuses: Sequence[DeliveryStatus] | None = None,
    ) -> Sequence[WebhookDelivery]:
        """Newest first (by event, then endpoint), strictly before ``before``, with their
        attempts: two statements whatever the page size."""
        d = _deliveries
        query = (
            select(*_DELIVERY_COLUMNS)
            .select_from(_deliveries)
            .join(_endpoints, _endpoints.c.id == d.c.endpoint_id)
            .where(d.c.tenant_id == tenant_id)
        )
        if before is not None:
            event_id, endpoint = before
            query = query.where(
                or_(
                    d.c.event_id < event_id,
                    and_(d.c.event_id == event_id, d.c.endpoint_id < endpoint),
                )
            )
        if endpoint_id is not None:
            query = query.where(d.c.endpoint_id == endpoint_id)
        if statuses is not None:
            query = query.where(d.c.status.in_([s.value for s in statuses]))
        query = query.order_by(d.c.event_id.desc(), d.c.endpoint_id.desc()).limit(limit)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
            attempts = await _attempts_of(conn, [row.id for row in rows])
        return [_delivery_of(row, attempts.get(row.id, ())) for row in rows]

    async def _delivery(
        self, conn: AsyncConnection, tenant_id: TenantId, delivery_id: str
    ) -> WebhookDelivery | None:
        d = _deliveries
        row = (
            await conn.execute(
                select(*_DELIVERY_COLUMNS)
                .select_from(_deliveries)
                .join(_endpoints, _endpoints.c.id == d.c.endpoint_id)
                .where(d.c.tenant_id == tenant_id, d.c.id == delivery_id)
            )
        ).first()
        if row is None:
            return None
        attempts = await _attempts_of(conn, [row.id])
        return _delivery_of(row, attempts.get(row.id, ()))

    async def replay(
        self, tenant_id: TenantId, delivery_id: str, *, now: datetime
    ) -> WebhookDelivery:
        """Queue a fresh attempt now, whatever the delivery's state.

        One in flight is not taken again before its attempt is recorded: the replay then
        follows it at once.
        """
        async with self._engine.begin() as conn:
            found = await self._delivery(conn, tenant_id, delivery_id)
            if found is None:
                raise WebhookRefused(
                    RefusalCode.NOT_FOUND, f"no delivery {delivery_id!r} of yours", field="id"
                )
            if not found.endpoint.enabled:
                raise WebhookRefused(
                    RefusalCode.ENDPOINT_DISABLED,
                    f"the endpoint {found.endpoint.url!r} is disabled; enable it first",
                    field="id",
                )
            await conn.execute(
                update(_deliveries)
                .where(_deliveries.c.id == delivery_id)
                .values(
                    status=DeliveryStatus.PENDING.value,
                    next_attempt_at=now,
                    next_trigger=AttemptTrigger.REPLAY.value,
                )
            )
            replayed = await self._delivery(conn, tenant_id, delivery_id)
        if replayed is None:
            raise RuntimeError(f"delivery {delivery_id} vanished inside its own transaction")
        return replayed


async def _attempts_of(
    conn: AsyncConnection, delivery_ids: Sequence[str]
) -> dict[str, tuple[DeliveryAttempt, ...]]:
    if not delivery_ids:
        return {}
    a = _attempts
    rows = (
        await conn.execute(
            select(
                a.c.delivery_id,
                a.c.attempted_at,
                a.c.status_code,
                a.c.duration_ms,
                a.c.error,
                a.c.trigger,
            )
            .where(a.c.delivery_id.in_(list(delivery_ids)))
            .order_by(a.c.id)
        )
    ).all()
    found: dict[str, list[DeliveryAttempt]] = {}
    for row in rows:
        found.setdefault(row.delivery_id, []).append(
            DeliveryAttempt(
                attempted_at=row.attempted_at,
                status_code=row.status_code,
                duration_ms=int(row.duration_ms),
                error=row.error,
                trigger=AttemptTrigger(row.trigger),
            )
        )
    return {key: tuple(value) for key, value in found.items()}


def _delivery_of(row: Any, attempts: Sequence[DeliveryAttempt]) -> WebhookDelivery:
    return WebhookDelivery(
        id=row.id,
        tenant_id=TenantId(row.tenant_id),
        endpoint=endpoint_of(row, prefix="endpoint_"),
        event_id=int(row.event_id),
        event_type=row.event_type,
        body=row.body,
        status=DeliveryStatus(row.status),
        attempt_count=int(row.attempt_count),
        next_attempt_at=row.next_attempt_at,
        created_at=row.created_at,
        delivered_at=row.delivered_at,
        attempts=tuple(attempts),
    )


__all__ = ["SqlWebhookStore", "disable_endpoint", "endpoint_of"]

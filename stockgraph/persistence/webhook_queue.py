"""The webhook queue as the dispatcher and the sender see it: safe with many processes.

- :meth:`SqlWebhookQueue.fan_out` turns outbox events past the saved cursor into delivery
  rows and moves the cursor, in one transaction. On PostgreSQL the cursor row is locked
  (``SELECT ... FOR UPDATE``) so dispatchers take turns; on SQLite the transaction starts
  with a write to the cursor row, which makes it the one writer. The unique
  (endpoint, event) key is a second guard: no event is queued twice for an endpoint.
- :meth:`SqlWebhookQueue.claim` takes due deliveries of one endpoint in one ``UPDATE``:
  their ``next_attempt_at`` (and ``leased_until``) move forward by a lease, so no other
  sender takes them while they are in flight (PostgreSQL skips rows another sender is
  claiming: ``FOR UPDATE SKIP LOCKED``). A sender that dies mid-attempt leaves the lease to
  expire; the delivery is then taken again.
- :meth:`SqlWebhookQueue.record` keeps the attempt and moves the delivery on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, delete, func, insert, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from stockgraph.domain.events import OutboxEvent, Topic
from stockgraph.domain.ids import WarehouseId
from stockgraph.domain.webhooks import (
    OPEN_STATUSES,
    AttemptTrigger,
    DeliveryStatus,
    NextStep,
    Outcome,
    delivery_id,
    webhook_body,
)
from stockgraph.persistence.event_log import outbox_event
from stockgraph.persistence.models import (
    OutboxEventRow,
    WarehouseRow,
    WebhookAttemptRow,
    WebhookCursorRow,
    WebhookDeliveryRow,
    WebhookEndpointRow,
)
from stockgraph.persistence.webhook_store import disable_endpoint

_outbox = cast(Table, OutboxEventRow.__table__)
_warehouses = cast(Table, WarehouseRow.__table__)
_endpoints = cast(Table, WebhookEndpointRow.__table__)
_deliveries = cast(Table, WebhookDeliveryRow.__table__)
_attempts = cast(Table, WebhookAttemptRow.__table__)
_cursor = cast(Table, WebhookCursorRow.__table__)

CURSOR = "deliveries"
_KNOWN_TOPICS = frozenset(topic.value for topic in Topic)
_OPEN = [status.value for status in OPEN_STATUSES]


@dataclass(frozen=True, slots=True)
class FanOut:
    """What one :meth:`SqlWebhookQueue.fan_out` did."""

    events: int
    """Outbox events read (the cursor moved past them)."""
    deliveries: int
    """Deliveries queued for them."""
    cursor: int


@dataclass(frozen=True, slots=True)
class Claim:
    """A delivery taken for one attempt."""

    delivery_id: str
    endpoint_id: int
    url: str
    secrets: tuple[str, ...]
    """What signs the attempt: the endpoint's secret, then the one it replaced while that
    still signs (see ``WebhookEndpointRow``)."""
    body: str
    trigger: AttemptTrigger


@dataclass(frozen=True, slots=True)
class AttemptResult:
    attempted_at: datetime
    finished_at: datetime
    """When the answer (or the failure) came: later attempts are scheduled from here."""
    status_code: int | None
    duration_ms: int
    error: str | None


Decide = Callable[[int], NextStep]
"""What follows the failed or successful attempt numbered by the argument (1 = first)."""


class SqlWebhookQueue:
    """Deliveries to make, as dispatchers queue them and senders take them."""

    def __init__(self, *, engine: AsyncEngine) -> None:
        self._engine = engine

    async def position(self) -> int | None:
        """The last outbox event the dispatcher has queued deliveries for, which outbox
        retention must not delete past; None when it holds nothing back (no endpoint: an
        endpoint only hears of events committed after it was created)."""
        query = select(_cursor.c.event_id).where(_cursor.c.name == CURSOR)
        async with self._engine.connect() as conn:
            if await conn.scalar(select(_endpoints.c.id).limit(1)) is None:
                return None
            found = await conn.scalar(query)
        return None if found is None else int(found)

    async def prune_finished(self, *, before: datetime) -> int:
        """Delete deliveries that are over (``DELIVERED`` or ``DEAD``) and were queued
        before ``before``, with their attempts (the foreign key cascades); how many
        deliveries went. Pending, failing and parked (``DISABLED``) ones stay, however old."""
        over = [DeliveryStatus.DELIVERED.value, DeliveryStatus.DEAD.value]
        finished = delete(_deliveries).where(
            _deliveries.c.status.in_(over), _deliveries.c.created_at < before
        )
        async with self._engine.begin() as conn:  # their attempts go by the foreign key
            gone = await conn.execute(finished)
        return gone.rowcount or 0

    async def has_pending(self) -> bool:
        """Whether an outbox event lies past the cursor and some endpoint may want it:
        reads only, no lock. With no endpoint at all the cursor stays where it is (the
        first endpoint created moves it past everything committed before it)."""
        saved = select(_cursor.c.event_id).where(_cursor.c.name == CURSOR).scalar_subquery()
        query = select(_outbox.c.id).where(_outbox.c.id > func.coalesce(saved, -1)).limit(1)
        async with self._engine.connect() as conn:
            if await conn.scalar(select(_endpoints.c.id).limit(1)) is None:
                return False
            return (await conn.scalar(query)) is not None

    async def fan_out(self, *, now: datetime, limit: int = 500) -> FanOut:
        """Queue deliveries for up to ``limit`` outbox events past the cursor; move it."""
        async with self._engine.begin() as conn:
            after = await self._lock_cursor(conn, now)
            # No endpoint hears of what was committed before it was created: skip it all.
            oldest_interest = await conn.scalar(select(func.min(_endpoints.c.since_event_id)))
            if oldest_interest is not None and int(oldest_interest) > after:
                after = int(oldest_interest)
                await conn.execute(
                    update(_cursor)
                    .where(_cursor.c.name == CURSOR)
                    .values(event_id=after, updated_at=now)
                )
            rows = (
                await conn.execute(
                    select(_outbox).where(_outbox.c.id > after).order_by(_outbox.c.id).limit(limit)
                )
            ).all()
            if not rows:
                return FanOut(0, 0, after)
            events = [outbox_event(row) for row in rows if row.topic in _KNOWN_TOPICS]
            tenants = {e.tenant_id for e in events}
            endpoints = (
                (
                    await conn.execute(
                        select(
                            _endpoints.c.id,
                            _endpoints.c.tenant_id,
                            _endpoints.c.event_types,
                            _endpoints.c.enabled,
                            _endpoints.c.since_event_id,
                        ).where(_endpoints.c.tenant_id.in_(sorted(tenants)))
                    )
                ).all()
                if tenants
                else []
            )
            codes = await self._warehouse_codes(conn, events)
            values: list[dict[str, Any]] = []
            for event in events:
                body: str | None = None
                for endpoint in endpoints:
                    if endpoint.tenant_id != event.tenant_id:
                        continue
                    if event.topic.value not in endpoint.event_types:
                        continue
                    if event.id <= endpoint.since_event_id:
                        continue  # committed before the endpoint was created
                    if body is None:
                        code = None if event.warehouse_id is None else codes.get(event.warehouse_id)
                        body = webhook_body(event, code)
                    values.append(
                        {
                            "id": delivery_id(event.id, endpoint.id),
                            "tenant_id": event.tenant_id,
                            "endpoint_id": endpoint.id,
                            "event_id": event.id,
                            "event_type": event.topic.value,
                            "body": body,
                            # An endpoint disabled now still gets its events once enabled.
                            "status": (
                                DeliveryStatus.PENDING
                                if endpoint.enabled
                                else DeliveryStatus.DISABLED
                            ).value,
                            "attempt_count": 0,
                            "next_attempt_at": now if endpoint.enabled else None,
                            "next_trigger": AttemptTrigger.SCHEDULE.value,
                            "leased_until": None,
                            "created_at": now,
                            "delivered_at": None,
                        }
                    )
            if values:
                await conn.execute(self._insert_new(conn), values)
            last = int(rows[-1].id)
            await conn.execute(
                update(_cursor)
                .where(_cursor.c.name == CURSOR)
                .values(event_id=last, updated_at=now)
            )
        return FanOut(len(rows), len(values), last)

    async def _lock_cursor(self, conn: AsyncConnection, now: datetime) -> int:
        if conn.dialect.name == "sqlite":
            # A write first: this transaction is SQLite's one writer until it commits.
            await conn.execute(
                update(_cursor).where(_cursor.c.name == CURSOR).values(updated_at=now)
            )
        found = await conn.scalar(
            select(_cursor.c.event_id).where(_cursor.c.name == CURSOR).with_for_update()
        )
        if found is not None:
            return int(found)
        # A database whose cursor row went missing: start after the newest event, once.
        newest = await conn.scalar(select(func.coalesce(func.max(_outbox.c.id), 0)))
        await conn.execute(
            self._insert_new(conn, _cursor),
            [{"name": CURSOR, "event_id": int(newest or 0), "updated_at": now}],
        )
        found = await conn.scalar(
            select(_cursor.c.event_id).where(_cursor.c.name == CURSOR).with_for_update()
        )
        return int(found or 0)

    @staticmethod
    def _insert_new(conn: AsyncConnection, table: Table = _deliveries) -> Any:
        """An INSERT that skips rows whose key is already there."""
        if conn.dialect.name == "postgresql":
            return pg_insert(table).on_conflict_do_nothing()
        if conn.dialect.name == "sqlite":
            return sqlite_insert(table).on_conflict_do_nothing()
        return insert(table)

    async def _warehouse_codes(
        self, conn: AsyncConnection, events: Sequence[OutboxEvent]
    ) -> dict[WarehouseId, str]:
        ids = sorted({e.warehouse_id for e in events if e.warehouse_id is not None})
        if not ids:
            return {}
        rows = (
            await conn.execute(
                select(_warehouses.c.id, _warehouses.c.code).where(_warehouses.c.id.in_(ids))
            )
        ).all()
        return {WarehouseId(row.id): row.code for row in rows}

    async def due_endpoints(self, *, now: datetime, limit: int = 1000) -> list[int]:
        """Enabled endpoints with at least one delivery due and not in flight."""
        d = _deliveries
        query = (
            select(d.c.endpoint_id)
            .join(_endpoints, _endpoints.c.id == d.c.endpoint_id)
            .where(
                _endpoints.c.enabled.is_(True),
                d.c.status.in_(_OPEN),
                d.c.next_attempt_at <= now,
                or_(d.c.leased_until.is_(None), d.c.leased_until <= now),
            )
            .distinct()
            .limit(limit)
        )
        async with self._engine.connect() as conn:
            return [int(row.endpoint_id) for row in (await conn.execute(query)).all()]

    async def claim(
        self, endpoint_id: int, *, now: datetime, limit: int, lease_seconds: float
    ) -> list[Claim]:
        """Take up to ``limit`` due deliveries of the endpoint, oldest event first."""
        if limit < 1:
            return []
        d = _deliveries
        until = now + timedelta(seconds=lease_seconds)
        async with self._engine.begin() as conn:
            endpoint = (
                await conn.execute(
                    select(
                        _endpoints.c.url,
                        _endpoints.c.secret,
                        _endpoints.c.previous_secret,
                        _endpoints.c.previous_secret_until,
                        _endpoints.c.enabled,
                    ).where(_endpoints.c.id == endpoint_id)
                )
            ).first()
            if endpoint is None or not endpoint.enabled:
                return []
            due = (
                select(d.c.id)
                .where(
                    d.c.endpoint_id == endpoint_id,
                    d.c.status.in_(_OPEN),
                    d.c.next_attempt_at <= now,
                    or_(d.c.leased_until.is_(None), d.c.leased_until <= now),
                )
                .order_by(d.c.next_attempt_at, d.c.event_id)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
            rows = (
                await conn.execute(
                    update(d)
                    .where(d.c.id.in_(due))
                    .values(next_attempt_at=until, leased_until=until)
                    .returning(d.c.id, d.c.body, d.c.next_trigger, d.c.event_id)
                )
            ).all()
        ordered = sorted(rows, key=lambda row: int(row.event_id))
        secrets: tuple[str, ...] = (endpoint.secret,)
        until = endpoint.previous_secret_until
        if endpoint.previous_secret and until is not None and until > now:
            secrets += (endpoint.previous_secret,)
        return [
            Claim(
                delivery_id=row.id,
                endpoint_id=endpoint_id,
                url=endpoint.url,
                secrets=secrets,
                body=row.body,
                trigger=AttemptTrigger(row.next_trigger),
            )
            for row in ordered
        ]

    async def record(self, claim: Claim, result: AttemptResult, decide: Decide) -> NextStep:
        """Keep the attempt and move the delivery on; returns what was decided.

        A replay asked for while the attempt was in flight queues another attempt now; an
        endpoint disabled meanwhile keeps the delivery ``DISABLED`` unless it arrived.
        """
        d = _deliveries
        now = result.finished_at
        async with self._engine.begin() as conn:
            current = (
                await conn.execute(
                    select(d.c.status, d.c.attempt_count, d.c.next_trigger)
                    .where(d.c.id == claim.delivery_id)
                    .with_for_update()
                )
            ).first()
            if current is None:
                return NextStep(Outcome.RETRY, DeliveryStatus.PENDING, None)  # deleted meanwhile
            await conn.execute(
                insert(_attempts).values(
                    delivery_id=claim.delivery_id,
                    attempted_at=result.attempted_at,
                    status_code=result.status_code,
                    duration_ms=result.duration_ms,
                    error=result.error,
                    trigger=claim.trigger.value,
                )
            )
            count = int(current.attempt_count) + 1
            step = decide(count)
            values: dict[str, Any] = {
                "attempt_count": count,
                "leased_until": None,
                "next_trigger": AttemptTrigger.SCHEDULE.value,
            }
            replay_asked = (
                claim.trigger is AttemptTrigger.SCHEDULE
                and current.next_trigger == AttemptTrigger.REPLAY.value
            )
            delivered = step.outcome is Outcome.DELIVERED
            if delivered:
                values.update(delivered_at=now)
            if step.outcome is Outcome.GONE:
                reason = f"410 Gone from {claim.url} at {now.isoformat()}"
                await disable_endpoint(conn, claim.endpoint_id, reason=reason, now=now)
                values.update(status=DeliveryStatus.DISABLED.value, next_attempt_at=None)
            elif replay_asked:
                values.update(
                    status=DeliveryStatus.PENDING.value,
                    next_attempt_at=now,
                    next_trigger=AttemptTrigger.REPLAY.value,
                )
            elif not delivered and current.status == DeliveryStatus.DISABLED.value:
                values.update(next_attempt_at=None)  # its endpoint was disabled meanwhile
            else:
                values.update(
                    status=step.status.value,
                    next_attempt_at=(
                        None
                        if step.delay_seconds is None
                        else now + timedelta(seconds=step.delay_seconds)
                    ),
                )
            await conn.execute(update(d).where(d.c.id == claim.delivery_id).values(**values))
        return step

    async def counts(self) -> dict[DeliveryStatus, int]:
        """Deliveries by status, every tenant (for the metrics gauge)."""
        d = _deliveries
        async with self._engine.connect() as conn:
            rows = (await conn.execute(select(d.c.status, func.count()).group_by(d.c.status))).all()
        found = dict.fromkeys(DeliveryStatus, 0)
        for status, count in rows:
            found[DeliveryStatus(status)] = int(count)
        return found


__all__ = ["AttemptResult", "Claim", "FanOut", "SqlWebhookQueue"]

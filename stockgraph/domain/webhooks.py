"""Outbound webhooks as plain values and rules: endpoints, deliveries, the retry schedule.

Every committed outbox event of a tenant becomes one *delivery* per enabled endpoint of that
tenant subscribed to the event's type. A delivery is sent until an attempt gets a 2xx
answer, on a schedule of growing delays, each jittered; a ``Retry-After`` on 429 or 503 can
push the next attempt later (never past the schedule's largest delay). ``410 Gone`` disables
the endpoint. After the last scheduled attempt a delivery is ``DEAD``: kept, never sent
again unless an operator replays it.

>>> schedule = RetrySchedule(delays=(5.0, 30.0))
>>> schedule.delay_after(1, jitter=0.5), schedule.delay_after(2, jitter=0.0)
(5.0, 24.0)
>>> schedule.delay_after(3, jitter=0.5) is None  # the schedule is spent: DEAD
True
"""

from __future__ import annotations

import base64
import binascii
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

import orjson

from stockgraph.domain.errors import DomainError
from stockgraph.domain.events import OutboxEvent, Topic
from stockgraph.domain.global_ids import event_cursor, warehouse_id
from stockgraph.domain.ids import TenantId
from stockgraph.domain.retry_after import read_retry_after

SECRET_PREFIX = "whsec_"  # noqa: S105 - the prefix of every secret, not a secret
SECRET_BYTES = 32
MIN_SECRET_BYTES = 24
EVENT_TYPES: tuple[str, ...] = tuple(topic.value for topic in Topic)
"""What an endpoint may subscribe to: the outbox topics."""

DEFAULT_RETRY_DELAYS: tuple[float, ...] = (5, 30, 120, 600, 1800, 3600, 10800, 21600, 43200)
"""5 s, 30 s, 2 min, 10 min, 30 min, 1 h, 3 h, 6 h, 12 h: about 23 hours in all."""


class DeliveryStatus(StrEnum):
    PENDING = "PENDING"
    """Not attempted yet (or queued again by a replay or a re-enabled endpoint)."""
    DELIVERED = "DELIVERED"
    FAILING = "FAILING"
    """Attempted and failed; the next attempt is scheduled."""
    DEAD = "DEAD"
    """Every scheduled attempt failed; kept for an operator to replay."""
    DISABLED = "DISABLED"
    """Its endpoint is disabled; queued again when it is enabled."""


OPEN_STATUSES = (DeliveryStatus.PENDING, DeliveryStatus.FAILING)
"""Deliveries the sender still has to attempt."""


class AttemptTrigger(StrEnum):
    SCHEDULE = "SCHEDULE"
    REPLAY = "REPLAY"


class RefusalCode(StrEnum):
    """Why a webhook request was refused: the ``code`` of a GraphQL ``userError``."""

    NOT_FOUND = "NOT_FOUND"
    ENDPOINT_DISABLED = "ENDPOINT_DISABLED"
    INVALID_URL = "INVALID_URL"
    UNKNOWN_EVENT_TYPE = "UNKNOWN_EVENT_TYPE"
    URL_TAKEN = "URL_TAKEN"
    INVALID_DESCRIPTION = "INVALID_DESCRIPTION"
    INVALID_SECRET = "INVALID_SECRET"  # noqa: S105 - an error code


class WebhookRefused(DomainError):
    """A business rule refused a webhook request; ``field`` names the input at fault."""

    code: RefusalCode

    def __init__(self, code: RefusalCode, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field

    @classmethod
    def not_found(cls, what: str) -> WebhookRefused:
        """The id names nothing of the caller's (none, or another tenant's)."""
        return cls(RefusalCode.NOT_FOUND, f"no {what} of yours", field="id")


@dataclass(frozen=True, slots=True)
class WebhookEndpoint:
    """Where a tenant wants its events POSTed. The secret is never part of this value."""

    id: int
    tenant_id: TenantId
    url: str
    event_types: tuple[str, ...]
    description: str
    enabled: bool
    disabled_reason: str | None
    disabled_at: datetime | None
    created_at: datetime
    updated_at: datetime
    previous_secret_until: datetime | None = None
    """Until when the secret replaced by the last rotation still signs requests too."""


@dataclass(frozen=True, slots=True)
class DeliveryAttempt:
    attempted_at: datetime
    status_code: int | None
    """None when no answer came (a network error or a timeout)."""
    duration_ms: int
    error: str | None
    trigger: AttemptTrigger


@dataclass(frozen=True, slots=True)
class WebhookDelivery:
    """One event for one endpoint; ``id`` is the ``webhook-id`` header of every attempt."""

    id: str
    tenant_id: TenantId
    endpoint: WebhookEndpoint
    event_id: int
    event_type: str
    body: str
    status: DeliveryStatus
    attempt_count: int
    next_attempt_at: datetime | None
    created_at: datetime
    delivered_at: datetime | None
    attempts: tuple[DeliveryAttempt, ...] = field(default=())


def delivery_id(event_id: int, endpoint_id: int) -> str:
    """The ``webhook-id`` of an event's delivery to an endpoint: the same on every attempt.

    >>> delivery_id(42, 7)
    'msg_42_7'
    """
    return f"msg_{event_id}_{endpoint_id}"


def check_url(url: str) -> str:
    """An absolute http(s) URL with a host, or :class:`WebhookRefused` ``INVALID_URL``."""
    text = url.strip()
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        parts, port = None, None
    if (
        parts is None
        or parts.scheme not in ("http", "https")
        or not parts.hostname
        or any(ch.isspace() for ch in text)
        or len(text) > 2000
        or (port is not None and not 0 < port < 65536)
    ):
        raise WebhookRefused(
            RefusalCode.INVALID_URL,
            f"{url!r} is not an absolute http:// or https:// URL with a host",
            field="url",
        )
    return text


def check_event_types(names: Iterable[str]) -> tuple[str, ...]:
    """The event types asked for, deduplicated in order; ``UNKNOWN_EVENT_TYPE`` otherwise."""
    chosen = tuple(dict.fromkeys(names))
    unknown = [name for name in chosen if name not in EVENT_TYPES]
    if unknown or not chosen:
        what = f"unknown event types {unknown}" if unknown else "no event type"
        raise WebhookRefused(
            RefusalCode.UNKNOWN_EVENT_TYPE,
            f"{what}; choose among {', '.join(EVENT_TYPES)}",
            field="eventTypes",
        )
    return chosen


def new_secret() -> str:
    """A signing secret in the Standard Webhooks form: ``whsec_`` and 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def check_secret(secret: str) -> str:
    """``whsec_<base64 of at least 24 bytes>``, or ``INVALID_SECRET``."""
    raw = b""
    if secret.startswith(SECRET_PREFIX):
        try:
            raw = base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
        except (binascii.Error, ValueError):
            raw = b""
    if len(raw) < MIN_SECRET_BYTES:
        raise WebhookRefused(
            RefusalCode.INVALID_SECRET,
            f"expected {SECRET_PREFIX}<base64 of at least {MIN_SECRET_BYTES} random bytes>",
            field="secret",
        )
    return secret


def _instant(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def webhook_body(event: OutboxEvent, warehouse_code: str | None) -> str:
    """The JSON body of every delivery of ``event`` (Standard Webhooks' shape)::

        {"type": "stock.changed", "timestamp": "2026-11-24T19:30:00.123456Z",
         "data": {...the outbox payload..., "cursor": "...", "sku": "SKU-00001",
                  "warehouseId": "<the warehouse's global id>"}}

    ``cursor`` is what ``stockChanged(after:)`` takes; ``warehouseId`` is the id the API
    gives the warehouse (None when the event names none).
    """
    data: dict[str, Any] = dict(event.payload)
    data["cursor"] = event_cursor(event.id)
    if event.topic is Topic.STOCK_CHANGED:
        data["sku"] = event.sku
        data["warehouseId"] = (
            warehouse_id(event.tenant_id, warehouse_code) if warehouse_code is not None else None
        )
    body = {"type": event.topic.value, "timestamp": _instant(event.created_at), "data": data}
    return orjson.dumps(body).decode()


@dataclass(frozen=True, slots=True)
class RetrySchedule:
    """Delays (seconds) before each retry, each scaled by a jitter factor.

    ``delays[n - 1]`` follows the ``n``-th failed attempt; after ``len(delays) + 1`` failed
    attempts the delivery is dead. The factor is ``low + jitter * (high - low)`` for a
    ``jitter`` drawn uniformly from [0, 1).
    """

    delays: tuple[float, ...] = DEFAULT_RETRY_DELAYS
    jitter_low: float = 0.8
    jitter_high: float = 1.2

    def __post_init__(self) -> None:
        if not self.delays or any(d <= 0 for d in self.delays):
            raise ValueError("a retry schedule needs at least one delay, all above zero")
        if not 0 < self.jitter_low <= self.jitter_high:
            raise ValueError("jitter bounds must satisfy 0 < low <= high")

    @property
    def attempts(self) -> int:
        """Attempts a delivery gets before it is dead: the first and one per delay."""
        return len(self.delays) + 1

    @property
    def longest(self) -> float:
        return max(self.delays)

    def delay_after(self, failed_attempts: int, *, jitter: float) -> float | None:
        """Seconds until the next attempt after ``failed_attempts``; None when none is left."""
        if failed_attempts < 1:
            raise ValueError("a delay follows at least one failed attempt")
        if failed_attempts > len(self.delays):
            return None
        factor = self.jitter_low + jitter * (self.jitter_high - self.jitter_low)
        return self.delays[failed_attempts - 1] * factor


RETRY_AFTER_STATUSES = (429, 503)


class Outcome(StrEnum):
    """What one attempt led to (the ``outcome`` label of the attempts counter)."""

    DELIVERED = "delivered"
    RETRY = "retry"
    DEAD = "dead"
    GONE = "gone"
    """410: the endpoint is disabled."""


@dataclass(frozen=True, slots=True)
class NextStep:
    outcome: Outcome
    status: DeliveryStatus
    delay_seconds: float | None
    """Until the next attempt, for :attr:`Outcome.RETRY`."""


def next_step(
    *,
    status_code: int | None,
    attempt_count: int,
    schedule: RetrySchedule,
    jitter: float,
    headers: Mapping[str, str] | None = None,
    now: datetime | None = None,
) -> NextStep:
    """What follows an attempt answered ``status_code`` (None: no answer), the
    ``attempt_count``-th attempt of its delivery.

    >>> s = RetrySchedule(delays=(5.0, 30.0))
    >>> next_step(status_code=204, attempt_count=1, schedule=s, jitter=0.5).status
    <DeliveryStatus.DELIVERED: 'DELIVERED'>
    >>> next_step(status_code=500, attempt_count=3, schedule=s, jitter=0.5).status
    <DeliveryStatus.DEAD: 'DEAD'>
    """
    if status_code is not None and 200 <= status_code < 300:
        return NextStep(Outcome.DELIVERED, DeliveryStatus.DELIVERED, None)
    if status_code == 410:
        return NextStep(Outcome.GONE, DeliveryStatus.DISABLED, None)
    delay = schedule.delay_after(attempt_count, jitter=jitter)
    if delay is None:
        return NextStep(Outcome.DEAD, DeliveryStatus.DEAD, None)
    if status_code in RETRY_AFTER_STATUSES and headers is not None:
        asked = read_retry_after(
            {k.lower(): v for k, v in headers.items()}.get("retry-after"), now=now
        )
        if asked is not None:
            delay = max(delay, min(asked, schedule.longest))
    return NextStep(Outcome.RETRY, DeliveryStatus.FAILING, delay)


__all__ = [
    "DEFAULT_RETRY_DELAYS",
    "EVENT_TYPES",
    "OPEN_STATUSES",
    "AttemptTrigger",
    "DeliveryAttempt",
    "DeliveryStatus",
    "NextStep",
    "Outcome",
    "RefusalCode",
    "RetrySchedule",
    "WebhookDelivery",
    "WebhookEndpoint",
    "WebhookRefused",
    "check_event_types",
    "check_secret",
    "check_url",
    "delivery_id",
    "new_secret",
    "next_step",
    "webhook_body",
]

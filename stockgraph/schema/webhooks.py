"""Outbound webhook types: endpoints, deliveries, attempts, and the mutations' inputs and
payloads. An endpoint's secret is never a field: it is returned once, by the mutation that
creates (or rotates) it."""

from __future__ import annotations

from datetime import datetime
from enum import Enum

import strawberry

from stockgraph.domain import webhooks as model
from stockgraph.domain.global_ids import event_cursor, parse_global_id, to_global_id
from stockgraph.domain.ids import TenantId
from stockgraph.schema.types import UserError


@strawberry.enum(description="Where a delivery stands.")
class DeliveryStatus(Enum):
    PENDING = "PENDING"
    DELIVERED = "DELIVERED"
    FAILING = "FAILING"
    DEAD = "DEAD"
    DISABLED = "DISABLED"


@strawberry.enum(description="What started an attempt: the retry schedule or a replay.")
class AttemptTrigger(Enum):
    SCHEDULE = "SCHEDULE"
    REPLAY = "REPLAY"


ENDPOINT_TYPE = "WebhookEndpoint"
DELIVERY_TYPE = "WebhookDelivery"


def endpoint_key(tenant: TenantId, value: str) -> int | None:
    """The database id inside a ``WebhookEndpoint`` id of ``tenant``; None otherwise."""
    found = parse_global_id(value, ENDPOINT_TYPE)
    if found is None or found[0] != tenant or not found[1].isdigit():
        return None
    return int(found[1])


def delivery_key(tenant: TenantId, value: str) -> str | None:
    """The delivery id (``webhook-id``) inside a ``WebhookDelivery`` id of ``tenant``."""
    found = parse_global_id(value, DELIVERY_TYPE)
    if found is None or found[0] != tenant:
        return None
    return found[1]


@strawberry.type(description="Where a tenant's events are POSTed, signed (Standard Webhooks).")
class WebhookEndpoint:
    id: strawberry.ID
    url: str
    event_types: list[str] = strawberry.field(description="`stock.changed`, `sync.alert`.")
    description: str
    enabled: bool
    disabled_reason: str | None = strawberry.field(
        description="Why it was disabled: `410 Gone from ...`, or by whom."
    )
    disabled_at: datetime | None
    created_at: datetime
    updated_at: datetime
    previous_secret_expires_at: datetime | None = strawberry.field(
        description=(
            "Until when the secret replaced by the last `rotateSecret` signs every request "
            "too, beside the new one (a time past: it no longer does); null when none does."
        )
    )

    @classmethod
    def of(cls, endpoint: model.WebhookEndpoint) -> WebhookEndpoint:
        return cls(
            id=strawberry.ID(to_global_id(ENDPOINT_TYPE, endpoint.tenant_id, str(endpoint.id))),
            url=endpoint.url,
            event_types=list(endpoint.event_types),
            description=endpoint.description,
            enabled=endpoint.enabled,
            disabled_reason=endpoint.disabled_reason,
            disabled_at=endpoint.disabled_at,
            created_at=endpoint.created_at,
            updated_at=endpoint.updated_at,
            previous_secret_expires_at=endpoint.previous_secret_until,
        )


@strawberry.type(description="One POST of a delivery.")
class DeliveryAttempt:
    attempted_at: datetime
    status_code: int | None = strawberry.field(description="None when no answer came.")
    duration_ms: int
    error: str | None
    trigger: AttemptTrigger

    @classmethod
    def of(cls, attempt: model.DeliveryAttempt) -> DeliveryAttempt:
        return cls(
            attempted_at=attempt.attempted_at,
            status_code=attempt.status_code,
            duration_ms=attempt.duration_ms,
            error=attempt.error,
            trigger=AttemptTrigger(attempt.trigger.value),
        )


@strawberry.type(description="One event for one endpoint, sent until it is delivered.")
class WebhookDelivery:
    id: strawberry.ID
    message_id: str = strawberry.field(
        description="The `webhook-id` header of every attempt: receivers drop repeats by it."
    )
    endpoint: WebhookEndpoint
    event_type: str
    event_cursor: str = strawberry.field(
        description="The event's cursor, as `stockChanged(after:)` takes it."
    )
    body: str = strawberry.field(description="The exact JSON every attempt sends.")
    status: DeliveryStatus
    attempt_count: int
    next_attempt_at: datetime | None
    created_at: datetime
    delivered_at: datetime | None
    attempts: list[DeliveryAttempt] = strawberry.field(description="Oldest first.")

    @classmethod
    def of(cls, delivery: model.WebhookDelivery) -> WebhookDelivery:
        return cls(
            id=strawberry.ID(to_global_id(DELIVERY_TYPE, delivery.tenant_id, delivery.id)),
            message_id=delivery.id,
            endpoint=WebhookEndpoint.of(delivery.endpoint),
            event_type=delivery.event_type,
            event_cursor=event_cursor(delivery.event_id),
            body=delivery.body,
            status=DeliveryStatus(delivery.status.value),
            attempt_count=delivery.attempt_count,
            next_attempt_at=delivery.next_attempt_at,
            created_at=delivery.created_at,
            delivered_at=delivery.delivered_at,
            attempts=[DeliveryAttempt.of(a) for a in delivery.attempts],
        )


@strawberry.input
class CreateWebhookEndpointInput:
    url: str
    event_types: list[str] = strawberry.field(description="`stock.changed`, `sync.alert`.")
    description: str | None = None


@strawberry.type
class CreateWebhookEndpointPayload:
    endpoint: WebhookEndpoint | None
    secret: str | None = strawberry.field(
        description="The signing secret (`whsec_...`), shown this once."
    )
    user_errors: list[UserError]


@strawberry.input
class UpdateWebhookEndpointInput:
    id: strawberry.ID
    url: str | None = None
    event_types: list[str] | None = None
    description: str | None = None
    enabled: bool | None = strawberry.field(
        default=None,
        description="true sends the deliveries parked while it was disabled; false parks them.",
    )
    rotate_secret: bool = strawberry.field(
        default=False,
        description=(
            "Replace the signing secret; the new one is returned once. The one it replaces "
            "signs every request too until `previousSecretExpiresAt`."
        ),
    )


@strawberry.type
class UpdateWebhookEndpointPayload:
    endpoint: WebhookEndpoint | None
    secret: str | None = strawberry.field(description="The new secret, when rotated.")
    user_errors: list[UserError]


@strawberry.input
class DeleteWebhookEndpointInput:
    id: strawberry.ID


@strawberry.type
class DeleteWebhookEndpointPayload:
    deleted_id: strawberry.ID | None
    user_errors: list[UserError]


@strawberry.input
class ReplayDeliveryInput:
    id: strawberry.ID


@strawberry.type
class ReplayDeliveryPayload:
    delivery: WebhookDelivery | None
    user_errors: list[UserError]


__all__ = [
    "AttemptTrigger",
    "CreateWebhookEndpointInput",
    "CreateWebhookEndpointPayload",
    "DeleteWebhookEndpointInput",
    "DeleteWebhookEndpointPayload",
    "DeliveryAttempt",
    "DeliveryStatus",
    "ReplayDeliveryInput",
    "ReplayDeliveryPayload",
    "UpdateWebhookEndpointInput",
    "UpdateWebhookEndpointPayload",
    "WebhookDelivery",
    "WebhookEndpoint",
    "delivery_key",
    "endpoint_key",
]

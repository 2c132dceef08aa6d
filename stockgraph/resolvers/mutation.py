"""The root ``Mutation``: thin calls into services; business refusals become ``userErrors``."""

from __future__ import annotations

import strawberry

from stockgraph.auth.scopes import Scope
from stockgraph.domain.webhooks import WebhookRefused
from stockgraph.schema.context import Info
from stockgraph.schema.errors import BadUserInput
from stockgraph.schema.types import UserError
from stockgraph.schema.webhooks import (
    CreateWebhookEndpointInput,
    CreateWebhookEndpointPayload,
    DeleteWebhookEndpointInput,
    DeleteWebhookEndpointPayload,
    ReplayDeliveryInput,
    ReplayDeliveryPayload,
    UpdateWebhookEndpointInput,
    UpdateWebhookEndpointPayload,
    WebhookDelivery,
    WebhookEndpoint,
    delivery_key,
    endpoint_key,
)
from stockgraph.services.webhooks import WebhookService


def webhook_service(info: Info) -> WebhookService:
    """The webhook use-cases, for callers holding ``ops:admin``."""
    info.context.require(Scope.OPS_ADMIN)
    service = info.context.services.webhooks
    if service is None:
        raise BadUserInput("this server sends no webhooks")
    return service


def user_errors(refused: WebhookRefused) -> list[UserError]:
    field = ["input", refused.field] if refused.field else None
    return [UserError(field=field, message=refused.message, code=refused.code.value)]


@strawberry.type
class Mutation:
    @strawberry.mutation(
        description=(
            "Send a delivery again now, in any state (DEAD included), with the same "
            "`webhook-id` so receivers can drop it if they had it (ops:admin)."
        )
    )
    async def replay_delivery(
        self, info: Info, input: ReplayDeliveryInput
    ) -> ReplayDeliveryPayload:
        service = webhook_service(info)
        tenant = info.context.principal.tenant_id
        try:
            key = delivery_key(tenant, input.id)
            if key is None:
                raise WebhookRefused.not_found("webhook delivery")
            delivery = await service.replay(tenant, key)
        except WebhookRefused as refused:
            return ReplayDeliveryPayload(delivery=None, user_errors=user_errors(refused))
        return ReplayDeliveryPayload(delivery=WebhookDelivery.of(delivery), user_errors=[])

    @strawberry.mutation(
        description="A new endpoint; its signing secret is returned this once (ops:admin)."
    )
    async def create_webhook_endpoint(
        self, info: Info, input: CreateWebhookEndpointInput
    ) -> CreateWebhookEndpointPayload:
        service = webhook_service(info)
        info.context.limits.check_list("eventTypes", input.event_types)
        try:
            endpoint, secret = await service.create_endpoint(
                info.context.principal.tenant_id,
                url=input.url,
                event_types=input.event_types,
                description=input.description,
            )
        except WebhookRefused as refused:
            return CreateWebhookEndpointPayload(
                endpoint=None, secret=None, user_errors=user_errors(refused)
            )
        return CreateWebhookEndpointPayload(
            endpoint=WebhookEndpoint.of(endpoint), secret=secret, user_errors=[]
        )

    @strawberry.mutation(
        description=(
            "Change an endpoint. `enabled: true` sends again what was parked while it was "
            "disabled (after a 410 Gone, say) (ops:admin)."
        )
    )
    async def update_webhook_endpoint(
        self, info: Info, input: UpdateWebhookEndpointInput
    ) -> UpdateWebhookEndpointPayload:
        service = webhook_service(info)
        tenant = info.context.principal.tenant_id
        info.context.limits.check_list("eventTypes", input.event_types)
        try:
            key = endpoint_key(tenant, input.id)
            if key is None:
                raise WebhookRefused.not_found("webhook endpoint")
            endpoint, secret = await service.update_endpoint(
                tenant,
                key,
                url=input.url,
                event_types=input.event_types,
                description=input.description,
                enabled=input.enabled,
                rotate_secret=input.rotate_secret,
                actor=info.context.principal.actor,
            )
        except WebhookRefused as refused:
            return UpdateWebhookEndpointPayload(
                endpoint=None, secret=None, user_errors=user_errors(refused)
            )
        return UpdateWebhookEndpointPayload(
            endpoint=WebhookEndpoint.of(endpoint), secret=secret, user_errors=[]
        )

    @strawberry.mutation(
        description="Remove an endpoint with its deliveries and their attempts (ops:admin)."
    )
    async def delete_webhook_endpoint(
        self, info: Info, input: DeleteWebhookEndpointInput
    ) -> DeleteWebhookEndpointPayload:
        service = webhook_service(info)
        tenant = info.context.principal.tenant_id
        try:
            key = endpoint_key(tenant, input.id)
            if key is None:
                raise WebhookRefused.not_found("webhook endpoint")
            await service.delete_endpoint(tenant, key)
        except WebhookRefused as refused:
            return DeleteWebhookEndpointPayload(deleted_id=None, user_errors=user_errors(refused))
        return DeleteWebhookEndpointPayload(deleted_id=input.id, user_errors=[])


__all__ = ["Mutation", "user_errors", "webhook_service"]

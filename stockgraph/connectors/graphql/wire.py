"""The ``graphql`` dialect on the wire: the documents we send, their price, and how we read
answers and pushed webhooks.

Every answer is a GraphQL response whose ``extensions.cost`` says what the query cost and
what is left in the bucket::

    {"data": {...}, "errors": [...],
     "extensions": {"cost": {"requestedQueryCost": 302, "actualQueryCost": 212,
                             "throttleStatus": {"maximumAvailable": 1000,
                                                "currentlyAvailable": 788,
                                                "restoreRate": 50}}}}

A throttled call is an HTTP 200 whose ``errors`` carry
``extensions: {code: "THROTTLED", requiredCredits, remainingCredits, retryAfterMs}``.

A webhook is one event, in the WMS's own snake_case shape::

    {"topic": "inventory_levels/update", "webhook_id": "wh-1-ab12", "sequence": 7,
     "triggered_at": "2025-01-01T12:00:00Z",
     "payload": {"reason": "received",
                 "levels": [{"sku": "A-1", "location_code": "BIN-1", "unit": "EA",
                             "on_hand": 12, "available": 12, "damaged": 0,
                             "quality_control": 0, "incoming": 0, "version": 7}]}}

Order topics (``orders/create``, ``orders/picked``, ``orders/packed``, ``orders/fulfilled``,
``orders/cancelled``) carry ``payload.order: {ref, external_id, status}`` and the levels the
order touched. Levels are always absolute. Anything else is a
:class:`~stockgraph.connectors.errors.MalformedPayload` holding the raw body.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import TypeVar

import orjson
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StrictInt, ValidationError
from pydantic.alias_generators import to_camel

from stockgraph.connectors.base import EventKind, WmsEvent, WmsLevel, WmsOrder
from stockgraph.connectors.errors import FatalError, MalformedPayload

LIST_ESTIMATE = 5
"""What the WMS charges for a list it cannot size from the query (levels per item,
user errors): as if it held this many objects."""
MUTATION_COST = 10
"""The surcharge the WMS adds to every mutation field."""

_LEVEL_FIELDS = "locationCode onHand available damaged qualityControl incoming version"

INVENTORY_LEVELS = f"""
query InventoryLevels($skus: [String!]!) {{
  inventoryLevels(skus: $skus) {{ sku unit levels {{ {_LEVEL_FIELDS} }} }}
}}
"""
INVENTORY_ITEMS = f"""
query InventoryItems($first: Int!, $after: String) {{
  inventoryItems(first: $first, after: $after) {{
    nodes {{ sku unit levels {{ {_LEVEL_FIELDS} }} }}
    pageInfo {{ hasNextPage endCursor }}
  }}
}}
"""
ORDER_CREATE = """
mutation OrderCreate($input: OrderCreateInput!) {
  orderCreate(input: $input) {
    order { ref externalId status }
    userErrors { field message code }
  }
}
"""
ORDER_CANCEL = """
mutation OrderCancel($ref: String!) {
  orderCancel(ref: $ref) {
    order { ref externalId status }
    userErrors { field message code }
  }
}
"""

_ITEM_COST = 1 + LIST_ESTIMATE
_ORDER_PAYLOAD_COST = MUTATION_COST + 1 + 1 + LIST_ESTIMATE


def inventory_levels_cost(sku_count: int) -> float:
    """What :data:`INVENTORY_LEVELS` costs for ``sku_count`` SKUs.

    >>> inventory_levels_cost(50)
    300.0
    """
    return float(sku_count * _ITEM_COST)


def inventory_items_cost(first: int) -> float:
    """What one page of :data:`INVENTORY_ITEMS` costs: the connection, its page info and
    ``first`` items.

    >>> inventory_items_cost(50)
    302.0
    """
    return float(2 + first * _ITEM_COST)


ORDER_CREATE_COST = float(_ORDER_PAYLOAD_COST)
ORDER_CANCEL_COST = float(_ORDER_PAYLOAD_COST)


def request_body(document: str, variables: Mapping[str, object]) -> bytes:
    """The JSON body of one GraphQL request."""
    return orjson.dumps({"query": document, "variables": dict(variables)})


def order_input(order: WmsOrder) -> dict[str, object]:
    """``OrderCreateInput`` for ``order``; the WMS counts whole units only."""
    lines: list[dict[str, object]] = []
    for line in order.lines:
        if line.quantity != line.quantity.to_integral_value() or line.quantity <= 0:
            raise FatalError(
                f"order {order.external_id}: {line.wms_sku} quantity {line.quantity} "
                "is not a whole positive number"
            )
        lines.append({"sku": line.wms_sku, "quantity": int(line.quantity), "unit": line.unit})
    ship_to = [{"key": key, "value": value} for key, value in sorted(order.ship_to.items())]
    return {"externalId": order.external_id, "lines": lines, "shipTo": ship_to}


class _Wire(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, frozen=True, allow_inf_nan=False)


class ThrottleStatus(_Wire):
    maximum_available: float = Field(gt=0)
    currently_available: float = Field(ge=0)
    restore_rate: float = Field(gt=0)


class QueryCost(_Wire):
    requested_query_cost: float
    actual_query_cost: float | None = None
    throttle_status: ThrottleStatus


class _Extensions(_Wire):
    cost: QueryCost


class ErrorExtensions(_Wire):
    code: str | None = None
    required_credits: float | None = None
    remaining_credits: float | None = None
    retry_after_ms: float | None = None


class GraphqlError(_Wire):
    message: str
    extensions: ErrorExtensions | None = None

    @property
    def code(self) -> str | None:
        return self.extensions.code if self.extensions else None


class Answer(_Wire):
    """One GraphQL response: its data, its errors and its cost."""

    data: dict[str, object] | None = None
    errors: list[GraphqlError] = []
    extensions: _Extensions


class LevelNode(_Wire):
    """Quantities as sent: an ``int`` when the WMS sent one (a JSON integer, never a
    boolean), an exact ``Decimal`` otherwise."""

    location_code: str
    on_hand: StrictInt | Decimal
    available: StrictInt | Decimal
    damaged: StrictInt | Decimal
    quality_control: StrictInt | Decimal
    incoming: StrictInt | Decimal
    version: int


class ItemNode(_Wire):
    sku: str
    unit: str
    levels: list[LevelNode]


class PageInfo(_Wire):
    has_next_page: bool
    end_cursor: str | None = None


class _ItemConnection(_Wire):
    nodes: list[ItemNode]
    page_info: PageInfo


class _LevelsData(_Wire):
    inventory_levels: list[ItemNode]


class _ItemsData(_Wire):
    inventory_items: _ItemConnection


class OrderNode(_Wire):
    ref: str
    external_id: str
    status: str


class UserError(_Wire):
    field: list[str] | None = None
    message: str
    code: str | None = None


class OrderPayload(_Wire):
    order: OrderNode | None = None
    user_errors: list[UserError]


_M = TypeVar("_M", bound=BaseModel)


def _validate(model: type[_M], value: object, *, raw: bytes, instance_id: str, what: str) -> _M:
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        raise MalformedPayload(
            f"{instance_id}: {what} does not match the graphql dialect: "
            f"{exc.error_count()} problem(s), first: {exc.errors()[0]['msg']}",
            raw=raw,
            instance_id=instance_id,
        ) from None


def _decode(body: bytes, *, instance_id: str, what: str) -> object:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise MalformedPayload(
            f"{instance_id}: {what} is not JSON", raw=body, instance_id=instance_id
        ) from None


def read_answer(body: bytes, *, instance_id: str) -> Answer:
    """The GraphQL response in ``body``; it must carry ``extensions.cost``."""
    decoded = _decode(body, instance_id=instance_id, what="answer")
    return _validate(Answer, decoded, raw=body, instance_id=instance_id, what="answer")


def _levels(items: Sequence[ItemNode]) -> list[WmsLevel]:
    return [
        WmsLevel(
            wms_sku=item.sku,
            location=level.location_code,
            unit=item.unit,
            on_hand=level.on_hand,
            damaged=level.damaged,
            quality_control=level.quality_control,
            incoming=level.incoming,
            sequence=level.version,
        )
        for item in items
        for level in item.levels
    ]


def read_levels(data: object, *, raw: bytes, instance_id: str) -> list[WmsLevel]:
    """Levels in the data of an :data:`INVENTORY_LEVELS` answer."""
    parsed = _validate(_LevelsData, data, raw=raw, instance_id=instance_id, what="levels")
    return _levels(parsed.inventory_levels)


def read_page(data: object, *, raw: bytes, instance_id: str) -> tuple[list[WmsLevel], str | None]:
    """Levels in one :data:`INVENTORY_ITEMS` page, and the cursor of the next (None: done)."""
    parsed = _validate(_ItemsData, data, raw=raw, instance_id=instance_id, what="page")
    page = parsed.inventory_items
    if page.page_info.has_next_page and not page.page_info.end_cursor:
        raise MalformedPayload(
            f"{instance_id}: page says it has a next page but gives no cursor",
            raw=raw,
            instance_id=instance_id,
        )
    return _levels(page.nodes), page.page_info.end_cursor if page.page_info.has_next_page else None


def read_order_payload(data: object, *, field: str, raw: bytes, instance_id: str) -> OrderPayload:
    """The payload under ``field`` (``orderCreate``, ``orderCancel``) of a mutation's data."""
    payload = data.get(field) if isinstance(data, dict) else None
    return _validate(OrderPayload, payload, raw=raw, instance_id=instance_id, what=field)


class _HookLevel(BaseModel):
    model_config = ConfigDict(frozen=True)

    sku: str
    location_code: str
    unit: str
    on_hand: Decimal
    available: Decimal
    damaged: Decimal
    quality_control: Decimal
    incoming: Decimal
    version: int


class _HookOrder(BaseModel):
    model_config = ConfigDict(frozen=True)

    ref: str
    external_id: str | None = None
    status: str


class _HookPayload(BaseModel):
    model_config = ConfigDict(frozen=True)

    reason: str | None = None
    order: _HookOrder | None = None
    levels: list[_HookLevel] = []


class _Webhook(BaseModel):
    model_config = ConfigDict(frozen=True)

    topic: str
    webhook_id: str
    sequence: int
    triggered_at: AwareDatetime
    payload: _HookPayload


LEVEL_REASONS: Mapping[str, EventKind] = {
    "received": EventKind.RECEIPT,
    "picked": EventKind.PICK,
    "adjusted": EventKind.ADJUSTMENT,
    "cycle_counted": EventKind.CYCLE_COUNT,
    "returned": EventKind.RETURN,
    "snapshot": EventKind.SNAPSHOT,
}
"""``inventory_levels/update`` reasons and the events they are."""

ORDER_TOPICS: Mapping[str, EventKind] = {
    "orders/create": EventKind.ORDER_STATUS,
    "orders/picked": EventKind.PICK,
    "orders/packed": EventKind.PACK,
    "orders/fulfilled": EventKind.SHIPMENT,
    "orders/cancelled": EventKind.ORDER_STATUS,
}
"""Order topics and the events they are."""

LEVELS_TOPIC = "inventory_levels/update"


def _kind_of(hook: _Webhook, *, raw: bytes, instance_id: str) -> EventKind:
    def malformed(why: str) -> MalformedPayload:
        return MalformedPayload(f"{instance_id}: webhook {why}", raw=raw, instance_id=instance_id)

    if hook.topic == LEVELS_TOPIC:
        kind = LEVEL_REASONS.get(hook.payload.reason or "")
        if kind is None:
            raise malformed(f"has an unknown reason {hook.payload.reason!r}")
        return kind
    if hook.topic in ORDER_TOPICS:
        if hook.payload.order is None:
            raise malformed(f"{hook.topic} carries no order")
        return ORDER_TOPICS[hook.topic]
    raise malformed(f"has an unknown topic {hook.topic!r}")


def parse_webhook(body: bytes, *, instance_id: str) -> list[WmsEvent]:
    """The event a pushed ``body`` carries, with the absolute levels it left behind."""
    decoded = _decode(body, instance_id=instance_id, what="webhook")
    hook = _validate(_Webhook, decoded, raw=body, instance_id=instance_id, what="webhook")
    kind = _kind_of(hook, raw=body, instance_id=instance_id)
    levels = tuple(
        WmsLevel(
            wms_sku=level.sku,
            location=level.location_code,
            unit=level.unit,
            on_hand=level.on_hand,
            damaged=level.damaged,
            quality_control=level.quality_control,
            incoming=level.incoming,
            sequence=level.version,
            observed_at=hook.triggered_at,
        )
        for level in hook.payload.levels
    )
    raw: Mapping[str, object] = decoded if isinstance(decoded, dict) else {}
    order = hook.payload.order
    return [
        WmsEvent(
            event_id=hook.webhook_id,
            sequence=hook.sequence,
            kind=kind,
            occurred_at=hook.triggered_at,
            levels=levels,
            order_ref=order.ref if order else None,
            status=order.status if order else None,
            raw=raw,
        )
    ]

"""A simulated GraphQL WMS that prices every query from a credit bucket.

``POST /graphql`` takes ``{"query", "variables", "operationName"}`` with an
``X-Access-Token`` header (401 without the right one) and answers a GraphQL response whose
``extensions.cost`` holds ``requestedQueryCost``, ``actualQueryCost`` and ``throttleStatus
{maximumAvailable, currentlyAvailable, restoreRate}``.

**Cost.** Before running a document the WMS estimates it from the document alone: every
field that selects an object costs 1 (scalars and enums are free, introspection too); a
list multiplies what one entry costs by its size, taken from the field's ``first`` or
``skus`` argument, from ``first`` on the connection that holds it (``nodes``), or else
assumed to be :data:`~stockgraph.connectors.graphql.wire.LIST_ESTIMATE`; every mutation field
adds :data:`~stockgraph.connectors.graphql.wire.MUTATION_COST`. The requested cost is taken
from the bucket up front; once the query has run, the difference from the actual cost (the
objects really returned, plus mutation surcharges) is given back.

**Throttling.** A request costing more than the bucket holds now is answered HTTP 200 with
``errors: [{message, extensions: {code: "THROTTLED", requiredCredits, remainingCredits,
retryAfterMs}}]`` and counted in ``/_control/state``; one costing more than the bucket can
ever hold gets ``MAX_COST_EXCEEDED``.

**Dry run.** With ``X-Dry-Run: 1`` the document is validated and priced, never run, and
nothing is spent.

Faults (``/_control/faults``) apply to every request; with ``webhook_url`` set, every event
of the warehouse is pushed there, signed, as this dialect's webhook (see
:mod:`~stockgraph.connectors.graphql.wire`).
"""

from __future__ import annotations

import base64
import functools
import hmac
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import graphql
import httpx
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from stockgraph.connectors.graphql.wire import (
    LEVEL_REASONS,
    LEVELS_TOPIC,
    LIST_ESTIMATE,
    MUTATION_COST,
)
from stockgraph.connectors.simulation import (
    FaultGate,
    SimEvent,
    SimulatedWms,
    WebhookPusher,
    control_routes,
)

UNIT = "EA"
MAX_PAGE = 250

SDL = """
type Query {
  inventoryItems(first: Int!, after: String): InventoryItemConnection!
  inventoryLevels(skus: [String!]!): [InventoryItem!]!
  order(ref: String!): Order
}

type Mutation {
  orderCreate(input: OrderCreateInput!): OrderPayload!
  orderCancel(ref: String!): OrderPayload!
}

type InventoryItem { sku: String! unit: String! levels: [InventoryLevel!]! }

type InventoryLevel {
  locationCode: String! onHand: Int! available: Int! damaged: Int!
  qualityControl: Int! incoming: Int! version: Int!
}

type InventoryItemConnection { nodes: [InventoryItem!]! pageInfo: PageInfo! }
type PageInfo { hasNextPage: Boolean! endCursor: String }

enum OrderStatus { RECEIVED PICKED PACKED SHIPPED CANCELLED }
type Order { ref: String! externalId: String! status: OrderStatus! lines: [OrderLine!]! }
type OrderLine { sku: String! quantity: Int! unit: String! }
type OrderPayload { order: Order userErrors: [UserError!]! }
type UserError { field: [String!] message: String! code: String }

input OrderCreateInput {
  externalId: String! lines: [OrderLineInput!]! shipTo: [AttributeInput!]
}
input OrderLineInput { sku: String! quantity: Int! unit: String }
input AttributeInput { key: String! value: String! }
"""

REASONS = {kind.value: reason for reason, kind in LEVEL_REASONS.items()}
ORDER_TOPICS = {
    "RECEIVED": "orders/create",
    "PICKED": "orders/picked",
    "PACKED": "orders/packed",
    "SHIPPED": "orders/fulfilled",
    "CANCELLED": "orders/cancelled",
}

Resolver = Callable[..., Any]


class CreditBucket:
    """``capacity`` credits, restored at ``restore_rate`` per second."""

    def __init__(
        self,
        *,
        capacity: float,
        restore_rate: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if capacity <= 0 or restore_rate <= 0:
            raise ValueError("bucket_size and restore_rate must be > 0")
        self.capacity = capacity
        self.restore_rate = restore_rate
        self._clock = clock
        self._level = capacity
        self._at = clock()

    def available(self) -> float:
        now = self._clock()
        self._level = min(self.capacity, self._level + (now - self._at) * self.restore_rate)
        self._at = now
        return self._level

    def take(self, amount: float) -> bool:
        if self.available() < amount:
            return False
        self._level -= amount
        return True

    def give_back(self, amount: float) -> None:
        self._level = max(0.0, min(self.capacity, self.available() + amount))

    def wait_for(self, amount: float) -> float:
        """Seconds until ``amount`` credits are there."""
        return max(0.0, amount - self.available()) / self.restore_rate

    def status(self) -> dict[str, float]:
        return {
            "maximumAvailable": self.capacity,
            "currentlyAvailable": round(self.available(), 3),
            "restoreRate": self.restore_rate,
        }


def estimate_cost(
    schema: graphql.GraphQLSchema,
    document: graphql.DocumentNode,
    operation: graphql.OperationDefinitionNode,
    variables: Mapping[str, Any],
) -> int:
    """What ``operation`` may cost at most, from the document alone (see the module doc)."""
    fragments = {
        d.name.value: d
        for d in document.definitions
        if isinstance(d, graphql.FragmentDefinitionNode)
    }

    def selections(node: graphql.SelectionSetNode, parent: Any, page: int | None, fee: int) -> int:
        total = 0
        for selection in node.selections:
            if isinstance(selection, graphql.FieldNode):
                total += field(selection, parent, page, fee)
                continue
            condition: graphql.NamedTypeNode | None = None
            if isinstance(selection, graphql.FragmentSpreadNode):
                spread = fragments.get(selection.name.value)
                if spread is None:
                    continue
                condition, inner = spread.type_condition, spread.selection_set
            elif isinstance(selection, graphql.InlineFragmentNode):
                condition, inner = selection.type_condition, selection.selection_set
            target = schema.get_type(condition.name.value) if condition else parent
            total += selections(inner, target or parent, page, fee)
        return total

    def field(node: graphql.FieldNode, parent: Any, page: int | None, fee: int) -> int:
        fields = parent.fields if isinstance(parent, graphql.GraphQLObjectType) else {}
        definition = fields.get(node.name.value)
        if definition is None or node.selection_set is None:
            return 0
        args = {
            arg.name.value: graphql.value_from_ast_untyped(arg.value, dict(variables))
            for arg in node.arguments or ()
        }
        first = args.get("first") if isinstance(args.get("first"), int) else None
        one = 1 + selections(node.selection_set, graphql.get_named_type(definition.type), first, 0)
        if not graphql.is_list_type(graphql.get_nullable_type(definition.type)):
            return fee + one
        skus = args.get("skus")
        size = first if first is not None else len(skus) if isinstance(skus, list) else page
        return fee + one * (LIST_ESTIMATE if size is None else max(0, size))

    root = schema.get_root_type(operation.operation)
    mutation = operation.operation == graphql.OperationType.MUTATION
    return selections(operation.selection_set, root, None, MUTATION_COST if mutation else 0)


def actual_cost(data: object, *, mutation: bool) -> int:
    """Objects really returned (the root excepted), plus the mutation surcharges."""

    def objects(value: object) -> int:
        if isinstance(value, dict):
            return 1 + sum(objects(v) for v in value.values())
        return sum(objects(v) for v in value) if isinstance(value, list) else 0

    if not isinstance(data, dict):
        return 0
    fields = sum(1 for value in data.values() if isinstance(value, dict | list))
    return (MUTATION_COST * fields if mutation else 0) + objects(data) - 1


def _sku_after(cursor: str) -> str:
    try:
        decoded = base64.urlsafe_b64decode(cursor.encode()).decode()
    except (ValueError, UnicodeDecodeError):
        decoded = ""
    if not decoded.startswith("sku:"):
        raise ValueError(f"invalid cursor {cursor!r}")
    return decoded[4:]


def _item(wms: SimulatedWms, sku: str) -> dict[str, Any]:
    levels = []
    for (_sku, location), cell in wms.cells_of([sku]):
        levels.append(
            {
                "locationCode": location,
                "onHand": cell.on_hand,
                "available": max(0, cell.on_hand - cell.damaged - cell.quality_control),
                "damaged": cell.damaged,
                "qualityControl": cell.quality_control,
                "incoming": cell.incoming,
                "version": wms.sequence,
            }
        )
    return {"sku": sku, "unit": UNIT, "levels": levels}


def _order(wms: SimulatedWms, ref: str) -> dict[str, Any] | None:
    order = wms.orders.get(ref)
    if order is None:
        return None
    lines = [{"sku": sku, "quantity": qty, "unit": UNIT} for sku, qty in order.lines]
    return {"ref": ref, "externalId": order.external_id, "status": order.status, "lines": lines}


def _refused(message: str, code: str, *path: str) -> dict[str, Any]:
    return {"order": None, "userErrors": [{"field": list(path), "message": message, "code": code}]}


def _resolvers(wms: SimulatedWms) -> dict[str, dict[str, Resolver]]:
    """Root resolvers: each reads or changes ``wms`` and returns plain dicts."""

    def inventory_items(_: object, __: object, first: int, after: str | None = None) -> Any:
        if not 1 <= first <= MAX_PAGE:
            raise ValueError(f"first must be between 1 and {MAX_PAGE}")
        skus = wms.skus
        if after is not None:
            last = _sku_after(after)
            skus = [sku for sku in skus if sku > last]
        page = skus[:first]
        end = base64.urlsafe_b64encode(f"sku:{page[-1]}".encode()).decode() if page else after
        return {
            "nodes": [_item(wms, sku) for sku in page],
            "pageInfo": {"hasNextPage": len(skus) > first, "endCursor": end},
        }

    def inventory_levels(_: object, __: object, skus: list[str]) -> Any:
        if len(skus) > MAX_PAGE:
            raise ValueError(f"at most {MAX_PAGE} skus")
        known = set(wms.skus)
        return [_item(wms, sku) for sku in dict.fromkeys(skus) if sku in known]

    def order(_: object, __: object, ref: str) -> Any:
        return _order(wms, ref)

    async def order_create(_: object, __: object, **args: Any) -> Any:
        data: dict[str, Any] = args["input"]
        known = set(wms.skus)
        lines: list[tuple[str, int]] = []
        for index, line in enumerate(data["lines"]):
            where = ("input", "lines", str(index))
            if line.get("unit") not in (None, UNIT):
                return _refused(f"unit must be {UNIT}", "UNSUPPORTED_UNIT", *where, "unit")
            if line["quantity"] <= 0:
                return _refused("quantity must be > 0", "INVALID_QUANTITY", *where, "quantity")
            if line["sku"] not in known:
                return _refused(f"unknown sku {line['sku']}", "UNKNOWN_SKU", *where, "sku")
            lines.append((line["sku"], line["quantity"]))
        if not lines:
            return _refused("an order needs lines", "INVALID", "input", "lines")
        created = await wms.submit_order(data["externalId"], lines)
        return {"order": _order(wms, created.ref), "userErrors": []}

    async def order_cancel(_: object, __: object, ref: str) -> Any:
        current = wms.orders.get(ref)
        if current is None:
            return _refused(f"no order {ref}", "NOT_FOUND", "ref")
        if current.status != "CANCELLED":
            try:
                await wms.cancel_order(ref)
            except ValueError as exc:
                return _refused(str(exc), "ALREADY_SHIPPED", "ref")
        return {"order": _order(wms, ref), "userErrors": []}

    return {
        "Query": {
            "inventoryItems": inventory_items,
            "inventoryLevels": inventory_levels,
            "order": order,
        },
        "Mutation": {"orderCreate": order_create, "orderCancel": order_cancel},
    }


def build_schema(wms: SimulatedWms) -> graphql.GraphQLSchema:
    """The WMS's schema with its root fields bound to ``wms``."""
    schema = graphql.build_schema(SDL)
    for type_name, fields in _resolvers(wms).items():
        root = schema.get_type(type_name)
        if not isinstance(root, graphql.GraphQLObjectType):
            raise TypeError(f"{type_name} is not an object type")
        for name, resolve in fields.items():
            root.fields[name].resolve = resolve
    return schema


def render_webhook(wms: SimulatedWms, event: SimEvent) -> bytes:
    """``event`` in this dialect's webhook shape."""
    levels = [
        {
            "sku": level["sku"],
            "location_code": level["location"],
            "unit": UNIT,
            "on_hand": level["on_hand"],
            "available": max(0, level["on_hand"] - level["damaged"] - level["quality_control"]),
            "damaged": level["damaged"],
            "quality_control": level["quality_control"],
            "incoming": level["incoming"],
            "version": level["sequence"],
        }
        for level in event.levels
    ]
    payload: dict[str, Any] = {"levels": levels}
    if event.order_ref is not None and event.status in ORDER_TOPICS:
        topic = ORDER_TOPICS[event.status]
        order = wms.orders.get(event.order_ref)
        external_id = order.external_id if order else None
        payload["order"] = {
            "ref": event.order_ref,
            "external_id": external_id,
            "status": event.status,
        }
    else:
        topic = LEVELS_TOPIC
        payload["reason"] = REASONS.get(event.kind, "adjusted")
    return orjson.dumps(
        {
            "topic": topic,
            "webhook_id": event.event_id,
            "sequence": event.sequence,
            "triggered_at": event.occurred_at.isoformat().replace("+00:00", "Z"),
            "payload": payload,
        }
    )


def build_simulator(
    *,
    wms: SimulatedWms,
    access_token: str,
    bucket_size: float = 1000,
    restore_rate: float = 50,
    webhook_url: str | None = None,
    webhook_secret: str | None = None,
    webhook_client: httpx.AsyncClient | None = None,
) -> Starlette:
    """A GraphQL WMS serving ``wms``'s state.

    ``webhook_client`` (owned by the pusher from then on) replaces the pusher's own HTTP
    client, e.g. one over an ``httpx.ASGITransport``. ``app.state`` holds ``wms``, ``gate``,
    ``bucket`` and ``pusher`` (None without ``webhook_url``); the app's lifespan closes the
    pusher.
    """
    if not access_token:
        raise ValueError("the simulator needs an access token")
    schema = build_schema(wms)
    gate = FaultGate(wms.faults, wms.rng)
    bucket = CreditBucket(capacity=bucket_size, restore_rate=restore_rate)
    pusher: WebhookPusher | None = None
    if webhook_url is not None:
        if not webhook_secret:
            raise ValueError("webhook_url needs a webhook_secret")
        pusher = WebhookPusher(
            url=webhook_url,
            secret=webhook_secret,
            faults=wms.faults,
            rng=wms.rng,
            render=lambda event: render_webhook(wms, event),
            client=webhook_client,
        )
        wms.listeners.append(pusher)

    def answer(payload: Mapping[str, Any], status_code: int = 200) -> Response:
        body = gate.garble(orjson.dumps(payload))
        return Response(body, status_code=status_code, media_type="application/json")

    def priced(payload: Mapping[str, Any], requested: float, actual: float) -> Response:
        status = bucket.status()
        cost = {"requestedQueryCost": requested, "actualQueryCost": actual}
        return answer({**payload, "extensions": {"cost": {**cost, "throttleStatus": status}}})

    def failed(*errors: Mapping[str, Any], requested: float = 0) -> Response:
        return priced({"errors": list(errors)}, requested, 0)

    @functools.lru_cache(maxsize=256)
    def checked(query: str) -> tuple[graphql.DocumentNode, tuple[graphql.GraphQLError, ...]]:
        """A query parsed and validated once: clients send the same few documents."""
        document = graphql.parse(query)
        return document, tuple(graphql.validate(schema, document))

    async def endpoint(request: Request) -> Response:
        return await gate.answer(lambda: execute(request))

    async def execute(request: Request) -> Response:
        token = request.headers.get("x-access-token", "").encode()
        if not hmac.compare_digest(token, access_token.encode()):
            return answer({"errors": [{"message": "Invalid access token"}]}, status_code=401)
        try:
            body = orjson.loads(await request.body())
            query, variables = body["query"], body.get("variables") or {}
            operation_name = body.get("operationName")
            if not (
                isinstance(query, str)
                and isinstance(variables, dict)
                and isinstance(operation_name, str | None)
            ):
                raise TypeError("query and operationName must be strings, variables an object")
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
            return answer({"errors": [{"message": f"bad request: {exc}"}]}, status_code=400)
        try:
            document, problems = checked(query)
        except graphql.GraphQLError as exc:
            return failed(exc.formatted)
        if problems:
            return failed(*(problem.formatted for problem in problems))
        operation = graphql.get_operation_ast(document, operation_name)
        if operation is None:
            return failed({"message": "unknown or ambiguous operation"})
        requested = estimate_cost(schema, document, operation, variables)
        if request.headers.get("x-dry-run") == "1":
            return priced({"data": None}, requested, 0)
        if requested > bucket.capacity:
            message = f"query costs {requested}, more than the {bucket.capacity:g} allowed"
            return failed({"message": message, "extensions": {"code": "MAX_COST_EXCEEDED"}})
        if not bucket.take(requested):
            gate.throttled += 1
            extensions = {
                "code": "THROTTLED",
                "requiredCredits": requested,
                "remainingCredits": round(bucket.available(), 3),
                "retryAfterMs": math.ceil(bucket.wait_for(requested) * 1000),
            }
            return failed({"message": "Throttled", "extensions": extensions}, requested=requested)
        outcome = graphql.execute(
            schema, document, variable_values=variables, operation_name=operation_name
        )
        result = await outcome if isinstance(outcome, Awaitable) else outcome
        mutation = operation.operation == graphql.OperationType.MUTATION
        spent = actual_cost(result.data, mutation=mutation)
        bucket.give_back(requested - spent)
        return priced(dict(result.formatted), requested, spent)

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            if pusher is not None:
                await pusher.aclose()

    app = Starlette(
        routes=[Route("/graphql", endpoint, methods=["POST"]), *control_routes(wms, gate)],
        lifespan=lifespan,
    )
    app.state.wms, app.state.gate, app.state.bucket, app.state.pusher = wms, gate, bucket, pusher
    return app


__all__ = ["SDL", "CreditBucket", "actual_cost", "build_simulator", "estimate_cost"]

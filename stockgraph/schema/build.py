"""Building the schema: one federation v2 subgraph with its guardrails declared once."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import strawberry
from graphql import GraphQLError
from strawberry.extensions import (
    AddValidationRules,
    MaxAliasesLimiter,
    MaxTokensLimiter,
    ParserCache,
    QueryDepthLimiter,
    ValidationCache,
)
from strawberry.schema.config import StrawberryConfig
from strawberry.schema.schema import StreamResult
from strawberry.types import ExecutionContext
from strawberry.types.graphql import OperationType

from stockgraph.resolvers.mutation import Mutation
from stockgraph.resolvers.query import Query
from stockgraph.resolvers.subscription import Subscription
from stockgraph.schema.context import Context
from stockgraph.schema.execution import PlainFieldExecutor
from stockgraph.schema.sharing import SharedSubscriptions
from stockgraph.schema.throttle import CostLimiter


@dataclass(frozen=True, slots=True)
class SchemaLimits:
    """Document-level guardrails; argument limits live on the request context."""

    max_depth: int = 12
    max_aliases: int = 30
    max_tokens: int = 4000
    document_cache_size: int = 512
    subscriber_queue: int = 1000
    """Results a subscriber may fall behind before it is told to resume (THROTTLED)."""


def _serialize_datetime(value: datetime) -> str:
    if value.tzinfo is None:
        raise ValueError("naive datetimes cannot be answered")
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _parse_datetime(value: object) -> datetime:
    if not isinstance(value, str):
        raise ValueError("DateTime takes an ISO-8601 string")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{value!r} is not an ISO-8601 date and time") from None
    if parsed.tzinfo is None:
        raise ValueError(f"{value!r} has no time zone; add Z or an offset")
    return parsed.astimezone(UTC)


DateTime = strawberry.scalar(
    name="DateTime",
    description="An ISO-8601 instant with a time zone, answered in UTC (`Z`).",
    serialize=_serialize_datetime,
    parse_value=_parse_datetime,
)


class StockgraphSchema(strawberry.federation.Schema):
    """Strawberry's federation schema; errors are logged once, where they are shaped, and
    identical subscriptions share one execution (:mod:`stockgraph.schema.sharing`)."""

    shared: SharedSubscriptions | None = None

    async def stream(
        self,
        query: str | None,
        variable_values: dict[str, Any] | None = None,
        context_value: Any | None = None,
        root_value: Any | None = None,
        operation_name: str | None = None,
        operation_extensions: dict[str, Any] | None = None,
        allowed_operation_types: Iterable[OperationType] | None = None,
    ) -> StreamResult:
        """Every transport's entry (WebSocket, SSE): a subscription that can be shared
        joins the group already running it instead of running again."""
        run = super().stream
        options: dict[str, Any] = {
            "variable_values": variable_values,
            "root_value": root_value,
            "operation_name": operation_name,
            "operation_extensions": operation_extensions,
            "allowed_operation_types": allowed_operation_types,
        }
        shared = self.shared
        if shared is None or not isinstance(context_value, Context):
            return await run(query, context_value=context_value, **options)
        found = shared.key(query, variable_values, operation_name, context_value)
        if found is None:
            return await run(query, context_value=context_value, **options)
        key, field = found

        async def start(context: Context) -> AsyncIterator[Any]:
            return await run(query, context_value=context, **options)

        return await shared.join(key, field, context_value, start)

    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        """Expected errors are the caller's business; unexpected ones are logged by
        :func:`stockgraph.schema.errors.format_errors` with their traceback."""


def build_schema(limits: SchemaLimits | None = None) -> StockgraphSchema:
    """The Stockgraph schema; building it touches no database and reads no settings."""
    limits = limits or SchemaLimits()
    size = limits.document_cache_size
    # The rule classes are made once here: the validation cache is keyed by the rules as
    # well as the document, so rules rebuilt per request would never hit it.
    rules = [
        *QueryDepthLimiter(max_depth=limits.max_depth).validation_rules,
        *MaxAliasesLimiter(max_alias_count=limits.max_aliases).validation_rules,
    ]
    schema = StockgraphSchema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        # Only @key is used; 2.3 composes with every Federation 2 gateway still in service.
        federation_version="2.3",
        scalar_overrides={datetime: DateTime},
        config=StrawberryConfig(auto_camel_case=True),
        execution_context_class=PlainFieldExecutor,
        extensions=[
            lambda: MaxTokensLimiter(max_token_count=limits.max_tokens),
            lambda: ParserCache(maxsize=size),
            lambda: ValidationCache(maxsize=size),
            lambda: AddValidationRules(rules),
            CostLimiter,
        ],
    )
    schema.shared = SharedSubscriptions(capacity=limits.subscriber_queue)
    return schema

"""The cost guardrail: price every operation before it runs and spend its caller's bucket.

Declared once on the schema (:func:`stockgraph.schema.build.build_schema`). After the
document is validated and before any resolver runs, the operation is priced
(:mod:`stockgraph.schema.cost`):

- over :attr:`~stockgraph.schema.context.Limits.max_cost` → ``MAX_COST_EXCEEDED``;
- more than the caller's bucket holds → ``THROTTLED``, with how long to wait;

and in both cases nothing runs, so no WMS is touched. Otherwise the requested cost is taken
from the bucket, the operation runs, and the difference between requested and actual cost
is given back. The HTTP view writes the outcome to ``extensions.cost``.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import cast

from graphql import ExecutionResult as GraphQLExecutionResult
from graphql import GraphQLError
from strawberry.extensions import SchemaExtension

from stockgraph.domain.bucket import Throttle
from stockgraph.schema.context import Context
from stockgraph.schema.cost import Analysis, Sizes, WarehouseCountNeeded, actual_cost, analyse
from stockgraph.schema.errors import MaxCostExceeded, Throttled, internal_error


def throttled(requested: int, throttle: Throttle) -> Throttled:
    """The error for an operation its caller's bucket cannot pay for, with when it can."""
    wait = throttle.retry_after
    return Throttled(
        f"this operation costs {requested}; {throttle.available:.0f} is available now",
        requestedQueryCost=requested,
        retryAfterMs=None if math.isinf(wait) else math.ceil(wait * 1000),
    )


class CostLimiter(SchemaExtension):
    """Refuses operations over the maximum cost or over the caller's bucket; spends it."""

    async def on_execute(self) -> AsyncIterator[None]:
        execution = self.execution_context
        context = execution.context
        if not isinstance(context, Context) or execution.graphql_document is None:
            yield
            return
        priced: Analysis | GraphQLError
        try:
            priced = await self._price(context)
        except Exception as exc:  # masked as INTERNAL and logged, not blamed on the caller
            priced = internal_error(exc)
        if isinstance(priced, GraphQLError):
            context.cacheable = False
            execution.result = GraphQLExecutionResult(data=None, errors=[priced])
            yield
            return
        analysis = priced
        yield
        result = cast("GraphQLExecutionResult | None", execution.result)
        record = context.cost
        record.actual = actual_cost(
            result.data if result is not None else None,
            analysis.shape,
            upstream_calls=record.upstream_calls,
            mutations=analysis.mutations,
        )
        unused = analysis.requested - record.actual
        if unused > 0:
            record.throttle = await context.services.buckets.refund(context.bucket_key, unused)

    async def _price(self, context: Context) -> Analysis | GraphQLError:
        """The operation's price, taken from the bucket; or why it may not run."""
        execution = self.execution_context
        if execution.graphql_document is None:
            raise ValueError("priced before parsing")
        live = context.services.live
        sizes = Sizes(
            warehouses=None,
            live_instances=live.instance_count(context.principal.tenant_id) if live else 0,
            max_list_size=context.limits.max_list_size,
            max_page_size=context.limits.max_page_size,
        )
        document = execution.graphql_document
        schema = execution.schema._schema
        variables = execution.variables
        try:
            analysis = analyse(schema, document, execution.operation_name, variables, sizes)
        except WarehouseCountNeeded:
            count = len((await context.warehouses()).ordered)  # resolvers reuse this load
            sizes = replace(sizes, warehouses=count)
            analysis = analyse(schema, document, execution.operation_name, variables, sizes)
        record = context.cost
        record.requested = analysis.requested
        if analysis.requested > context.limits.max_cost:
            return MaxCostExceeded(
                f"this operation costs {analysis.requested}; "
                f"the most one may cost is {context.limits.max_cost}",
                requestedQueryCost=analysis.requested,
                maximumCost=context.limits.max_cost,
            )
        record.throttle = await context.services.buckets.take(
            context.bucket_key, analysis.requested
        )
        if not record.throttle.allowed:
            return throttled(analysis.requested, record.throttle)
        return analysis


__all__ = ["CostLimiter", "throttled"]

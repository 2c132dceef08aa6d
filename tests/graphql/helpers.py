"""Running operations through ``schema.execute`` as a given principal."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from stockgraph.auth.principal import Principal
from stockgraph.auth.scopes import Scope
from stockgraph.cache.buckets import MemoryBuckets
from stockgraph.domain.bucket import BucketPolicy
from stockgraph.domain.ids import TenantId
from stockgraph.runtime import Runtime
from stockgraph.schema.build import build_schema
from stockgraph.schema.context import Context, Limits
from stockgraph.schema.errors import format_errors
from stockgraph.services.ports import CostBuckets

_SCHEMA = build_schema()


@dataclass
class Result:
    data: Any
    errors: list[dict[str, Any]]
    context: Context

    @property
    def codes(self) -> list[str]:
        return [e["extensions"]["code"] for e in self.errors]


async def run(
    runtime: Runtime,
    query: str,
    variables: dict[str, Any] | None = None,
    *,
    tenant: str = "acme",
    scopes: Iterable[Scope] = tuple(Scope),
    limits: Limits | None = None,
    buckets: CostBuckets | None = None,
) -> Result:
    services = runtime.services()
    if buckets is not None:
        services = replace(services, buckets=buckets)
    context = Context(
        principal=Principal(TenantId(tenant), f"test-{tenant}", frozenset(scopes)),
        services=services,
        limits=limits or Limits(),
    )
    # Copied: federation's entity resolver pops keys from the representations it gets.
    variables = copy.deepcopy(variables)
    result = await _SCHEMA.execute(query, variable_values=variables, context_value=context)
    return Result(result.data, format_errors(result.errors or []), context)


@contextmanager
def counted_statements(runtime: Runtime | AsyncEngine) -> Iterator[list[str]]:
    """Collects every SQL statement the runtime's engine (or ``runtime``, an engine) has the
    database execute while the block runs: an executemany counts once per parameter set."""
    engine = runtime if isinstance(runtime, AsyncEngine) else runtime.engine
    statements: list[str] = []

    def count(
        _conn: object,
        _cursor: object,
        statement: str,
        parameters: Any,
        _context: object,
        executemany: bool,
    ) -> None:
        statements.extend([statement] * (len(parameters) if executemany else 1))

    event.listen(engine.sync_engine, "before_cursor_execute", count)
    try:
        yield statements
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", count)


def generous(max_cost: int = 1_000_000) -> dict[str, Any]:
    """``run`` options for reads larger than the default maximum cost lets through."""
    policy = BucketPolicy(capacity=max_cost, restore_rate=max_cost)
    return {"limits": Limits(max_cost=max_cost), "buckets": MemoryBuckets(policy=policy)}


def assert_on_hand_identity(level: dict[str, int]) -> None:
    parts = ("available", "committed", "reserved", "damaged", "safetyStock", "qualityControl")
    assert level["onHand"] == sum(level[p] for p in parts), level

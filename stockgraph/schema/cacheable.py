"""Which documents may be answered from the response cache.

Only queries whose every root field reads the projection or the catalogue as it is now:
``availability``, ``inventoryLevels`` (without ``maxAge`` or ``asOf``, whose answers move
with the clock or with late ledger rows), ``warehouses``, ``warehouse``, ``item`` and
``items``. Anything else — mutations, subscriptions, federation entities, introspection,
fragments at the root — is executed every time.
"""

from __future__ import annotations

from functools import lru_cache

from graphql import FieldNode, OperationType

from stockgraph.schema.documents import parsed_operation

CACHEABLE_ROOT_FIELDS = frozenset(
    {"availability", "inventoryLevels", "warehouses", "warehouse", "item", "items"}
)
TIME_DEPENDENT_ARGUMENTS = frozenset({("inventoryLevels", "maxAge"), ("inventoryLevels", "asOf")})


@lru_cache(maxsize=1024)
def is_cacheable(query: str, operation_name: str | None, max_tokens: int) -> bool:
    """Whether the response to ``query`` depends only on the caller, variables and data."""
    operation = parsed_operation(query, operation_name, max_tokens=max_tokens)
    if operation is None or operation.operation is not OperationType.QUERY:
        return False
    for selection in operation.selection_set.selections:
        if not isinstance(selection, FieldNode):
            return False
        name = selection.name.value
        if name not in CACHEABLE_ROOT_FIELDS:
            return False
        if any((name, a.name.value) in TIME_DEPENDENT_ARGUMENTS for a in selection.arguments or ()):
            return False
    return True

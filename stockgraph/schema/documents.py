"""Reading GraphQL documents before they run."""

from __future__ import annotations

from graphql import DocumentNode, GraphQLError, OperationDefinitionNode, parse


def operation_of(document: DocumentNode, name: str | None) -> OperationDefinitionNode | None:
    """The operation that runs: the one named ``name``, or the only one; None if unclear."""
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if name is not None:
        operations = [o for o in operations if o.name is not None and o.name.value == name]
    return operations[0] if len(operations) == 1 else None


def parsed_operation(
    query: str, name: str | None, *, max_tokens: int | None = None
) -> OperationDefinitionNode | None:
    """The operation of ``query`` that runs, or None for a document that cannot be read."""
    try:
        document = parse(query, max_tokens=max_tokens, no_location=True)
    except GraphQLError:
        return None
    return operation_of(document, name)


__all__ = ["operation_of", "parsed_operation"]

"""GraphQL errors and how every error leaves the server.

Every error carries ``extensions.code`` from the contract. Errors we raise on purpose
(:class:`StockgraphError` subclasses) keep their message; anything unexpected is logged
with its traceback and answered as ``INTERNAL`` with a masked message.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from enum import StrEnum
from typing import Any

from graphql import GraphQLError, GraphQLSyntaxError

log = logging.getLogger("stockgraph.graphql")


class ErrorCode(StrEnum):
    UNAUTHENTICATED = "UNAUTHENTICATED"
    FORBIDDEN = "FORBIDDEN"
    THROTTLED = "THROTTLED"
    MAX_COST_EXCEEDED = "MAX_COST_EXCEEDED"
    BAD_USER_INPUT = "BAD_USER_INPUT"
    QUERY_TOO_COMPLEX = "QUERY_TOO_COMPLEX"
    INTERNAL = "INTERNAL"


INTERNAL_MESSAGE = "Internal server error"


class StockgraphError(GraphQLError):
    """An error we raise on purpose; its message is meant for the caller."""

    code: ErrorCode = ErrorCode.INTERNAL

    def __init__(self, message: str, **extensions: Any) -> None:
        super().__init__(message, extensions={"code": self.code.value, **extensions})


class BadUserInput(StockgraphError):
    code = ErrorCode.BAD_USER_INPUT


class Forbidden(StockgraphError):
    code = ErrorCode.FORBIDDEN


class QueryTooComplex(StockgraphError):
    code = ErrorCode.QUERY_TOO_COMPLEX


class MaxCostExceeded(StockgraphError):
    """The operation's requested cost is over the maximum per operation; nothing ran."""

    code = ErrorCode.MAX_COST_EXCEEDED


class SubscriptionLagging(StockgraphError):
    """A subscriber fell too far behind; ``resumeAfter`` is the cursor to subscribe after."""

    code = ErrorCode.THROTTLED

    @classmethod
    def resume_after(cls, cursor: str | None) -> SubscriptionLagging:
        """Never a silent skip: the subscriber is told where to resume from."""
        return cls(
            "this subscription fell too far behind; subscribe again with `after`",
            resumeAfter=cursor,
        )


class Throttled(StockgraphError):
    """The caller's cost bucket holds less than the operation needs; nothing ran."""

    code = ErrorCode.THROTTLED


# Messages of the validation rules and parser limits we install (strawberry's depth and
# alias limiters, graphql-core's token limit); a test pins them so an upgrade that changes
# them fails loudly instead of degrading the code to BAD_USER_INPUT.
_TOO_COMPLEX = re.compile(
    r"exceeds maximum operation depth"
    r"|aliases found\. Allowed"
    r"|Document contains more than \d+ tokens"
)


def classify(error: GraphQLError) -> tuple[ErrorCode, str]:
    """The contract code and the message the caller may see for ``error``."""
    extensions = error.extensions or {}
    code = extensions.get("code")
    if isinstance(code, str) and code in ErrorCode.__members__:
        return ErrorCode(code), error.message
    original = error.original_error
    if original is None or isinstance(original, GraphQLSyntaxError) or not error.path:
        # Parse and validation errors, and errors raised while coercing arguments and
        # variables (a scalar refusing a value): the caller's document or input is at
        # fault. Only errors raised while executing a field carry a path.
        if _TOO_COMPLEX.search(error.message):
            return ErrorCode.QUERY_TOO_COMPLEX, error.message
        return ErrorCode.BAD_USER_INPUT, error.message
    if isinstance(original, StockgraphError):
        return original.code, original.message
    if isinstance(original, GraphQLError):
        return classify(original)
    return ErrorCode.INTERNAL, INTERNAL_MESSAGE


def internal_error(exc: Exception) -> GraphQLError:
    """An unexpected failure outside any field: answered ``INTERNAL``, logged with ``exc``."""
    return GraphQLError(
        INTERNAL_MESSAGE, original_error=exc, extensions={"code": ErrorCode.INTERNAL.value}
    )


def format_errors(errors: Sequence[GraphQLError]) -> list[dict[str, Any]]:
    """The ``errors`` entries of a response: coded, and masked where unexpected."""
    formatted: list[dict[str, Any]] = []
    for error in errors:
        code, message = classify(error)
        if code is ErrorCode.INTERNAL:
            log.error(
                "unexpected error at %s",
                ".".join(map(str, error.path or ())) or "(operation)",
                exc_info=error.original_error or error,
            )
        entry: dict[str, Any] = {"message": message}
        if error.locations:
            entry["locations"] = [
                {"line": loc.line, "column": loc.column} for loc in error.locations
            ]
        if error.path:
            entry["path"] = list(error.path)
        extensions = {
            k: v for k, v in (error.extensions or {}).items() if code is not ErrorCode.INTERNAL
        }
        extensions["code"] = code.value
        entry["extensions"] = extensions
        formatted.append(entry)
    return formatted


def error_body(message: str, code: ErrorCode) -> dict[str, Any]:
    """A GraphQL-shaped body for errors answered before execution (401, 400)."""
    return {"errors": [{"message": message, "extensions": {"code": code.value}}]}

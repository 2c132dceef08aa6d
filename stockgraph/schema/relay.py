"""Global ids and cursors as GraphQL arguments, and the Relay connection types.

The encoding itself lives in :mod:`stockgraph.domain.global_ids`.
"""

from __future__ import annotations

from typing import Generic, TypeVar

import strawberry

from stockgraph.domain.global_ids import parse_cursor, parse_global_id, to_cursor, to_global_id
from stockgraph.schema.errors import BadUserInput

T = TypeVar("T")


def from_global_id(value: str, type_name: str) -> tuple[str, str]:
    """The (tenant, key) inside a global id of ``type_name``; BAD_USER_INPUT otherwise."""
    found = parse_global_id(value, type_name)
    if found is None:
        raise BadUserInput(f"{value!r} is not a {type_name} id", argument="id")
    return found


def from_cursor(value: str | None) -> str | None:
    if value is None:
        return None
    key = parse_cursor(value)
    if key is None:
        raise BadUserInput(f"{value!r} is not a cursor from this API", argument="after")
    return key


@strawberry.type
class PageInfo:
    has_next_page: bool
    has_previous_page: bool
    start_cursor: str | None
    end_cursor: str | None


@strawberry.type
class Edge(Generic[T]):
    cursor: str
    node: T


@strawberry.type
class Connection(Generic[T]):
    edges: list[Edge[T]]
    page_info: PageInfo


def connection(nodes: list[tuple[str, T]], *, has_next: bool, has_previous: bool) -> Connection[T]:
    """A connection from (sort key, node) pairs already cut to the page."""
    edges = [Edge(cursor=to_cursor(key), node=node) for key, node in nodes]
    return Connection(
        edges=edges,
        page_info=PageInfo(
            has_next_page=has_next,
            has_previous_page=has_previous,
            start_cursor=edges[0].cursor if edges else None,
            end_cursor=edges[-1].cursor if edges else None,
        ),
    )


__all__ = [
    "Connection",
    "Edge",
    "PageInfo",
    "connection",
    "from_cursor",
    "from_global_id",
    "to_cursor",
    "to_global_id",
]

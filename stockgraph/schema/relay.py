"""Opaque global ids and cursors, and the Relay connection types."""

from __future__ import annotations

import base64
import binascii
from typing import Generic, TypeVar

import strawberry

from stockgraph.schema.errors import BadUserInput

T = TypeVar("T")


def _encode(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _decode(value: str) -> str | None:
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None


def to_global_id(type_name: str, tenant: str, key: str) -> str:
    """``Warehouse``, ``acme``, ``WH-00`` → an opaque id that names all three."""
    return _encode(f"{type_name}:{tenant}:{key}")


def from_global_id(value: str, type_name: str) -> tuple[str, str]:
    """The (tenant, key) inside a global id of ``type_name``; BAD_USER_INPUT otherwise."""
    decoded = _decode(value)
    parts = decoded.split(":", 2) if decoded else []
    if len(parts) != 3 or parts[0] != type_name or not parts[1] or not parts[2]:
        raise BadUserInput(f"{value!r} is not a {type_name} id", argument="id")
    return parts[1], parts[2]


def to_cursor(key: str) -> str:
    return _encode(f"cursor:{key}")


def from_cursor(value: str | None) -> str | None:
    if value is None:
        return None
    decoded = _decode(value)
    if decoded is None or not decoded.startswith("cursor:"):
        raise BadUserInput(f"{value!r} is not a cursor from this API", argument="after")
    return decoded.removeprefix("cursor:")


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

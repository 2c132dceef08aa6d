"""The contract's scopes."""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum


class Scope(StrEnum):
    INVENTORY_READ = "inventory:read"
    INVENTORY_WRITE = "inventory:write"
    ORDERS_READ = "orders:read"
    ORDERS_WRITE = "orders:write"
    OPS_ADMIN = "ops:admin"


ALL_SCOPES: frozenset[Scope] = frozenset(Scope)


class UnknownScope(ValueError):
    """A scope name that the contract does not define."""


def parse_scopes(value: str | Iterable[str]) -> frozenset[Scope]:
    """Parse a space- or comma-separated list (or an iterable) of scope names.

    >>> sorted(s.value for s in parse_scopes("inventory:read, orders:read"))
    ['inventory:read', 'orders:read']
    """
    names = value.replace(",", " ").split() if isinstance(value, str) else list(value)
    scopes: set[Scope] = set()
    for name in names:
        try:
            scopes.add(Scope(name))
        except ValueError:
            known = " ".join(s.value for s in Scope)
            raise UnknownScope(f"unknown scope {name!r}; known scopes: {known}") from None
    return frozenset(scopes)


def format_scopes(scopes: Iterable[Scope]) -> str:
    """Space-separated, sorted: the form OAuth 2.0 uses in the ``scope`` claim."""
    return " ".join(sorted(s.value for s in scopes))

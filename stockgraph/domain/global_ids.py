"""Opaque global ids and cursors: how every id the API shows is encoded, in one place.

GraphQL types, subscription payloads and outbound webhook bodies all name a warehouse, an
event or a delivery the same way, so a receiver can pass any of them back to the API.

>>> to_global_id("Warehouse", "acme", "WH-00")
'V2FyZWhvdXNlOmFjbWU6V0gtMDA'
>>> parse_global_id("V2FyZWhvdXNlOmFjbWU6V0gtMDA", "Warehouse")
('acme', 'WH-00')
>>> parse_cursor(event_cursor(42))
'event:42'
"""

from __future__ import annotations

import base64
import binascii


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


def parse_global_id(value: str, type_name: str) -> tuple[str, str] | None:
    """The (tenant, key) inside a global id of ``type_name``; None for anything else."""
    decoded = _decode(value)
    parts = decoded.split(":", 2) if decoded else []
    if len(parts) != 3 or parts[0] != type_name or not parts[1] or not parts[2]:
        return None
    return parts[1], parts[2]


def to_cursor(key: str) -> str:
    return _encode(f"cursor:{key}")


def parse_cursor(value: str) -> str | None:
    """The key inside a cursor from :func:`to_cursor`; None for anything else."""
    decoded = _decode(value)
    if decoded is None or not decoded.startswith("cursor:"):
        return None
    return decoded.removeprefix("cursor:")


def event_cursor(event_id: int) -> str:
    """The cursor of an outbox event: what ``stockChanged(after:)`` takes."""
    return to_cursor(f"event:{event_id}")


def warehouse_id(tenant: str, code: str) -> str:
    """The global id of a tenant's warehouse (keyed by its code, stable across databases)."""
    return to_global_id("Warehouse", tenant, code)


__all__ = [
    "event_cursor",
    "parse_cursor",
    "parse_global_id",
    "to_cursor",
    "to_global_id",
    "warehouse_id",
]

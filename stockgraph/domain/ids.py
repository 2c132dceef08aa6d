"""Identifier types, defined once for the whole package."""

from typing import NewType

TenantId = NewType("TenantId", str)
"""A tenant's slug, such as ``acme``."""

WarehouseId = NewType("WarehouseId", int)
"""The database key of a warehouse (one WMS instance or site)."""

Sku = NewType("Sku", str)
"""A tenant's own stock-keeping unit code (never a WMS alias)."""

ClientId = NewType("ClientId", str)
"""An OAuth client's public id."""

CorrelationId = NewType("CorrelationId", str)
"""Ties the ledger rows, audit events and outbound messages of one cause together."""

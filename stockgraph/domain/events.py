"""Events Stockgraph publishes: what the outbox keeps and subscribers and webhooks receive.

Every committed change to the projection is written, in the same transaction, as an
:class:`OutboxEvent` (see :class:`~stockgraph.services.ports.EventLog`). Its ``id`` orders
all events of a database and is what a subscriber's cursor names.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from stockgraph.domain.ids import Sku, TenantId, WarehouseId


class Topic(StrEnum):
    STOCK_CHANGED = "stock.changed"
    SYNC_ALERT = "sync.alert"
    """Something a WMS sent could not be applied (``kind`` SYNC_EXCEPTION): ``connectorId``,
    ``code``, ``message``, ``eventId``, ``exceptionId``, ``occurredAt``."""


@dataclass(frozen=True, slots=True)
class OutboxEvent:
    """One committed event, as kept in the outbox.

    ``payload`` is plain JSON. For :attr:`Topic.STOCK_CHANGED` it holds ``level`` (the
    level after the change: every quantity name of
    :data:`~stockgraph.domain.quantities.QUANTITY_NAMES`, ``asOf``, ``sourceSequence``),
    ``delta`` (the change of every quantity), ``cause``, ``reason``, ``correlationId``
    and ``occurredAt`` (ISO-8601).
    """

    id: int
    tenant_id: TenantId
    topic: Topic
    warehouse_id: WarehouseId | None
    sku: Sku | None
    payload: Mapping[str, Any]
    created_at: datetime


class SubscriberTooSlow(Exception):
    """A subscriber fell too far behind the events; it must resume from its last cursor."""


class CursorExpired(Exception):
    """A subscriber's cursor is older than the events kept: resuming from it would skip.

    ``pruned_through`` is the highest event id retention deleted; the subscriber must
    reload what it shows and subscribe without a cursor (or after a newer one).
    """

    def __init__(self, after: int, pruned_through: int) -> None:
        super().__init__(
            f"events after {after} are no longer kept (retention deleted up to {pruned_through})"
        )
        self.after = after
        self.pruned_through = pruned_through

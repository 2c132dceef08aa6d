"""What every WMS dialect declares and implements.

A *dialect* is one kind of WMS API (``rest``, ``graphql``, ``x12``); an *instance* is one
configured WMS of that kind. Each dialect declares a :class:`DialectSpec` and implements
:class:`Connector`, speaking the WMS's own codes and units: ``WmsLevel`` and ``WmsEvent``
carry WMS SKUs, WMS units and WMS locations. Turning them into Stockgraph's SKUs, base
units and warehouses is the mapping layer's job (``stockgraph.domain.mapping``), never the
dialect's.

Every call a dialect makes goes through its instance's runtime
(``stockgraph.connectors.runtime``): budget, HTTP client, error classification, retry and
circuit breaker. A dialect therefore never sleeps, retries or counts on its own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import Enum
from typing import Literal, Protocol


@dataclass(frozen=True, slots=True)
class RatePolicy:
    """How the WMS limits us: the shape of its own limiter.

    - ``requests_per_second``: ``rate`` requests per second, bursts up to ``burst``.
    - ``credits``: a bucket of ``burst`` credits restored at ``rate`` per second; each call
      costs what the WMS says it cost.
    - ``polling_interval``: at most one poll every ``1 / rate`` seconds.
    """

    kind: Literal["requests_per_second", "credits", "polling_interval"]
    rate: float
    burst: float


@dataclass(frozen=True, slots=True)
class DialectSpec:
    """What a dialect can do; the runtime and the sync planner read it."""

    name: str
    push: bool
    """The WMS sends signed webhooks to ``/webhooks/wms/{connectorId}``."""
    poll: bool
    """Events must be fetched by polling (an EDI mailbox, say)."""
    max_batch: int
    """The most SKUs one batch lookup may ask for."""
    rate: RatePolicy
    inquiries: RatePolicy | None = None
    """A separate limit on the calls that are not polls, for a polled dialect whose WMS
    limits them apart (an EDI mailbox's 846 inquiries and the documents posted beside them):
    those calls spend it and leave ``rate`` to the polls. None: ``rate`` covers every call."""
    compare_and_set: bool = False
    """The WMS itself refuses a stock change whose expected quantity is stale."""
    idempotency: bool = False
    """The WMS itself dedupes requests by an idempotency key."""


class EventKind(Enum):
    RECEIPT = "RECEIPT"
    PICK = "PICK"
    PACK = "PACK"
    SHIPMENT = "SHIPMENT"
    ADJUSTMENT = "ADJUSTMENT"
    CYCLE_COUNT = "CYCLE_COUNT"
    RETURN = "RETURN"
    SNAPSHOT = "SNAPSHOT"
    ORDER_STATUS = "ORDER_STATUS"


@dataclass(frozen=True, slots=True)
class WmsLevel:
    """What the WMS says it holds of one of its SKUs at one of its locations.

    Quantities are in the WMS's ``unit`` and may be fractional or otherwise odd: the
    mapping layer decides whether they are whole base units. A wire reader gives an ``int``
    where the WMS sent a whole number (the mapping then does no decimal arithmetic for it)
    and a ``Decimal`` otherwise. ``sequence`` is the WMS's own ordering of its state (a
    version, an event sequence, a document control number).
    """

    wms_sku: str
    location: str
    unit: str
    on_hand: Decimal | int
    damaged: Decimal | int = 0
    quality_control: Decimal | int = 0
    incoming: Decimal | int = 0
    sequence: int | None = None
    observed_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class WmsEvent:
    """Something that happened in the WMS, with the levels it left behind.

    ``levels`` are absolute (what is held after the event), so applying events in
    ``sequence`` order — and skipping any older than what is already held — converges on
    the WMS's state whatever order they arrive in. Order events carry ``order_ref`` and the
    dialect's own ``status``.
    """

    event_id: str
    sequence: int
    kind: EventKind
    occurred_at: datetime
    levels: tuple[WmsLevel, ...] = ()
    order_ref: str | None = None
    status: str | None = None
    raw: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class WmsOrderLine:
    wms_sku: str
    quantity: Decimal
    unit: str


@dataclass(frozen=True, slots=True)
class WmsOrder:
    """An order as we submit it: our id, the WMS's codes and units, where it goes."""

    external_id: str
    lines: tuple[WmsOrderLine, ...]
    ship_to: Mapping[str, str]


class Connector(Protocol):
    """One configured WMS instance, spoken to in its own dialect."""

    spec: DialectSpec

    async def fetch_levels(self, wms_skus: Sequence[str]) -> Sequence[WmsLevel]:
        """Levels of at most ``spec.max_batch`` SKUs, in one call to the WMS."""

    async def list_levels(self, cursor: str | None) -> tuple[Sequence[WmsLevel], str | None]:
        """One page of every level the WMS holds, and the cursor of the next (None: done)."""

    async def poll_events(self, after: str | None) -> tuple[Sequence[WmsEvent], str | None]:
        """Events since ``after`` and the position to poll from next (polling dialects)."""

    def parse_webhook(self, body: bytes) -> Sequence[WmsEvent]:
        """Events in a pushed body; :class:`~stockgraph.connectors.errors.MalformedPayload`
        when it cannot be read."""

    async def submit_order(self, order: WmsOrder) -> str:
        """Send an order to the WMS; returns the WMS's reference for it."""

    async def cancel_order(self, order_ref: str) -> None:
        """Ask the WMS to cancel an order it has not shipped."""

    async def aclose(self) -> None:
        """Release the instance's connections."""

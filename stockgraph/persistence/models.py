"""The database schema as SQLAlchemy 2 declarative models.

The migrations in ``migrations/versions`` create exactly these tables; a test compares
them. Invariants that matter are guarded here too: unique keys, non-negative quantities,
the ``onHand`` identity, an append-only ledger and an outbox whose rows are never updated
(both enforced by triggers the migrations install).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from stockgraph.domain.quantities import QUANTITY_NAMES
from stockgraph.persistence.types import BigIntId, UtcDateTime

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

QUANTITY_COLUMNS = QUANTITY_NAMES


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UtcDateTime(), dict[str, Any]: JSON()}


class Tenant(Base):
    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime]


class ApiClient(Base):
    """An OAuth 2.0 client (client credentials grant); the secret is stored hashed."""

    __tablename__ = "api_clients"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    secret_hash: Mapped[str] = mapped_column(String(128))
    scopes: Mapped[str] = mapped_column(String(500))
    created_at: Mapped[datetime]
    disabled_at: Mapped[datetime | None]


class ApiKey(Base):
    """A long-lived API key; ``id`` is the public prefix, the rest is stored hashed."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    key_hash: Mapped[str] = mapped_column(String(128))
    scopes: Mapped[str] = mapped_column(String(500))
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


class WarehouseRow(Base):
    """One WMS instance or site; ``connector_id`` names it in webhook URLs."""

    __tablename__ = "warehouses"
    __table_args__ = (
        UniqueConstraint("tenant_id", "code", name="uq_warehouses_tenant_code"),
        CheckConstraint("lat IS NULL OR (lat >= -90 AND lat <= 90)", name="lat_range"),
        CheckConstraint("lng IS NULL OR (lng >= -180 AND lng <= 180)", name="lng_range"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    code: Mapped[str] = mapped_column(String(64))
    connector_id: Mapped[str] = mapped_column(String(128), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    region: Mapped[str] = mapped_column(String(64))
    lat: Mapped[float | None]
    lng: Mapped[float | None]
    dialect: Mapped[str] = mapped_column(String(32))
    settings: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]


class ItemRow(Base):
    __tablename__ = "items"

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    sku: Mapped[str] = mapped_column(String(128), primary_key=True)
    name: Mapped[str] = mapped_column(String(300))
    base_unit: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime]


class ItemAliasRow(Base):
    """Another code for an item (a WMS's SKU, a barcode); unique within a tenant."""

    __tablename__ = "item_aliases"
    __table_args__ = (
        ForeignKeyConstraint(
            ["tenant_id", "sku"], ["items.tenant_id", "items.sku"], ondelete="CASCADE"
        ),
        Index("ix_item_aliases_item", "tenant_id", "sku"),
    )

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    alias: Mapped[str] = mapped_column(String(128), primary_key=True)
    sku: Mapped[str] = mapped_column(String(128))


class ItemUnitRow(Base):
    """``factor`` base units make one ``name`` (1 case = 12 each)."""

    __tablename__ = "item_units"
    __table_args__ = (
        ForeignKeyConstraint(
            ["tenant_id", "sku"], ["items.tenant_id", "items.sku"], ondelete="CASCADE"
        ),
        CheckConstraint("factor >= 1", name="factor_positive"),
    )

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    sku: Mapped[str] = mapped_column(String(128), primary_key=True)
    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    factor: Mapped[int]


class ItemComponentRow(Base):
    """One component of a kit (bundle) item."""

    __tablename__ = "item_components"
    __table_args__ = (
        ForeignKeyConstraint(
            ["tenant_id", "kit_sku"], ["items.tenant_id", "items.sku"], ondelete="CASCADE"
        ),
        ForeignKeyConstraint(
            ["tenant_id", "component_sku"],
            ["items.tenant_id", "items.sku"],
            name="fk_item_components_component_sku_items",
        ),
        CheckConstraint("quantity >= 1", name="quantity_positive"),
        CheckConstraint("kit_sku <> component_sku", name="not_self"),
    )

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kit_sku: Mapped[str] = mapped_column(String(128), primary_key=True)
    component_sku: Mapped[str] = mapped_column(String(128), primary_key=True)
    quantity: Mapped[int]


_NON_NEGATIVE = tuple(
    CheckConstraint(f"{name} >= 0", name=f"{name}_not_negative") for name in QUANTITY_COLUMNS
)


class StockLevelRow(Base):
    """The projection: Stockgraph's current belief of one (tenant, warehouse, SKU)."""

    __tablename__ = "stock_levels"
    __table_args__ = (
        ForeignKeyConstraint(["tenant_id", "sku"], ["items.tenant_id", "items.sku"]),
        *_NON_NEGATIVE,
        CheckConstraint(
            "on_hand = available + committed + reserved + damaged + safety_stock + quality_control",
            name="on_hand_identity",
        ),
        Index("ix_stock_levels_tenant_sku", "tenant_id", "sku"),
    )

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    warehouse_id: Mapped[int] = mapped_column(ForeignKey("warehouses.id"), primary_key=True)
    sku: Mapped[str] = mapped_column(String(128), primary_key=True)
    on_hand: Mapped[int]
    available: Mapped[int]
    committed: Mapped[int]
    reserved: Mapped[int]
    damaged: Mapped[int]
    safety_stock: Mapped[int]
    quality_control: Mapped[int]
    incoming: Mapped[int]
    as_of: Mapped[datetime]
    source_sequence: Mapped[int | None] = mapped_column(BigInteger)
    version: Mapped[int]
    updated_at: Mapped[datetime]


class StockMovementRow(Base):
    """The ledger: one append-only row per change to the projection."""

    __tablename__ = "stock_movements"
    __table_args__ = (
        Index("ix_stock_movements_level", "tenant_id", "sku", "warehouse_id", "occurred_at"),
        Index("ix_stock_movements_correlation", "tenant_id", "correlation_id"),
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    warehouse_id: Mapped[int] = mapped_column(ForeignKey("warehouses.id"))
    sku: Mapped[str] = mapped_column(String(128))
    occurred_at: Mapped[datetime]
    recorded_at: Mapped[datetime]
    d_on_hand: Mapped[int]
    d_available: Mapped[int]
    d_committed: Mapped[int]
    d_reserved: Mapped[int]
    d_damaged: Mapped[int]
    d_safety_stock: Mapped[int]
    d_quality_control: Mapped[int]
    d_incoming: Mapped[int]
    cause: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str | None] = mapped_column(String(32))
    correlation_id: Mapped[str] = mapped_column(String(64))
    actor: Mapped[str] = mapped_column(String(200))
    reference: Mapped[str | None] = mapped_column(Text)
    source_sequence: Mapped[int | None] = mapped_column(BigInteger)


class AuditEventRow(Base):
    """What happened, who did it and why; append-only like the ledger."""

    __tablename__ = "audit_events"
    __table_args__ = (
        Index("ix_audit_events_tenant_time", "tenant_id", "occurred_at"),
        Index("ix_audit_events_correlation", "tenant_id", "correlation_id"),
        Index("ix_audit_events_sku", "tenant_id", "sku"),
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    occurred_at: Mapped[datetime]
    kind: Mapped[str] = mapped_column(String(64))
    actor: Mapped[str] = mapped_column(String(200))
    correlation_id: Mapped[str] = mapped_column(String(64))
    sku: Mapped[str | None] = mapped_column(String(128))
    warehouse_id: Mapped[int | None] = mapped_column(Integer)
    order_id: Mapped[str | None] = mapped_column(String(64))
    reference: Mapped[str | None] = mapped_column(Text)
    message: Mapped[str] = mapped_column(Text)
    detail: Mapped[dict[str, Any]]


APPEND_ONLY_TABLES = ("stock_movements", "audit_events")


class InboxEventRow(Base):
    """A WMS event as received: kept before it is applied, so nothing acknowledged is lost.

    ``(connector_id, event_id)`` is unique: a repeated delivery is recognised and dropped.
    """

    __tablename__ = "inbox_events"
    __table_args__ = (
        UniqueConstraint("connector_id", "event_id", name="uq_inbox_events_connector_event"),
        Index("ix_inbox_events_pending", "status", "id"),
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    connector_id: Mapped[str] = mapped_column(String(128))
    event_id: Mapped[str] = mapped_column(String(200))
    received_at: Mapped[datetime]
    body: Mapped[bytes] = mapped_column(LargeBinary)
    status: Mapped[str] = mapped_column(String(16))
    applied_at: Mapped[datetime | None]
    error: Mapped[str | None] = mapped_column(Text)


class SyncExceptionRow(Base):
    """Something a WMS sent that could not be applied, with the raw payload and why."""

    __tablename__ = "sync_exceptions"
    __table_args__ = (Index("ix_sync_exceptions_open", "tenant_id", "resolved_at", "id"),)

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    connector_id: Mapped[str] = mapped_column(String(128))
    event_id: Mapped[str | None] = mapped_column(String(200))
    code: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(Text)
    raw: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]
    resolved_at: Mapped[datetime | None]


class ConnectorStateRow(Base):
    """Where syncing one WMS instance stands: its poll cursor and its last full sync."""

    __tablename__ = "connector_states"

    connector_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    cursor: Mapped[str | None] = mapped_column(Text)
    full_sync_at: Mapped[datetime | None]
    last_event_at: Mapped[datetime | None]
    updated_at: Mapped[datetime]


class OutboxEventRow(Base):
    """One committed event, inserted in the transaction of the change it reports.

    Relays read the outbox in ``id`` order. Rows are never updated (a trigger the
    migrations install refuses it); retention deletes old ones. ``payload`` is JSON text
    shaped by ``topic`` (see ``stockgraph.domain.events.OutboxEvent``).
    """

    __tablename__ = "outbox_events"
    __table_args__ = (
        Index("ix_outbox_events_tenant", "tenant_id", "id"),
        Index("ix_outbox_events_topic", "topic", "id"),
        Index("ix_outbox_events_created_at", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    topic: Mapped[str] = mapped_column(String(64))
    warehouse_id: Mapped[int | None] = mapped_column(ForeignKey("warehouses.id"))
    sku: Mapped[str | None] = mapped_column(String(128))
    payload: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]


class OutboxPrunedRow(Base):
    """One row: the highest outbox id retention has deleted (0 before any)."""

    __tablename__ = "outbox_pruned"
    __table_args__ = (CheckConstraint("id = 1", name="one_row"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    through_id: Mapped[int] = mapped_column(BigIntId)
    pruned_at: Mapped[datetime | None]


_DELIVERY_STATUSES = ("PENDING", "DELIVERED", "FAILING", "DEAD", "DISABLED")
_TRIGGERS = ("SCHEDULE", "REPLAY")


def _one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class WebhookEndpointRow(Base):
    """Where a tenant's events are POSTed, signed with ``secret`` (``whsec_...``).

    ``event_types`` is a JSON list of outbox topics. One endpoint per (tenant, URL). It
    hears of events committed after it was created: those past ``since_event_id``. After a
    rotation the secret it replaced (``previous_secret``) signs every request too, until
    ``previous_secret_until``: the receiver can switch secrets without refusing any.
    """

    __tablename__ = "webhook_endpoints"
    __table_args__ = (UniqueConstraint("tenant_id", "url", name="uq_webhook_endpoints_tenant_url"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    url: Mapped[str] = mapped_column(String(2000))
    secret: Mapped[str] = mapped_column(String(200))
    previous_secret: Mapped[str | None] = mapped_column(String(200))
    previous_secret_until: Mapped[datetime | None]
    event_types: Mapped[list[str]] = mapped_column(JSON)
    description: Mapped[str] = mapped_column(Text)
    enabled: Mapped[bool] = mapped_column(Boolean)
    since_event_id: Mapped[int] = mapped_column(BigInteger)
    disabled_reason: Mapped[str | None] = mapped_column(Text)
    disabled_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class WebhookDeliveryRow(Base):
    """One outbox event for one endpoint; ``id`` is the ``webhook-id`` of every attempt.

    ``body`` is the exact JSON sent. ``next_attempt_at`` is when the sender may take it;
    taking it moves it forward by a lease, so no two senders attempt it at once.
    """

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("endpoint_id", "event_id", name="uq_webhook_deliveries_endpoint_event"),
        Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
        Index("ix_webhook_deliveries_tenant", "tenant_id", "event_id", "endpoint_id"),
        CheckConstraint(_one_of("status", _DELIVERY_STATUSES), name="status_known"),
        CheckConstraint(_one_of("next_trigger", _TRIGGERS), name="next_trigger_known"),
        CheckConstraint("attempt_count >= 0", name="attempt_count_not_negative"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    endpoint_id: Mapped[int] = mapped_column(ForeignKey("webhook_endpoints.id", ondelete="CASCADE"))
    event_id: Mapped[int] = mapped_column(BigInteger)
    event_type: Mapped[str] = mapped_column(String(64))
    body: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))
    attempt_count: Mapped[int]
    next_attempt_at: Mapped[datetime | None]
    next_trigger: Mapped[str] = mapped_column(String(16))
    leased_until: Mapped[datetime | None]
    created_at: Mapped[datetime]
    delivered_at: Mapped[datetime | None]


class WebhookAttemptRow(Base):
    """One POST of a delivery: its answer (None when none came), how long it took, why."""

    __tablename__ = "webhook_attempts"
    __table_args__ = (
        Index("ix_webhook_attempts_delivery", "delivery_id", "id"),
        CheckConstraint(_one_of("trigger", _TRIGGERS), name="trigger_known"),
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    delivery_id: Mapped[str] = mapped_column(
        ForeignKey("webhook_deliveries.id", ondelete="CASCADE")
    )
    attempted_at: Mapped[datetime]
    status_code: Mapped[int | None]
    duration_ms: Mapped[int]
    error: Mapped[str | None] = mapped_column(String(500))
    trigger: Mapped[str] = mapped_column(String(16))


class WebhookCursorRow(Base):
    """How far the webhook dispatcher has read the outbox: one row, locked while it moves."""

    __tablename__ = "webhook_cursor"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    event_id: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime]

"""Outbound webhooks: endpoints, one delivery per (endpoint, event), attempts, a cursor.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02

The dispatcher's cursor starts at the newest outbox event already committed, and each
endpoint keeps the newest event when it was created (``since_event_id``): an endpoint hears
of what happens after it is declared, not of the whole history.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CURSOR = "deliveries"
STATUSES = "status IN ('PENDING', 'DELIVERED', 'FAILING', 'DEAD', 'DISABLED')"


def _triggers(column: str) -> str:
    return f"{column} IN ('SCHEDULE', 'REPLAY')"


def _timestamp() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def _big_id() -> sa.types.TypeEngine[int]:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "webhook_endpoints",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("url", sa.String(2000), nullable=False),
        sa.Column("secret", sa.String(200), nullable=False),
        sa.Column("event_types", sa.JSON(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("since_event_id", sa.BigInteger(), nullable=False),
        sa.Column("disabled_reason", sa.Text(), nullable=True),
        sa.Column("disabled_at", _timestamp(), nullable=True),
        sa.Column("created_at", _timestamp(), nullable=False),
        sa.Column("updated_at", _timestamp(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_endpoints")),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_webhook_endpoints_tenant_id_tenants")
        ),
        sa.UniqueConstraint("tenant_id", "url", name=op.f("uq_webhook_endpoints_tenant_url")),
    )
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("endpoint_id", sa.Integer(), nullable=False),
        sa.Column("event_id", sa.BigInteger(), nullable=False),
        sa.Column("event_type", sa.String(64), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempt_count", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", _timestamp(), nullable=True),
        sa.Column("next_trigger", sa.String(16), nullable=False),
        sa.Column("leased_until", _timestamp(), nullable=True),
        sa.Column("created_at", _timestamp(), nullable=False),
        sa.Column("delivered_at", _timestamp(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_deliveries")),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_webhook_deliveries_tenant_id_tenants")
        ),
        sa.ForeignKeyConstraint(
            ["endpoint_id"],
            ["webhook_endpoints.id"],
            name=op.f("fk_webhook_deliveries_endpoint_id_webhook_endpoints"),
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint(
            "endpoint_id", "event_id", name=op.f("uq_webhook_deliveries_endpoint_event")
        ),
        sa.CheckConstraint(STATUSES, name=op.f("ck_webhook_deliveries_status_known")),
        sa.CheckConstraint(
            _triggers("next_trigger"), name=op.f("ck_webhook_deliveries_next_trigger_known")
        ),
        sa.CheckConstraint(
            "attempt_count >= 0", name=op.f("ck_webhook_deliveries_attempt_count_not_negative")
        ),
    )
    op.create_index(
        op.f("ix_webhook_deliveries_due"), "webhook_deliveries", ["status", "next_attempt_at"]
    )
    op.create_index(
        op.f("ix_webhook_deliveries_tenant"),
        "webhook_deliveries",
        ["tenant_id", "event_id", "endpoint_id"],
    )
    op.create_table(
        "webhook_attempts",
        sa.Column("id", _big_id(), autoincrement=True, nullable=False),
        sa.Column("delivery_id", sa.String(64), nullable=False),
        sa.Column("attempted_at", _timestamp(), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        sa.Column("error", sa.String(500), nullable=True),
        sa.Column("trigger", sa.String(16), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_attempts")),
        sa.ForeignKeyConstraint(
            ["delivery_id"],
            ["webhook_deliveries.id"],
            name=op.f("fk_webhook_attempts_delivery_id_webhook_deliveries"),
            ondelete="CASCADE",
        ),
        sa.CheckConstraint(_triggers("trigger"), name=op.f("ck_webhook_attempts_trigger_known")),
    )
    op.create_index(op.f("ix_webhook_attempts_delivery"), "webhook_attempts", ["delivery_id", "id"])
    cursor = op.create_table(
        "webhook_cursor",
        sa.Column("name", sa.String(32), nullable=False),
        sa.Column("event_id", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", _timestamp(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_webhook_cursor")),
    )
    outbox = sa.table("outbox_events", sa.column("id", sa.BigInteger()))
    op.execute(
        cursor.insert().from_select(
            ["name", "event_id", "updated_at"],
            sa.select(
                sa.literal(CURSOR),
                sa.func.coalesce(sa.func.max(outbox.c.id), 0),
                sa.func.current_timestamp(),
            ),
        )
    )


def downgrade() -> None:
    op.drop_table("webhook_cursor")
    op.drop_index(op.f("ix_webhook_attempts_delivery"), table_name="webhook_attempts")
    op.drop_table("webhook_attempts")
    op.drop_index(op.f("ix_webhook_deliveries_tenant"), table_name="webhook_deliveries")
    op.drop_index(op.f("ix_webhook_deliveries_due"), table_name="webhook_deliveries")
    op.drop_table("webhook_deliveries")
    op.drop_table("webhook_endpoints")

"""The inbox of received WMS events, sync exceptions and per-connector sync state.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _timestamp() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def _big_id() -> sa.types.TypeEngine[int]:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "inbox_events",
        sa.Column("id", _big_id(), autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("connector_id", sa.String(128), nullable=False),
        sa.Column("event_id", sa.String(200), nullable=False),
        sa.Column("received_at", _timestamp(), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("applied_at", _timestamp(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_inbox_events")),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_inbox_events_tenant_id_tenants")
        ),
        sa.UniqueConstraint(
            "connector_id", "event_id", name=op.f("uq_inbox_events_connector_event")
        ),
    )
    op.create_index(op.f("ix_inbox_events_pending"), "inbox_events", ["status", "id"])

    op.create_table(
        "sync_exceptions",
        sa.Column("id", _big_id(), autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("connector_id", sa.String(128), nullable=False),
        sa.Column("event_id", sa.String(200), nullable=True),
        sa.Column("code", sa.String(64), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("raw", sa.Text(), nullable=False),
        sa.Column("created_at", _timestamp(), nullable=False),
        sa.Column("resolved_at", _timestamp(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sync_exceptions")),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_sync_exceptions_tenant_id_tenants")
        ),
    )
    op.create_index(
        op.f("ix_sync_exceptions_open"), "sync_exceptions", ["tenant_id", "resolved_at", "id"]
    )

    op.create_table(
        "connector_states",
        sa.Column("connector_id", sa.String(128), nullable=False),
        sa.Column("cursor", sa.Text(), nullable=True),
        sa.Column("full_sync_at", _timestamp(), nullable=True),
        sa.Column("last_event_at", _timestamp(), nullable=True),
        sa.Column("updated_at", _timestamp(), nullable=False),
        sa.PrimaryKeyConstraint("connector_id", name=op.f("pk_connector_states")),
    )


def downgrade() -> None:
    op.drop_table("connector_states")
    op.drop_index(op.f("ix_sync_exceptions_open"), table_name="sync_exceptions")
    op.drop_table("sync_exceptions")
    op.drop_index(op.f("ix_inbox_events_pending"), table_name="inbox_events")
    op.drop_table("inbox_events")

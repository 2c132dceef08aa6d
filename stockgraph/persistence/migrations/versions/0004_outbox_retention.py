"""Outbox retention: how far old events were deleted, and an index to find them by age.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02

``outbox_pruned`` holds one row: the highest outbox id deleted by retention. A subscriber
resuming from a cursor at or below it would miss events, so it is refused instead.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "outbox_pruned",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column(
            "through_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            nullable=False,
        ),
        sa.Column("pruned_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox_pruned")),
        sa.CheckConstraint("id = 1", name=op.f("ck_outbox_pruned_one_row")),
    )
    op.execute("INSERT INTO outbox_pruned (id, through_id) VALUES (1, 0)")
    op.create_index(op.f("ix_outbox_events_created_at"), "outbox_events", ["created_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_outbox_events_created_at"), table_name="outbox_events")
    op.drop_table("outbox_pruned")

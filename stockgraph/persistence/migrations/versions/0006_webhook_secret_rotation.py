"""Webhook secrets rotate with an overlap: the secret replaced keeps signing for a while.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07

An endpoint whose secret is rotated signs each request with the new secret and, until
``previous_secret_until``, with the old one too (Standard Webhooks allows several
signatures in one header), so a receiver still holding the old secret refuses nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("webhook_endpoints") as batch:
        batch.add_column(sa.Column("previous_secret", sa.String(200), nullable=True))
        batch.add_column(
            sa.Column("previous_secret_until", sa.DateTime(timezone=True), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("webhook_endpoints") as batch:
        batch.drop_column("previous_secret_until")
        batch.drop_column("previous_secret")

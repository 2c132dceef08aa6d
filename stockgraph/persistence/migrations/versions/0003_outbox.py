"""The transactional outbox: one row per committed event, never updated.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24

A trigger refuses UPDATE of ``outbox_events``: a committed event is what subscribers were
told. DELETE stays allowed, for retention. On PostgreSQL the trigger calls the function
0001 installed for the append-only tables (it raises ``restrict_violation``); on SQLite a
``BEFORE UPDATE`` trigger aborts with the same message.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

POSTGRESQL_FUNCTION = "refuse_append_only_change"
"""Installed by 0001; dropped there too, after this revision's trigger is gone."""

TRIGGER = "trg_outbox_events_no_update"


def _timestamp() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def _big_id() -> sa.types.TypeEngine[int]:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _dialect() -> str:
    return op.get_context().dialect.name


def upgrade() -> None:
    op.create_table(
        "outbox_events",
        sa.Column("id", _big_id(), autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("topic", sa.String(64), nullable=False),
        sa.Column("warehouse_id", sa.Integer(), nullable=True),
        sa.Column("sku", sa.String(128), nullable=True),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("created_at", _timestamp(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox_events")),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_outbox_events_tenant_id_tenants")
        ),
        sa.ForeignKeyConstraint(
            ["warehouse_id"],
            ["warehouses.id"],
            name=op.f("fk_outbox_events_warehouse_id_warehouses"),
        ),
    )
    op.create_index(op.f("ix_outbox_events_tenant"), "outbox_events", ["tenant_id", "id"])
    op.create_index(op.f("ix_outbox_events_topic"), "outbox_events", ["topic", "id"])
    _create_no_update_trigger()


def downgrade() -> None:
    _drop_no_update_trigger()
    op.drop_index(op.f("ix_outbox_events_topic"), table_name="outbox_events")
    op.drop_index(op.f("ix_outbox_events_tenant"), table_name="outbox_events")
    op.drop_table("outbox_events")


def _create_no_update_trigger() -> None:
    if _dialect() == "postgresql":
        op.execute(
            f"CREATE TRIGGER {TRIGGER} BEFORE UPDATE ON outbox_events"
            f" FOR EACH ROW EXECUTE FUNCTION {POSTGRESQL_FUNCTION}()"
        )
    elif _dialect() == "sqlite":
        op.execute(
            f"CREATE TRIGGER {TRIGGER} BEFORE UPDATE ON outbox_events"
            " BEGIN SELECT RAISE(ABORT, 'outbox_events is append-only: UPDATE refused'); END"
        )
    else:
        raise NotImplementedError(f"no outbox trigger for the {_dialect()} dialect")


def _drop_no_update_trigger() -> None:
    if _dialect() == "postgresql":
        op.execute(f"DROP TRIGGER {TRIGGER} ON outbox_events")
    elif _dialect() == "sqlite":
        op.execute(f"DROP TRIGGER {TRIGGER}")
    else:
        raise NotImplementedError(f"no outbox trigger for the {_dialect()} dialect")

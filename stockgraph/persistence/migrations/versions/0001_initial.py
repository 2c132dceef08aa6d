"""Create the initial schema and make the ledger and audit tables append-only.

Revision ID: 0001
Revises:
Create Date: 2025-11-24

Hand-written to match ``stockgraph.persistence.models`` as of this revision; names are the
ones the models declare or their naming convention yields, passed through ``op.f`` so they
are used verbatim.

The tables in ``APPEND_ONLY_TABLES`` get triggers that refuse UPDATE and DELETE: on
PostgreSQL one plpgsql function raising ``restrict_violation`` (an integrity error, as on
SQLite), on SQLite a ``BEFORE UPDATE`` and a ``BEFORE DELETE`` trigger per table.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

APPEND_ONLY_TABLES = ("stock_movements", "audit_events")
"""Frozen here on purpose: a later change to the models needs a revision of its own."""

QUANTITY_COLUMNS = (
    "on_hand",
    "available",
    "committed",
    "reserved",
    "damaged",
    "safety_stock",
    "quality_control",
    "incoming",
)

POSTGRESQL_FUNCTION = "refuse_append_only_change"


def _timestamp() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def _big_id() -> sa.types.TypeEngine[int]:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    _create_tables()
    _create_append_only_triggers()


def downgrade() -> None:
    _drop_append_only_triggers()
    _drop_tables()


def _create_tables() -> None:
    op.create_table(
        "tenants",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("created_at", _timestamp(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tenants")),
    )

    op.create_table(
        "api_clients",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("secret_hash", sa.String(128), nullable=False),
        sa.Column("scopes", sa.String(500), nullable=False),
        sa.Column("created_at", _timestamp(), nullable=False),
        sa.Column("disabled_at", _timestamp(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_clients")),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_api_clients_tenant_id_tenants")
        ),
    )
    op.create_index(op.f("ix_api_clients_tenant_id"), "api_clients", ["tenant_id"])

    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("key_hash", sa.String(128), nullable=False),
        sa.Column("scopes", sa.String(500), nullable=False),
        sa.Column("created_at", _timestamp(), nullable=False),
        sa.Column("revoked_at", _timestamp(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_api_keys_tenant_id_tenants")
        ),
    )
    op.create_index(op.f("ix_api_keys_tenant_id"), "api_keys", ["tenant_id"])

    op.create_table(
        "warehouses",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("code", sa.String(64), nullable=False),
        sa.Column("connector_id", sa.String(128), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("region", sa.String(64), nullable=False),
        sa.Column("lat", sa.Double(), nullable=True),
        sa.Column("lng", sa.Double(), nullable=True),
        sa.Column("dialect", sa.String(32), nullable=False),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("created_at", _timestamp(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_warehouses")),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_warehouses_tenant_id_tenants")
        ),
        sa.UniqueConstraint("tenant_id", "code", name=op.f("uq_warehouses_tenant_code")),
        sa.UniqueConstraint("connector_id", name=op.f("uq_warehouses_connector_id")),
        sa.CheckConstraint(
            "lat IS NULL OR (lat >= -90 AND lat <= 90)", name=op.f("ck_warehouses_lat_range")
        ),
        sa.CheckConstraint(
            "lng IS NULL OR (lng >= -180 AND lng <= 180)", name=op.f("ck_warehouses_lng_range")
        ),
    )
    op.create_index(op.f("ix_warehouses_tenant_id"), "warehouses", ["tenant_id"])

    op.create_table(
        "items",
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("sku", sa.String(128), nullable=False),
        sa.Column("name", sa.String(300), nullable=False),
        sa.Column("base_unit", sa.String(32), nullable=False),
        sa.Column("created_at", _timestamp(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "sku", name=op.f("pk_items")),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_items_tenant_id_tenants")
        ),
    )

    op.create_table(
        "item_aliases",
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("alias", sa.String(128), nullable=False),
        sa.Column("sku", sa.String(128), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "alias", name=op.f("pk_item_aliases")),
        sa.ForeignKeyConstraint(
            ["tenant_id", "sku"],
            ["items.tenant_id", "items.sku"],
            name=op.f("fk_item_aliases_tenant_id_items"),
            ondelete="CASCADE",
        ),
    )
    op.create_index(op.f("ix_item_aliases_item"), "item_aliases", ["tenant_id", "sku"])

    op.create_table(
        "item_units",
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("sku", sa.String(128), nullable=False),
        sa.Column("name", sa.String(32), nullable=False),
        sa.Column("factor", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "sku", "name", name=op.f("pk_item_units")),
        sa.ForeignKeyConstraint(
            ["tenant_id", "sku"],
            ["items.tenant_id", "items.sku"],
            name=op.f("fk_item_units_tenant_id_items"),
            ondelete="CASCADE",
        ),
        sa.CheckConstraint("factor >= 1", name=op.f("ck_item_units_factor_positive")),
    )

    op.create_table(
        "item_components",
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("kit_sku", sa.String(128), nullable=False),
        sa.Column("component_sku", sa.String(128), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint(
            "tenant_id", "kit_sku", "component_sku", name=op.f("pk_item_components")
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id", "kit_sku"],
            ["items.tenant_id", "items.sku"],
            name=op.f("fk_item_components_tenant_id_items"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id", "component_sku"],
            ["items.tenant_id", "items.sku"],
            name=op.f("fk_item_components_component_sku_items"),
        ),
        sa.CheckConstraint("quantity >= 1", name=op.f("ck_item_components_quantity_positive")),
        sa.CheckConstraint("kit_sku <> component_sku", name=op.f("ck_item_components_not_self")),
    )

    op.create_table(
        "stock_levels",
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("warehouse_id", sa.Integer(), nullable=False),
        sa.Column("sku", sa.String(128), nullable=False),
        *(sa.Column(name, sa.Integer(), nullable=False) for name in QUANTITY_COLUMNS),
        sa.Column("as_of", _timestamp(), nullable=False),
        sa.Column("source_sequence", sa.BigInteger(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_at", _timestamp(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "warehouse_id", "sku", name=op.f("pk_stock_levels")),
        sa.ForeignKeyConstraint(
            ["tenant_id", "sku"],
            ["items.tenant_id", "items.sku"],
            name=op.f("fk_stock_levels_tenant_id_items"),
        ),
        sa.ForeignKeyConstraint(
            ["warehouse_id"],
            ["warehouses.id"],
            name=op.f("fk_stock_levels_warehouse_id_warehouses"),
        ),
        *(
            sa.CheckConstraint(f"{name} >= 0", name=op.f(f"ck_stock_levels_{name}_not_negative"))
            for name in QUANTITY_COLUMNS
        ),
        sa.CheckConstraint(
            "on_hand = available + committed + reserved + damaged + safety_stock + quality_control",
            name=op.f("ck_stock_levels_on_hand_identity"),
        ),
    )
    op.create_index(op.f("ix_stock_levels_tenant_sku"), "stock_levels", ["tenant_id", "sku"])

    op.create_table(
        "stock_movements",
        sa.Column("id", _big_id(), autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("warehouse_id", sa.Integer(), nullable=False),
        sa.Column("sku", sa.String(128), nullable=False),
        sa.Column("occurred_at", _timestamp(), nullable=False),
        sa.Column("recorded_at", _timestamp(), nullable=False),
        *(sa.Column(f"d_{name}", sa.Integer(), nullable=False) for name in QUANTITY_COLUMNS),
        sa.Column("cause", sa.String(32), nullable=False),
        sa.Column("reason", sa.String(32), nullable=True),
        sa.Column("correlation_id", sa.String(64), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("reference", sa.Text(), nullable=True),
        sa.Column("source_sequence", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stock_movements")),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_stock_movements_tenant_id_tenants")
        ),
        sa.ForeignKeyConstraint(
            ["warehouse_id"],
            ["warehouses.id"],
            name=op.f("fk_stock_movements_warehouse_id_warehouses"),
        ),
    )
    op.create_index(
        op.f("ix_stock_movements_level"),
        "stock_movements",
        ["tenant_id", "sku", "warehouse_id", "occurred_at"],
    )
    op.create_index(
        op.f("ix_stock_movements_correlation"), "stock_movements", ["tenant_id", "correlation_id"]
    )

    op.create_table(
        "audit_events",
        sa.Column("id", _big_id(), autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("occurred_at", _timestamp(), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("correlation_id", sa.String(64), nullable=False),
        sa.Column("sku", sa.String(128), nullable=True),
        sa.Column("warehouse_id", sa.Integer(), nullable=True),
        sa.Column("order_id", sa.String(64), nullable=True),
        sa.Column("reference", sa.Text(), nullable=True),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_events")),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_audit_events_tenant_id_tenants")
        ),
    )
    op.create_index(
        op.f("ix_audit_events_tenant_time"), "audit_events", ["tenant_id", "occurred_at"]
    )
    op.create_index(
        op.f("ix_audit_events_correlation"), "audit_events", ["tenant_id", "correlation_id"]
    )
    op.create_index(op.f("ix_audit_events_sku"), "audit_events", ["tenant_id", "sku"])


def _drop_tables() -> None:
    op.drop_index(op.f("ix_audit_events_sku"), table_name="audit_events")
    op.drop_index(op.f("ix_audit_events_correlation"), table_name="audit_events")
    op.drop_index(op.f("ix_audit_events_tenant_time"), table_name="audit_events")
    op.drop_table("audit_events")
    op.drop_index(op.f("ix_stock_movements_correlation"), table_name="stock_movements")
    op.drop_index(op.f("ix_stock_movements_level"), table_name="stock_movements")
    op.drop_table("stock_movements")
    op.drop_index(op.f("ix_stock_levels_tenant_sku"), table_name="stock_levels")
    op.drop_table("stock_levels")
    op.drop_table("item_components")
    op.drop_table("item_units")
    op.drop_index(op.f("ix_item_aliases_item"), table_name="item_aliases")
    op.drop_table("item_aliases")
    op.drop_table("items")
    op.drop_index(op.f("ix_warehouses_tenant_id"), table_name="warehouses")
    op.drop_table("warehouses")
    op.drop_index(op.f("ix_api_keys_tenant_id"), table_name="api_keys")
    op.drop_table("api_keys")
    op.drop_index(op.f("ix_api_clients_tenant_id"), table_name="api_clients")
    op.drop_table("api_clients")
    op.drop_table("tenants")


def _dialect() -> str:
    return op.get_context().dialect.name


def _create_append_only_triggers() -> None:
    if _dialect() == "postgresql":
        op.execute(
            f"""
            CREATE FUNCTION {POSTGRESQL_FUNCTION}() RETURNS trigger
            LANGUAGE plpgsql AS $$
            BEGIN
                RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
                    USING ERRCODE = 'restrict_violation';
            END;
            $$
            """
        )
        for table in APPEND_ONLY_TABLES:
            op.execute(
                f"CREATE TRIGGER trg_{table}_append_only"
                f" BEFORE UPDATE OR DELETE ON {table}"
                f" FOR EACH ROW EXECUTE FUNCTION {POSTGRESQL_FUNCTION}()"
            )
    elif _dialect() == "sqlite":
        for table in APPEND_ONLY_TABLES:
            for operation in ("UPDATE", "DELETE"):
                op.execute(
                    f"CREATE TRIGGER trg_{table}_no_{operation.lower()}"
                    f" BEFORE {operation} ON {table}"
                    f" BEGIN SELECT RAISE(ABORT, '{table} is append-only: {operation} refused');"
                    " END"
                )
    else:
        raise NotImplementedError(f"no append-only triggers for the {_dialect()} dialect")


def _drop_append_only_triggers() -> None:
    if _dialect() == "postgresql":
        for table in APPEND_ONLY_TABLES:
            op.execute(f"DROP TRIGGER trg_{table}_append_only ON {table}")
        op.execute(f"DROP FUNCTION {POSTGRESQL_FUNCTION}()")
    elif _dialect() == "sqlite":
        for table in APPEND_ONLY_TABLES:
            for operation in ("update", "delete"):
                op.execute(f"DROP TRIGGER trg_{table}_no_{operation}")
    else:
        raise NotImplementedError(f"no append-only triggers for the {_dialect()} dialect")

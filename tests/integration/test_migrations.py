"""The migrations build exactly the schema the models describe, and its guards hold.

Tests taking ``database_url`` or ``migrated`` run on SQLite and on PostgreSQL, each time in an
empty database of their own; the ones about the ``alembic`` command itself use SQLite only.
"""

from __future__ import annotations

import asyncio
import io
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import (
    CheckConstraint,
    UniqueConstraint,
    delete,
    func,
    insert,
    inspect,
    select,
    update,
)
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from stockgraph.persistence.database import create_engine
from stockgraph.persistence.migrate import (
    context_options,
    current_revision,
    downgrade,
    head_revision,
    upgrade,
)
from stockgraph.persistence.models import APPEND_ONLY_TABLES, Base

TABLES = Base.metadata.tables
NOW = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
ACTOR = "migration-test"
REPOSITORY = Path(__file__).resolve().parents[2]
ALEMBIC_INI = REPOSITORY / "alembic.ini"
UPGRADE_AT_A_GIVEN_MOMENT = (
    "import asyncio, sys, time\n"
    "from stockgraph.persistence.migrate import upgrade\n"
    "time.sleep(max(0.0, float(sys.argv[2]) - time.time()))\n"
    "asyncio.run(upgrade(sys.argv[1]))\n"
)


@dataclass(frozen=True)
class Parents:
    tenant_id: str
    warehouse_id: int
    sku: str


def _new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


@pytest.fixture
def migrated(engine: AsyncEngine) -> AsyncEngine:
    """The migrated database's engine (``conftest.engine``), by the name these tests use."""
    return engine


async def _on_connection(url: str, work: Callable[[Connection], Any]) -> Any:
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(work)
    finally:
        await engine.dispose()


def _differences(connection: Connection) -> list[Any]:
    options = context_options(connection.dialect.name)
    context = MigrationContext.configure(connection, opts=dict(options))
    return list(compare_metadata(context, Base.metadata))


def _reflected_names(connection: Connection) -> dict[str, dict[str, Any]]:
    inspector = inspect(connection)
    names: dict[str, dict[str, Any]] = {}
    for table in TABLES:
        names[table] = {
            "primary key": inspector.get_pk_constraint(table)["name"],
            "unique": {uq["name"] for uq in inspector.get_unique_constraints(table)},
            "check": {ck["name"] for ck in inspector.get_check_constraints(table)},
            "index": {
                ix["name"]
                for ix in inspector.get_indexes(table)
                if "duplicates_constraint" not in ix
            },
            "foreign key": {
                (tuple(fk["constrained_columns"]), fk["name"])
                for fk in inspector.get_foreign_keys(table)
            },
        }
    return names


def _model_names() -> dict[str, dict[str, Any]]:
    names: dict[str, dict[str, Any]] = {}
    for name, table in TABLES.items():
        foreign_keys = {(tuple(fk.column_keys), fk.name) for fk in table.foreign_key_constraints}
        names[name] = {
            "primary key": table.primary_key.name,
            "unique": {c.name for c in table.constraints if isinstance(c, UniqueConstraint)},
            "check": {c.name for c in table.constraints if isinstance(c, CheckConstraint)},
            "index": {index.name for index in table.indexes},
            "foreign key": foreign_keys,
        }
    return names


def _leftovers(connection: Connection) -> set[tuple[str, str]]:
    if connection.dialect.name == "sqlite":
        rows = connection.exec_driver_sql(
            "SELECT type, name FROM sqlite_master WHERE name NOT LIKE 'sqlite%'"
        )
    else:
        rows = connection.exec_driver_sql(
            """
            SELECT 'table', tablename FROM pg_tables WHERE schemaname = 'public'
            UNION ALL
            SELECT 'sequence', sequencename FROM pg_sequences WHERE schemaname = 'public'
            UNION ALL
            SELECT 'function', p.proname FROM pg_proc p
                JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'public'
            UNION ALL
            SELECT 'trigger', tgname FROM pg_trigger WHERE NOT tgisinternal
            UNION ALL
            SELECT 'index', indexname FROM pg_indexes WHERE schemaname = 'public'
            """
        )
    found = {(str(kind), str(name)) for kind, name in rows}
    return found - {("table", "alembic_version"), ("index", "alembic_version_pkc")}


async def _insert_parents(engine: AsyncEngine) -> Parents:
    tenant_id = _new_id("tenant")
    sku = _new_id("sku")
    async with engine.begin() as connection:
        await connection.execute(
            insert(TABLES["tenants"]).values(id=tenant_id, name="Tenant", created_at=NOW)
        )
        warehouse = await connection.execute(
            insert(TABLES["warehouses"]).values(**_warehouse(tenant_id, code=_new_id("wh")))
        )
        await connection.execute(
            insert(TABLES["items"]).values(
                tenant_id=tenant_id, sku=sku, name="Widget", base_unit="each", created_at=NOW
            )
        )
    key = warehouse.inserted_primary_key
    assert key is not None
    return Parents(tenant_id, int(key[0]), sku)


def _warehouse(tenant_id: str, *, code: str) -> dict[str, Any]:
    return {
        "tenant_id": tenant_id,
        "code": code,
        "connector_id": _new_id("connector"),
        "name": "Warehouse",
        "region": "eu-west",
        "lat": 52.5,
        "lng": 13.4,
        "dialect": "fake",
        "settings": {},
        "created_at": NOW,
    }


def _stock_level(parents: Parents, **quantities: int) -> dict[str, Any]:
    buckets = {
        "available": 0,
        "committed": 0,
        "reserved": 0,
        "damaged": 0,
        "safety_stock": 0,
        "quality_control": 0,
    }
    buckets.update({k: v for k, v in quantities.items() if k in buckets})
    return {
        "tenant_id": parents.tenant_id,
        "warehouse_id": parents.warehouse_id,
        "sku": parents.sku,
        **buckets,
        "on_hand": quantities.get("on_hand", sum(buckets.values())),
        "incoming": 0,
        "as_of": NOW,
        "source_sequence": None,
        "version": 1,
        "updated_at": NOW,
    }


def _append_only_row(table: str, parents: Parents) -> dict[str, Any]:
    if table == "stock_movements":
        return {
            "tenant_id": parents.tenant_id,
            "warehouse_id": parents.warehouse_id,
            "sku": parents.sku,
            "occurred_at": NOW,
            "recorded_at": NOW,
            "d_on_hand": 5,
            "d_available": 5,
            "d_committed": 0,
            "d_reserved": 0,
            "d_damaged": 0,
            "d_safety_stock": 0,
            "d_quality_control": 0,
            "d_incoming": 0,
            "cause": "receipt",
            "reason": None,
            "correlation_id": _new_id("corr"),
            "actor": ACTOR,
            "reference": None,
            "source_sequence": 1,
        }
    if table == "audit_events":
        return {
            "tenant_id": parents.tenant_id,
            "occurred_at": NOW,
            "kind": "inventory.adjusted",
            "actor": ACTOR,
            "correlation_id": _new_id("corr"),
            "sku": parents.sku,
            "warehouse_id": parents.warehouse_id,
            "order_id": None,
            "reference": None,
            "message": "Adjusted",
            "detail": {"delta": 5},
        }
    raise AssertionError(f"no sample row for the append-only table {table}")


async def test_upgrade_from_empty_builds_exactly_the_schema_of_the_models(
    database_url: str,
) -> None:
    assert await current_revision(database_url) is None

    await upgrade(database_url)

    assert await current_revision(database_url) == head_revision()
    assert await _on_connection(database_url, _differences) == []


async def test_migrated_constraints_and_indexes_carry_the_names_of_the_models(
    database_url: str,
) -> None:
    await upgrade(database_url)

    assert await _on_connection(database_url, _reflected_names) == _model_names()


async def test_downgrade_to_base_leaves_nothing_and_upgrade_rebuilds_the_schema(
    database_url: str,
) -> None:
    await upgrade(database_url)

    await downgrade(database_url, "base")

    assert await current_revision(database_url) is None
    assert await _on_connection(database_url, _leftovers) == set()

    await upgrade(database_url)

    assert await current_revision(database_url) == head_revision()
    assert await _on_connection(database_url, _differences) == []


async def test_upgrades_started_together_migrate_the_database_once(database_url: str) -> None:
    await asyncio.gather(*(upgrade(database_url) for _ in range(3)))

    assert await current_revision(database_url) == head_revision()
    assert await _on_connection(database_url, _differences) == []


def _upgrade_in_processes_at_once(url: str, copies: int) -> list[tuple[int, str]]:
    moment = time.time() + 2.0
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", UPGRADE_AT_A_GIVEN_MOMENT, url, str(moment)],
            cwd=REPOSITORY,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(copies)
    ]
    outcomes = []
    try:
        for process in processes:
            _, errors = process.communicate(timeout=120)
            outcomes.append((process.returncode, errors))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.communicate()
    return outcomes


async def test_upgrades_from_separate_processes_migrate_the_database_once(
    database_url: str,
) -> None:
    outcomes = await asyncio.to_thread(_upgrade_in_processes_at_once, database_url, 3)

    assert outcomes == [(0, "")] * 3
    assert await current_revision(database_url) == head_revision()
    assert await _on_connection(database_url, _differences) == []


@pytest.mark.parametrize("table_name", APPEND_ONLY_TABLES)
@pytest.mark.parametrize("operation", ["update", "delete"])
async def test_ledger_and_audit_rows_refuse_update_and_delete(
    migrated: AsyncEngine, table_name: str, operation: str
) -> None:
    table = TABLES[table_name]
    parents = await _insert_parents(migrated)
    async with migrated.begin() as connection:
        result = await connection.execute(
            insert(table).values(**_append_only_row(table_name, parents))
        )
    key = result.inserted_primary_key
    assert key is not None
    row_id = key[0]
    statement = (
        update(table).where(table.c.id == row_id).values(actor="someone-else")
        if operation == "update"
        else delete(table).where(table.c.id == row_id)
    )

    with pytest.raises(IntegrityError, match=f"{table_name} is append-only"):
        async with migrated.begin() as connection:
            await connection.execute(statement)

    async with migrated.connect() as connection:
        actor = await connection.scalar(select(table.c.actor).where(table.c.id == row_id))
    assert actor == ACTOR


async def test_stock_levels_accept_an_on_hand_that_is_the_sum_of_its_buckets(
    migrated: AsyncEngine,
) -> None:
    parents = await _insert_parents(migrated)
    row = _stock_level(
        parents,
        available=1,
        committed=2,
        reserved=3,
        damaged=4,
        safety_stock=5,
        quality_control=6,
    )

    async with migrated.begin() as connection:
        await connection.execute(insert(TABLES["stock_levels"]).values(**row))

    async with migrated.connect() as connection:
        on_hand = await connection.scalar(
            select(TABLES["stock_levels"].c.on_hand).where(
                TABLES["stock_levels"].c.sku == parents.sku
            )
        )
    assert on_hand == 21


async def test_stock_levels_refuse_a_negative_available(migrated: AsyncEngine) -> None:
    parents = await _insert_parents(migrated)
    row = _stock_level(parents, available=-1, committed=1)
    assert row["on_hand"] == 0

    with pytest.raises(IntegrityError, match="ck_stock_levels_available_not_negative"):
        async with migrated.begin() as connection:
            await connection.execute(insert(TABLES["stock_levels"]).values(**row))


async def test_stock_levels_refuse_an_on_hand_that_differs_from_the_sum_of_its_buckets(
    migrated: AsyncEngine,
) -> None:
    parents = await _insert_parents(migrated)
    row = _stock_level(
        parents,
        on_hand=22,
        available=1,
        committed=2,
        reserved=3,
        damaged=4,
        safety_stock=5,
        quality_control=6,
    )

    with pytest.raises(IntegrityError, match="ck_stock_levels_on_hand_identity"):
        async with migrated.begin() as connection:
            await connection.execute(insert(TABLES["stock_levels"]).values(**row))


async def test_warehouses_refuse_a_duplicate_code_within_a_tenant(migrated: AsyncEngine) -> None:
    parents = await _insert_parents(migrated)
    code = _new_id("wh")
    async with migrated.begin() as connection:
        await connection.execute(
            insert(TABLES["warehouses"]).values(**_warehouse(parents.tenant_id, code=code))
        )

    with pytest.raises(
        IntegrityError, match=r"uq_warehouses_tenant_code|warehouses\.tenant_id, warehouses\.code"
    ):
        async with migrated.begin() as connection:
            await connection.execute(
                insert(TABLES["warehouses"]).values(**_warehouse(parents.tenant_id, code=code))
            )


async def test_warehouses_of_different_tenants_may_share_a_code(migrated: AsyncEngine) -> None:
    first = await _insert_parents(migrated)
    second = await _insert_parents(migrated)
    code = _new_id("wh")

    async with migrated.begin() as connection:
        for tenant_id in (first.tenant_id, second.tenant_id):
            await connection.execute(
                insert(TABLES["warehouses"]).values(**_warehouse(tenant_id, code=code))
            )

    async with migrated.connect() as connection:
        count = await connection.scalar(
            select(func.count()).where(TABLES["warehouses"].c.code == code)
        )
    assert count == 2


async def test_the_alembic_command_line_migrates_the_database_named_by_database_url(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", sqlite_url)
    config = Config(str(ALEMBIC_INI), attributes={"configure_logger": False})

    await asyncio.to_thread(command.upgrade, config, "head")

    assert await current_revision(sqlite_url) == head_revision()


async def test_alembic_commands_called_inside_a_running_loop_point_to_the_async_api(
    sqlite_url: str,
) -> None:
    config = Config(str(ALEMBIC_INI), attributes={"url": sqlite_url, "configure_logger": False})

    with pytest.raises(RuntimeError, match=r"stockgraph\.persistence\.migrate"):
        command.upgrade(config, "head")

    assert await current_revision(sqlite_url) is None


def test_offline_mode_writes_postgresql_ddl_with_the_append_only_triggers() -> None:
    output = io.StringIO()
    config = Config(
        str(ALEMBIC_INI),
        output_buffer=output,
        attributes={"url": "postgresql://offline/stockgraph", "configure_logger": False},
    )

    command.upgrade(config, "head", sql=True)

    sql = output.getvalue()
    assert "CREATE TABLE stock_levels" in sql
    for table in APPEND_ONLY_TABLES:
        assert f"BEFORE UPDATE OR DELETE ON {table}" in sql

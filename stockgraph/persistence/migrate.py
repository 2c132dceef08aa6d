"""Applying the Alembic migrations that ship inside the package.

Example, from start-up code or the CLI (both already run inside an event loop)::

    await upgrade("postgresql://app@db/stockgraph")
    await current_revision("postgresql://app@db/stockgraph")  # "0001"
    await downgrade("postgresql://app@db/stockgraph", "base")

How this meets a running event loop: all database I/O happens on the caller's loop. Each
function opens an :class:`~sqlalchemy.ext.asyncio.AsyncEngine`, takes one connection and,
inside :meth:`AsyncConnection.run_sync`, runs the Alembic command with that connection's
synchronous facade in ``Config.attributes["connection"]``. ``migrations/env.py`` migrates on
the connection it is handed and starts no loop of its own: no nested ``asyncio.run`` and no
worker thread. Only the ``alembic`` command-line tool, where no loop is running, makes
``env.py`` open its own engine under ``asyncio.run``.

Runs never overlap. Alembic's ``context`` and ``op`` are module-level proxies that each
command installs and removes, so within a process :func:`upgrade` and :func:`downgrade` take
turns on an event loop and refuse to start while another thread is inside one of them.
Across processes every run holds a lock for its whole transaction
(:func:`lock_for_migrations`): replicas that start together migrate one after the other, and
the later ones find nothing to do.

Migrations run on a dedicated engine (:func:`migration_engine`). On SQLite it differs from the
application's engine in two ways. DDL is transactional (the driver's implicit transaction
handling is switched off and ``BEGIN IMMEDIATE`` is emitted explicitly), so a failed upgrade
leaves nothing half-applied. Foreign keys are not enforced while tables are rebuilt by batch
operations (dropping a parent table would otherwise cascade-delete its children); they are
checked once, inside the transaction, before it commits (:func:`check_foreign_keys`).
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from importlib import resources
from pathlib import Path
from typing import Any, TypedDict, TypeVar

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import event, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql.schema import MetaData

from stockgraph.persistence.database import create_engine, normalise_url
from stockgraph.persistence.models import Base

__all__ = [
    "ContextOptions",
    "check_foreign_keys",
    "context_options",
    "current_revision",
    "downgrade",
    "head_revision",
    "is_migration_connection",
    "lock_for_migrations",
    "migration_engine",
    "run_on_migration_connection",
    "upgrade",
]

MIGRATIONS_PACKAGE = "stockgraph.persistence.migrations"

_T = TypeVar("_T")
_MIGRATION_CONNECTION = "stockgraph.migration_connection"
_POSTGRESQL_LOCK_KEY = 0x53544F434B475250
_alembic_commands = threading.Lock()
_turns: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
    weakref.WeakKeyDictionary()
)


class ContextOptions(TypedDict):
    """The Alembic context settings that ``env.py`` and schema comparisons share."""

    target_metadata: MetaData
    compare_type: bool
    render_as_batch: bool


def context_options(dialect_name: str) -> ContextOptions:
    """How Alembic compares a database with the models and renders new revisions.

    ``compare_type`` is on. Types are compared by their compiled DDL, so ``UtcDateTime``
    (a decorator over ``DateTime(timezone=True)``) compares as ``TIMESTAMP WITH TIME ZONE``
    on PostgreSQL and ``DATETIME`` on SQLite, as its reflected column does. SQLite cannot
    alter most of a table in place, so revisions are rendered as batch operations there.
    """
    return {
        "target_metadata": Base.metadata,
        "compare_type": True,
        "render_as_batch": dialect_name == "sqlite",
    }


async def upgrade(url: str, revision: str = "head") -> None:
    """Migrate the database at ``url`` up to ``revision`` (the newest by default)."""
    _require_persistent(url)
    async with _alembic_turn():
        await run_on_migration_connection(url, partial(_run_command, command.upgrade, revision))


async def downgrade(url: str, revision: str) -> None:
    """Migrate the database at ``url`` down to ``revision``; ``"base"`` removes the schema."""
    _require_persistent(url)
    async with _alembic_turn():
        await run_on_migration_connection(url, partial(_run_command, command.downgrade, revision))


async def current_revision(url: str) -> str | None:
    """The revision the database at ``url`` is at, or ``None`` if it was never migrated."""
    engine = create_engine(url, pool_size=1)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(_read_revision)
    finally:
        await engine.dispose()


def head_revision() -> str:
    """The newest revision shipped with the package (what :func:`upgrade` goes to by default)."""
    head = ScriptDirectory(_script_location()).get_current_head()
    if head is None:
        raise RuntimeError(f"{MIGRATIONS_PACKAGE} contains no revisions")
    return head


def migration_engine(url: str) -> AsyncEngine:
    """An engine for running migrations (see the module documentation for how it differs)."""
    engine = create_engine(url, pool_size=1)
    if engine.dialect.name == "sqlite":
        event.listen(engine.sync_engine, "connect", _prepare_sqlite_for_migrations)
        event.listen(engine.sync_engine, "begin", _emit_begin)
    return engine


async def run_on_migration_connection(url: str, work: Callable[[Connection], _T]) -> _T:
    """Call ``work`` with a synchronous connection from :func:`migration_engine`.

    ``work`` runs inside ``AsyncConnection.run_sync`` on the caller's loop; whatever it left
    uncommitted is committed afterwards, and the engine is disposed of in every case.
    """
    engine = migration_engine(url)
    try:
        async with engine.connect() as connection:
            result = await connection.run_sync(work)
            await connection.commit()
            return result
    finally:
        await engine.dispose()


def lock_for_migrations(connection: Connection) -> None:
    """Wait until no other process is migrating this database; call inside the transaction.

    Application replicas that start together each call :func:`upgrade`; the first migrates,
    the others then find the database at head. On PostgreSQL this takes a transaction-level
    advisory lock. On SQLite, connections from :func:`migration_engine` begin with
    ``BEGIN IMMEDIATE``, which already holds the write lock.
    """
    if connection.dialect.name == "postgresql":
        connection.execute(
            text("SELECT pg_advisory_xact_lock(:key)"), {"key": _POSTGRESQL_LOCK_KEY}
        )


def check_foreign_keys(connection: Connection) -> None:
    """Raise if any row references a missing parent (SQLite only; PostgreSQL never lets one in).

    Migrations on SQLite run with foreign keys unenforced; this runs before they commit.
    """
    if connection.dialect.name != "sqlite":
        return
    violations = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
    if violations:
        found = ", ".join(f"{row[0]} row {row[1]} -> {row[2]}" for row in violations[:10])
        raise RuntimeError(f"the migration left rows with missing parents: {found}")


def is_migration_connection(connection: Connection) -> bool:
    """Whether ``connection`` came from :func:`migration_engine` (SQLite DDL is transactional)."""
    return bool(connection.info.get(_MIGRATION_CONNECTION, False))


@asynccontextmanager
async def _alembic_turn() -> AsyncIterator[None]:
    loop = asyncio.get_running_loop()
    async with _turns.setdefault(loop, asyncio.Lock()):
        if not _alembic_commands.acquire(blocking=False):
            raise RuntimeError(
                "another thread of this process is running Alembic; migrate from one thread"
            )
        try:
            yield
        finally:
            _alembic_commands.release()


def _run_command(
    alembic_command: Callable[[Config, str], None], revision: str, connection: Connection
) -> None:
    alembic_command(_config(connection), revision)


def _config(connection: Connection) -> Config:
    config = Config(attributes={"connection": connection})
    config.set_main_option("script_location", _script_location().replace("%", "%%"))
    return config


def _script_location() -> str:
    location = resources.files(MIGRATIONS_PACKAGE)
    if not isinstance(location, Path):
        raise RuntimeError(
            f"{MIGRATIONS_PACKAGE} must be installed as files on disk for Alembic to read it"
        )
    return str(location)


def _read_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def _require_persistent(url: str) -> None:
    parsed = make_url(normalise_url(url))
    if parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:"):
        raise ValueError("an in-memory SQLite database does not outlive its migration engine")


def _prepare_sqlite_for_migrations(dbapi_connection: Any, connection_record: Any) -> None:
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=OFF")
    cursor.close()
    connection_record.info[_MIGRATION_CONNECTION] = True


def _emit_begin(connection: Connection) -> None:
    connection.exec_driver_sql("BEGIN IMMEDIATE")

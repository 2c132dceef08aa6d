"""The Alembic environment: how revisions reach a database.

Alembic executes this file for every command (it is a script by Alembic's contract; nothing
else imports it). Three ways in:

- :mod:`stockgraph.persistence.migrate` hands over a synchronous connection in
  ``config.attributes["connection"]``; migrations run on it, on the caller's event loop.
- The ``alembic`` command line, where no event loop is running: an async engine is opened
  for the URL in ``config.attributes["url"]``, else the ``sqlalchemy.url`` option, else the
  ``DATABASE_URL`` environment variable, else ``sqlite+aiosqlite:///./stockgraph.db``, and
  driven by ``asyncio.run``.
- ``alembic upgrade --sql`` (offline mode): SQL for the same URL's dialect is written out.

Logging is configured from the ini file's sections, if it has any, unless
``config.attributes["configure_logger"]`` is false.
"""

from __future__ import annotations

import asyncio
import os
from logging.config import fileConfig
from typing import Literal

from alembic import context
from alembic.autogenerate.api import AutogenContext
from sqlalchemy.engine import Connection, make_url

from stockgraph.persistence.database import normalise_url
from stockgraph.persistence.migrate import (
    check_foreign_keys,
    context_options,
    is_migration_connection,
    lock_for_migrations,
    run_on_migration_connection,
)
from stockgraph.persistence.types import UtcDateTime

DEFAULT_URL = "sqlite+aiosqlite:///./stockgraph.db"


def database_url() -> str:
    config = context.config
    url = (
        config.attributes.get("url")
        or config.get_main_option("sqlalchemy.url")
        or os.environ.get("DATABASE_URL")
        or DEFAULT_URL
    )
    return str(url)


def render_item(type_: str, obj: object, autogen_context: AutogenContext) -> str | Literal[False]:
    """Render ``UtcDateTime`` as the DDL type it stands for, so revisions import no app code."""
    if type_ == "type" and isinstance(obj, UtcDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def run_on(connection: Connection) -> None:
    dialect = connection.dialect.name
    transactional_ddl = is_migration_connection(connection) if dialect == "sqlite" else None
    context.configure(
        connection=connection,
        transactional_ddl=transactional_ddl,
        render_item=render_item,
        **context_options(dialect),
    )
    with context.begin_transaction():
        lock_for_migrations(connection)
        context.run_migrations()
        check_foreign_keys(connection)


def run_offline(url: str) -> None:
    context.configure(
        url=normalise_url(url),
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        render_item=render_item,
        **context_options(make_url(normalise_url(url)).get_backend_name()),
    )
    with context.begin_transaction():
        context.run_migrations()


def run_with_own_engine(url: str) -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(run_on_migration_connection(url, run_on))
        return
    raise RuntimeError(
        "an event loop is already running in this thread; migrate with "
        "stockgraph.persistence.migrate.upgrade()/downgrade(), which hand Alembic a connection"
    )


def main() -> None:
    config = context.config
    if (
        config.attributes.get("configure_logger", True)
        and config.config_file_name is not None
        and config.file_config.has_section("loggers")
    ):
        fileConfig(config.config_file_name, disable_existing_loggers=False)
    connection = config.attributes.get("connection")
    if context.is_offline_mode():
        run_offline(database_url())
    elif connection is None:
        run_with_own_engine(database_url())
    elif isinstance(connection, Connection):
        run_on(connection)
    else:
        raise TypeError(
            "config.attributes['connection'] must be a synchronous sqlalchemy Connection "
            f"(inside AsyncConnection.run_sync), not {type(connection).__name__}"
        )


main()

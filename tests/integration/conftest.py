"""Databases for integration tests: a fresh SQLite file, a fresh PostgreSQL database, or both.

Every test gets an empty database of its own, created here and removed afterwards, so tests
run in any order and side by side.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from stockgraph.persistence.database import create_engine, normalise_url
from stockgraph.persistence.migrate import upgrade
from tests.services import postgres_url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A SQLite file that does not exist yet."""
    return f"sqlite+aiosqlite:///{tmp_path / 'stockgraph.db'}"


@pytest.fixture
async def postgres_database_url() -> AsyncIterator[str]:
    """A new, empty database on the test PostgreSQL server, dropped after the test."""
    server_url = make_url(normalise_url(postgres_url()))
    name = f"sg_{uuid.uuid4().hex}"
    admin = create_async_engine(server_url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as connection:
            await connection.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield server_url.set(database=name).render_as_string(hide_password=False)
        finally:
            async with admin.connect() as connection:
                await connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        await admin.dispose()


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
    ]
)
def database_url(request: pytest.FixtureRequest) -> str:
    """An empty database on each backend in turn."""
    fixture = {"sqlite": "sqlite_url", "postgresql": "postgres_database_url"}[request.param]
    url: str = request.getfixturevalue(fixture)
    return url


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on a migrated, empty database of each backend in turn."""
    await upgrade(database_url)
    engine = create_engine(database_url)
    try:
        yield engine
    finally:
        await engine.dispose()

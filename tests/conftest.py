"""Shared fixtures: a migrated demo world on SQLite, and a runtime over it."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from stockgraph.config import Settings, load_settings
from stockgraph.persistence.migrate import upgrade
from stockgraph.runtime import Runtime
from stockgraph.services.demo import seed_demo

TEST_SECRET = secrets.token_urlsafe(48)


def make_settings(database_url: str, **overrides: Any) -> Settings:
    """Settings for one test's world. Redis only when the test asks for it (``redis_url=``):
    REDIS_URL in the environment (CI sets it for the tests that need Redis) would otherwise
    make every test's world share budgets, buckets and answers with every other's."""
    overrides.setdefault("redis_url", None)
    return load_settings(database_url=database_url, jwt_secret=SecretStr(TEST_SECRET), **overrides)


async def build_world(database_url: str) -> None:
    """Migrate a database and load the demo world into it."""
    await upgrade(database_url)
    runtime = Runtime.build(make_settings(database_url))
    try:
        await seed_demo(catalog=runtime.catalog_writer, stock=runtime.stock_store)
    finally:
        await runtime.close()


@pytest.fixture(scope="session")
def demo_database(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A SQLite file holding the demo world, built once per test session; treat as read-only."""
    path: Path = tmp_path_factory.mktemp("demo") / "stockgraph.db"
    url = f"sqlite+aiosqlite:///{path}"
    asyncio.run(build_world(url))
    return url


@pytest.fixture
async def runtime(demo_database: str) -> AsyncIterator[Runtime]:
    rt = Runtime.build(make_settings(demo_database))
    try:
        yield rt
    finally:
        await rt.close()

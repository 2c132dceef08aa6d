"""Readiness reports the database and Redis as they are."""

from __future__ import annotations

import asyncio
import io

import httpx
import pytest

from stockgraph.app import create_app
from tests.conftest import make_settings
from tests.e2e.conftest import free_port
from tests.services import redis_url

pytestmark = pytest.mark.redis


async def _ready(database_url: str, redis: str) -> httpx.Response:
    """``/readyz`` of an app started and stopped around it; a start, answer or stop that
    hangs fails the test within a minute, naming what every task was waiting on."""
    settings = make_settings(database_url, redis_url=redis)
    app = create_app(settings)
    try:
        async with asyncio.timeout(60), app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://stockgraph"
            ) as client:
                return await client.get("/readyz")
    except TimeoutError:
        pytest.fail(f"the app hung; its tasks:\n{_task_stacks()}", pytrace=False)


def _task_stacks() -> str:
    out = io.StringIO()
    for task in asyncio.all_tasks():
        print(f"-- {task.get_name()}", file=out)
        task.print_stack(file=out)
    return out.getvalue()


async def test_readiness_checks_the_configured_redis(demo_database: str) -> None:
    response = await _ready(demo_database, redis_url())
    assert response.status_code == 200
    assert response.json()["checks"]["cache"] == "ok (redis)"


async def test_an_unreachable_redis_leaves_the_service_ready_but_degraded(
    demo_database: str,
) -> None:
    response = await _ready(demo_database, f"redis://127.0.0.1:{free_port()}/0")
    assert response.status_code == 200
    assert response.json()["checks"]["cache"].startswith("ok (degraded: redis unreachable")
    assert response.json()["checks"]["database"] == "ok"

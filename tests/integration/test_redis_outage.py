"""A Redis outage: cost buckets and the service answer without it, and use it once back."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from stockgraph.app import create_app
from stockgraph.auth.principal import Principal
from stockgraph.auth.scopes import Scope
from stockgraph.cache.buckets import FallbackBuckets, MemoryBuckets, RedisBuckets
from stockgraph.domain.bucket import BucketPolicy
from stockgraph.domain.ids import TenantId
from stockgraph.runtime import Runtime
from tests.conftest import make_settings
from tests.e2e.conftest import free_port

pytestmark = pytest.mark.redis

REDIS_SERVER = "/usr/bin/redis-server"
RETRY_SECONDS = 0.5
POLICY = BucketPolicy(capacity=10.0, restore_rate=1e-6)


class RedisServer:
    """A redis-server of our own that can be stopped and started again on the same port."""

    def __init__(self, binary: str, port: int) -> None:
        self.binary = binary
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        options = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--daemonize", "no"]
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), *options],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 5.0
        while not self._answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.02)

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as connection:
                connection.sendall(b"PING\r\n")
                return connection.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=5.0)
            self.process = None


@pytest.fixture
def server() -> Iterator[RedisServer]:
    binary = REDIS_SERVER if os.access(REDIS_SERVER, os.X_OK) else shutil.which("redis-server")
    if binary is None:
        reason = f"{REDIS_SERVER} is not installed; install redis-server to run the outage tests"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason}; CI=true requires it", pytrace=False)
        pytest.skip(reason)
    redis_server = RedisServer(binary, free_port())
    try:
        redis_server.start()
        yield redis_server
    finally:
        redis_server.stop()


@pytest.fixture
async def redis(server: RedisServer) -> AsyncIterator[Redis]:
    """A client that gives up quickly, as one used for buckets should."""
    client = Redis.from_url(server.url, socket_timeout=0.5, socket_connect_timeout=0.5)
    try:
        yield client
    finally:
        await client.aclose()


async def test_buckets_answer_from_memory_while_redis_is_down_and_from_redis_once_back(
    server: RedisServer, redis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="stockgraph.cache")
    prefix = f"stockgraph:test:{uuid.uuid4().hex}:"
    key = prefix + "acme"
    buckets = FallbackBuckets(
        primary=RedisBuckets(redis=redis, policy=POLICY, prefix=prefix),
        fallback=MemoryBuckets(policy=POLICY),
        retry_seconds=RETRY_SECONDS,
    )

    # Redis keeps the bucket.
    assert (await buckets.take("acme", 4.0)).available == pytest.approx(6.0)
    assert not buckets.degraded
    assert await redis.exists(key) == 1

    # Redis goes away: answers still come, from a bucket of this process.
    server.stop()
    during = await buckets.take("acme", 1.0)
    assert during.allowed
    assert during.available == pytest.approx(9.0)
    assert buckets.degraded
    assert (await buckets.take("acme", 1.0)).available == pytest.approx(8.0)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "Redis failed" in warnings[0].getMessage()

    # Redis is back (empty), but is left alone until retry_seconds have passed.
    server.start()
    assert (await buckets.take("acme", 1.0)).available == pytest.approx(7.0)
    assert buckets.degraded
    assert await redis.exists(key) == 0

    await asyncio.sleep(RETRY_SECONDS)
    after = await buckets.take("acme", 1.0)
    assert not buckets.degraded
    assert after.available == pytest.approx(9.0)
    assert await redis.exists(key) == 1
    assert float(await redis.hget(key, "a") or b"nan") == pytest.approx(9.0)
    assert any("answers again" in r.getMessage() for r in caplog.records)
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1


async def test_the_service_keeps_answering_through_a_redis_outage_and_uses_it_once_back(
    server: RedisServer, demo_database: str, tmp_path: Path
) -> None:
    copy = tmp_path / "stockgraph.db"
    shutil.copy(Path(demo_database.removeprefix("sqlite+aiosqlite:///")), copy)
    settings = make_settings(
        f"sqlite+aiosqlite:///{copy}", redis_url=server.url, redis_retry_seconds=RETRY_SECONDS
    )
    runtime = Runtime.build(settings)
    app = create_app(settings, runtime=runtime)
    token = runtime.tokens.issue(
        Principal(TenantId("acme"), f"outage-{uuid.uuid4().hex}", frozenset(Scope))
    ).access_token
    headers = {"Authorization": f"Bearer {token}"}
    levels = {"query": '{ inventoryLevels(skus: ["SKU-00001"]) { sku onHand } }'}
    watcher = Redis.from_url(server.url)

    async def answered(client: httpx.AsyncClient) -> dict[str, Any]:
        response = await client.post("/graphql", json=levels, headers=headers)
        assert response.status_code == 200
        body: dict[str, Any] = response.json()
        assert "errors" not in body and body["data"]["inventoryLevels"]
        return body

    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://sg") as client:
            await answered(client)
            buckets = await watcher.keys("*:bucket:*")
            assert buckets  # the caller's cost bucket lives in Redis

            server.stop()
            for _ in range(3):
                body = await answered(client)
                assert body["extensions"]["cost"]["throttleStatus"]["currentlyAvailable"] > 0
            ready = await client.get("/readyz")
            assert ready.status_code == 200
            assert "degraded" in ready.json()["checks"]["cache"]

            server.start()
            await watcher.aclose()
            watcher = Redis.from_url(server.url)  # a new server: the old connections are gone
            await asyncio.sleep(RETRY_SECONDS)
            await answered(client)
            assert await watcher.keys("*:bucket:*")  # spent in Redis again
            assert (await client.get("/readyz")).json()["checks"]["cache"] == "ok (redis)"
    await watcher.aclose()

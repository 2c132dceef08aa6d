"""Cost buckets outlive a Redis outage: answered from memory, then from Redis once it is back."""

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

import pytest
from redis.asyncio import Redis

from stockgraph.cache.buckets import FallbackBuckets, MemoryBuckets, RedisBuckets
from stockgraph.domain.bucket import BucketPolicy
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

"""Cost buckets kept in a real Redis, shared the way separate processes share them."""

from __future__ import annotations

import asyncio
import math
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from stockgraph.cache.buckets import RedisBuckets
from stockgraph.domain.bucket import BucketPolicy
from tests.services import redis_url

pytestmark = pytest.mark.redis

SLOW = BucketPolicy(capacity=100.0, restore_rate=1e-6)
"""Restores so slowly that nothing comes back during a test."""


@pytest.fixture
def prefix() -> str:
    return f"stockgraph:test:{uuid.uuid4().hex}:"


@pytest.fixture
async def redis() -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url())
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def other_redis() -> AsyncIterator[Redis]:
    """A second client with its own connections, as another process would have."""
    client = Redis.from_url(redis_url())
    try:
        yield client
    finally:
        await client.aclose()


async def test_a_take_is_allowed_while_the_bucket_holds_the_cost(redis: Redis, prefix: str) -> None:
    buckets = RedisBuckets(redis=redis, policy=SLOW, prefix=prefix)
    assert (await buckets.peek("acme")).available == 100.0

    taken = await buckets.take("acme", 70.0)
    assert (taken.allowed, taken.retry_after) == (True, 0.0)
    assert taken.available == pytest.approx(30.0)

    refused = await buckets.take("acme", 50.0)
    assert not refused.allowed
    assert refused.available == pytest.approx(30.0)
    assert refused.retry_after == pytest.approx(20.0 / SLOW.restore_rate, rel=1e-3)
    assert (await buckets.peek("acme")).available == pytest.approx(30.0)


async def test_a_refund_gives_back_points_but_never_beyond_capacity(
    redis: Redis, prefix: str
) -> None:
    buckets = RedisBuckets(redis=redis, policy=SLOW, prefix=prefix)
    await buckets.take("acme", 80.0)
    assert (await buckets.refund("acme", 30.0)).available == pytest.approx(50.0)
    assert (await buckets.refund("acme", 1e9)).available == 100.0
    assert (await buckets.peek("acme")).available == 100.0


async def test_a_cost_above_capacity_is_refused_for_ever_and_takes_nothing(
    redis: Redis, prefix: str
) -> None:
    buckets = RedisBuckets(redis=redis, policy=SLOW, prefix=prefix)
    refused = await buckets.take("acme", 101.0)
    assert (refused.allowed, refused.available, refused.retry_after) == (False, 100.0, math.inf)
    assert await redis.exists(prefix + "acme") == 0


async def test_peeking_at_an_unknown_client_writes_nothing(redis: Redis, prefix: str) -> None:
    buckets = RedisBuckets(redis=redis, policy=SLOW, prefix=prefix)
    assert (await buckets.peek("nobody")).available == 100.0
    assert await redis.exists(prefix + "nobody") == 0


async def test_negative_costs_are_refused_before_reaching_redis(redis: Redis, prefix: str) -> None:
    buckets = RedisBuckets(redis=redis, policy=SLOW, prefix=prefix)
    with pytest.raises(ValueError):
        await buckets.take("acme", -1.0)
    with pytest.raises(ValueError):
        await buckets.refund("acme", math.nan)


async def test_the_bucket_refills_at_the_restore_rate(redis: Redis, prefix: str) -> None:
    buckets = RedisBuckets(
        redis=redis, policy=BucketPolicy(capacity=10.0, restore_rate=20.0), prefix=prefix
    )
    await buckets.take("acme", 10.0)
    refused = await buckets.take("acme", 4.0)
    assert not refused.allowed
    await asyncio.sleep(refused.retry_after + 0.02)
    assert (await buckets.take("acme", 4.0)).allowed


async def test_two_processes_spend_from_one_bucket_per_client(
    redis: Redis, other_redis: Redis, prefix: str
) -> None:
    here = RedisBuckets(redis=redis, policy=SLOW, prefix=prefix)
    there = RedisBuckets(redis=other_redis, policy=SLOW, prefix=prefix)

    await here.take("acme", 60.0)
    refused = await there.take("acme", 60.0)
    assert not refused.allowed
    assert refused.available == pytest.approx(40.0)

    await there.refund("acme", 20.0)
    assert (await here.peek("acme")).available == pytest.approx(60.0)
    assert (await there.take("globex", 60.0)).allowed


async def test_concurrent_takes_never_overdraw_the_bucket(
    redis: Redis, other_redis: Redis, prefix: str
) -> None:
    policy = BucketPolicy(capacity=100.0, restore_rate=1e-9)
    cost = 7.0
    clients = [
        RedisBuckets(redis=client, policy=policy, prefix=prefix) for client in (redis, other_redis)
    ]
    outcomes = await asyncio.gather(
        *(clients[i % 2].take("acme", cost) for i in range(50)),
    )
    allowed = [t for t in outcomes if t.allowed]
    assert len(allowed) == math.floor(policy.capacity / cost)
    assert min(t.available for t in allowed) == pytest.approx(policy.capacity % cost, abs=1e-6)
    assert (await clients[0].peek("acme")).available == pytest.approx(2.0, abs=1e-6)


async def test_an_idle_bucket_vanishes_once_it_would_be_full_again(
    redis: Redis, prefix: str
) -> None:
    buckets = RedisBuckets(
        redis=redis, policy=BucketPolicy(capacity=1.0, restore_rate=10.0), prefix=prefix
    )
    await buckets.take("acme", 1.0)
    ttl = await redis.pttl(prefix + "acme")
    assert 0 < ttl <= 1_100

    deadline = asyncio.get_running_loop().time() + 3.0
    while await redis.exists(prefix + "acme"):
        assert asyncio.get_running_loop().time() < deadline, "the bucket never expired"
        await asyncio.sleep(0.05)
    assert (await buckets.peek("acme")).available == 1.0

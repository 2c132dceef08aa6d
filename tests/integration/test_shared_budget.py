"""WMS budgets kept in a real Redis: several processes together stay within one limit."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from stockgraph.cache.failover import Failover
from stockgraph.connectors.base import RatePolicy
from stockgraph.connectors.budget import Budget
from stockgraph.connectors.errors import RateLimited
from stockgraph.connectors.shared_budget import SharedBudget
from tests.services import redis_url

pytestmark = pytest.mark.redis


@pytest.fixture
async def clients() -> AsyncIterator[list[Redis]]:
    """Two clients with their own connections, as two processes would have."""
    made = [Redis.from_url(redis_url()) for _ in range(2)]
    try:
        yield made
    finally:
        for client in made:
            await client.aclose()


def _budgets(clients: list[Redis], policy: RatePolicy) -> list[SharedBudget]:
    key = f"stockgraph:test:budget:{uuid.uuid4().hex}"
    return [
        SharedBudget(local=Budget(policy=policy, instance_id="wms-1"), redis=r, key=key)
        for r in clients
    ]


async def test_two_processes_together_stay_within_one_limit(clients: list[Redis]) -> None:
    policy = RatePolicy(kind="requests_per_second", rate=20.0, burst=2.0)
    budgets = _budgets(clients, policy)
    started = time.monotonic()
    granted: list[float] = []

    async def call(budget: SharedBudget) -> None:
        await budget.acquire()
        granted.append(time.monotonic() - started)

    await asyncio.gather(*(call(budgets[i % 2]) for i in range(12)))
    granted.sort()
    # A bucket of 2 restored at 20 a second: by time t at most 2 + 20 t calls (plus slack
    # for the event loop waking late, never early).
    for count, at in enumerate(granted, start=1):
        assert count <= 2 + 20 * at + 1e-3, (count, at)
    assert granted[-1] >= (12 - 2) / 20 - 0.01


async def test_a_call_that_would_wait_past_its_deadline_is_refused_and_spends_nothing(
    clients: list[Redis],
) -> None:
    policy = RatePolicy(kind="requests_per_second", rate=5.0, burst=1.0)
    first, second = _budgets(clients, policy)
    await first.acquire()
    with pytest.raises(RateLimited) as refused:
        await second.acquire(deadline=time.monotonic() + 0.05)
    assert refused.value.retry_after == pytest.approx(0.2, abs=0.05)
    started = time.monotonic()
    await second.acquire()  # waits for one token, not for the refused call's as well
    assert time.monotonic() - started < 0.3


async def test_a_retry_after_seen_by_one_process_holds_back_the_other(
    clients: list[Redis],
) -> None:
    policy = RatePolicy(kind="requests_per_second", rate=100.0, burst=10.0)
    told, other = _budgets(clients, policy)
    told.pause(0.4)
    await told.flush()
    started = time.monotonic()
    await other.acquire()
    assert time.monotonic() - started >= 0.35


async def test_what_the_wms_reports_left_lowers_the_shared_level(clients: list[Redis]) -> None:
    policy = RatePolicy(kind="credits", rate=100.0, burst=1000.0)
    told, other = _budgets(clients, policy)
    told.correct(remaining=0.0, restore_rate=50.0)
    await told.flush()
    with pytest.raises(RateLimited) as refused:
        await other.acquire(100.0, deadline=time.monotonic())
    # 100 credits at the reported 50 a second.
    assert refused.value.retry_after == pytest.approx(2.0, abs=0.1)
    assert other.remaining < 5.0


async def test_a_cancelled_waiter_gives_its_turn_back(clients: list[Redis]) -> None:
    policy = RatePolicy(kind="requests_per_second", rate=4.0, burst=1.0)
    first, second = _budgets(clients, policy)
    await first.acquire()
    waiting = asyncio.ensure_future(second.acquire())  # reserved for 0.25 s from now
    await asyncio.sleep(0.05)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await second.flush()
    started = time.monotonic()
    await first.acquire()
    assert time.monotonic() - started < 0.3  # one token's wait, not two


async def test_without_redis_the_instance_falls_back_to_its_own_budget(unused_port: int) -> None:
    dead = Redis.from_url(
        f"redis://127.0.0.1:{unused_port}/0", socket_connect_timeout=0.2, socket_timeout=0.2
    )
    failover = Failover(name="WMS budgets", retry_seconds=60.0)
    policy = RatePolicy(kind="requests_per_second", rate=5.0, burst=2.0)
    budget = SharedBudget(
        local=Budget(policy=policy, instance_id="wms-1"), redis=dead, key="k", failover=failover
    )
    try:
        await budget.acquire()
        await budget.acquire()
        assert failover.degraded
        with pytest.raises(RateLimited):  # the local bucket of 2 is spent
            await budget.acquire(deadline=time.monotonic() + 0.01)
    finally:
        await dead.aclose()


@pytest.fixture
def unused_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port

"""The rate budget mirrors the WMS's limiter: spacing, corrections, pauses and deadlines."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stockgraph.connectors.base import RatePolicy
from stockgraph.connectors.budget import Budget
from stockgraph.connectors.errors import RateLimited
from tests.connectors.test_runtime import now, run_virtual


def budget(kind: Any, *, rate: float, burst: float) -> Budget:
    return Budget(
        policy=RatePolicy(kind=kind, rate=rate, burst=burst),
        instance_id="wms-1",
        clock=asyncio.get_running_loop().time,
    )


def test_credit_calls_are_spaced_by_their_cost_and_the_restore_rate() -> None:
    async def main() -> list[float]:
        credits = budget("credits", rate=1.0, burst=10.0)
        granted = []
        for _ in range(5):
            await credits.acquire(4.0)
            granted.append(now())
        return granted

    assert run_virtual(main) == pytest.approx([0.0, 0.0, 2.0, 6.0, 10.0])


def test_wms_figures_below_our_estimate_slow_us_down() -> None:
    async def main() -> list[float]:
        credits = budget("credits", rate=1.0, burst=10.0)
        granted = []
        await credits.acquire(4.0)
        credits.correct(remaining=1.0)
        await credits.acquire(4.0)
        granted.append(now())
        credits.correct(remaining=0.0, restore_rate=0.5)
        await credits.acquire(4.0)
        granted.append(now())
        return granted

    assert run_virtual(main) == pytest.approx([3.0, 11.0])


def test_wms_figures_above_our_estimate_never_raise_it() -> None:
    async def main() -> tuple[float, float]:
        credits = budget("credits", rate=1.0, burst=10.0)
        await credits.acquire(4.0)
        credits.correct(remaining=100.0, restore_rate=50.0)
        return credits.remaining, credits.rate

    assert run_virtual(main) == (pytest.approx(6.0), 1.0)


def test_a_pause_holds_back_every_waiting_and_new_call_until_it_ends() -> None:
    async def main() -> list[float]:
        calls = budget("requests_per_second", rate=100.0, burst=100.0)
        granted: list[float] = []

        async def call(delay: float) -> None:
            await asyncio.sleep(delay)
            await calls.acquire()
            granted.append(now())

        calls.pause(2.0)
        calls.pause(1.0)
        await asyncio.gather(call(0.0), call(0.5), call(2.5))
        return granted

    assert run_virtual(main) == pytest.approx([2.0, 2.0, 2.5])


def test_a_deadline_shorter_than_the_wait_is_refused_at_once_and_spends_nothing() -> None:
    async def main() -> tuple[float, float, float, list[float]]:
        credits = budget("credits", rate=1.0, burst=10.0)
        await credits.acquire(8.0)
        with pytest.raises(RateLimited) as refused:
            await credits.acquire(5.0, deadline=now() + 2.0)
        refused_at, left = now(), credits.remaining
        await credits.acquire(5.0, deadline=now() + 3.0)
        return refused.value.retry_after, refused_at, left, [now()]

    retry_after, refused_at, left, granted = run_virtual(main)
    assert retry_after == pytest.approx(3.0)
    assert refused_at == 0.0
    assert left == pytest.approx(2.0)
    assert granted == [pytest.approx(3.0)]


def test_a_pause_beyond_the_deadline_refuses_calls_already_waiting() -> None:
    async def main() -> tuple[float, float]:
        credits = budget("credits", rate=1.0, burst=1.0)
        await credits.acquire(1.0)
        waiting = asyncio.ensure_future(credits.acquire(1.0, deadline=5.0))
        await asyncio.sleep(0.5)
        credits.pause(10.0)
        with pytest.raises(RateLimited) as refused:
            await waiting
        return refused.value.retry_after, now()

    retry_after, refused_at = run_virtual(main)
    assert retry_after == pytest.approx(9.5)
    assert refused_at == pytest.approx(1.0)


def test_a_polling_budget_allows_one_call_per_interval_whatever_the_burst() -> None:
    async def main() -> list[float]:
        polls = budget("polling_interval", rate=0.2, burst=50.0)
        granted: list[float] = []

        async def poll() -> None:
            await polls.acquire(cost=10.0)
            granted.append(now())

        await asyncio.gather(*(poll() for _ in range(4)))
        return granted

    assert run_virtual(main) == pytest.approx([0.0, 5.0, 10.0, 15.0])


def test_waiting_calls_are_served_in_arrival_order() -> None:
    async def main() -> list[int]:
        credits = budget("credits", rate=1.0, burst=10.0)
        await credits.acquire(10.0)
        order: list[int] = []

        async def call(n: int, cost: float) -> None:
            await credits.acquire(cost)
            order.append(n)

        await asyncio.gather(call(1, 8.0), call(2, 1.0), call(3, 1.0))
        return order

    assert run_virtual(main) == [1, 2, 3]


def test_a_concurrent_burst_drains_at_exactly_the_declared_rate() -> None:
    async def main() -> float:
        calls = budget("requests_per_second", rate=5.0, burst=3.0)
        await asyncio.gather(*(calls.acquire() for _ in range(13)))
        return now()

    assert run_virtual(main) == pytest.approx(2.0)


@pytest.mark.parametrize(
    ("kind", "rate", "burst", "cost"),
    [
        ("credits", 1.0, 10.0, 11.0),
        ("credits", 1.0, 10.0, -1.0),
        ("requests_per_second", 0.0, 10.0, 1.0),
        ("requests_per_second", 1.0, 0.5, 1.0),
    ],
)
def test_settings_or_costs_that_could_never_be_met_are_refused(
    kind: str, rate: float, burst: float, cost: float
) -> None:
    async def main() -> None:
        with pytest.raises(ValueError):
            await budget(kind, rate=rate, burst=burst).acquire(cost)

    run_virtual(main)


@settings(max_examples=150, deadline=None)
@given(
    rate=st.floats(min_value=0.25, max_value=50.0),
    burst=st.integers(min_value=1, max_value=20),
    callers=st.lists(
        st.lists(st.floats(min_value=0.0, max_value=2.0), min_size=1, max_size=10),
        min_size=1,
        max_size=6,
    ),
)
def test_a_requests_per_second_budget_never_lets_more_than_burst_plus_rate_t_through(
    rate: float, burst: int, callers: list[list[float]]
) -> None:
    async def main() -> list[float]:
        calls = budget("requests_per_second", rate=rate, burst=float(burst))
        granted: list[float] = []

        async def caller(gaps: list[float]) -> None:
            for gap in gaps:
                await asyncio.sleep(gap)
                await calls.acquire()
                granted.append(now())

        await asyncio.gather(*(caller(gaps) for gaps in callers))
        return sorted(granted)

    granted = run_virtual(main)
    assert len(granted) == sum(len(gaps) for gaps in callers)
    for first in range(len(granted)):
        for last in range(first, len(granted)):
            window = granted[last] - granted[first]
            assert last - first + 1 <= burst + rate * window + 1e-6


def test_a_cancelled_waiter_leaves_its_turn_to_those_behind_it() -> None:
    async def main() -> float:
        b = budget("polling_interval", rate=0.5, burst=1)  # one call every 2 s
        await b.acquire()
        first = asyncio.ensure_future(b.acquire())  # due at t = 2
        second = asyncio.ensure_future(b.acquire())  # due at t = 4 behind it
        await asyncio.sleep(1)
        first.cancel()
        await asyncio.gather(first, return_exceptions=True)
        await second
        return now()

    assert run_virtual(main) == pytest.approx(2.0)

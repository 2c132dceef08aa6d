"""The circuit breaker on its own: what opens it, what it refuses, how it recovers."""

from __future__ import annotations

import asyncio

import pytest

from stockgraph.connectors.breaker import CircuitBreaker
from stockgraph.connectors.errors import (
    CircuitOpen,
    FatalError,
    MalformedPayload,
    RateLimited,
    RetriableError,
)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Wms:
    """An operation that fails or succeeds on command and counts how often it ran."""

    def __init__(self) -> None:
        self.runs = 0
        self.error: Exception | None = None

    async def __call__(self) -> str:
        self.runs += 1
        if self.error is not None:
            raise self.error
        return "ok"


def make(clock: Clock, **kwargs: float) -> tuple[CircuitBreaker, list[float]]:
    opened: list[float] = []
    breaker = CircuitBreaker(
        instance_id="wms-1",
        failure_threshold=int(kwargs.get("failure_threshold", 3)),
        recovery_timeout=kwargs.get("recovery_timeout", 10.0),
        clock=clock,
        on_open=lambda: opened.append(clock()),
    )
    return breaker, opened


async def fail_times(breaker: CircuitBreaker, wms: Wms, n: int) -> None:
    for _ in range(n):
        with pytest.raises(RetriableError):
            await breaker.call(wms)


async def test_n_consecutive_failures_open_the_breaker_which_then_refuses_without_calling() -> None:
    clock = Clock()
    breaker, opened = make(clock)
    wms = Wms()
    wms.error = RetriableError("503")
    await fail_times(breaker, wms, 2)
    assert breaker.state == "closed"
    await fail_times(breaker, wms, 1)
    assert breaker.state == "open"
    assert opened == [100.0]

    with pytest.raises(CircuitOpen, match=r"wms-1: circuit open; retry in 10\.0s") as refused:
        await breaker.call(wms)
    assert refused.value.instance_id == "wms-1"
    assert wms.runs == 3


async def test_a_success_resets_the_count_of_consecutive_failures() -> None:
    breaker, _ = make(Clock())
    wms = Wms()
    wms.error = RetriableError("503")
    await fail_times(breaker, wms, 2)
    wms.error = None
    assert await breaker.call(wms) == "ok"
    wms.error = RetriableError("503")
    await fail_times(breaker, wms, 2)
    assert breaker.state == "closed"
    assert breaker.consecutive_failures == 2


async def test_the_breaker_half_opens_after_its_timeout_and_closes_on_a_good_trial() -> None:
    clock = Clock()
    breaker, _ = make(clock)
    wms = Wms()
    wms.error = RetriableError("503")
    await fail_times(breaker, wms, 3)
    clock.now += 9.9
    assert breaker.state == "open"
    clock.now += 0.1
    assert breaker.state == "half_open"

    wms.error = None
    assert await breaker.call(wms) == "ok"
    assert breaker.state == "closed"
    assert breaker.consecutive_failures == 0


async def test_a_failed_trial_opens_the_breaker_for_another_full_timeout() -> None:
    clock = Clock()
    breaker, opened = make(clock)
    wms = Wms()
    wms.error = RetriableError("timed out")
    await fail_times(breaker, wms, 3)
    clock.now += 10.0
    await fail_times(breaker, wms, 1)
    assert breaker.state == "open"
    assert opened == [100.0, 110.0]
    clock.now += 9.0
    with pytest.raises(CircuitOpen):
        await breaker.call(wms)
    assert wms.runs == 4


async def test_only_one_trial_call_goes_through_while_half_open() -> None:
    clock = Clock()
    breaker, _ = make(clock, failure_threshold=1)
    wms = Wms()
    wms.error = RetriableError("503")
    await fail_times(breaker, wms, 1)
    clock.now += 10.0
    release = asyncio.Event()

    async def slow_trial() -> str:
        await release.wait()
        return "ok"

    trial = asyncio.ensure_future(breaker.call(slow_trial))
    await asyncio.sleep(0)
    with pytest.raises(CircuitOpen, match="trial call in flight"):
        await breaker.call(wms)
    release.set()
    assert await trial == "ok"
    assert breaker.state == "closed"
    assert wms.runs == 1


@pytest.mark.parametrize(
    "error",
    [FatalError("404"), MalformedPayload("garbage"), RateLimited("429", retry_after=1.0)],
)
async def test_client_errors_and_throttles_are_not_failures(error: Exception) -> None:
    breaker, opened = make(Clock(), failure_threshold=1)
    wms = Wms()
    wms.error = error
    for _ in range(5):
        with pytest.raises(type(error)):
            await breaker.call(wms)
    assert breaker.state == "closed"
    assert opened == []


async def test_a_client_error_on_the_trial_proves_the_wms_answers_and_closes_the_breaker() -> None:
    clock = Clock()
    breaker, _ = make(clock, failure_threshold=1)
    wms = Wms()
    wms.error = RetriableError("503")
    await fail_times(breaker, wms, 1)
    clock.now += 10.0
    wms.error = FatalError("404")
    with pytest.raises(FatalError):
        await breaker.call(wms)
    assert breaker.state == "closed"


async def test_a_throttled_or_cancelled_trial_leaves_the_next_caller_to_try() -> None:
    clock = Clock()
    breaker, _ = make(clock, failure_threshold=1)
    wms = Wms()
    wms.error = RetriableError("503")
    await fail_times(breaker, wms, 1)
    clock.now += 10.0

    wms.error = RateLimited("429", retry_after=1.0)
    with pytest.raises(RateLimited):
        await breaker.call(wms)
    assert breaker.state == "half_open"

    trial = asyncio.ensure_future(breaker.call(asyncio.Event().wait))
    await asyncio.sleep(0)
    trial.cancel()
    with pytest.raises(asyncio.CancelledError):
        await trial
    assert breaker.state == "half_open"

    wms.error = None
    assert await breaker.call(wms) == "ok"
    assert breaker.state == "closed"


@pytest.mark.parametrize(
    "kwargs",
    [{"failure_threshold": 0}, {"recovery_timeout": -1.0}, {"recovery_timeout": float("nan")}],
)
def test_a_breaker_refuses_nonsense_settings(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        CircuitBreaker(**kwargs)  # type: ignore[arg-type]

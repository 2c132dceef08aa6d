"""The call chain of one WMS instance: budget, HTTP, classification, retry, breaker, metrics.

Every test runs on a virtual-time event loop: whenever nothing is ready to run, its clock
jumps to the next timer, so a 30-second back-off takes no real time and request arrival times
are exact. The runtime gets that loop's clock; its sleeps are the loop's own.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Callable, Coroutine
from dataclasses import replace
from typing import Any, TypeVar

import httpx
import pytest
from prometheus_client import CollectorRegistry

from stockgraph.connectors.base import DialectSpec, RatePolicy
from stockgraph.connectors.errors import (
    CircuitOpen,
    FatalError,
    MalformedPayload,
    RateLimited,
    RetriableError,
)
from stockgraph.connectors.metrics import ConnectorMetrics
from stockgraph.connectors.retry import RetryPolicy
from stockgraph.connectors.runtime import InstanceRuntime, classify, retry_after_seconds

T = TypeVar("T")
Handler = Callable[[httpx.Request], Coroutine[None, None, httpx.Response]]


class _JumpingSelector(selectors.SelectSelector):
    def __init__(self, loop: VirtualTimeLoop) -> None:
        super().__init__()
        self._loop = loop

    def select(self, timeout: float | None = None) -> list[Any]:
        ready = super().select(0)
        if ready or timeout == 0:
            return ready
        if timeout is None:
            raise RuntimeError("deadlock: every task waits and no timer is set")
        self._loop.now += timeout
        return []


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop whose clock jumps to the next timer whenever nothing is ready."""

    def __init__(self) -> None:
        self.now = 0.0
        super().__init__(selector=_JumpingSelector(self))

    def time(self) -> float:
        return self.now


def run_virtual(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run ``main()`` to completion on a fresh virtual-time loop starting at t = 0."""
    loop = VirtualTimeLoop()
    try:
        return loop.run_until_complete(main())
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


def now() -> float:
    return asyncio.get_running_loop().time()


def spec(
    kind: str = "requests_per_second", *, rate: float = 1000.0, burst: float = 1000.0
) -> DialectSpec:
    return DialectSpec(
        name="test",
        push=False,
        poll=True,
        max_batch=50,
        rate=RatePolicy(kind=kind, rate=rate, burst=burst),  # type: ignore[arg-type]
    )


class FakeWms:
    """Answers each request with the next scripted answer (the last one repeats), noting
    when it arrived on the loop's clock."""

    def __init__(self, *answers: int | httpx.Response | Exception, latency: float = 0.0) -> None:
        self.answers = list(answers) or [200]
        self.latency = latency
        self.arrivals: list[float] = []
        self.in_flight = 0
        self.most_in_flight = 0

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.arrivals.append(now())
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if self.latency:
                await asyncio.sleep(self.latency)
        finally:
            self.in_flight -= 1
        if isinstance(answer, Exception):
            raise answer
        if isinstance(answer, httpx.Response):
            return answer
        return httpx.Response(answer, json={"ok": answer < 400})

    @property
    def calls(self) -> int:
        return len(self.arrivals)


def make_runtime(wms: Handler, **overrides: Any) -> InstanceRuntime:
    options: dict[str, Any] = {
        "instance_id": "wms-1",
        "base_url": "https://wms.test",
        "spec": spec(),
        "transport": httpx.MockTransport(wms),
        "clock": asyncio.get_running_loop().time,
        "retry": RetryPolicy(attempts=4, jitter=lambda: 0.0),
    }
    options.update(overrides)
    return InstanceRuntime(**options)


def throttled(retry_after: str) -> httpx.Response:
    return httpx.Response(429, headers={"Retry-After": retry_after})


# --- Retry-After ----------------------------------------------------------------------------


def test_after_a_429_no_coroutine_of_the_instance_calls_before_retry_after_has_passed() -> None:
    wms = FakeWms(throttled("2"), 200)

    async def main() -> list[float]:
        runtime = make_runtime(wms)

        async def later(delay: float) -> None:
            await asyncio.sleep(delay)
            await runtime.request("GET", "/levels")

        try:
            await asyncio.gather(
                runtime.request("GET", "/levels"), later(0.5), later(1.0), later(1.9)
            )
        finally:
            await runtime.aclose()
        return wms.arrivals

    arrivals = run_virtual(main)
    assert arrivals[0] == 0.0
    assert len(arrivals) == 5
    assert all(t >= 2.0 - 1e-9 for t in arrivals[1:])


def test_a_throttle_longer_than_the_call_may_wait_gives_up_and_holds_back_later_calls() -> None:
    wms = FakeWms(throttled("60"), 200)

    async def main() -> tuple[RateLimited, RateLimited, float]:
        runtime = make_runtime(wms, max_wait=10.0)
        try:
            with pytest.raises(RateLimited) as first:
                await runtime.request("GET", "/levels")
            await asyncio.sleep(5.0)
            with pytest.raises(RateLimited) as second:
                await runtime.request("GET", "/levels")
            await runtime.request("GET", "/levels", max_wait=60.0)
        finally:
            await runtime.aclose()
        return first.value, second.value, now()

    first, second, finished = run_virtual(main)
    assert first.retry_after == 60.0
    assert second.retry_after == pytest.approx(55.0)
    assert wms.arrivals == [0.0, pytest.approx(60.0)]
    assert finished == pytest.approx(60.0)


def test_a_throttle_found_in_the_body_by_the_dialect_is_paused_for_and_retried() -> None:
    wms = FakeWms(httpx.Response(200, json={"errors": [{"code": "THROTTLED"}]}), 200)

    def check(response: httpx.Response) -> None:
        if response.json().get("errors"):
            raise RateLimited("throttled", retry_after=3.0)

    async def main() -> httpx.Response:
        runtime = make_runtime(wms)
        try:
            return await runtime.request("POST", "/graphql", check=check)
        finally:
            await runtime.aclose()

    response = run_virtual(main)
    assert response.json() == {"ok": True}
    assert wms.arrivals == [0.0, 3.0]


# --- retries --------------------------------------------------------------------------------


def test_server_errors_are_retried_exactly_attempts_times_then_raised() -> None:
    wms = FakeWms(503)

    async def main() -> InstanceRuntime:
        runtime = make_runtime(wms, retry=RetryPolicy(attempts=4, base=0.1, jitter=lambda: 1.0))
        try:
            with pytest.raises(RetriableError, match="HTTP 503"):
                await runtime.request("GET", "/levels")
        finally:
            await runtime.aclose()
        return runtime

    runtime = run_virtual(main)
    assert wms.arrivals == pytest.approx([0.0, 0.1, 0.3, 0.7])
    stats = runtime.stats()
    assert (stats.calls, stats.errors, stats.retries) == (4, 4, 3)
    assert stats.last_error == "wms-1: HTTP 503"


def test_backoff_never_waits_longer_than_the_cap() -> None:
    wms = FakeWms(500)

    async def main() -> None:
        policy = RetryPolicy(attempts=5, base=1.0, cap=1.5, jitter=lambda: 1.0)
        runtime = make_runtime(wms, retry=policy)
        try:
            with pytest.raises(RetriableError):
                await runtime.request("GET", "/levels")
        finally:
            await runtime.aclose()

    run_virtual(main)
    assert wms.arrivals == pytest.approx([0.0, 1.0, 2.5, 4.0, 5.5])


def test_a_server_error_then_success_returns_the_answer() -> None:
    wms = FakeWms(502, 200)

    async def main() -> httpx.Response:
        runtime = make_runtime(wms)
        try:
            return await runtime.request("GET", "/levels")
        finally:
            await runtime.aclose()

    assert run_virtual(main).status_code == 200
    assert wms.calls == 2


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422])
def test_client_errors_are_not_retried(status: int) -> None:
    wms = FakeWms(status)

    async def main() -> None:
        runtime = make_runtime(wms)
        try:
            with pytest.raises(FatalError, match=f"HTTP {status}"):
                await runtime.request("GET", "/levels")
        finally:
            await runtime.aclose()

    run_virtual(main)
    assert wms.calls == 1


def test_a_malformed_body_reported_by_the_dialect_is_not_retried() -> None:
    wms = FakeWms(httpx.Response(200, content=b"<html>"))

    def check(response: httpx.Response) -> None:
        raise MalformedPayload("not JSON", raw=response.content)

    async def main() -> InstanceRuntime:
        runtime = make_runtime(wms)
        try:
            with pytest.raises(MalformedPayload):
                await runtime.request("GET", "/levels", check=check)
        finally:
            await runtime.aclose()
        return runtime

    runtime = run_virtual(main)
    assert wms.calls == 1
    assert runtime.breaker.state == "closed"


def test_timeouts_and_dropped_connections_are_retriable() -> None:
    wms = FakeWms(httpx.ReadTimeout("slow"), httpx.ConnectError("refused"), 200)

    async def main() -> InstanceRuntime:
        runtime = make_runtime(wms)
        try:
            await runtime.request("GET", "/levels")
        finally:
            await runtime.aclose()
        return runtime

    runtime = run_virtual(main)
    assert wms.calls == 3
    assert runtime.stats().last_error == "wms-1: ConnectError"


# --- circuit breaker ------------------------------------------------------------------------


def test_the_breaker_opens_refuses_without_calling_half_opens_and_closes_on_success() -> None:
    wms = FakeWms(503, 503, 503, 200)

    async def main() -> list[str]:
        runtime = make_runtime(
            wms, retry=RetryPolicy(attempts=1), failure_threshold=3, recovery_timeout=10.0
        )
        states: list[str] = []
        try:
            for _ in range(3):
                with pytest.raises(RetriableError):
                    await runtime.request("GET", "/levels")
            states.append(runtime.breaker.state)
            with pytest.raises(CircuitOpen):
                await runtime.request("GET", "/levels")
            assert wms.calls == 3
            await asyncio.sleep(10.0)
            states.append(runtime.breaker.state)
            await runtime.request("GET", "/levels")
            states.append(runtime.stats().circuit_state)
        finally:
            await runtime.aclose()
        return states

    assert run_virtual(main) == ["open", "half_open", "closed"]
    assert wms.calls == 4


def test_a_failed_trial_call_opens_the_breaker_again() -> None:
    wms = FakeWms(httpx.ConnectTimeout("down"))

    async def main() -> list[str]:
        runtime = make_runtime(
            wms, retry=RetryPolicy(attempts=1), failure_threshold=2, recovery_timeout=5.0
        )
        states: list[str] = []
        try:
            for _ in range(2):
                with pytest.raises(RetriableError, match="timed out"):
                    await runtime.request("GET", "/levels")
            await asyncio.sleep(5.0)
            states.append(runtime.breaker.state)
            with pytest.raises(RetriableError):
                await runtime.request("GET", "/levels")
            states.append(runtime.breaker.state)
            with pytest.raises(CircuitOpen):
                await runtime.request("GET", "/levels")
        finally:
            await runtime.aclose()
        return states

    assert run_virtual(main) == ["half_open", "open"]
    assert wms.calls == 3


def test_client_errors_and_throttles_never_open_the_breaker() -> None:
    wms = FakeWms(404, 404, 404, throttled("1"), throttled("1"), throttled("1"), 404)

    async def main() -> str:
        runtime = make_runtime(
            wms, retry=RetryPolicy(attempts=1), failure_threshold=2, recovery_timeout=60.0
        )
        try:
            for _ in range(7):
                with pytest.raises((FatalError, RateLimited)):
                    await runtime.request("GET", "/levels")
        finally:
            await runtime.aclose()
        return runtime.breaker.state

    assert run_virtual(main) == "closed"
    assert wms.calls == 7


def test_retries_stop_once_another_caller_has_opened_the_breaker() -> None:
    wms = FakeWms(503)

    async def main() -> None:
        runtime = make_runtime(
            wms,
            retry=RetryPolicy(attempts=4, base=1.0, jitter=lambda: 1.0),
            failure_threshold=1,
            recovery_timeout=60.0,
        )

        async def later() -> None:
            await asyncio.sleep(0.5)
            await runtime.request("GET", "/levels")

        try:
            first, second = await asyncio.gather(
                runtime.request("GET", "/levels"), later(), return_exceptions=True
            )
        finally:
            await runtime.aclose()
        assert isinstance(first, RetriableError)
        assert isinstance(second, CircuitOpen)

    run_virtual(main)
    assert wms.arrivals == pytest.approx([0.0, 0.5, 1.0, 1.5, 3.0, 3.5, 7.0])


# --- budget ---------------------------------------------------------------------------------


def test_a_deadline_shorter_than_the_budget_wait_raises_rate_limited_without_calling() -> None:
    wms = FakeWms(200)

    async def main() -> tuple[RateLimited, InstanceRuntime]:
        runtime = make_runtime(wms, spec=spec("polling_interval", rate=0.1, burst=1))
        try:
            await runtime.request("GET", "/events")
            with pytest.raises(RateLimited) as refused:
                await runtime.request("GET", "/events", max_wait=5.0)
        finally:
            await runtime.aclose()
        return refused.value, runtime

    refused, runtime = run_virtual(main)
    assert refused.retry_after == pytest.approx(10.0)
    assert wms.calls == 1
    assert runtime.stats().errors == 1


def test_inquiries_spend_their_own_limit_and_leave_the_poll_interval_to_polls() -> None:
    wms = FakeWms(200)
    polled = replace(
        spec("polling_interval", rate=0.1, burst=1),
        inquiries=RatePolicy(kind="requests_per_second", rate=1.0, burst=2.0),
    )

    async def main() -> list[float]:
        runtime = make_runtime(wms, spec=polled)
        try:
            await runtime.request("GET", "/mailbox")  # the poll, at 0
            # An inquiry goes at once although the next poll is 10 s away...
            await runtime.request("POST", "/inquiry", inquiry=True)
            assert runtime.budget.remaining == pytest.approx(0.0)
            assert runtime.inquiry_budget.remaining == pytest.approx(1.0)
            with pytest.raises(RateLimited):  # ...and the poll still waits for its interval
                await runtime.request("GET", "/mailbox", max_wait=5.0)
        finally:
            await runtime.aclose()
        return wms.arrivals

    assert run_virtual(main) == [0.0, 0.0]


def test_a_throttled_inquiry_holds_back_inquiries_not_polls() -> None:
    wms = FakeWms(throttled("3"), 200)
    polled = replace(
        spec("polling_interval", rate=0.1, burst=1),
        inquiries=RatePolicy(kind="requests_per_second", rate=1.0, burst=2.0),
    )

    async def main() -> list[float]:
        runtime = make_runtime(wms, spec=polled)
        try:
            inquiry = asyncio.ensure_future(runtime.request("POST", "/inquiry", inquiry=True))
            await asyncio.sleep(0.5)
            await runtime.request("GET", "/mailbox")  # not held back by the inquiry's 429
            await inquiry
        finally:
            await runtime.aclose()
        return wms.arrivals

    assert run_virtual(main) == [0.0, 0.5, pytest.approx(3.0)]


def test_credits_spent_follow_the_cost_of_each_call_and_the_wms_figures() -> None:
    wms = FakeWms(200)

    async def main() -> list[float]:
        runtime = make_runtime(wms, spec=spec("credits", rate=1.0, burst=10.0))
        try:
            await runtime.request("GET", "/levels", cost=4)
            runtime.report_budget(remaining=0.0)
            await runtime.request("GET", "/levels", cost=4)
            assert runtime.stats().budget_remaining == pytest.approx(0.0)
        finally:
            await runtime.aclose()
        return wms.arrivals

    assert run_virtual(main) == [0.0, pytest.approx(4.0)]


def test_a_call_costing_more_than_the_whole_budget_is_refused_as_a_programming_error() -> None:
    async def main() -> None:
        runtime = make_runtime(FakeWms(200), spec=spec("credits", rate=1.0, burst=10.0))
        try:
            with pytest.raises(ValueError, match="never fit"):
                await runtime.request("GET", "/levels", cost=11)
        finally:
            await runtime.aclose()

    run_virtual(main)


# --- bulkhead and metrics -------------------------------------------------------------------


def test_no_more_than_max_connections_requests_are_in_flight() -> None:
    wms = FakeWms(200, latency=1.0)

    async def main() -> float:
        runtime = make_runtime(wms, max_connections=2)
        try:
            await asyncio.gather(*(runtime.request("GET", f"/levels/{i}") for i in range(6)))
        finally:
            await runtime.aclose()
        return now()

    assert run_virtual(main) == pytest.approx(3.0)
    assert wms.most_in_flight == 2


def test_metrics_count_calls_failures_retries_throttles_and_breaker_opens() -> None:
    registry = CollectorRegistry()
    wms = FakeWms(throttled("1"), 503, 200, 500)

    async def main() -> InstanceRuntime:
        runtime = make_runtime(
            wms,
            metrics=ConnectorMetrics(registry=registry),
            retry=RetryPolicy(attempts=3, jitter=lambda: 0.0),
            failure_threshold=1,
        )
        try:
            await runtime.request("GET", "/levels")
            with pytest.raises(RetriableError):
                await runtime.request("GET", "/levels")
            with pytest.raises(CircuitOpen):
                await runtime.request("GET", "/levels")
        finally:
            await runtime.aclose()
        return runtime

    runtime = run_virtual(main)

    def sample(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(
            f"stockgraph_connector_{name}", {"instance": "wms-1", **labels}
        )

    assert sample("calls_total") == 6
    assert sample("failures_total", error="rate_limited") == 1
    assert sample("failures_total", error="retriable") == 4
    assert sample("retries_total") == 4
    assert sample("throttled_total") == 1
    assert sample("breaker_opens_total") == 1
    assert sample("refused_total", reason="circuit_open") == 1
    assert sample("request_duration_seconds_count") == 6
    stats = runtime.stats()
    assert (stats.calls, stats.errors, stats.retries, stats.throttled) == (6, 6, 4, 1)
    assert stats.circuit_state == "open"
    assert stats.last_error is not None and "circuit open" in stats.last_error


def test_runtimes_without_a_registry_still_keep_their_stats() -> None:
    async def main() -> InstanceRuntime:
        runtime = make_runtime(FakeWms(200), spec=spec("credits", rate=1.0, burst=10.0))
        try:
            await runtime.request("GET", "/levels", cost=3)
        finally:
            await runtime.aclose()
        return runtime

    stats = run_virtual(main).stats()
    assert (stats.calls, stats.errors, stats.last_error) == (1, 0, None)
    assert stats.budget_remaining == pytest.approx(7.0)


# --- classification and the retry policy on their own ---------------------------------------


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (429, RateLimited),
        (500, RetriableError),
        (503, RetriableError),
        (408, RetriableError),
        (400, FatalError),
        (404, FatalError),
    ],
)
def test_answers_are_classified_by_status(status: int, error: type[Exception]) -> None:
    with pytest.raises(error):
        classify(httpx.Response(status), instance_id="wms-1")
    classify(httpx.Response(200), instance_id="wms-1")


def test_retry_after_reads_seconds_and_falls_back_on_nonsense() -> None:
    assert retry_after_seconds("2.5") == 2.5
    assert retry_after_seconds("-3") == 0.0
    assert retry_after_seconds("soon", default=4.0) == 4.0
    assert retry_after_seconds("nan", default=4.0) == 4.0


def test_full_jitter_backoff_stays_between_zero_and_the_capped_exponential() -> None:
    draws = iter([0.0, 0.5, 1.0, 1.0])
    policy = RetryPolicy(base=0.5, cap=1.5, jitter=lambda: next(draws))
    assert [policy.backoff(n) for n in (1, 2, 3, 4)] == [0.0, 0.5, 1.5, 1.5]


def test_backoff_after_a_throttle_is_at_least_retry_after_even_beyond_the_cap() -> None:
    policy = RetryPolicy(base=0.1, cap=1.0, jitter=lambda: 1.0)
    assert policy.backoff(1, RateLimited("slow down", retry_after=7.0)) == 7.0


@pytest.mark.parametrize("kwargs", [{"attempts": 0}, {"base": -1.0}, {"cap": float("inf")}])
def test_a_retry_policy_refuses_nonsense_settings(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)


async def test_the_retry_policy_never_retries_a_fatal_error() -> None:
    slept: list[float] = []
    calls = 0

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    async def attempt() -> str:
        nonlocal calls
        calls += 1
        raise FatalError("bad request")

    with pytest.raises(FatalError):
        await RetryPolicy(sleep=sleep).run(attempt)
    assert (calls, slept) == (1, [])


async def test_the_retry_policy_returns_the_first_success_after_retriable_failures() -> None:
    slept: list[float] = []
    outcomes: list[Exception | str] = [
        RetriableError("blip"),
        RateLimited("slow", retry_after=2),
        "ok",
    ]

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    async def attempt() -> str:
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    result = await RetryPolicy(sleep=sleep, base=0.1, jitter=lambda: 1.0).run(attempt)
    assert result == "ok"
    assert slept == [0.1, 2.0]

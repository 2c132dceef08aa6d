"""The one path every call to a WMS instance takes.

``InstanceRuntime.request`` is the only way a dialect reaches its WMS::

    circuit breaker ─► retry policy ─► budget ─► bulkhead ─► HTTP client ─► classification
    (breaker.py)       (retry.py)      (budget.py)            (httpx over aiohttp, or an
                                                               injected transport)

1. The breaker refuses at once (``CircuitOpen``) while the instance is known to be down.
2. The retry policy runs attempts; only ``RetriableError`` is tried again, with capped,
   jittered backoff and at least the WMS's ``Retry-After``.
3. Each attempt first spends the instance's budget, waiting for capacity but never past the
   call's deadline (``max_wait``): a wait that would outlast it raises ``RateLimited`` and
   sends nothing. A dialect that declares a separate inquiry limit
   (``DialectSpec.inquiries``) has a second budget, spent by the calls it marks
   ``inquiry=True``; its other calls (polls) spend the first.
4. At most ``max_connections`` requests are in flight per instance (the bulkhead), whatever
   the transport. The client is httpx; unless a transport is injected (a simulator app in
   tests), its requests travel over aiohttp (``httpx_aiohttp.AiohttpTransport``), which
   costs about half the CPU of httpx's own transport per call: a live read sends two dozen
   at once.
5. Every answer is classified (:func:`classify`, then the dialect's own ``check`` of the body)
   into the error tree of :mod:`stockgraph.connectors.errors`. A throttle pauses the budget
   the call spent for its ``Retry-After``, so no coroutine of this instance makes that kind
   of call again before then.

A dialect builds requests and reads answers; it never sleeps, retries or counts by itself. It
reports what the WMS says is left of its limit with :meth:`InstanceRuntime.report_budget`.

Example::

    runtime = InstanceRuntime(instance_id="wms-eu-1", base_url=url, spec=SPEC, metrics=metrics)
    response = await runtime.request("GET", "/levels", params={"sku": skus}, cost=len(skus))
    runtime.report_budget(remaining=float(response.headers["x-credits-left"]))
    ...
    await runtime.aclose()
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime
from typing import Any

import httpx
from httpx_aiohttp import AiohttpTransport

from stockgraph.connectors.base import DialectSpec
from stockgraph.connectors.breaker import CircuitBreaker
from stockgraph.connectors.budget import Budget, Clock, RateBudget, ShareBudget, Sleep
from stockgraph.connectors.errors import (
    CircuitOpen,
    ConnectorError,
    FatalError,
    MalformedPayload,
    RateLimited,
    RetriableError,
)
from stockgraph.connectors.metrics import ConnectorMetrics, InstanceMetrics, RuntimeStats
from stockgraph.connectors.retry import RetryPolicy
from stockgraph.domain.retry_after import read_retry_after

ResponseCheck = Callable[[httpx.Response], None]
"""A dialect's reading of an answer whose status says success: raises a ``ConnectorError``
when the body says otherwise (a GraphQL ``THROTTLED`` error, an EDI rejection)."""


_CALLER_DEADLINE: ContextVar[float | None] = ContextVar("stockgraph_call_deadline", default=None)


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Calls made inside wait at most ``seconds`` from now for budget, Retry-After or backoff.

    A caller that would rather answer from what it has than wait (a live read inside a
    storefront request, say) sets this; a call that cannot start in time raises
    :class:`~stockgraph.connectors.errors.RateLimited` at once instead of waiting.
    """
    token = _CALLER_DEADLINE.set(time.monotonic() + seconds)
    try:
        yield
    finally:
        _CALLER_DEADLINE.reset(token)


def retry_after_seconds(
    value: str | None, *, default: float = 1.0, now: datetime | None = None
) -> float:
    """``Retry-After`` as seconds, from either of its forms (delta-seconds or an HTTP date).

    >>> retry_after_seconds("2")
    2.0
    >>> retry_after_seconds(
    ...     "Wed, 21 Oct 2026 07:28:30 GMT", now=datetime.fromisoformat("2026-10-21T07:28Z")
    ... )
    30.0
    >>> retry_after_seconds(None, default=1.0)
    1.0
    """
    found = read_retry_after(value, now=now)
    return default if found is None else found


def classify(response: httpx.Response, *, instance_id: str) -> None:
    """Raise the classified error for a failed answer; return for a successful one.

    429 is ``RateLimited`` (``Retry-After`` read, 1 s when absent); 5xx, 408 and 425 are
    ``RetriableError``; any other 4xx is ``FatalError``.
    """
    status = response.status_code
    if status < 400:
        return
    if status == 429:
        raise RateLimited(
            f"{instance_id}: throttled (429)",
            retry_after=retry_after_seconds(response.headers.get("retry-after")),
            instance_id=instance_id,
        )
    if status >= 500 or status in (408, 425):
        raise RetriableError(f"{instance_id}: HTTP {status}", instance_id=instance_id)
    raise FatalError(f"{instance_id}: HTTP {status}", instance_id=instance_id)


class InstanceRuntime:
    """One WMS instance's connection, limits and health.

    ``clock`` and ``sleep`` (monotonic seconds, and a wait on that clock) drive the budget,
    the retry policy's default waits and the breaker's recovery timeout; tests pass a fake
    pair. ``max_wait`` bounds how long one :meth:`request` may spend waiting for budget,
    ``Retry-After`` and backoff before it gives up with the last error. ``share_budget``
    turns the instance's own budget into one shared with other processes (see
    :mod:`stockgraph.connectors.shared_budget`).
    """

    def __init__(
        self,
        *,
        instance_id: str,
        base_url: str,
        spec: DialectSpec,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 5.0,
        max_connections: int = 8,
        headers: Mapping[str, str] | None = None,
        retry: RetryPolicy | None = None,
        failure_threshold: int = 5,
        recovery_timeout: float = 30.0,
        max_wait: float = 30.0,
        metrics: ConnectorMetrics | None = None,
        share_budget: ShareBudget | None = None,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if max_connections < 1:
            raise ValueError(f"max_connections must be at least 1, not {max_connections!r}")
        if not (math.isfinite(max_wait) and max_wait >= 0):
            raise ValueError(f"max_wait must be a number >= 0, not {max_wait!r}")
        self.instance_id = instance_id
        self.spec = spec
        self.max_wait = max_wait
        self._clock = clock
        self._metrics = InstanceMetrics(instance_id=instance_id, series=metrics)
        budget = Budget(policy=spec.rate, instance_id=instance_id, clock=clock, sleep=sleep)
        self._budget: RateBudget = share_budget(budget) if share_budget else budget
        self._inquiry_budget: RateBudget | None = None
        if spec.inquiries is not None:
            inquiries = Budget(
                policy=spec.inquiries,
                instance_id=instance_id,
                label="inquiries",
                clock=clock,
                sleep=sleep,
            )
            self._inquiry_budget = share_budget(inquiries) if share_budget else inquiries
        self._retry = retry or RetryPolicy(sleep=sleep)
        self._breaker = CircuitBreaker(
            instance_id=instance_id,
            failure_threshold=failure_threshold,
            recovery_timeout=recovery_timeout,
            clock=clock,
            on_open=self._metrics.breaker_opened,
        )
        self._bulkhead = asyncio.Semaphore(max_connections)
        limits = httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        )
        self._client = httpx.AsyncClient(
            base_url=base_url,
            transport=transport or AiohttpTransport(limits=limits),
            timeout=timeout,
            headers=dict(headers or {}),
            limits=limits,
        )

    @property
    def budget(self) -> RateBudget:
        return self._budget

    @property
    def inquiry_budget(self) -> RateBudget:
        """What calls made with ``inquiry=True`` spend: the separate inquiry limit when the
        dialect declares one, else the instance's one budget."""
        return self._inquiry_budget or self._budget

    @property
    def breaker(self) -> CircuitBreaker:
        return self._breaker

    async def request(
        self,
        method: str,
        path: str,
        *,
        cost: float = 1.0,
        max_wait: float | None = None,
        check: ResponseCheck | None = None,
        inquiry: bool = False,
        **kwargs: Any,
    ) -> httpx.Response:
        """Send one request through the chain; raises a classified ``ConnectorError``.

        ``cost`` is what the call takes from a ``credits`` budget (ignored by the others);
        ``max_wait`` overrides the runtime's bound on waiting; ``check`` lets the dialect
        classify a successful-looking body inside the chain, so its ``RateLimited`` or
        ``RetriableError`` is paused for and retried like a status code; ``inquiry`` spends
        :attr:`inquiry_budget` rather than the instance's main budget. Other keywords go to
        ``httpx.AsyncClient.request``.
        """
        budget = self.inquiry_budget if inquiry else self._budget
        budget.units(cost)
        wait = self.max_wait if max_wait is None else max_wait
        caller = _CALLER_DEADLINE.get()
        if caller is not None:
            wait = max(0.0, min(wait, caller - time.monotonic()))
        if not (math.isfinite(wait) and wait >= 0):
            raise ValueError(f"max_wait must be a number >= 0, not {wait!r}")
        deadline = self._clock() + wait

        def time_left() -> float:
            return deadline - self._clock()

        async def attempt() -> httpx.Response:
            self._breaker.ensure_closed()
            try:
                await budget.acquire(cost, deadline=deadline)
            except RateLimited as exc:
                self._metrics.refusal("budget", str(exc))
                raise
            return await self._send(method, path, check, budget, kwargs)

        async def retried() -> httpx.Response:
            return await self._retry.run(attempt, time_left=time_left, on_retry=self._on_retry)

        try:
            return await self._breaker.call(retried)
        except CircuitOpen as exc:
            self._metrics.refusal("circuit_open", str(exc))
            raise

    def report_budget(self, *, remaining: float, restore_rate: float | None = None) -> None:
        """What the WMS says is left of its limit (credits, calls); corrects the budget.

        Only ever lowers our estimate (see :meth:`Budget.correct`).
        """
        self._budget.correct(remaining, restore_rate)

    def stats(self) -> RuntimeStats:
        """A snapshot of this instance's health for the sync-health query."""
        return RuntimeStats(
            calls=self._metrics.calls,
            errors=self._metrics.errors,
            retries=self._metrics.retries,
            throttled=self._metrics.throttled,
            last_error=self._metrics.last_error,
            circuit_state=self._breaker.state,
            budget_remaining=self._budget.remaining,
            live_budget_remaining=(
                None if self._inquiry_budget is None else self._inquiry_budget.remaining
            ),
        )

    async def aclose(self) -> None:
        """Close the instance's connections."""
        await self._client.aclose()

    async def _send(
        self,
        method: str,
        path: str,
        check: ResponseCheck | None,
        budget: RateBudget,
        kwargs: dict[str, Any],
    ) -> httpx.Response:
        async with self._bulkhead:
            started = self._clock()
            try:
                response = await self._client.request(method, path, **kwargs)
            except httpx.TimeoutException as exc:
                self._metrics.call(self._clock() - started)
                error = RetriableError(
                    f"{self.instance_id}: timed out ({type(exc).__name__})",
                    instance_id=self.instance_id,
                )
                self._record(error, budget, kind="timeout")
                raise error from exc
            except httpx.TransportError as exc:
                self._metrics.call(self._clock() - started)
                error = RetriableError(
                    f"{self.instance_id}: {type(exc).__name__}", instance_id=self.instance_id
                )
                self._record(error, budget)
                raise error from exc
            self._metrics.call(self._clock() - started)
        try:
            classify(response, instance_id=self.instance_id)
            if check is not None:
                check(response)
        except ConnectorError as exc:
            self._record(exc, budget)
            raise
        return response

    def _record(
        self, error: ConnectorError, budget: RateBudget, *, kind: str | None = None
    ) -> None:
        if isinstance(error, RateLimited):
            budget.pause(error.retry_after)
            self._metrics.throttle()
        self._metrics.failure(kind or _kind(error), str(error))

    def _on_retry(self, error: RetriableError, attempt: int, wait: float) -> None:
        self._metrics.retry()


def _kind(error: ConnectorError) -> str:
    if isinstance(error, RateLimited):
        return "rate_limited"
    if isinstance(error, RetriableError):
        return "retriable"
    if isinstance(error, MalformedPayload):
        return "malformed"
    if isinstance(error, FatalError):
        return "fatal"
    return "other"

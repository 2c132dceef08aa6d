"""The retry policy: which classified failures are tried again, and after how long.

Only :class:`~stockgraph.connectors.errors.RetriableError` is retried (a timeout, a dropped
connection, a 5xx, and :class:`~stockgraph.connectors.errors.RateLimited`);
:class:`~stockgraph.connectors.errors.FatalError` and anything unclassified propagate at once.
The wait before attempt ``n + 1`` is "full jitter" exponential backoff: a uniform draw from
``[0, min(cap, base * 2 ** (n - 1))]``; after a ``RateLimited`` it is at least the
``retry_after`` the WMS asked for, whatever the cap. When a ``time_left`` callable is given, the
policy gives up (re-raising the last error) rather than sleep past it.

The policy only waits. Holding back every *other* coroutine of the instance during a
``Retry-After`` is the budget's job: the runtime pauses the instance's
:class:`~stockgraph.connectors.budget.Budget` as soon as it classifies a 429, so the pause
holds even when this policy gives up.

Built on tenacity's ``AsyncRetrying``; ``sleep`` and ``jitter`` are injectable so tests run
instantly and deterministically.

Example::

    policy = RetryPolicy(attempts=4, base=0.1, cap=5.0)
    response = await policy.run(lambda: send(request))
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type

from stockgraph.connectors.errors import RateLimited, RetriableError

T = TypeVar("T")

Sleep = Callable[[float], Awaitable[None]]
RetryHook = Callable[[RetriableError, int, float], None]
"""Called before each wait with the error, the attempt that failed (1-based) and the wait."""


class RetryPolicy:
    """Bounded, capped, jittered retries of retriable failures; honours ``Retry-After``."""

    def __init__(
        self,
        *,
        attempts: int = 4,
        base: float = 0.1,
        cap: float = 5.0,
        sleep: Sleep = asyncio.sleep,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        if attempts < 1:
            raise ValueError(f"attempts must be at least 1, not {attempts!r}")
        if not (math.isfinite(base) and base >= 0):
            raise ValueError(f"base must be a number >= 0, not {base!r}")
        if not (math.isfinite(cap) and cap >= 0):
            raise ValueError(f"cap must be a number >= 0, not {cap!r}")
        self.attempts = attempts
        self.base = base
        self.cap = cap
        self._sleep = sleep
        self._jitter = jitter

    def backoff(self, failed_attempt: int, error: BaseException | None = None) -> float:
        """The wait after attempt ``failed_attempt`` (1-based) failed with ``error``."""
        ceiling = min(self.cap, self.base * 2.0 ** (failed_attempt - 1))
        wait = ceiling * min(1.0, max(0.0, self._jitter()))
        if isinstance(error, RateLimited):
            wait = max(wait, error.retry_after)
        return wait

    async def run(
        self,
        attempt: Callable[[], Awaitable[T]],
        *,
        time_left: Callable[[], float] | None = None,
        on_retry: RetryHook | None = None,
    ) -> T:
        """Await ``attempt()`` until it succeeds, fails for good, or attempts run out.

        Raises the last error as it was (never a tenacity wrapper). ``time_left`` returns the
        seconds the caller can still wait; no wait is started that would outlast it.
        """

        def wait(state: RetryCallState) -> float:
            return self.backoff(state.attempt_number, _error_of(state))

        def stop(state: RetryCallState) -> bool:
            if state.attempt_number >= self.attempts:
                return True
            return time_left is not None and state.upcoming_sleep > time_left()

        def before_sleep(state: RetryCallState) -> None:
            error = _error_of(state)
            if on_retry is not None and isinstance(error, RetriableError):
                on_retry(error, state.attempt_number, state.upcoming_sleep)

        retrying = AsyncRetrying(
            sleep=self._sleep,
            stop=stop,
            wait=wait,
            retry=retry_if_exception_type(RetriableError),
            before_sleep=before_sleep,
            reraise=True,
        )
        async for trial in retrying:
            with trial:
                return await attempt()
        raise RuntimeError("retry loop ended without an outcome")  # pragma: no cover


def _error_of(state: RetryCallState) -> BaseException | None:
    outcome = state.outcome
    return outcome.exception() if outcome is not None and outcome.failed else None

"""The circuit breaker: stop calling an instance that keeps failing, then probe it.

::

    closed ──N consecutive failures──► open ──recovery_timeout──► half_open
      ▲                                  ▲                            │ one trial call
      └────────── trial succeeds ────────┼──────── trial fails ───────┘

A *failure* is a :class:`~stockgraph.connectors.errors.RetriableError` that survived the
retry policy (a timeout, a dropped connection, a 5xx). A
:class:`~stockgraph.connectors.errors.FatalError` is not one: the WMS answered, so it counts
as a sign of life (it resets the count and closes a half-open breaker). A
:class:`~stockgraph.connectors.errors.RateLimited`, a cancellation or an unclassified error
proves nothing either way: it neither counts nor resets, and a half-open breaker stays half-open
for the next caller to try. While open (and while a half-open trial is in flight) calls raise
:class:`~stockgraph.connectors.errors.CircuitOpen` at once, before any budget or network.

A small implementation of its own rather than purgatory's ``AsyncCircuitBreakerFactory``:
purgatory reads ``time.time()`` directly (no injectable clock, so tests would sleep for real or
patch a global), lets every concurrent caller through while half-open instead of a single
trial, raises its own exception type rather than ``CircuitOpen``, and treats an excluded error
as a success where ``RateLimited`` must be neutral. Its shared (Redis) state is not needed
while breakers are per process.

Example::

    breaker = CircuitBreaker(instance_id="wms-1", failure_threshold=5, recovery_timeout=30.0)
    response = await breaker.call(lambda: retry.run(send))
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from typing import Literal, TypeVar

from stockgraph.connectors.errors import CircuitOpen, FatalError, RateLimited, RetriableError

T = TypeVar("T")

BreakerState = Literal["closed", "open", "half_open"]


class CircuitBreaker:
    """One instance's breaker; ``state`` is ``"closed"``, ``"open"`` or ``"half_open"``."""

    def __init__(
        self,
        *,
        instance_id: str = "",
        failure_threshold: int = 5,
        recovery_timeout: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        on_open: Callable[[], None] | None = None,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError(f"failure_threshold must be at least 1, not {failure_threshold!r}")
        if not (math.isfinite(recovery_timeout) and recovery_timeout >= 0):
            raise ValueError(f"recovery_timeout must be a number >= 0, not {recovery_timeout!r}")
        self.instance_id = instance_id
        self.failure_threshold = failure_threshold
        self.recovery_timeout = recovery_timeout
        self._clock = clock
        self._on_open = on_open
        self._state: BreakerState = "closed"
        self._failures = 0
        self._opened_at = 0.0
        self._trial_in_flight = False

    @property
    def state(self) -> BreakerState:
        """Where the breaker stands now; an open breaker half-opens once its timeout is over."""
        if self._state == "open" and self._clock() - self._opened_at >= self.recovery_timeout:
            self._state = "half_open"
            self._trial_in_flight = False
        return self._state

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    def retry_in(self) -> float:
        """Seconds until an open breaker half-opens (0 when it is not open)."""
        if self.state != "open":
            return 0.0
        return max(0.0, self._opened_at + self.recovery_timeout - self._clock())

    def ensure_closed(self) -> None:
        """Raise :class:`CircuitOpen` if the breaker is open right now (a half-open one passes)."""
        if self.state == "open":
            raise self._refusal("open")

    async def call(self, operation: Callable[[], Awaitable[T]]) -> T:
        """Run ``operation`` if the breaker admits it, and record how it ended."""
        trial = self._admit()
        try:
            result = await operation()
        except RateLimited:
            self._neutral(trial)
            raise
        except RetriableError:
            self._failure(trial)
            raise
        except FatalError:
            self._success()
            raise
        except BaseException:
            self._neutral(trial)
            raise
        self._success()
        return result

    def _admit(self) -> bool:
        """Let a call through or refuse it; True when it is the half-open trial."""
        state = self.state
        if state == "open":
            raise self._refusal("open")
        if state == "half_open":
            if self._trial_in_flight:
                raise self._refusal("half-open, trial call in flight")
            self._trial_in_flight = True
            return True
        return False

    def _success(self) -> None:
        self._failures = 0
        self._trial_in_flight = False
        self._state = "closed"

    def _failure(self, trial: bool) -> None:
        if trial:
            self._trial_in_flight = False
            if self._state == "half_open":
                self._open()
        elif self._state == "closed":
            self._failures += 1
            if self._failures >= self.failure_threshold:
                self._open()

    def _neutral(self, trial: bool) -> None:
        if trial:
            self._trial_in_flight = False

    def _open(self) -> None:
        self._state = "open"
        self._opened_at = self._clock()
        if self._on_open is not None:
            self._on_open()

    def _refusal(self, why: str) -> CircuitOpen:
        return CircuitOpen(
            f"{self.instance_id}: circuit {why}; retry in {self.retry_in():.1f}s",
            instance_id=self.instance_id,
        )

"""When to use Redis and when to do without it for a while.

Everything Stockgraph keeps in Redis (cost buckets, WMS budgets, cached answers) has a
fallback in the process. :class:`Failover` decides which one a call goes to: Redis, until
it fails; then the fallback for ``retry_seconds``, so that an outage costs one timeout and
not one per request; then Redis again. It logs once when Redis goes away and once when it
is back, under the name of what it guards.

Example::

    failover = Failover(name="cost buckets")
    if failover.use_primary():
        try:
            answer = await from_redis()
        except failover.ERRORS as error:
            failover.failed(error)
            answer = from_memory()
        else:
            failover.succeeded()
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

from redis.exceptions import RedisError

log = logging.getLogger("stockgraph.cache")


class Failover:
    """Whether a Redis-backed thing should try Redis now, and its degraded state."""

    ERRORS = (RedisError, OSError, TimeoutError)
    """What counts as Redis being unavailable (connection refused, timeouts, resets)."""

    def __init__(
        self,
        *,
        name: str,
        retry_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not (math.isfinite(retry_seconds) and retry_seconds >= 0):
            raise ValueError(f"retry_seconds must be a number >= 0, not {retry_seconds!r}")
        self.name = name
        self._retry_seconds = retry_seconds
        self._clock = clock
        self._degraded = False
        self._retry_at = -math.inf

    @property
    def degraded(self) -> bool:
        """True while calls go to the fallback because Redis failed."""
        return self._degraded

    def use_primary(self) -> bool:
        """Whether to try Redis now: always when healthy, once per retry interval when not."""
        return not self._degraded or self._clock() >= self._retry_at

    def failed(self, error: BaseException) -> None:
        """Redis failed: use the fallback until the retry interval has passed."""
        self._retry_at = self._clock() + self._retry_seconds
        if not self._degraded:
            self._degraded = True
            log.warning(
                "Redis failed (%s: %s); %s are kept in this process, retrying Redis every %.1f s",
                type(error).__name__,
                error,
                self.name,
                self._retry_seconds,
            )

    def succeeded(self) -> None:
        """Redis answered: leave the degraded state if in it."""
        if self._degraded:
            self._degraded = False
            log.info("Redis answers again; %s are shared through Redis again", self.name)


__all__ = ["Failover"]

"""An instance's rate budget: our copy of the WMS's own limiter, spent before every call.

The budget mirrors the limiter shape the dialect declares
(:class:`~stockgraph.connectors.base.RatePolicy`) as a token bucket that starts full:

- ``requests_per_second``: ``burst`` tokens refilled at ``rate`` per second; every call takes
  one token whatever its ``cost``.
- ``credits``: ``burst`` credits restored at ``rate`` per second; a call takes ``cost`` credits.
- ``polling_interval``: one token refilled at ``rate`` per second, so at most one call every
  ``1 / rate`` seconds (``burst`` is ignored).

Waiters are served in arrival order: each one waits until the bucket holds its own cost plus the
costs of everyone queued ahead of it. A caller that would have to wait beyond its deadline is
refused at once with :class:`~stockgraph.connectors.errors.RateLimited`, carrying the wait it
would have needed, and nothing is spent.

The WMS has the last word. :meth:`Budget.correct` lowers our estimate to what the WMS reports
(never raises it), and :meth:`Budget.pause` holds every call back until a ``Retry-After`` has
passed.

This is a small implementation of its own rather than ``aiolimiter.AsyncLimiter``: that limiter
reads the event loop's clock (no injectable clock for tests), has no deadline and cannot say how
long a refused caller would have had to wait, and offers no public way to lower its level from
the WMS's figures or to pause it. The budget is per process; one shared across processes (in
Redis) is meant to take the same shape.

Example::

    budget = Budget(policy=RatePolicy(kind="credits", rate=50.0, burst=1000.0))
    await budget.acquire(120.0, deadline=time.monotonic() + 5.0)
    ...  # send the call, then read what the WMS says is left
    budget.correct(remaining=640.0, restore_rate=50.0)
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Protocol

from stockgraph.connectors.base import RatePolicy
from stockgraph.connectors.errors import RateLimited

Clock = Callable[[], float]
"""Monotonic seconds; ``time.monotonic`` unless a test supplies its own."""
Sleep = Callable[[float], Awaitable[None]]
"""Waits the given seconds on the same clock; ``asyncio.sleep`` unless a test supplies its own."""

_EPSILON = 1e-9
"""Slack for floating-point drift, so a waiter woken on time is not sent back to sleep."""


class _Ticket:
    __slots__ = ("moved", "units")

    def __init__(self, units: float) -> None:
        self.units = units
        self.moved = asyncio.Event()
        """Set when the queue ahead changed: the wait computed before is too long now."""


class Budget:
    """How much of one WMS instance's rate limit we believe is left, spent before each call.

    ``clock`` and ``sleep`` must agree (the default pair is ``time.monotonic`` and
    ``asyncio.sleep``); deadlines are instants on ``clock``. ``label`` names which of the
    instance's budgets this is: empty for its one main budget, ``"inquiries"`` for the
    separate limit a dialect may declare (:attr:`DialectSpec.inquiries
    <stockgraph.connectors.base.DialectSpec.inquiries>`); a shared copy is kept per label.
    """

    def __init__(
        self,
        *,
        policy: RatePolicy,
        instance_id: str = "",
        label: str = "",
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if not (math.isfinite(policy.rate) and policy.rate > 0):
            raise ValueError(f"rate must be a positive number, not {policy.rate!r}")
        if policy.kind == "polling_interval":
            capacity = 1.0
        elif math.isfinite(policy.burst) and policy.burst >= 1:
            capacity = float(policy.burst)
        else:
            raise ValueError(f"burst must be a number >= 1, not {policy.burst!r}")
        self.policy = policy
        self.instance_id = instance_id
        self.label = label
        self.capacity = capacity
        self._clock = clock
        self._sleep = sleep
        self._rate = float(policy.rate)
        self._level = capacity
        self._updated = clock()
        self._paused_until = -math.inf
        self._queue: deque[_Ticket] = deque()

    @property
    def rate(self) -> float:
        """What we believe the WMS restores per second (calls or credits)."""
        return self._rate

    @property
    def clock(self) -> Clock:
        """The clock deadlines are instants on."""
        return self._clock

    @property
    def sleep(self) -> Sleep:
        """Waits on :attr:`clock`."""
        return self._sleep

    @property
    def remaining(self) -> float:
        """What we believe is left right now (calls or credits); below zero after overspending."""
        self._refill(self._clock())
        return self._level

    def units(self, cost: float) -> float:
        """What a call of ``cost`` takes from the bucket under this policy."""
        if not (math.isfinite(cost) and cost >= 0):
            raise ValueError(f"cost must be a number >= 0, not {cost!r}")
        if self.policy.kind != "credits":
            return 1.0
        if cost > self.capacity:
            raise ValueError(
                f"a call costing {cost} can never fit a budget of {self.capacity} credits"
            )
        return float(cost)

    async def acquire(self, cost: float = 1.0, *, deadline: float | None = None) -> None:
        """Wait until a call of ``cost`` fits, then spend it.

        Raises :class:`RateLimited` (``retry_after`` = the wait it would need) without spending
        anything when that wait would carry past ``deadline``, an instant on the budget's clock;
        :class:`ValueError` when ``cost`` could never fit.
        """
        ticket = _Ticket(self.units(cost))
        self._queue.append(ticket)
        try:
            while True:
                now = self._clock()
                wait = self._wait_for(ticket, now)
                if wait <= _EPSILON:
                    self._level -= ticket.units
                    return
                if deadline is not None and now + wait > deadline + _EPSILON:
                    raise RateLimited(
                        f"{self.instance_id}: {self.label or 'rate'} budget needs {wait:.3f}s, "
                        f"only {max(0.0, deadline - now):.3f}s left",
                        retry_after=wait,
                        instance_id=self.instance_id,
                    )
                ticket.moved.clear()
                await self._sleep_or_move(ticket, wait)
        finally:
            self._queue.remove(ticket)
            # Whoever queued behind this ticket computed its wait counting it; a ticket that
            # leaves without spending (cancelled, refused) would otherwise leave that
            # capacity idle until their sleeps run out.
            for queued in self._queue:
                queued.moved.set()

    async def _sleep_or_move(self, ticket: _Ticket, wait: float) -> None:
        sleeping = asyncio.ensure_future(self._sleep(wait))
        moved = asyncio.ensure_future(ticket.moved.wait())
        try:
            await asyncio.wait({sleeping, moved}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sleeping, moved):
                task.cancel()

    def correct(self, remaining: float, restore_rate: float | None = None) -> None:
        """Adopt what the WMS reports is left (and restores per second) when it is lower.

        Never raises our estimate: a figure above ours is older news or another process's
        view, and spending on it could overshoot. ``restore_rate`` may lower the refill rate,
        never above what the dialect declared.
        """
        if not math.isfinite(remaining):
            raise ValueError(f"remaining must be a finite number, not {remaining!r}")
        if restore_rate is not None and not (math.isfinite(restore_rate) and restore_rate > 0):
            raise ValueError(f"restore_rate must be a positive number, not {restore_rate!r}")
        self._refill(self._clock())
        self._level = min(self._level, remaining)
        if restore_rate is not None:
            self._rate = min(float(self.policy.rate), restore_rate)

    def pause(self, seconds: float) -> None:
        """Let no call out for ``seconds`` from now (a ``Retry-After``); pauses only lengthen."""
        if not (math.isfinite(seconds) and seconds >= 0):
            raise ValueError(f"seconds must be a number >= 0, not {seconds!r}")
        self._paused_until = max(self._paused_until, self._clock() + seconds)

    def _refill(self, now: float) -> None:
        if now > self._updated:
            self._level = min(self.capacity, self._level + (now - self._updated) * self._rate)
            self._updated = now

    def _wait_for(self, ticket: _Ticket, now: float) -> float:
        """Seconds until ``ticket`` and every ticket queued ahead of it fit in the bucket."""
        self._refill(now)
        needed = 0.0
        for queued in self._queue:
            needed += queued.units
            if queued is ticket:
                break
        short = needed - self._level
        refill = short / self._rate if short > _EPSILON else 0.0
        return max(refill, self._paused_until - now)


class RateBudget(Protocol):
    """What an instance's runtime needs of a budget: this module's, or one shared in Redis."""

    @property
    def policy(self) -> RatePolicy: ...

    @property
    def remaining(self) -> float: ...

    def units(self, cost: float) -> float: ...

    async def acquire(self, cost: float = 1.0, *, deadline: float | None = None) -> None: ...

    def correct(self, remaining: float, restore_rate: float | None = None) -> None: ...

    def pause(self, seconds: float) -> None: ...


ShareBudget = Callable[[Budget], RateBudget]
"""Turns an instance's own budget into the one its runtime spends (shared, say)."""

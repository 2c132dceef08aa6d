"""One WMS instance's budget shared by every Stockgraph process, kept in Redis.

A WMS limits what *all* our processes together send it. Each process keeping its own
:class:`~stockgraph.connectors.budget.Budget` would let N processes send N times the limit,
so with ``REDIS_URL`` the bucket lives in Redis and every call reserves its place there:

- one Lua script restores the bucket (Redis's clock), and either grants the call now,
  grants it after a wait (its tokens are reserved at once, so the bucket goes below zero
  and whoever comes next waits behind it, across processes: first come, first served), or
  refuses it without spending anything when the wait would pass the caller's deadline;
- what the WMS reports (remaining credits, a slower restore rate, ``Retry-After``) is
  written to the same bucket, so one process's 429 holds back all of them;
- a caller that is cancelled while it waits for its reserved turn gives the tokens back.

While Redis cannot be reached, the instance's own in-process budget takes over (see
:class:`~stockgraph.cache.failover.Failover`); it is kept current with what this process
learns, so the switch loses nothing it knew.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Sequence

from redis.asyncio import Redis
from redis.exceptions import RedisError

from stockgraph.cache.failover import Failover
from stockgraph.connectors.base import RatePolicy
from stockgraph.connectors.budget import Budget
from stockgraph.connectors.errors import RateLimited

log = logging.getLogger("stockgraph.connectors")

_SCRIPT = """
-- One WMS instance's budget, read, restored, changed and written back without interruption.
-- KEYS[1]  a hash: l (level), t (when, Redis seconds), p (paused until), r (restore rate)
-- ARGV[1]  'reserve', 'release', 'correct', 'pause' or 'peek'
-- ARGV[2]  units to reserve or release; the remaining level for 'correct'; seconds to pause
-- ARGV[3]  capacity
-- ARGV[4]  the declared restore rate per second
-- ARGV[5]  'reserve': the longest wait the caller accepts, seconds ('' for no limit);
--          'correct': a restore rate the WMS reports, or ''
-- Returns {granted (1 or 0), wait in seconds, level after}, each as a string.
local op = ARGV[1]
local amount = tonumber(ARGV[2])
local capacity = tonumber(ARGV[3])
local declared = tonumber(ARGV[4])

local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local saved = redis.call('HMGET', KEYS[1], 'l', 't', 'p', 'r')
local level = tonumber(saved[1]) or capacity
local updated = tonumber(saved[2]) or now
local paused = tonumber(saved[3]) or 0
local rate = math.min(tonumber(saved[4]) or declared, declared)
if now > updated then
  level = math.min(capacity, level + (now - updated) * rate)
  updated = now
end

local granted = 1
local wait = 0
if op == 'reserve' then
  if amount > level then
    wait = (amount - level) / rate
  end
  wait = math.max(wait, paused - now)
  local longest = tonumber(ARGV[5])
  if longest ~= nil and wait > longest then
    granted = 0
  else
    level = level - amount
  end
elseif op == 'release' then
  level = math.min(capacity, level + amount)
elseif op == 'correct' then
  level = math.min(level, amount)
  local reported = tonumber(ARGV[5])
  if reported ~= nil and reported > 0 then
    rate = math.min(rate, reported)
  end
elseif op == 'pause' then
  paused = math.max(paused, now + amount)
end

if op ~= 'peek' and granted == 1 then
  redis.call('HSET', KEYS[1], 'l', string.format('%.17g', level),
             't', string.format('%.17g', updated), 'p', string.format('%.17g', paused),
             'r', string.format('%.17g', rate))
  redis.call('PEXPIRE', KEYS[1], 86400000)
end
return {tostring(granted), string.format('%.17g', wait), string.format('%.17g', level)}
"""


class SharedBudget:
    """An instance's budget kept in Redis under ``key``; ``local`` stands in without Redis.

    It offers what :class:`~stockgraph.connectors.budget.Budget` offers, so the instance's
    runtime uses either the same way.
    """

    def __init__(
        self, *, local: Budget, redis: Redis, key: str, failover: Failover | None = None
    ) -> None:
        self.local = local
        self.key = key
        self._script = redis.register_script(_SCRIPT)
        self._failover = failover or Failover(name="WMS budgets")
        self._last_level: float | None = None
        self._writes: set[asyncio.Task[None]] = set()

    @property
    def policy(self) -> RatePolicy:
        return self.local.policy

    @property
    def instance_id(self) -> str:
        return self.local.instance_id

    @property
    def capacity(self) -> float:
        return self.local.capacity

    @property
    def rate(self) -> float:
        return self.local.rate

    @property
    def remaining(self) -> float:
        """The level Redis last reported to this process (its own estimate before that)."""
        if self._last_level is None or self._failover.degraded:
            return self.local.remaining
        return self._last_level

    def units(self, cost: float) -> float:
        return self.local.units(cost)

    async def acquire(self, cost: float = 1.0, *, deadline: float | None = None) -> None:
        """Reserve a call of ``cost`` in the shared bucket and wait for its turn.

        Raises :class:`RateLimited` without spending when the turn would come after
        ``deadline`` (an instant on the local budget's clock).
        """
        units = self.local.units(cost)
        if not self._failover.use_primary():
            await self.local.acquire(cost, deadline=deadline)
            return
        longest = math.inf if deadline is None else max(0.0, deadline - self.local.clock())
        try:
            granted, wait, level = await self._run("reserve", units, longest)
        except Failover.ERRORS as error:
            self._failover.failed(error)
            await self.local.acquire(cost, deadline=deadline)
            return
        self._failover.succeeded()
        self._last_level = level
        if not granted:
            raise RateLimited(
                f"{self.instance_id}: shared {self.local.label or 'rate'} budget needs "
                f"{wait:.3f}s, "
                f"only {longest:.3f}s left",
                retry_after=wait,
                instance_id=self.instance_id,
            )
        if wait <= 0:
            return
        try:
            await self.local.sleep(wait)
        except asyncio.CancelledError:
            self._write("release", units)
            raise

    def correct(self, remaining: float, restore_rate: float | None = None) -> None:
        """Lower the shared level (and restore rate) to what the WMS reports."""
        self.local.correct(remaining, restore_rate)
        self._write("correct", remaining, "" if restore_rate is None else repr(restore_rate))

    def pause(self, seconds: float) -> None:
        """Hold every process's calls back for ``seconds`` (a ``Retry-After``)."""
        self.local.pause(seconds)
        self._write("pause", seconds)

    async def flush(self) -> None:
        """Wait for reports still being written to Redis (for tests and shutdown)."""
        while self._writes:
            await asyncio.gather(*self._writes)

    def _write(self, op: str, amount: float, extra: str = "") -> None:
        if not self._failover.use_primary():
            return
        task = asyncio.ensure_future(self._send(op, amount, extra))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _send(self, op: str, amount: float, extra: str) -> None:
        try:
            _granted, _wait, level = await self._run(op, amount, extra)
        except Failover.ERRORS as error:
            self._failover.failed(error)
            return
        self._failover.succeeded()
        self._last_level = level

    async def _run(self, op: str, amount: float, extra: float | str) -> tuple[bool, float, float]:
        reply = await self._script(
            keys=[self.key],
            args=[
                op,
                repr(float(amount)),
                repr(float(self.local.capacity)),
                repr(float(self.local.policy.rate)),
                extra if isinstance(extra, str) else ("" if math.isinf(extra) else repr(extra)),
            ],
        )
        if not isinstance(reply, Sequence) or len(reply) != 3:
            raise RedisError(f"the budget script answered {reply!r}")
        granted, wait, level = reply
        return int(granted) == 1, float(wait), float(level)


__all__ = ["SharedBudget"]

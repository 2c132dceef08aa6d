"""Where clients' buckets of query cost are kept (see :mod:`stockgraph.domain.bucket`).

Three keepers, all answering ``take``, ``refund`` and ``peek`` with a
:class:`~stockgraph.domain.bucket.Throttle`:

- :class:`MemoryBuckets` keeps the buckets in this process. Good for one process and for
  tests; with several processes each one grants the whole capacity again.
- :class:`RedisBuckets` keeps one hash per client in Redis, so every process spends from
  the same bucket. Each operation is one Lua script: Redis runs a script without running
  anything else in between, so reading the bucket, restoring it, deciding and writing it
  back cannot interleave with another process doing the same (two processes can never
  both spend the last points), and it costs one round trip. The script reads the time from
  Redis itself (``TIME``), so processes whose clocks disagree still agree on the bucket.
  A bucket is written only when it changes, and expires once it would be full again: an
  absent bucket is a full one, so idle clients cost no memory.
- :class:`FallbackBuckets` uses Redis and, while Redis cannot be reached, answers from
  memory instead of failing every request. During such an outage each process grants from
  its own fresh buckets, so clients may spend more than their capacity; that is the price
  of staying up.

Give the Redis client used here a short socket timeout: a call made while Redis hangs
waits that long before :class:`FallbackBuckets` can fall back.
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import TypeAlias

from redis.asyncio import Redis
from redis.exceptions import RedisError

from stockgraph.cache.failover import Failover
from stockgraph.domain import bucket
from stockgraph.domain.bucket import BucketPolicy, BucketState, Throttle

__all__ = ["FallbackBuckets", "MemoryBuckets", "RedisBuckets"]

log = logging.getLogger("stockgraph.cache")

Clock: TypeAlias = Callable[[], float]
"""Seconds that never go backwards; ``time.monotonic`` unless a test supplies its own."""


class MemoryBuckets:
    """Buckets kept in this process, at most ``max_keys`` of them.

    When there are more, the least recently used is forgotten: that client starts again
    with a full bucket, which is where an idle one would have been anyway.
    """

    def __init__(
        self, *, policy: BucketPolicy, clock: Clock = time.monotonic, max_keys: int = 100_000
    ) -> None:
        if max_keys < 1:
            raise ValueError(f"max_keys must be at least 1, not {max_keys!r}")
        self.policy = policy
        self._clock = clock
        self._max_keys = max_keys
        self._states: OrderedDict[str, BucketState] = OrderedDict()

    def __len__(self) -> int:
        return len(self._states)

    async def take(self, key: str, cost: float) -> Throttle:
        throttle, state = bucket.take(self.policy, self._state(key), cost, self._clock())
        self._keep(key, state)
        return throttle

    async def refund(self, key: str, amount: float) -> Throttle:
        throttle, state = bucket.refund(self.policy, self._state(key), amount, self._clock())
        self._keep(key, state)
        return throttle

    async def peek(self, key: str) -> Throttle:
        return bucket.peek(self.policy, self._state(key), self._clock())

    def _state(self, key: str) -> BucketState:
        state = self._states.get(key)
        return bucket.full(self.policy, self._clock()) if state is None else state

    def _keep(self, key: str, state: BucketState) -> None:
        self._states[key] = state
        self._states.move_to_end(key)
        while len(self._states) > self._max_keys:
            self._states.popitem(last=False)


_SCRIPT = """
-- One client's bucket, read, restored, changed and written back without interruption.
-- KEYS[1]  the bucket: a hash of a (points available) and t (when, in seconds of Redis time)
-- ARGV[1]  'take', 'refund' or 'peek'
-- ARGV[2]  points to take or refund
-- ARGV[3]  capacity
-- ARGV[4]  points restored per second
-- ARGV[5]  milliseconds an untouched bucket outlives the moment it is full again
-- Returns {allowed (1 or 0), available, retry_after in seconds}, each as a string.
local operation = ARGV[1]
local amount = tonumber(ARGV[2])
local capacity = tonumber(ARGV[3])
local rate = tonumber(ARGV[4])
local margin = tonumber(ARGV[5])

local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000

local saved = redis.call('HMGET', KEYS[1], 'a', 't')
local available = tonumber(saved[1])
local updated = tonumber(saved[2])
if available == nil or updated == nil then
  available = capacity
  updated = now
end
if now > updated then
  available = available + (now - updated) * rate
  updated = now
end
available = math.max(0, math.min(capacity, available))

local allowed = 1
local retry_after = 0
local changed = false
if operation == 'take' then
  if amount <= available then
    available = math.max(0, available - amount)
    changed = true
  else
    allowed = 0
    -- whole microseconds, rounded up: Redis time has no finer grain
    retry_after = math.ceil((amount - available) / rate * 1000000) / 1000000
  end
elseif operation == 'refund' then
  available = math.min(capacity, available + amount)
  changed = true
end

if changed then
  redis.call('HSET', KEYS[1], 'a', string.format('%.17g', available),
             't', string.format('%.17g', updated))
  local until_full = math.ceil((capacity - available) / rate * 1000)
  redis.call('PEXPIRE', KEYS[1], string.format('%d', until_full + margin))
end
return {tostring(allowed), string.format('%.17g', available), string.format('%.17g', retry_after)}
"""

_EXPIRY_MARGIN_MS = 1000
"""How long a bucket outlives the moment it is full again, for clocks and replicas that lag."""


class RedisBuckets:
    """Buckets kept in Redis under ``prefix`` + key, shared by every process using that Redis.

    Example::

        redis = Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        buckets = RedisBuckets(redis=redis, policy=BucketPolicy(capacity=1000, restore_rate=50))
        throttle = await buckets.take("acme:storefront", 120.0)
    """

    def __init__(
        self, *, redis: Redis, policy: BucketPolicy, prefix: str = "stockgraph:bucket:"
    ) -> None:
        self.policy = policy
        self.prefix = prefix
        self._script = redis.register_script(_SCRIPT)

    async def take(self, key: str, cost: float) -> Throttle:
        _check_amount("cost", cost)
        if cost > self.policy.capacity:
            throttle = await self._run("peek", key, 0.0)
            return replace(throttle, allowed=False, retry_after=math.inf)
        return await self._run("take", key, cost)

    async def refund(self, key: str, amount: float) -> Throttle:
        _check_amount("amount", amount)
        return await self._run("refund", key, min(amount, self.policy.capacity))

    async def peek(self, key: str) -> Throttle:
        return await self._run("peek", key, 0.0)

    async def _run(self, operation: str, key: str, amount: float) -> Throttle:
        reply = await self._script(
            keys=[self.prefix + key],
            args=[
                operation,
                repr(float(amount)),
                repr(float(self.policy.capacity)),
                repr(float(self.policy.restore_rate)),
                _EXPIRY_MARGIN_MS,
            ],
        )
        allowed, available, retry_after = _three(reply)
        return Throttle(
            allowed=int(allowed) == 1,
            available=float(available),
            capacity=float(self.policy.capacity),
            restore_rate=float(self.policy.restore_rate),
            retry_after=float(retry_after),
        )


def _three(reply: object) -> tuple[bytes | str, bytes | str, bytes | str]:
    if not isinstance(reply, Sequence) or len(reply) != 3:
        raise RedisError(f"the bucket script answered {reply!r}")
    first, second, third = reply
    return first, second, third


def _check_amount(name: str, value: float) -> None:
    if not value >= 0:
        raise ValueError(f"{name} must be a number >= 0, not {value!r}")


_Backend: TypeAlias = RedisBuckets | MemoryBuckets


class FallbackBuckets:
    """Redis buckets that fall back to memory ones while Redis cannot be reached.

    The first failure logs one warning on the ``stockgraph.cache`` logger; Redis is then
    left alone for ``retry_seconds`` (every call meanwhile answers from memory) before it is
    tried again. When it answers again, that is logged too and Redis is used from then on.
    """

    def __init__(
        self,
        *,
        primary: RedisBuckets,
        fallback: MemoryBuckets,
        retry_seconds: float = 5.0,
        clock: Clock = time.monotonic,
    ) -> None:
        self.primary = primary
        self.fallback = fallback
        self._failover = Failover(name="cost buckets", retry_seconds=retry_seconds, clock=clock)

    @property
    def degraded(self) -> bool:
        """True while answers come from memory because Redis failed."""
        return self._failover.degraded

    async def take(self, key: str, cost: float) -> Throttle:
        _check_amount("cost", cost)
        return await self._answer(lambda buckets: buckets.take(key, cost))

    async def refund(self, key: str, amount: float) -> Throttle:
        _check_amount("amount", amount)
        return await self._answer(lambda buckets: buckets.refund(key, amount))

    async def peek(self, key: str) -> Throttle:
        return await self._answer(lambda buckets: buckets.peek(key))

    async def _answer(self, operation: Callable[[_Backend], Awaitable[Throttle]]) -> Throttle:
        if not self._failover.use_primary():
            return await operation(self.fallback)
        try:
            throttle = await operation(self.primary)
        except Failover.ERRORS as error:
            self._failover.failed(error)
            return await operation(self.fallback)
        self._failover.succeeded()
        return throttle

"""A client's bucket of query cost: the arithmetic behind GraphQL rate limiting.

Every client holds a bucket of at most ``capacity`` points, restored continuously at
``restore_rate`` points per second until it is full again. Before an operation runs, its
requested cost is taken from the bucket; a bucket holding less than that refuses the
operation, takes nothing, and says how many seconds it needs before the same cost fits.
Once the operation has run, the difference between the requested and the actual cost is
refunded, never beyond capacity.

The functions here only compute: they take a state and an instant (seconds on any clock
that the caller keeps using) and return the outcome with the next state. Where the state
lives, in a dict or in Redis, is the caller's business.

>>> policy = BucketPolicy(capacity=100.0, restore_rate=10.0)
>>> throttle, state = take(policy, full(policy, now=0.0), 80.0, now=0.0)
>>> throttle.allowed, throttle.available
(True, 20.0)
>>> throttle, state = take(policy, state, 50.0, now=1.0)
>>> throttle.allowed, throttle.available, throttle.retry_after
(False, 30.0, 2.0)
>>> throttle, state = take(policy, state, 50.0, now=3.0)
>>> throttle.allowed, throttle.available
(True, 0.0)
>>> refund(policy, state, 35.0, now=3.0)[0].envelope()
{'maximumAvailable': 100.0, 'currentlyAvailable': 35.0, 'restoreRate': 10.0}
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = [
    "BucketPolicy",
    "BucketState",
    "Throttle",
    "full",
    "peek",
    "refund",
    "restore",
    "take",
]

_NUDGES = 64
"""How many times :func:`take` may nudge a wait so that rounding cannot cut it short."""


@dataclass(frozen=True, slots=True)
class BucketPolicy:
    """How big a client's bucket is and how fast it fills again."""

    capacity: float
    """The most points a bucket holds; no single operation may cost more."""
    restore_rate: float
    """Points restored per second."""

    def __post_init__(self) -> None:
        for name in ("capacity", "restore_rate"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number above 0, not {value!r}")

    @property
    def seconds_to_fill(self) -> float:
        """How long an empty bucket takes to become full again."""
        return self.capacity / self.restore_rate


@dataclass(frozen=True, slots=True)
class BucketState:
    """What a bucket held at an instant."""

    available: float
    """Points in the bucket at ``updated_at``."""
    updated_at: float
    """Seconds on the clock the bucket is kept with."""


@dataclass(frozen=True, slots=True)
class Throttle:
    """What a caller learns about its bucket after taking, refunding or looking."""

    allowed: bool
    """Whether the cost was taken; a refund or a look always reports True."""
    available: float
    """Points left in the bucket after the operation."""
    capacity: float
    restore_rate: float
    retry_after: float
    """Seconds until a refused cost would fit (``math.inf`` if it never can); 0.0 if allowed."""

    def envelope(self) -> dict[str, float]:
        """The bucket as reported to GraphQL clients, in the shape Shopify made familiar."""
        return {
            "maximumAvailable": float(self.capacity),
            "currentlyAvailable": round(self.available, 1),
            "restoreRate": float(self.restore_rate),
        }


def full(policy: BucketPolicy, now: float) -> BucketState:
    """A bucket that holds its whole capacity, as every new client's does."""
    return BucketState(available=float(policy.capacity), updated_at=now)


def restore(policy: BucketPolicy, state: BucketState, now: float) -> BucketState:
    """The bucket at ``now``: restored for the time passed since it was last updated.

    A clock that went backwards restores nothing and keeps the later ``updated_at``, so the
    same seconds are never counted twice.
    """
    elapsed = now - state.updated_at
    if elapsed > 0:
        return BucketState(_clamp(policy, state.available + policy.restore_rate * elapsed), now)
    return BucketState(_clamp(policy, state.available), state.updated_at)


def take(
    policy: BucketPolicy, state: BucketState, cost: float, now: float
) -> tuple[Throttle, BucketState]:
    """Take ``cost`` points at ``now``, or refuse and take nothing.

    A refusal reports how many seconds to wait before the same cost fits; a cost above
    capacity never fits and reports ``math.inf``.

    Raises:
        ValueError: ``cost`` is negative or not a number.
    """
    _check_amount("cost", cost)
    current = restore(policy, state, now)
    if cost <= current.available:
        after = BucketState(max(0.0, current.available - cost), current.updated_at)
        return _report(policy, after, allowed=True, retry_after=0.0), after
    if cost > policy.capacity:
        return _report(policy, current, allowed=False, retry_after=math.inf), current
    wait = _wait_for(policy, current, cost)
    return _report(policy, current, allowed=False, retry_after=wait), current


def refund(
    policy: BucketPolicy, state: BucketState, amount: float, now: float
) -> tuple[Throttle, BucketState]:
    """Give back ``amount`` points at ``now``, never filling beyond capacity.

    Raises:
        ValueError: ``amount`` is negative or not a number.
    """
    _check_amount("amount", amount)
    current = restore(policy, state, now)
    after = BucketState(_clamp(policy, current.available + amount), current.updated_at)
    return _report(policy, after, allowed=True, retry_after=0.0), after


def peek(policy: BucketPolicy, state: BucketState, now: float) -> Throttle:
    """The bucket at ``now`` without changing it: what taking nothing would report."""
    return _report(policy, restore(policy, state, now), allowed=True, retry_after=0.0)


def _check_amount(name: str, value: float) -> None:
    if not value >= 0:
        raise ValueError(f"{name} must be a number >= 0, not {value!r}")


def _clamp(policy: BucketPolicy, available: float) -> float:
    return min(float(policy.capacity), max(0.0, available))


def _report(
    policy: BucketPolicy, state: BucketState, *, allowed: bool, retry_after: float
) -> Throttle:
    return Throttle(
        allowed=allowed,
        available=state.available,
        capacity=float(policy.capacity),
        restore_rate=float(policy.restore_rate),
        retry_after=retry_after,
    )


def _wait_for(policy: BucketPolicy, state: BucketState, cost: float) -> float:
    """Seconds after ``state.updated_at`` from which restoring makes ``cost`` fit.

    The plain quotient can fall a rounding error short once it is added to the clock
    reading, so the wait grows by a doubling nudge (starting at what one rounding step of
    ``cost`` takes to restore) until restoring at ``updated_at + wait`` really holds ``cost``;
    every later instant then holds it too.
    """
    start = state.updated_at
    wait = (cost - state.available) / policy.restore_rate
    nudge = math.ulp(cost) / policy.restore_rate
    for _ in range(_NUDGES):
        if restore(policy, state, start + wait).available >= cost:
            break
        wait = max(wait + nudge, math.nextafter(start + wait, math.inf) - start)
        nudge *= 2
    return wait

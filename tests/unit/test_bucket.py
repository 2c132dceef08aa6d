"""Buckets of query cost: the arithmetic as properties, and the in-process keeper."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from stockgraph.cache.buckets import MemoryBuckets
from stockgraph.domain.bucket import (
    BucketPolicy,
    BucketState,
    Throttle,
    full,
    peek,
    refund,
    restore,
    take,
)

instants = st.floats(min_value=0.0, max_value=1e6)
durations = st.floats(min_value=0.0, max_value=1e5)


@st.composite
def policies(draw: st.DrawFn) -> BucketPolicy:
    return BucketPolicy(
        capacity=draw(st.floats(min_value=1.0, max_value=1e6)),
        restore_rate=draw(st.floats(min_value=1e-3, max_value=1e4)),
    )


@st.composite
def buckets(draw: st.DrawFn) -> tuple[BucketPolicy, BucketState]:
    """A policy and a state it could be in, last updated at some instant."""
    policy = draw(policies())
    level = draw(st.floats(min_value=0.0, max_value=1.0))
    return policy, BucketState(policy.capacity * level, draw(instants))


def amounts(policy: BucketPolicy) -> st.SearchStrategy[float]:
    """Costs and refunds: mostly within capacity, sometimes beyond it."""
    return st.floats(min_value=0.0, max_value=policy.capacity * 1.5)


def within_capacity(policy: BucketPolicy, available: float) -> bool:
    return 0.0 <= available <= policy.capacity


@given(buckets(), st.floats(min_value=-1e5, max_value=1e5), st.data())
def test_every_operation_leaves_the_bucket_between_empty_and_full(
    bucket: tuple[BucketPolicy, BucketState], step: float, data: st.DataObject
) -> None:
    policy, state = bucket
    now = state.updated_at + step
    amount = data.draw(amounts(policy))
    taken, after_take = take(policy, state, amount, now)
    refunded, after_refund = refund(policy, state, amount, now)
    for available in (
        restore(policy, state, now).available,
        taken.available,
        after_take.available,
        refunded.available,
        after_refund.available,
        peek(policy, state, now).available,
    ):
        assert within_capacity(policy, available)


@given(buckets(), durations, st.data())
def test_a_refused_take_changes_nothing(
    bucket: tuple[BucketPolicy, BucketState], elapsed: float, data: st.DataObject
) -> None:
    policy, state = bucket
    now = state.updated_at + elapsed
    restored = restore(policy, state, now)
    cost = data.draw(st.floats(min_value=restored.available, max_value=policy.capacity * 2))
    throttle, after = take(policy, state, cost, now)
    assume(not throttle.allowed)
    assert after == restored
    assert throttle.available == restored.available
    assert throttle.retry_after > 0


@given(buckets(), durations, st.data())
def test_an_allowed_take_takes_exactly_its_cost(
    bucket: tuple[BucketPolicy, BucketState], elapsed: float, data: st.DataObject
) -> None:
    policy, state = bucket
    now = state.updated_at + elapsed
    restored = restore(policy, state, now)
    cost = data.draw(st.floats(min_value=0.0, max_value=restored.available))
    throttle, after = take(policy, state, cost, now)
    assert throttle.allowed
    assert throttle.retry_after == 0.0
    assert after.available == throttle.available == max(0.0, restored.available - cost)
    assert after.updated_at == now


@given(buckets(), durations, st.data())
def test_taking_and_refunding_the_same_amount_never_exceeds_capacity(
    bucket: tuple[BucketPolicy, BucketState], elapsed: float, data: st.DataObject
) -> None:
    policy, state = bucket
    now = state.updated_at + elapsed
    cost = data.draw(amounts(policy))
    taken, state = take(policy, state, cost, now)
    refunded, state = refund(policy, state, cost, now)
    assert refunded.allowed
    assert state.available == refunded.available <= policy.capacity
    if taken.allowed:
        assert refunded.available == pytest.approx(
            min(policy.capacity, taken.available + cost), rel=1e-12, abs=1e-9
        )


@given(buckets(), durations)
def test_restoring_over_some_seconds_adds_the_rate_times_them_up_to_the_room_left(
    bucket: tuple[BucketPolicy, BucketState], elapsed: float
) -> None:
    policy, state = bucket
    now = state.updated_at + elapsed
    restored = restore(policy, state, now)
    room = policy.capacity - state.available
    gained = restored.available - state.available
    assert gained == pytest.approx(
        min(policy.restore_rate * elapsed, room),
        rel=1e-9,
        abs=policy.restore_rate * 1e-9 + policy.capacity * 1e-12,
    )
    assert restored.updated_at == max(now, state.updated_at)


@given(buckets(), st.floats(min_value=1e-9, max_value=1e5))
def test_a_clock_that_goes_back_restores_nothing_and_keeps_the_later_instant(
    bucket: tuple[BucketPolicy, BucketState], back: float
) -> None:
    policy, state = bucket
    earlier = state.updated_at - back
    assert restore(policy, state, earlier) == state
    throttle, after = take(policy, state, 0.0, earlier)
    assert throttle.available == state.available
    assert after.updated_at == state.updated_at


@given(buckets(), st.data())
def test_retry_after_is_the_moment_the_same_take_succeeds(
    bucket: tuple[BucketPolicy, BucketState], data: st.DataObject
) -> None:
    policy, state = bucket
    # A bucket that is not full, and a cost that does not fit in it yet.
    available = data.draw(st.floats(min_value=0.0, max_value=policy.capacity * 0.99))
    state = BucketState(available=available, updated_at=state.updated_at)
    now = state.updated_at
    cost = data.draw(
        st.floats(min_value=available + policy.capacity * 1e-3, max_value=policy.capacity)
    )
    refused, state = take(policy, state, cost, now)
    assert not refused.allowed
    assert math.isfinite(refused.retry_after)

    later, _ = take(policy, state, cost, now + refused.retry_after)
    assert later.allowed

    sooner, _ = take(policy, state, cost, now + refused.retry_after / 2)
    assert not sooner.allowed
    assert refused.retry_after == pytest.approx(
        (cost - available) / policy.restore_rate, rel=1e-6, abs=1e-6
    )


@given(buckets(), st.floats(min_value=1.0, max_value=1e3), durations)
def test_a_cost_above_capacity_is_refused_for_ever(
    bucket: tuple[BucketPolicy, BucketState], excess: float, elapsed: float
) -> None:
    policy, state = bucket
    cost = policy.capacity + excess
    throttle, after = take(policy, state, cost, state.updated_at + elapsed)
    assert not throttle.allowed
    assert throttle.retry_after == math.inf
    assert after == restore(policy, state, state.updated_at + elapsed)


@dataclass(frozen=True)
class Take:
    cost: float


@dataclass(frozen=True)
class Refund:
    amount: float


@dataclass(frozen=True)
class Advance:
    seconds: float
    """Negative when the clock jumps back."""


steps = st.lists(
    st.one_of(
        st.builds(Take, st.floats(min_value=0.0, max_value=2e3)),
        st.builds(Refund, st.floats(min_value=0.0, max_value=2e3)),
        st.builds(Advance, st.floats(min_value=-10.0, max_value=100.0)),
    ),
    max_size=60,
)


@given(policies(), instants, steps)
def test_no_run_of_takes_refunds_and_clock_moves_spends_more_than_was_there(
    policy: BucketPolicy, start: float, script: list[Take | Refund | Advance]
) -> None:
    """What was taken, less what was refunded, never exceeds the capacity plus the restores."""
    state = full(policy, start)
    now = start
    latest = start
    spent = 0.0
    for step in script:
        if isinstance(step, Advance):
            now += step.seconds
            continue
        before = restore(policy, state, now)
        throttle: Throttle
        if isinstance(step, Take):
            throttle, state = take(policy, state, step.cost, now)
            if throttle.allowed:
                spent += step.cost
                assert state.available == max(0.0, before.available - step.cost)
            else:
                assert state == before
        else:
            throttle, state = refund(policy, state, step.amount, now)
            assert state.available >= before.available
            spent -= state.available - before.available
        latest = max(latest, now)
        assert within_capacity(policy, state.available)
        assert state.updated_at == latest
        assert throttle.capacity == policy.capacity
        assert throttle.restore_rate == policy.restore_rate
        bound = policy.capacity + policy.restore_rate * (latest - start)
        assert spent <= bound * (1 + 1e-9) + 1e-6


@pytest.mark.parametrize(
    ("capacity", "restore_rate"),
    [(0.0, 1.0), (-1.0, 1.0), (math.inf, 1.0), (math.nan, 1.0), (10.0, 0.0), (10.0, math.nan)],
)
def test_a_policy_that_could_never_work_is_refused(capacity: float, restore_rate: float) -> None:
    with pytest.raises(ValueError):
        BucketPolicy(capacity=capacity, restore_rate=restore_rate)


@pytest.mark.parametrize("amount", [-1.0, -1e-12, math.nan])
def test_negative_costs_and_refunds_are_refused(amount: float) -> None:
    policy = BucketPolicy(capacity=10.0, restore_rate=1.0)
    state = full(policy, 0.0)
    with pytest.raises(ValueError):
        take(policy, state, amount, 0.0)
    with pytest.raises(ValueError):
        refund(policy, state, amount, 0.0)


def test_the_envelope_reports_the_bucket_in_the_familiar_shape() -> None:
    throttle = Throttle(
        allowed=True, available=123.456, capacity=1000.0, restore_rate=50.0, retry_after=0.0
    )
    assert throttle.envelope() == {
        "maximumAvailable": 1000.0,
        "currentlyAvailable": 123.5,
        "restoreRate": 50.0,
    }


class FakeClock:
    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def test_a_new_client_starts_with_a_full_bucket_that_refills_over_time() -> None:
    clock = FakeClock()
    buckets = MemoryBuckets(policy=BucketPolicy(capacity=100.0, restore_rate=10.0), clock=clock)
    assert (await buckets.peek("acme")).available == 100.0

    assert (await buckets.take("acme", 70.0)).allowed
    refused = await buckets.take("acme", 50.0)
    assert (refused.allowed, refused.available, refused.retry_after) == (False, 30.0, 2.0)

    clock.now += 2.0
    allowed = await buckets.take("acme", 50.0)
    assert (allowed.allowed, allowed.available) == (True, 0.0)


async def test_a_refund_returns_what_the_operation_did_not_use() -> None:
    clock = FakeClock()
    buckets = MemoryBuckets(policy=BucketPolicy(capacity=100.0, restore_rate=10.0), clock=clock)
    await buckets.take("acme", 80.0)
    assert (await buckets.refund("acme", 30.0)).available == 50.0
    assert (await buckets.refund("acme", 500.0)).available == 100.0


async def test_clients_spend_from_buckets_of_their_own() -> None:
    buckets = MemoryBuckets(policy=BucketPolicy(capacity=10.0, restore_rate=1.0), clock=FakeClock())
    await buckets.take("acme", 10.0)
    assert not (await buckets.take("acme", 1.0)).allowed
    assert (await buckets.take("globex", 1.0)).allowed


async def test_peeking_changes_nothing() -> None:
    clock = FakeClock()
    buckets = MemoryBuckets(policy=BucketPolicy(capacity=10.0, restore_rate=1.0), clock=clock)
    await buckets.peek("acme")
    assert len(buckets) == 0
    await buckets.take("acme", 4.0)
    assert (await buckets.peek("acme")).available == 6.0
    assert (await buckets.peek("acme")).available == 6.0


async def test_the_least_recently_used_bucket_is_forgotten_beyond_max_keys() -> None:
    policy = BucketPolicy(capacity=10.0, restore_rate=1.0)
    buckets = MemoryBuckets(policy=policy, clock=FakeClock(), max_keys=2)
    await buckets.take("a", 5.0)
    await buckets.take("b", 5.0)
    await buckets.take("a", 1.0)
    await buckets.take("c", 5.0)
    assert len(buckets) == 2
    assert (await buckets.peek("a")).available == 4.0
    assert (await buckets.peek("b")).available == 10.0
    assert (await buckets.peek("c")).available == 5.0


def test_memory_buckets_need_room_for_one_key() -> None:
    with pytest.raises(ValueError):
        MemoryBuckets(policy=BucketPolicy(capacity=1.0, restore_rate=1.0), max_keys=0)

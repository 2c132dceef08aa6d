"""The quantity rules, as properties."""

from __future__ import annotations

from dataclasses import fields

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stockgraph.domain.errors import NegativeQuantity, QuantityIdentityBroken
from stockgraph.domain.quantities import (
    PARTS_OF_ON_HAND,
    QUANTITY_NAMES,
    StockDelta,
    StockQuantities,
    replay,
    with_physical,
)

counts = st.integers(min_value=0, max_value=10_000)


@st.composite
def quantities(draw: st.DrawFn) -> StockQuantities:
    on_hand = draw(counts)
    committed = draw(st.integers(0, on_hand))
    reserved = draw(st.integers(0, on_hand - committed))
    damaged = draw(st.integers(0, on_hand - committed - reserved))
    return StockQuantities.from_physical(
        on_hand=on_hand,
        committed=committed,
        reserved=reserved,
        damaged=damaged,
        safety_stock_target=draw(counts),
        incoming=draw(counts),
    )


@given(quantities())
def test_on_hand_always_equals_the_sum_of_its_parts(q: StockQuantities) -> None:
    assert q.on_hand == sum(getattr(q, name) for name in PARTS_OF_ON_HAND)
    assert all(v >= 0 for v in q.as_tuple())


@given(counts, counts, counts)
def test_safety_stock_never_makes_available_negative(on_hand: int, held: int, target: int) -> None:
    held = min(held, on_hand)
    q = StockQuantities.from_physical(on_hand=on_hand, committed=held, safety_stock_target=target)
    assert q.available >= 0
    assert q.safety_stock == min(target, on_hand - held)


def test_holding_more_than_is_on_hand_is_refused() -> None:
    with pytest.raises(NegativeQuantity):
        StockQuantities.from_physical(on_hand=5, committed=4, reserved=2)


def test_a_broken_identity_is_refused() -> None:
    with pytest.raises(QuantityIdentityBroken):
        StockQuantities(on_hand=10, available=9)


@given(quantities(), quantities())
def test_the_delta_between_two_levels_leads_from_one_to_the_other(
    a: StockQuantities, b: StockQuantities
) -> None:
    assert a.apply(a.delta_to(b)) == b


@given(st.lists(quantities(), min_size=1, max_size=20))
def test_replaying_the_ledger_gives_the_projection(history: list[StockQuantities]) -> None:
    """Every change is a ledger delta; folding them from zero rebuilds the last state."""
    deltas = []
    current = StockQuantities.ZERO
    for state in history:
        deltas.append(current.delta_to(state))
        current = state
    assert replay(deltas) == history[-1]


@given(quantities())
def test_a_delta_that_would_go_negative_is_refused(q: StockQuantities) -> None:
    with pytest.raises(NegativeQuantity):
        q.apply(StockDelta(on_hand=-(q.on_hand + 1), available=-(q.available + 1)))


def test_quantity_names_cover_every_field() -> None:
    assert tuple(f.name for f in fields(StockQuantities)) == QUANTITY_NAMES
    assert tuple(f.name for f in fields(StockDelta)) == QUANTITY_NAMES


@given(quantities())
def test_physical_counts_the_wms_confirms_keep_every_commitment_as_it_was(
    q: StockQuantities,
) -> None:
    kept = with_physical(
        q,
        on_hand=q.on_hand,
        damaged=q.damaged,
        quality_control=q.quality_control,
        incoming=q.incoming,
    )
    # What the general rule derives from the same counts, given the same commitments.
    derived = StockQuantities.from_physical(
        on_hand=q.on_hand,
        committed=q.committed,
        reserved=q.reserved,
        damaged=q.damaged,
        quality_control=q.quality_control,
        safety_stock_target=q.safety_stock,
        incoming=q.incoming,
    )
    assert kept == (q, 0)
    assert derived == q

"""Unit conversion and availability aggregation."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stockgraph.domain.availability import (
    WarehouseStock,
    aggregate_availability,
    distance_km,
    kit_available,
)
from stockgraph.domain.errors import InvalidUnitFactor, NotWholeBaseUnits, UnknownUnit
from stockgraph.domain.ids import Sku, WarehouseId
from stockgraph.domain.model import GeoPoint, KitComponent
from stockgraph.domain.units import UnitOfMeasure, from_base_units, to_base_units

UNITS = (UnitOfMeasure("each", 1), UnitOfMeasure("case", 12), UnitOfMeasure("pallet", 480))


@given(st.integers(0, 10**6), st.sampled_from(UNITS))
def test_converting_to_base_units_and_back_is_lossless(n: int, unit: UnitOfMeasure) -> None:
    assert from_base_units(to_base_units(n, unit.name, UNITS), unit.name, UNITS) == n


def test_a_fraction_of_a_base_unit_is_refused() -> None:
    assert to_base_units(0.5, "case", UNITS) == 6
    with pytest.raises(NotWholeBaseUnits):
        to_base_units(0.1, "case", UNITS)
    with pytest.raises(NotWholeBaseUnits):
        from_base_units(13, "case", UNITS)


def test_unknown_units_and_bad_factors_are_refused() -> None:
    with pytest.raises(UnknownUnit):
        to_base_units(1, "crate", UNITS)
    with pytest.raises(InvalidUnitFactor):
        UnitOfMeasure("half", 0)


stock_rows = st.lists(
    st.builds(
        WarehouseStock,
        warehouse_id=st.integers(1, 50).map(WarehouseId),
        available=st.integers(0, 500),
        on_hand=st.integers(0, 500),
        location=st.one_of(
            st.none(), st.builds(GeoPoint, st.floats(-90, 90), st.floats(-180, 180))
        ),
    ),
    max_size=30,
    unique_by=lambda r: r.warehouse_id,
)


@given(
    stock_rows, st.one_of(st.none(), st.builds(GeoPoint, st.floats(-90, 90), st.floats(-180, 180)))
)
def test_availability_sums_every_warehouse_and_lists_only_those_that_can_sell(
    rows: list[WarehouseStock], near: GeoPoint | None
) -> None:
    result = aggregate_availability(Sku("A"), rows, near)
    assert result.available == sum(r.available for r in rows)
    assert result.on_hand == sum(r.on_hand for r in rows)
    assert {w.warehouse_id for w in result.warehouses} == {
        r.warehouse_id for r in rows if r.available > 0
    }
    if near is not None:
        located = [w.distance_km for w in result.warehouses if w.distance_km is not None]
        assert located == sorted(located)
        seen_unlocated = False
        for w in result.warehouses:
            seen_unlocated |= w.distance_km is None
            assert not (seen_unlocated and w.distance_km is not None)


def test_distance_between_berlin_and_munich_is_about_504_km() -> None:
    assert distance_km(GeoPoint(52.52, 13.405), GeoPoint(48.137, 11.575)) == pytest.approx(
        504, abs=3
    )


def test_kits_are_limited_by_their_scarcest_component() -> None:
    parts = [KitComponent(Sku("A"), 2), KitComponent(Sku("B"), 1)]
    assert kit_available(parts, {Sku("A"): 9, Sku("B"): 7}) == 4
    assert kit_available(parts, {Sku("A"): 9}) == 0

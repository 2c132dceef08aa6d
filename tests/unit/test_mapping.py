"""Mapping one WMS's codes to ours: every failure is a visible reason, never a crash."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from stockgraph.domain.mapping import InstanceMapping, MappedLevel, Unmappable

MAPPING = InstanceMapping(
    skus={"ACME-1": "SKU-00001"},
    unit_factors={("ACME-1", "CS"): 12},
    unit_defaults={"PK": 6},
    locations={"BIN-A": "WH-00", "BIN-B": "WH-00"},
    statuses={"Picked": "PICKED", "Shipped": "SHIPPED", "Weird": "NOT-A-STATUS"},
)


def test_codes_units_and_locations_map_to_ours() -> None:
    assert MAPPING.level("ACME-1", "BIN-B", "CS", Decimal(3), damaged=Decimal(1)) == MappedLevel(
        sku="SKU-00001",
        warehouse_code="WH-00",
        on_hand=36,
        damaged=12,  # type: ignore[arg-type]
    )
    assert MAPPING.level("ACME-1", "BIN-A", "PK", 2).on_hand == 12  # type: ignore[union-attr]
    assert MAPPING.level("ACME-1", "BIN-A", "EA", 5).on_hand == 5  # type: ignore[union-attr]


def test_each_kind_of_unmappable_says_why() -> None:
    cases = {
        ("NOPE", "BIN-A", "EA", "1"): "UNKNOWN_SKU",
        ("ACME-1", "DOCK", "EA", "1"): "UNKNOWN_LOCATION",
        ("ACME-1", "BIN-A", "PALLET", "1"): "UNKNOWN_UNIT",
        ("ACME-1", "BIN-A", "CS", "0.01"): "NOT_WHOLE_BASE_UNITS",
        ("ACME-1", "BIN-A", "EA", "lots"): "BAD_QUANTITY",
        ("ACME-1", "BIN-A", "EA", "-2"): "BAD_QUANTITY",
        ("ACME-1", "BIN-A", "EA", "NaN"): "BAD_QUANTITY",
    }
    for (sku, location, unit, qty), code in cases.items():
        result = MAPPING.level(sku, location, unit, qty)
        assert isinstance(result, Unmappable), (sku, location, unit, qty)
        assert result.code == code
        assert result.reason


def test_statuses_map_to_the_contract_or_are_refused() -> None:
    assert MAPPING.status("Picked") == "PICKED"
    assert MAPPING.status("SHIPPED") == "SHIPPED"
    assert isinstance(MAPPING.status("Weird"), Unmappable)
    assert isinstance(MAPPING.status("Lost in space"), Unmappable)


@given(st.integers(0, 10_000), st.integers(1, 48))
def test_whole_cases_always_map_and_fractions_only_when_they_make_whole_eaches(
    eaches: int, factor: int
) -> None:
    mapping = InstanceMapping(
        identity_skus=True, unit_defaults={"CS": factor}, default_location="WH-00"
    )
    cases = Decimal(eaches) / Decimal(factor)
    result = mapping.level("X", "anywhere", "CS", cases)
    if (cases * factor) == eaches:
        assert isinstance(result, MappedLevel) and result.on_hand == eaches
    else:
        assert isinstance(result, Unmappable) and result.code == "NOT_WHOLE_BASE_UNITS"

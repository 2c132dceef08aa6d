"""Units of measure: every quantity is stored in the item's base unit ("each").

>>> units = (UnitOfMeasure("each", 1), UnitOfMeasure("case", 12))
>>> to_base_units(3, "case", units)
36
>>> from_base_units(36, "case", units)
3
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from stockgraph.domain.errors import InvalidUnitFactor, NotWholeBaseUnits, UnknownUnit


@dataclass(frozen=True, slots=True)
class UnitOfMeasure:
    """``factor`` base units make one of this unit (1 case = 12 each)."""

    name: str
    factor: int

    def __post_init__(self) -> None:
        if isinstance(self.factor, bool) or not isinstance(self.factor, int) or self.factor < 1:
            raise InvalidUnitFactor(
                f"unit {self.name!r} has factor {self.factor!r}; expected a whole number >= 1"
            )


def _find(unit: str, units: Iterable[UnitOfMeasure]) -> UnitOfMeasure:
    for candidate in units:
        if candidate.name == unit:
            return candidate
    known = ", ".join(u.name for u in units) or "none"
    raise UnknownUnit(f"unit {unit!r} is not defined for this item (known: {known})")


def to_base_units(quantity: int | float, unit: str, units: Iterable[UnitOfMeasure]) -> int:
    """Convert ``quantity`` of ``unit`` to base units; fractions of a base unit are errors."""
    factor = _find(unit, tuple(units)).factor
    base = quantity * factor
    if isinstance(base, float):
        if not base.is_integer():
            raise NotWholeBaseUnits(f"{quantity} {unit} is {base} base units, not a whole number")
        return int(base)
    return base


def from_base_units(quantity: int, unit: str, units: Iterable[UnitOfMeasure]) -> int:
    """Express ``quantity`` base units in ``unit``; it must divide exactly."""
    factor = _find(unit, tuple(units)).factor
    whole, rest = divmod(quantity, factor)
    if rest:
        raise NotWholeBaseUnits(f"{quantity} base units is not a whole number of {unit}")
    return whole

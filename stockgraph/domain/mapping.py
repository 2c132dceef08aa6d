"""Turning what one WMS says into what Stockgraph means, for one configured instance.

Each WMS instance has its own codes: SKUs (``ACME-0001`` for our ``SKU-00001``), units
(``CS`` of 12 for a case-pack item), locations (bins or sites for our warehouses) and order
statuses. :class:`InstanceMapping` holds them, from configuration, and maps one reported
level or status at a time. Anything it cannot map — an unknown SKU, an unknown unit or
status, a quantity that is not a whole number of base units — comes back as an
:class:`Unmappable` with the reason, never as an exception and never silently dropped:
the caller records it where an operator can see it.

>>> m = InstanceMapping(skus={"ACME-1": "SKU-1"}, unit_factors={("ACME-1", "CS"): 12},
...                     locations={"MAIN": "WH-00"}, default_location="WH-00")
>>> m.level("ACME-1", "MAIN", "CS", Decimal("2.5")).on_hand
30
>>> m.level("ACME-1", "MAIN", "CS", Decimal("0.1")).reason
'0.1 CS of ACME-1 is 1.2 base units, not a whole number'
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

from stockgraph.domain.ids import Sku

BASE_UNIT_NAMES = frozenset({"EA", "EACH", "each", "ea", "Each", "UN", "PC", "PCS"})
"""Unit codes every WMS may use for a single item."""

CONTRACT_STATUSES = frozenset(
    {"PENDING", "ACCEPTED", "PICKED", "PACKED", "SHIPPED", "DELIVERED", "CANCELLED", "RETURNED"}
)


@dataclass(frozen=True, slots=True)
class MappedLevel:
    """One level in Stockgraph's terms: our SKU, our warehouse code, whole base units."""

    sku: Sku
    warehouse_code: str
    on_hand: int
    damaged: int = 0
    quality_control: int = 0
    incoming: int = 0


@dataclass(frozen=True, slots=True)
class Unmappable:
    """Why something could not be mapped; the caller keeps it with the raw payload."""

    reason: str
    code: str


@dataclass(frozen=True, slots=True)
class InstanceMapping:
    """The codes of one WMS instance, from configuration.

    - ``skus``: WMS SKU → our SKU. Codes not listed map to themselves when
      ``identity_skus`` is on (a WMS that already uses our codes).
    - ``unit_factors``: (WMS SKU, unit) → base units per unit; ``unit_defaults``: unit →
      factor for every SKU (``{"CS": 12}``). Base-unit names need no entry.
    - ``locations``: WMS location → our warehouse code; anything else goes to
      ``default_location`` if set.
    - ``statuses``: the WMS's order statuses → the contract's.
    """

    skus: Mapping[str, str] = field(default_factory=dict)
    identity_skus: bool = False
    unit_factors: Mapping[tuple[str, str], int] = field(default_factory=dict)
    unit_defaults: Mapping[str, int] = field(default_factory=dict)
    locations: Mapping[str, str] = field(default_factory=dict)
    default_location: str | None = None
    statuses: Mapping[str, str] = field(default_factory=dict)
    _codes: Mapping[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_codes", {ours: wms for wms, ours in self.skus.items()})

    def wms_code(self, sku: str) -> str:
        """The WMS's code for our ``sku`` (the SKU itself where codes are shared)."""
        return self._codes.get(sku, sku)

    def sku(self, wms_sku: str) -> Sku | Unmappable:
        found = self.skus.get(wms_sku)
        if found is not None:
            return Sku(found)
        if self.identity_skus and wms_sku:
            return Sku(wms_sku)
        return Unmappable(f"WMS SKU {wms_sku!r} maps to no SKU of ours", "UNKNOWN_SKU")

    def warehouse(self, location: str) -> str | Unmappable:
        found = self.locations.get(location, self.default_location)
        if found is None:
            return Unmappable(f"WMS location {location!r} maps to no warehouse", "UNKNOWN_LOCATION")
        return found

    def factor(self, wms_sku: str, unit: str) -> int | Unmappable:
        if unit in BASE_UNIT_NAMES:
            return 1
        found = self.unit_factors.get((wms_sku, unit), self.unit_defaults.get(unit))
        if found is None:
            return Unmappable(f"unit {unit!r} of {wms_sku} is not configured", "UNKNOWN_UNIT")
        return found

    def level(
        self,
        wms_sku: str,
        location: str,
        unit: str,
        on_hand: Decimal | int | str,
        *,
        damaged: Decimal | int | str = 0,
        quality_control: Decimal | int | str = 0,
        incoming: Decimal | int | str = 0,
    ) -> MappedLevel | Unmappable:
        """A reported level in our terms, or the first reason it cannot be."""
        sku = self.sku(wms_sku)
        if isinstance(sku, Unmappable):
            return sku
        warehouse = self.warehouse(location)
        if isinstance(warehouse, Unmappable):
            return warehouse
        factor = self.factor(wms_sku, unit)
        if isinstance(factor, Unmappable):
            return factor
        amounts: list[int] = []
        for value in (on_hand, damaged, quality_control, incoming):
            amount = _base_units(wms_sku, unit, value, factor)
            if isinstance(amount, Unmappable):
                return amount
            amounts.append(amount)
        return MappedLevel(sku, warehouse, *amounts)

    def status(self, wms_status: str) -> str | Unmappable:
        found = self.statuses.get(wms_status)
        if found is None and wms_status in CONTRACT_STATUSES:
            found = wms_status
        if found is None or found not in CONTRACT_STATUSES:
            return Unmappable(
                f"WMS status {wms_status!r} maps to no order status", "UNKNOWN_STATUS"
            )
        return found


def _base_units(
    wms_sku: str, unit: str, value: Decimal | int | str, factor: int
) -> int | Unmappable:
    """``value`` of ``unit`` (``factor`` base units each) as whole base units."""
    if type(value) is int:  # whole already: no decimal arithmetic (this runs for every level)
        whole = value * factor
    else:
        if type(value) is Decimal:
            amount = value  # what wire readers give: no copy
        else:
            try:
                amount = Decimal(value)
            except (InvalidOperation, TypeError, ValueError):
                return Unmappable(
                    f"quantity {value!r} of {wms_sku} is not a number", "BAD_QUANTITY"
                )
        if not amount.is_finite():
            return Unmappable(f"quantity {value!r} of {wms_sku} is not finite", "BAD_QUANTITY")
        base = amount if factor == 1 else amount * factor
        whole = int(base)
        if base != whole:
            return Unmappable(
                f"{amount} {unit} of {wms_sku} is {base.normalize()} base units,"
                " not a whole number",
                "NOT_WHOLE_BASE_UNITS",
            )
    if whole < 0:
        return Unmappable(f"{value} {unit} of {wms_sku} is negative", "BAD_QUANTITY")
    return whole

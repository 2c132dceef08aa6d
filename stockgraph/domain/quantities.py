"""Named stock quantities and the rules that tie them together.

Quantities follow the commerce convention::

    on_hand = available + committed + reserved + damaged + safety_stock + quality_control

``incoming`` (ordered, not yet received) stands apart. Every quantity is a whole number
of the item's base unit and never negative; ``available`` is what a storefront may sell.

>>> q = StockQuantities.from_physical(on_hand=100, committed=10, safety_stock_target=5)
>>> (q.available, q.safety_stock)
(85, 5)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from stockgraph.domain.errors import NegativeQuantity, QuantityIdentityBroken

QUANTITY_NAMES: tuple[str, ...] = (
    "on_hand",
    "available",
    "committed",
    "reserved",
    "damaged",
    "safety_stock",
    "quality_control",
    "incoming",
)
"""Every named quantity, in the order the ledger and the projection store them."""

PHYSICAL_NAMES: tuple[str, ...] = ("on_hand", "damaged", "quality_control", "incoming")
"""The quantities a WMS reports and owns (see :func:`with_physical`); the others are
Stockgraph's own or follow from these."""

PARTS_OF_ON_HAND: tuple[str, ...] = (
    "available",
    "committed",
    "reserved",
    "damaged",
    "safety_stock",
    "quality_control",
)


@dataclass(frozen=True, slots=True)
class StockDelta:
    """A signed change to each named quantity; what one ledger movement records."""

    on_hand: int = 0
    available: int = 0
    committed: int = 0
    reserved: int = 0
    damaged: int = 0
    safety_stock: int = 0
    quality_control: int = 0
    incoming: int = 0

    def __add__(self, other: StockDelta) -> StockDelta:
        return StockDelta(*(getattr(self, name) + getattr(other, name) for name in QUANTITY_NAMES))

    def is_zero(self) -> bool:
        return all(getattr(self, name) == 0 for name in QUANTITY_NAMES)

    def as_tuple(self) -> tuple[int, ...]:
        return tuple(getattr(self, name) for name in QUANTITY_NAMES)


@dataclass(frozen=True, slots=True)
class StockQuantities:
    """One warehouse's quantities of one SKU, always consistent.

    Construction checks that nothing is negative and that ``on_hand`` equals the sum of
    its parts; a broken rule raises a :class:`~stockgraph.domain.errors.DomainError`.
    """

    on_hand: int = 0
    available: int = 0
    committed: int = 0
    reserved: int = 0
    damaged: int = 0
    safety_stock: int = 0
    quality_control: int = 0
    incoming: int = 0

    ZERO: ClassVar[StockQuantities]

    def __post_init__(self) -> None:
        # Spelled out rather than looped over fields(): this runs for every row read.
        parts = (
            self.available
            + self.committed
            + self.reserved
            + self.damaged
            + self.safety_stock
            + self.quality_control
        )
        if (
            min(
                self.on_hand,
                self.available,
                self.committed,
                self.reserved,
                self.damaged,
                self.safety_stock,
                self.quality_control,
                self.incoming,
            )
            < 0
        ):
            negative = next(n for n in QUANTITY_NAMES if getattr(self, n) < 0)
            raise NegativeQuantity(
                f"{negative} would be {getattr(self, negative)}; quantities are never negative"
            )
        if parts != self.on_hand:
            raise QuantityIdentityBroken(
                f"on_hand is {self.on_hand} but its parts add up to {parts}"
            )

    @classmethod
    def from_physical(
        cls,
        *,
        on_hand: int,
        committed: int = 0,
        reserved: int = 0,
        damaged: int = 0,
        quality_control: int = 0,
        safety_stock_target: int = 0,
        incoming: int = 0,
    ) -> StockQuantities:
        """Derive ``available`` and the safety stock actually held from physical counts.

        Safety stock holds back up to its target from what is otherwise sellable; it never
        makes ``available`` negative. Stock held for other reasons beyond ``on_hand`` is an
        error: it would mean selling what is not there.
        """
        if safety_stock_target < 0:
            raise NegativeQuantity(f"safety stock target is {safety_stock_target}")
        held = committed + reserved + damaged + quality_control
        free = on_hand - held
        if free < 0:
            raise NegativeQuantity(
                f"available would be {free}: {held} held against {on_hand} on hand"
            )
        safety = min(safety_stock_target, free)
        return cls(
            on_hand=on_hand,
            available=free - safety,
            committed=committed,
            reserved=reserved,
            damaged=damaged,
            safety_stock=safety,
            quality_control=quality_control,
            incoming=incoming,
        )

    def apply(self, delta: StockDelta) -> StockQuantities:
        """The quantities after ``delta``; raises if the result breaks a rule."""
        return StockQuantities(
            *(getattr(self, name) + getattr(delta, name) for name in QUANTITY_NAMES)
        )

    def delta_to(self, after: StockQuantities) -> StockDelta:
        """The delta that turns these quantities into ``after``."""
        return StockDelta(*(getattr(after, name) - getattr(self, name) for name in QUANTITY_NAMES))

    def as_tuple(self) -> tuple[int, ...]:
        return tuple(getattr(self, name) for name in QUANTITY_NAMES)


StockQuantities.ZERO = StockQuantities()


def replay(deltas: list[StockDelta]) -> StockQuantities:
    """Fold ledger deltas, oldest first, into the quantities they lead to."""
    total = StockDelta()
    for delta in deltas:
        total = total + delta
    return StockQuantities(*total.as_tuple())


def with_physical(
    current: StockQuantities | None,
    *,
    on_hand: int,
    damaged: int = 0,
    quality_control: int = 0,
    incoming: int = 0,
) -> tuple[StockQuantities, int]:
    """New quantities from what the WMS reports, keeping Stockgraph's own commitments.

    The WMS owns physical truth (on hand, damaged, quality control, incoming); Stockgraph
    owns what is committed to orders and reserved, and the safety stock it holds back. When
    the WMS reports less than those commitments need, reservations give way first, then
    commitments, and the shortfall is returned so that the caller can raise it.

    >>> q, short = with_physical(StockQuantities.from_physical(on_hand=10, committed=6),
    ...                          on_hand=4)
    >>> (q.available, q.committed, short)
    (0, 4, 2)
    """
    if current is not None and (
        current.on_hand == on_hand
        and current.damaged == damaged
        and current.quality_control == quality_control
        and current.incoming == incoming
    ):
        # The WMS confirms what is held: valid quantities hold their commitments within the
        # same physical counts, so nothing would change (and nothing falls short).
        return current, 0
    committed = current.committed if current else 0
    reserved = current.reserved if current else 0
    safety = current.safety_stock if current else 0
    room = max(0, on_hand - damaged - quality_control)
    shortfall = max(0, committed + reserved - room)
    cut_reserved = min(reserved, shortfall)
    reserved -= cut_reserved
    committed -= shortfall - cut_reserved
    if damaged + quality_control > on_hand:
        raise NegativeQuantity(
            f"{damaged} damaged and {quality_control} in quality control exceed {on_hand} on hand"
        )
    quantities = StockQuantities.from_physical(
        on_hand=on_hand,
        committed=committed,
        reserved=reserved,
        damaged=damaged,
        quality_control=quality_control,
        safety_stock_target=safety,
        incoming=incoming,
    )
    return quantities, shortfall

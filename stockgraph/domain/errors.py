"""The domain's error tree.

Every rule the domain enforces raises a subclass of :class:`DomainError`, so callers can
turn any of them into a user-facing error without knowing each one::

    try:
        to_base_units(3, "pallet", item.units)
    except DomainError as exc:
        report(exc.code, str(exc))
"""


class DomainError(ValueError):
    """A rule of the domain was broken; ``code`` names the rule for API clients."""

    code = "INVALID"


class QuantityIdentityBroken(DomainError):
    """``onHand`` differs from the sum of its parts."""

    code = "QUANTITY_IDENTITY_BROKEN"


class NegativeQuantity(DomainError):
    """A named quantity would fall below zero."""

    code = "NEGATIVE_QUANTITY"


class UnknownUnit(DomainError):
    """A unit of measure the item does not define."""

    code = "UNKNOWN_UNIT"


class NotWholeBaseUnits(DomainError):
    """A quantity that is not a whole number of the item's base unit."""

    code = "NOT_WHOLE_BASE_UNITS"


class InvalidUnitFactor(DomainError):
    """A unit conversion factor that is not a positive whole number."""

    code = "INVALID_UNIT_FACTOR"


class ConcurrentChange(DomainError):
    """Someone else changed the same thing at the same moment; the change can be retried."""

    code = "CONCURRENT_CHANGE"

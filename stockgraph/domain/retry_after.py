"""Reading an HTTP ``Retry-After``: how long a server asked us to wait.

Both forms the header takes: delta-seconds (``120``, fractions tolerated) and an HTTP date.
Used for what WMSs answer us and for what webhook endpoints answer our deliveries.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime


def read_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """``Retry-After`` as seconds from ``now`` (never negative); None when absent or
    unreadable.

    >>> now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    >>> read_retry_after("120", now=now), read_retry_after("2.5"), read_retry_after("-3")
    (120.0, 2.5, 0.0)
    >>> read_retry_after("Thu, 01 Jan 2026 12:01:00 GMT", now=now)
    60.0
    >>> read_retry_after("soon") is None, read_retry_after(None) is None
    (True, True)
    """
    if not value:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


__all__ = ["read_retry_after"]

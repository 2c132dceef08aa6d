"""Every connector failure, classified before anything decides to retry.

::

    ConnectorError
    ├── RetriableError        a timeout, a dropped connection, a 5xx: try again later
    │   └── RateLimited       the WMS said slow down (429 or a throttle error), retry_after set
    ├── FatalError            the request itself is wrong (4xx, auth): retrying cannot help
    │   └── MalformedPayload  the WMS answered or pushed something we cannot read
    └── CircuitOpen           the instance's breaker is open: no call was made
"""

from __future__ import annotations


class ConnectorError(Exception):
    """A call to a WMS instance failed; ``instance_id`` names the instance."""

    def __init__(self, message: str, *, instance_id: str = "") -> None:
        super().__init__(message)
        self.instance_id = instance_id


class RetriableError(ConnectorError):
    """Transient: the same call may succeed later."""


class RateLimited(RetriableError):
    """The WMS asked us to wait ``retry_after`` seconds before calling again."""

    def __init__(self, message: str, *, retry_after: float, instance_id: str = "") -> None:
        super().__init__(message, instance_id=instance_id)
        self.retry_after = max(0.0, retry_after)


class FatalError(ConnectorError):
    """Permanent for this request: retrying the same call cannot succeed."""


class MalformedPayload(FatalError):
    """A body we cannot parse or that breaks the dialect's format; ``raw`` keeps it.

    A polled dialect sets ``resume_after`` to the position just past the broken document,
    so that the sync can record it and move on instead of stopping there for good.
    """

    def __init__(
        self,
        message: str,
        *,
        raw: bytes = b"",
        instance_id: str = "",
        resume_after: str | None = None,
    ) -> None:
        super().__init__(message, instance_id=instance_id)
        self.raw = raw
        self.resume_after = resume_after


class CircuitOpen(ConnectorError):
    """The instance failed too often recently; calls are refused until it half-opens."""

"""The signature on WMS webhooks: HMAC-SHA256 over ``timestamp.body``.

Header: ``X-Stockgraph-Signature: t=<unix seconds>,v1=<hex>``; a sender rotating its
secret may send several ``v1`` values. A receiver accepts the body when the timestamp is
within the tolerance (both ways) and any ``v1`` matches any of its current secrets, compared
in constant time.

>>> header = sign(b'{}', "s3cret", timestamp=1_700_000_000)
>>> verify(b'{}', header, ["old", "s3cret"], now=1_700_000_100)
>>> verify(b'{"x":1}', header, ["s3cret"], now=1_700_000_100)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
InvalidSignature: no signature matches
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

SIGNATURE_HEADER = "X-Stockgraph-Signature"
EVENT_ID_HEADER = "X-Event-Id"
TOLERANCE_SECONDS = 300


class InvalidSignature(ValueError):
    """The body is not signed by the instance, or the signature is stale."""


def _digest(body: bytes, secret: str, timestamp: int) -> str:
    message = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def sign(body: bytes, secret: str, *, timestamp: int) -> str:
    """The header value for ``body`` signed with ``secret`` at ``timestamp``."""
    return f"t={timestamp},v1={_digest(body, secret, timestamp)}"


def verify(
    body: bytes,
    header: str | None,
    secrets: Sequence[str],
    *,
    now: float,
    tolerance: int = TOLERANCE_SECONDS,
) -> None:
    """Return if ``header`` signs ``body``; raise :class:`InvalidSignature` otherwise."""
    if not header:
        raise InvalidSignature(f"missing {SIGNATURE_HEADER} header")
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t":
            try:
                timestamp = int(value)
            except ValueError:
                raise InvalidSignature("timestamp is not a whole number of seconds") from None
        elif key == "v1" and value:
            candidates.append(value)
    if timestamp is None or not candidates:
        raise InvalidSignature("header needs t=<unix> and v1=<hex>")
    if abs(now - timestamp) > tolerance:
        raise InvalidSignature(
            f"timestamp is {int(now - timestamp)} s away; tolerance {tolerance} s"
        )
    expected = [_digest(body, secret, timestamp) for secret in secrets]
    if not any(hmac.compare_digest(c, e) for c in candidates for e in expected):
        raise InvalidSignature("no signature matches")

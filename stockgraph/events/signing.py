"""Signing outbound webhooks the Standard Webhooks way.

Every request carries ``webhook-id`` (the delivery's id, the same on every attempt, so a
receiver can drop repeats), ``webhook-timestamp`` (unix seconds) and ``webhook-signature``:
``v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`` keyed by the base64-decoded
secret that follows ``whsec_``. Signed with several secrets (a rotation's overlap), the
header lists one signature per secret, separated by spaces, as the standard allows: a
receiver holding any of them verifies the request. The signatures are computed by the
maintained ``standardwebhooks`` package, the reference implementation receivers verify with.

>>> from datetime import datetime, UTC
>>> secret = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
>>> headers = signed_headers([secret], "msg_1_1", '{"a":1}', datetime(2026, 1, 1, tzinfo=UTC))
>>> headers["webhook-timestamp"], headers["webhook-signature"][:3]
('1767225600', 'v1,')
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from math import floor

from standardwebhooks import Webhook

ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"
USER_AGENT = "Stockgraph-Webhooks/1"


def signed_headers(
    secrets: Sequence[str], message_id: str, body: str, at: datetime
) -> dict[str, str]:
    """The headers of one attempt to send ``body`` as ``message_id`` at ``at``, signed with
    each of ``secrets``."""
    if not secrets:
        raise ValueError("a webhook is signed with at least one secret")
    moment = at.astimezone(UTC)
    signature = " ".join(
        Webhook(secret).sign(msg_id=message_id, timestamp=moment, data=body) for secret in secrets
    )
    return {
        ID_HEADER: message_id,
        TIMESTAMP_HEADER: str(floor(moment.timestamp())),
        SIGNATURE_HEADER: signature,
        "content-type": "application/json",
        "user-agent": USER_AGENT,
    }


__all__ = ["ID_HEADER", "SIGNATURE_HEADER", "TIMESTAMP_HEADER", "signed_headers"]

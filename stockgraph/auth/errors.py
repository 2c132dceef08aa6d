"""Why a caller was not let in.

Every authentication failure raises a subclass of :class:`AuthError`. The text of an error
(``str(exc)``) is one fixed, generic message per class: it is safe to show to the caller and
says nothing about *why* the credential was refused, so a caller probing tokens or keys
learns nothing from the answer. The real cause stays on :attr:`AuthError.reason` for logs::

    try:
        principal = tokens.verify(raw)
    except AuthError as exc:
        log.info("credential refused: %s", exc.reason)
        return unauthenticated(str(exc))

The tree::

    AuthError
    ├── InvalidToken     a bearer JWT that is malformed, expired, forged or otherwise unusable
    ├── InvalidClient    OAuth client authentication failed (unknown id, wrong secret, disabled)
    ├── InvalidScope     the requested scopes are unknown or exceed what the client holds
    └── InvalidApiKey    an API key that is malformed, unknown, wrong or revoked
"""

from __future__ import annotations

from typing import ClassVar


class AuthError(Exception):
    """A credential was refused.

    ``str(exc)`` is :attr:`public_message`, the same for every instance of a class;
    :attr:`reason` holds the internal cause and is meant for logs only, never for callers.
    """

    public_message: ClassVar[str] = "Authentication failed."

    def __init__(self, reason: str = "") -> None:
        super().__init__(self.public_message)
        self.reason = reason or "unspecified"

    def __str__(self) -> str:
        return self.public_message


class InvalidToken(AuthError):
    """A bearer token that cannot be trusted, whatever the cause."""

    public_message = "The access token is invalid or has expired."


class InvalidClient(AuthError):
    """OAuth 2.0 client authentication failed.

    Raised alike for an unknown client id, a wrong secret and a disabled client, so the
    answer does not reveal which client ids exist.
    """

    public_message = "Client authentication failed."


class InvalidScope(AuthError):
    """The requested scope is unknown or exceeds the scopes granted to the client."""

    public_message = "The requested scope is invalid or exceeds the scopes granted to the client."


class InvalidApiKey(AuthError):
    """An API key that is malformed, unknown, does not match, or has been revoked."""

    public_message = "The API key is invalid or has been revoked."

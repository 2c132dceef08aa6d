"""``POST /oauth/token`` and ``GET /.well-known/jwks.json`` as Starlette endpoints.

Both are built by factories, so the composition root decides what they talk to::

    routes = [
        Route("/oauth/token", token_endpoint(access), methods=["POST"]),
        Route("/.well-known/jwks.json", jwks_endpoint(tokens), methods=["GET"]),
    ]

The token endpoint implements the client credentials grant of RFC 6749 §4.4 with client
authentication by HTTP Basic or by form parameters (§2.3.1) and errors as in §5.2.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol
from urllib.parse import parse_qsl, unquote_plus

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from stockgraph.auth.errors import InvalidClient, InvalidScope
from stockgraph.auth.scopes import Scope, UnknownScope, parse_scopes
from stockgraph.auth.tokens import IssuedToken, TokenService

log = logging.getLogger(__name__)

Endpoint = Callable[[Request], Awaitable[Response]]

FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"
CLIENT_CREDENTIALS = "client_credentials"
JWKS_MAX_AGE_SECONDS = 300

_MAX_BODY_BYTES = 16 * 1024
_MAX_FIELDS = 16
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
_BASIC_CHALLENGE = {"WWW-Authenticate": 'Basic realm="stockgraph"'}


class ClientCredentialsExchange(Protocol):
    """Trades a client's id and secret for an access token.

    ``requested`` is the set of scopes the client asked for, ``None`` when it asked for
    none in particular. Raises :class:`~stockgraph.auth.errors.InvalidClient` when the
    client cannot be authenticated (whatever the reason) and
    :class:`~stockgraph.auth.errors.InvalidScope` when it asks for more than it holds.
    """

    async def exchange(
        self, client_id: str, client_secret: str, requested: frozenset[Scope] | None
    ) -> IssuedToken:
        """Authenticate the client and issue a token with the granted scopes."""


class _OAuthError(Exception):
    def __init__(self, error: str, description: str, *, status: int = 400) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status


def _invalid_client(reason: str) -> _OAuthError:
    log.info("token request refused: invalid_client: %s", reason)
    return _OAuthError("invalid_client", InvalidClient.public_message, status=401)


def _error_response(error: _OAuthError) -> JSONResponse:
    headers = dict(_NO_STORE)
    if error.status == 401:
        headers.update(_BASIC_CHALLENGE)
    return JSONResponse(
        {"error": error.error, "error_description": error.description},
        status_code=error.status,
        headers=headers,
    )


def token_endpoint(exchange: ClientCredentialsExchange) -> Endpoint:
    """The ``POST /oauth/token`` endpoint for the client credentials grant.

    Success is ``200 {"access_token", "token_type": "Bearer", "expires_in", "scope"}``;
    failures are ``{"error", "error_description"}`` with ``invalid_request``,
    ``unsupported_grant_type`` or ``invalid_scope`` (400) or ``invalid_client`` (401, with a
    ``WWW-Authenticate: Basic`` challenge). Every answer carries ``Cache-Control: no-store``.
    """

    async def token(request: Request) -> Response:
        try:
            client_id, client_secret, requested = await _read_token_request(request)
            issued = await exchange.exchange(client_id, client_secret, requested)
        except _OAuthError as error:
            return _error_response(error)
        except InvalidClient as exc:
            return _error_response(_invalid_client(exc.reason))
        except InvalidScope as exc:
            log.info("token request refused: invalid_scope: %s", exc.reason)
            return _error_response(_OAuthError("invalid_scope", InvalidScope.public_message))
        return JSONResponse(
            {
                "access_token": issued.access_token,
                "token_type": issued.token_type,
                "expires_in": issued.expires_in,
                "scope": issued.scope,
            },
            headers=dict(_NO_STORE),
        )

    return token


def jwks_endpoint(tokens: TokenService) -> Endpoint:
    """The ``GET /.well-known/jwks.json`` endpoint: the public signing keys, by ``kid``.

    Clients may cache the answer for five minutes; rotate keys with at least that much
    overlap.
    """
    body = tokens.jwks()
    headers = {"Cache-Control": f"public, max-age={JWKS_MAX_AGE_SECONDS}"}

    async def jwks(request: Request) -> Response:
        return JSONResponse(body, headers=headers)

    return jwks


async def _read_token_request(request: Request) -> tuple[str, str, frozenset[Scope] | None]:
    if request.method != "POST":
        raise _OAuthError("invalid_request", "The token endpoint accepts POST only.", status=405)
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type != FORM_CONTENT_TYPE:
        raise _OAuthError("invalid_request", f"The request body must be {FORM_CONTENT_TYPE}.")
    form = _parse_form(await _read_body(request))

    grant_type = form.get("grant_type")
    if grant_type is None:
        raise _OAuthError("invalid_request", "The grant_type parameter is missing.")
    if grant_type != CLIENT_CREDENTIALS:
        raise _OAuthError(
            "unsupported_grant_type", "Only the client_credentials grant is supported."
        )

    client_id, client_secret = _client_credentials(request, form)

    requested: frozenset[Scope] | None = None
    if "scope" in form:
        try:
            requested = parse_scopes(form["scope"]) or None
        except UnknownScope as exc:
            log.info("token request refused: invalid_scope: %s", exc)
            raise _OAuthError("invalid_scope", InvalidScope.public_message) from exc
    return client_id, client_secret, requested


async def _read_body(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and not (declared.isascii() and declared.isdigit()):
        raise _OAuthError("invalid_request", "The Content-Length header is not a number.")
    if declared is not None and int(declared) > _MAX_BODY_BYTES:
        raise _OAuthError("invalid_request", "The request body is too large.")
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > _MAX_BODY_BYTES:
            raise _OAuthError("invalid_request", "The request body is too large.")
    return bytes(body)


def _parse_form(body: bytes) -> dict[str, str]:
    """Form parameters, each at most once (§3.2); empty ones count as omitted (§3.1)."""
    try:
        pairs = parse_qsl(
            body.decode("ascii"),
            keep_blank_values=True,
            encoding="utf-8",
            errors="strict",
            max_num_fields=_MAX_FIELDS,
        )
    except ValueError as exc:
        raise _OAuthError("invalid_request", "The request body is not valid form data.") from exc
    form: dict[str, str] = {}
    for name, value in pairs:
        if name in form:
            raise _OAuthError("invalid_request", f"The {name[:32]} parameter is repeated.")
        form[name] = value
    return {name: value for name, value in form.items() if value}


def _client_credentials(request: Request, form: Mapping[str, str]) -> tuple[str, str]:
    authorization = request.headers.getlist("authorization")
    in_form = "client_id" in form or "client_secret" in form
    if authorization:
        if len(authorization) > 1 or in_form:
            raise _OAuthError("invalid_request", "Use exactly one client authentication method.")
        return _basic_credentials(authorization[0])
    client_id = form.get("client_id")
    client_secret = form.get("client_secret")
    if client_id is None or client_secret is None:
        raise _invalid_client("no client id and secret in the request")
    return client_id, client_secret


def _basic_credentials(header: str) -> tuple[str, str]:
    """The client id and secret of a Basic header, each form-url-decoded (§2.3.1)."""
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic":
        raise _invalid_client(f"unsupported authentication scheme {scheme[:16]!r}")
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        raw_id, colon, raw_secret = decoded.partition(":")
        client_id = unquote_plus(raw_id, errors="strict")
        client_secret = unquote_plus(raw_secret, errors="strict")
    except (binascii.Error, ValueError):
        raise _invalid_client("malformed Basic credentials") from None
    if not colon or not client_id or not client_secret:
        raise _invalid_client("Basic credentials without a client id or secret")
    return client_id, client_secret

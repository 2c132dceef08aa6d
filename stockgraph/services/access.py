"""Access use-cases: OAuth clients, the client credentials exchange, bearer tokens, API keys.

``AccessService`` is what the token endpoint (as its ``ClientCredentialsExchange``), the
GraphQL request context and the admin CLI call; it stores credentials through an
:class:`AccessStore` and signs tokens with a :class:`~stockgraph.auth.tokens.TokenService`.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from stockgraph.auth.errors import InvalidApiKey, InvalidClient, InvalidScope
from stockgraph.auth.principal import CredentialKind, Principal
from stockgraph.auth.records import ApiKeyRecord, ClientRecord, UnknownTenant
from stockgraph.auth.scopes import Scope, format_scopes
from stockgraph.auth.secrets import (
    hash_secret,
    new_api_key,
    new_client_id,
    new_client_secret,
    split_api_key,
    verify_secret,
)
from stockgraph.auth.tokens import IssuedToken, TokenService
from stockgraph.domain.ids import ClientId, TenantId

__all__ = [
    "AccessService",
    "AccessStore",
    "ApiKeyRecord",
    "ClientRecord",
    "UnknownTenant",
]

MAX_API_KEY_CACHE_SECONDS = 60.0
_MAX_CLIENT_ID_LENGTH = 64
_MAX_SECRET_LENGTH = 256
_MAX_NAME_LENGTH = 200
_NO_SUCH_HASH = "0" * 64
"""Checked against when the client or key does not exist, so both paths cost the same."""


class AccessStore(Protocol):
    """Where clients, API keys and tenants are kept.

    Implementations store records as given; they do not hash, check or interpret
    secrets. ``add_client`` and ``add_api_key`` raise :class:`UnknownTenant` when the
    record's tenant does not exist.
    """

    async def get_client(self, client_id: str) -> ClientRecord | None:
        """The client with this id, disabled or not; ``None`` if there is none."""

    async def add_client(self, record: ClientRecord) -> None:
        """Store a new client."""

    async def get_api_key(self, key_id: str) -> ApiKeyRecord | None:
        """The API key with this public id, revoked or not; ``None`` if there is none."""

    async def add_api_key(self, record: ApiKeyRecord) -> None:
        """Store a new API key."""

    async def ensure_tenant(self, tenant_id: TenantId, name: str) -> None:
        """Create the tenant unless it exists; an existing tenant is left as it is."""


@dataclass(frozen=True, slots=True)
class _CachedKey:
    expires_at: float
    key_hash: str
    principal: Principal


def _utcnow() -> datetime:
    return datetime.now(UTC)


class AccessService:
    """Credentials in, principals out.

    - :meth:`exchange` implements the client credentials grant: it checks a client's id
      and secret and signs a token with the granted scopes.
    - :meth:`authenticate_bearer` and :meth:`authenticate_api_key` turn a request's
      credential into the :class:`~stockgraph.auth.principal.Principal` it speaks for.
    - :meth:`create_client` and :meth:`create_api_key` mint credentials; their secrets are
      returned once and only hashes are stored.

    Verified API keys are remembered in this process for ``api_key_cache_seconds``
    (default 5, at most 60), for at most ``api_key_cache_size`` keys, so a busy storefront
    does not cost one database read per request. The price is a revocation delay: a
    revoked key keeps working for up to ``api_key_cache_seconds`` in each process that
    verified it just before. Set it to 0 to read the database every time. Bearer tokens
    are stateless: disabling a client stops new tokens at once, while tokens already
    issued stay valid until they expire (``TokenService.ttl_seconds``).

    Example::

        client_id, secret = await access.create_client(
            tenant_id=TenantId("acme"), name="storefront", scopes={Scope.INVENTORY_READ}
        )
        issued = await access.exchange(client_id, secret, None)
        principal = await access.authenticate_bearer(issued.access_token)
    """

    def __init__(
        self,
        *,
        store: AccessStore,
        tokens: TokenService,
        api_key_cache_seconds: float = 5.0,
        api_key_cache_size: int = 1024,
        token_cache_size: int = 4096,
        clock: Callable[[], datetime] = _utcnow,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 <= api_key_cache_seconds <= MAX_API_KEY_CACHE_SECONDS:
            raise ValueError(
                f"api_key_cache_seconds must be between 0 and {MAX_API_KEY_CACHE_SECONDS}"
            )
        if api_key_cache_size < 0:
            raise ValueError("api_key_cache_size must not be negative")
        self._store = store
        self._tokens = tokens
        self._cache_seconds = api_key_cache_seconds
        self._cache_size = api_key_cache_size
        self._clock = clock
        self._monotonic = monotonic
        self._key_cache: OrderedDict[str, _CachedKey] = OrderedDict()
        self._token_cache: OrderedDict[str, tuple[Principal, int]] = OrderedDict()
        self._token_cache_size = max(0, token_cache_size)

    async def exchange(
        self, client_id: str, client_secret: str, requested: frozenset[Scope] | None
    ) -> IssuedToken:
        """Sign a token for a client that proves its secret (RFC 6749 §4.4).

        ``requested`` must be a subset of the client's scopes (else :class:`InvalidScope`);
        ``None`` or an empty set grants all of them. An unknown client, a wrong secret and
        a disabled client all raise the same :class:`InvalidClient`.
        """
        record: ClientRecord | None = None
        if len(client_id) <= _MAX_CLIENT_ID_LENGTH and len(client_secret) <= _MAX_SECRET_LENGTH:
            record = await self._store.get_client(client_id)
        matches = verify_secret(client_secret, record.secret_hash if record else _NO_SUCH_HASH)
        if record is None:
            raise InvalidClient(f"unknown client id {client_id[:_MAX_CLIENT_ID_LENGTH]!r}")
        if not matches:
            raise InvalidClient(f"wrong secret for client {record.client_id!r}")
        if record.disabled:
            raise InvalidClient(f"client {record.client_id!r} is disabled")
        granted = record.scopes
        if requested:
            if not requested <= record.scopes:
                raise InvalidScope(
                    f"client {record.client_id!r} asked for {format_scopes(requested)!r}"
                    f" but holds {format_scopes(record.scopes)!r}"
                )
            granted = requested
        principal = Principal(
            tenant_id=record.tenant_id,
            subject=record.client_id,
            scopes=granted,
            kind=CredentialKind.TOKEN,
        )
        return self._tokens.issue(principal, now=self._clock())

    async def authenticate_bearer(self, token: str) -> Principal:
        """The principal of a bearer token; :class:`~stockgraph.auth.errors.InvalidToken`
        if it is not valid.

        A token that verified is remembered until its own expiry (at most
        ``token_cache_size`` of them), so a client repeating its token skips the signature
        check. Only the exact same string hits: any other token is verified in full.
        """
        cached = self._token_cache.get(token)
        if cached is not None:
            principal, expires = cached
            if self._clock().timestamp() < expires:
                self._token_cache.move_to_end(token)
                return principal
            del self._token_cache[token]
        principal, expires = self._tokens.verify_until(token)
        if self._token_cache_size:
            self._token_cache[token] = (principal, expires)
            while len(self._token_cache) > self._token_cache_size:
                self._token_cache.popitem(last=False)
        return principal

    async def authenticate_api_key(self, key: str) -> Principal:
        """The principal of an API key; :class:`InvalidApiKey` if it is malformed, unknown,
        wrong or revoked."""
        parts = split_api_key(key)
        if parts is None:
            raise InvalidApiKey("malformed API key")
        key_id, secret = parts
        now = self._monotonic()
        cached = self._key_cache.get(key_id)
        if cached is not None and now < cached.expires_at:
            if not verify_secret(secret, cached.key_hash):
                raise InvalidApiKey(f"wrong secret for API key {key_id!r}")
            self._key_cache.move_to_end(key_id)
            return cached.principal
        if cached is not None:
            del self._key_cache[key_id]
        record = await self._store.get_api_key(key_id)
        matches = verify_secret(secret, record.key_hash if record else _NO_SUCH_HASH)
        if record is None:
            raise InvalidApiKey(f"unknown API key id {key_id!r}")
        if not matches:
            raise InvalidApiKey(f"wrong secret for API key {key_id!r}")
        if record.revoked:
            raise InvalidApiKey(f"API key {key_id!r} is revoked")
        principal = Principal(
            tenant_id=record.tenant_id,
            subject=record.key_id,
            scopes=record.scopes,
            kind=CredentialKind.API_KEY,
        )
        self._remember(key_id, record.key_hash, principal, now)
        return principal

    def _remember(self, key_id: str, key_hash: str, principal: Principal, now: float) -> None:
        if self._cache_seconds <= 0 or self._cache_size == 0:
            return
        self._key_cache[key_id] = _CachedKey(
            expires_at=now + self._cache_seconds, key_hash=key_hash, principal=principal
        )
        self._key_cache.move_to_end(key_id)
        while len(self._key_cache) > self._cache_size:
            self._key_cache.popitem(last=False)

    async def ensure_tenant(self, *, tenant_id: TenantId, name: str) -> None:
        """Create the tenant unless it exists."""
        await self._store.ensure_tenant(tenant_id, _checked_name(name))

    async def create_client(
        self, *, tenant_id: TenantId, name: str, scopes: Iterable[Scope]
    ) -> tuple[ClientId, str]:
        """A new OAuth client of an existing tenant, as ``(client_id, client_secret)``.

        The secret is returned only here; raises :class:`UnknownTenant` for a tenant that
        does not exist and ``ValueError`` for an empty name or no scopes.
        """
        record_scopes = _checked_scopes(scopes)
        client_id = new_client_id()
        client_secret = new_client_secret()
        await self._store.add_client(
            ClientRecord(
                client_id=client_id,
                tenant_id=tenant_id,
                name=_checked_name(name),
                secret_hash=hash_secret(client_secret),
                scopes=record_scopes,
                created_at=self._clock(),
            )
        )
        return client_id, client_secret

    async def create_api_key(
        self, *, tenant_id: TenantId, name: str, scopes: Iterable[Scope]
    ) -> str:
        """A new API key of an existing tenant: the full ``sgk_...`` key, shown only here."""
        record_scopes = _checked_scopes(scopes)
        key_id, full_key = new_api_key()
        parts = split_api_key(full_key)
        if parts is None:  # pragma: no cover - new_api_key always builds a well-formed key
            raise RuntimeError("generated an API key that does not parse")
        await self._store.add_api_key(
            ApiKeyRecord(
                key_id=key_id,
                tenant_id=tenant_id,
                name=_checked_name(name),
                key_hash=hash_secret(parts[1]),
                scopes=record_scopes,
                created_at=self._clock(),
            )
        )
        return full_key


def _checked_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > _MAX_NAME_LENGTH:
        raise ValueError(f"a name is 1 to {_MAX_NAME_LENGTH} characters")
    return name


def _checked_scopes(scopes: Iterable[Scope]) -> frozenset[Scope]:
    checked = frozenset(Scope(scope) for scope in scopes)
    if not checked:
        raise ValueError("a credential needs at least one scope")
    return checked

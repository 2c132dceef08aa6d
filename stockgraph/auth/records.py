"""The stored form of credentials: OAuth clients and API keys.

Both the access use-cases (``stockgraph.services.access``) and the database store
(``stockgraph.persistence.access_store``) speak in these records, so neither needs to
import the other. Secrets never appear here, only their hashes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from stockgraph.auth.scopes import Scope
from stockgraph.domain.ids import ClientId, TenantId


class UnknownTenant(ValueError):
    """A credential was added for a tenant that does not exist."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientRecord:
    """An OAuth 2.0 client of the client credentials grant.

    A client with ``disabled_at`` set can no longer obtain tokens.
    """

    client_id: ClientId
    tenant_id: TenantId
    name: str
    secret_hash: str = field(repr=False)
    scopes: frozenset[Scope]
    created_at: datetime
    disabled_at: datetime | None = None

    @property
    def disabled(self) -> bool:
        return self.disabled_at is not None


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiKeyRecord:
    """A long-lived API key; ``key_id`` is the public part of ``sgk_<key_id>_<secret>``.

    A key with ``revoked_at`` set is refused.
    """

    key_id: str
    tenant_id: TenantId
    name: str
    key_hash: str = field(repr=False)
    scopes: frozenset[Scope]
    created_at: datetime
    revoked_at: datetime | None = None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

"""OAuth clients, API keys and tenants in the database.

:class:`SqlAccessStore` satisfies ``stockgraph.services.access.AccessStore`` structurally;
it speaks in the records of :mod:`stockgraph.auth.records` and knows nothing of secrets
beyond the hashes it is given.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from stockgraph.auth.records import ApiKeyRecord, ClientRecord, UnknownTenant
from stockgraph.auth.scopes import Scope, format_scopes
from stockgraph.domain.ids import ClientId, TenantId
from stockgraph.persistence.models import ApiClient, ApiKey, Tenant

log = logging.getLogger(__name__)


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _stored_scopes(value: str, *, owner: str) -> frozenset[Scope]:
    """Scopes as stored; names the contract no longer defines are dropped, never granted."""
    known = {scope.value: scope for scope in Scope}
    names = value.split()
    unknown = [name for name in names if name not in known]
    if unknown:
        log.warning("ignoring unknown scopes %s stored for %s", unknown, owner)
    return frozenset(known[name] for name in names if name in known)


class SqlAccessStore:
    """The access store on the ``tenants``, ``api_clients`` and ``api_keys`` tables.

    Each call runs in its own short session; writes commit before returning.
    """

    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self._sessions = sessions
        self._clock = clock

    async def get_client(self, client_id: str) -> ClientRecord | None:
        async with self._sessions() as session:
            row = await session.get(ApiClient, client_id)
        if row is None:
            return None
        return ClientRecord(
            client_id=ClientId(row.id),
            tenant_id=TenantId(row.tenant_id),
            name=row.name,
            secret_hash=row.secret_hash,
            scopes=_stored_scopes(row.scopes, owner=f"client {row.id}"),
            created_at=row.created_at,
            disabled_at=row.disabled_at,
        )

    async def add_client(self, record: ClientRecord) -> None:
        async with self._sessions.begin() as session:
            await _require_tenant(session, record.tenant_id)
            session.add(
                ApiClient(
                    id=record.client_id,
                    tenant_id=record.tenant_id,
                    name=record.name,
                    secret_hash=record.secret_hash,
                    scopes=format_scopes(record.scopes),
                    created_at=record.created_at,
                    disabled_at=record.disabled_at,
                )
            )

    async def get_api_key(self, key_id: str) -> ApiKeyRecord | None:
        async with self._sessions() as session:
            row = await session.get(ApiKey, key_id)
        if row is None:
            return None
        return ApiKeyRecord(
            key_id=row.id,
            tenant_id=TenantId(row.tenant_id),
            name=row.name,
            key_hash=row.key_hash,
            scopes=_stored_scopes(row.scopes, owner=f"API key {row.id}"),
            created_at=row.created_at,
            revoked_at=row.revoked_at,
        )

    async def add_api_key(self, record: ApiKeyRecord) -> None:
        async with self._sessions.begin() as session:
            await _require_tenant(session, record.tenant_id)
            session.add(
                ApiKey(
                    id=record.key_id,
                    tenant_id=record.tenant_id,
                    name=record.name,
                    key_hash=record.key_hash,
                    scopes=format_scopes(record.scopes),
                    created_at=record.created_at,
                    revoked_at=record.revoked_at,
                )
            )

    async def ensure_tenant(self, tenant_id: TenantId, name: str) -> None:
        try:
            async with self._sessions.begin() as session:
                if await session.get(Tenant, tenant_id) is None:
                    session.add(Tenant(id=tenant_id, name=name, created_at=self._clock()))
        except IntegrityError:
            # A concurrent caller created it between our read and our insert.
            async with self._sessions() as session:
                if await session.get(Tenant, tenant_id) is None:
                    raise


async def _require_tenant(session: AsyncSession, tenant_id: TenantId) -> None:
    if await session.get(Tenant, tenant_id) is None:
        raise UnknownTenant(f"unknown tenant {tenant_id!r}")

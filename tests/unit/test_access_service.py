"""Access use-cases end to end over the SQL store on a temporary SQLite file."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.applications import Starlette
from starlette.routing import Route

from stockgraph.auth.endpoints import token_endpoint
from stockgraph.auth.errors import InvalidApiKey, InvalidClient, InvalidScope, InvalidToken
from stockgraph.auth.principal import CredentialKind
from stockgraph.auth.scopes import Scope
from stockgraph.auth.secrets import split_api_key
from stockgraph.auth.tokens import SigningKey, TokenService
from stockgraph.domain.ids import TenantId
from stockgraph.persistence.access_store import SqlAccessStore
from stockgraph.persistence.database import create_engine, session_factory
from stockgraph.persistence.models import ApiClient, ApiKey, Base, Tenant
from stockgraph.services.access import AccessService, AccessStore, UnknownTenant

READ = frozenset({Scope.INVENTORY_READ})
READ_WRITE = frozenset({Scope.INVENTORY_READ, Scope.INVENTORY_WRITE})


class ManualClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def sessions(tmp_path: Path) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(f"sqlite:///{tmp_path / 'access.db'}")
    async with engine.begin() as connection:
        await connection.run_sync(Base.metadata.create_all)
    try:
        yield session_factory(engine)
    finally:
        await engine.dispose()


@pytest.fixture
def store(sessions: async_sessionmaker[AsyncSession]) -> AccessStore:
    return SqlAccessStore(sessions=sessions)


@pytest.fixture
def tokens() -> TokenService:
    return TokenService(
        issuer="https://stockgraph.test",
        audience="stockgraph-api",
        keys=[SigningKey.hs256("k" * 48, kid="hs-test")],
    )


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def access(store: AccessStore, tokens: TokenService, clock: ManualClock) -> AccessService:
    return AccessService(store=store, tokens=tokens, monotonic=clock)


async def _tenant(access: AccessService) -> TenantId:
    tenant_id = TenantId(f"t-{uuid.uuid4().hex[:12]}")
    await access.ensure_tenant(tenant_id=tenant_id, name=f"Tenant {tenant_id}")
    return tenant_id


async def _revoke(sessions: async_sessionmaker[AsyncSession], key: str) -> None:
    parts = split_api_key(key)
    assert parts is not None
    async with sessions.begin() as session:
        await session.execute(
            update(ApiKey).where(ApiKey.id == parts[0]).values(revoked_at=datetime.now(UTC))
        )


# Client credentials --------------------------------------------------------------------


async def test_client_credentials_yield_a_token_that_authenticates_as_the_client(
    access: AccessService,
) -> None:
    tenant_id = await _tenant(access)
    client_id, secret = await access.create_client(
        tenant_id=tenant_id, name="storefront", scopes=READ_WRITE
    )

    issued = await access.exchange(client_id, secret, None)
    principal = await access.authenticate_bearer(issued.access_token)

    assert principal.tenant_id == tenant_id
    assert principal.subject == client_id
    assert principal.scopes == READ_WRITE
    assert principal.kind is CredentialKind.TOKEN
    assert issued.scope == "inventory:read inventory:write"


async def test_token_endpoint_issues_tokens_the_service_accepts(access: AccessService) -> None:
    tenant_id = await _tenant(access)
    client_id, secret = await access.create_client(
        tenant_id=tenant_id, name="partner app", scopes=READ_WRITE
    )
    app = Starlette(routes=[Route("/oauth/token", token_endpoint(access), methods=["POST"])])

    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as http:
        response = await http.post(
            "/oauth/token",
            data={"grant_type": "client_credentials", "scope": "inventory:read"},
            auth=(client_id, secret),
        )

    assert response.status_code == 200
    principal = await access.authenticate_bearer(response.json()["access_token"])
    assert principal.tenant_id == tenant_id
    assert principal.scopes == READ


async def test_exchange_grants_only_the_requested_subset(access: AccessService) -> None:
    client_id, secret = await access.create_client(
        tenant_id=await _tenant(access), name="dashboard", scopes=READ_WRITE
    )

    issued = await access.exchange(client_id, secret, READ)

    assert (await access.authenticate_bearer(issued.access_token)).scopes == READ


async def test_exchange_refuses_scopes_the_client_does_not_hold(access: AccessService) -> None:
    client_id, secret = await access.create_client(
        tenant_id=await _tenant(access), name="dashboard", scopes=READ
    )

    with pytest.raises(InvalidScope):
        await access.exchange(client_id, secret, frozenset({Scope.OPS_ADMIN}))


async def test_exchange_refuses_a_wrong_secret(access: AccessService) -> None:
    client_id, _ = await access.create_client(
        tenant_id=await _tenant(access), name="storefront", scopes=READ
    )

    with pytest.raises(InvalidClient) as caught:
        await access.exchange(client_id, "not-the-secret", None)

    assert "wrong secret" in caught.value.reason


async def test_unknown_client_is_refused_exactly_like_a_wrong_secret(
    access: AccessService,
) -> None:
    client_id, _ = await access.create_client(
        tenant_id=await _tenant(access), name="storefront", scopes=READ
    )

    with pytest.raises(InvalidClient) as wrong_secret:
        await access.exchange(client_id, "not-the-secret", None)
    with pytest.raises(InvalidClient) as unknown:
        await access.exchange("sgc_nobody", "not-the-secret", None)

    assert str(unknown.value) == str(wrong_secret.value)
    assert "unknown client" in unknown.value.reason


async def test_disabled_client_cannot_obtain_tokens(
    access: AccessService, sessions: async_sessionmaker[AsyncSession]
) -> None:
    client_id, secret = await access.create_client(
        tenant_id=await _tenant(access), name="retired", scopes=READ
    )
    async with sessions.begin() as session:
        await session.execute(
            update(ApiClient).where(ApiClient.id == client_id).values(disabled_at=datetime.now(UTC))
        )

    with pytest.raises(InvalidClient) as caught:
        await access.exchange(client_id, secret, None)

    assert "disabled" in caught.value.reason


async def test_client_secret_is_stored_only_as_a_hash(
    access: AccessService, sessions: async_sessionmaker[AsyncSession]
) -> None:
    client_id, secret = await access.create_client(
        tenant_id=await _tenant(access), name="storefront", scopes=READ
    )

    async with sessions() as session:
        row = await session.scalar(select(ApiClient).where(ApiClient.id == client_id))

    assert row is not None
    assert secret not in (row.secret_hash, row.name, row.scopes)
    assert len(row.secret_hash) == 64


async def test_stored_scope_names_the_contract_does_not_know_are_never_granted(
    access: AccessService, sessions: async_sessionmaker[AsyncSession]
) -> None:
    client_id, secret = await access.create_client(
        tenant_id=await _tenant(access), name="legacy", scopes=READ
    )
    async with sessions.begin() as session:
        await session.execute(
            update(ApiClient)
            .where(ApiClient.id == client_id)
            .values(scopes="inventory:read superuser")
        )

    issued = await access.exchange(client_id, secret, None)

    assert (await access.authenticate_bearer(issued.access_token)).scopes == READ


async def test_tampered_bearer_token_is_refused(access: AccessService) -> None:
    client_id, secret = await access.create_client(
        tenant_id=await _tenant(access), name="storefront", scopes=READ
    )
    token = (await access.exchange(client_id, secret, None)).access_token

    with pytest.raises(InvalidToken):
        await access.authenticate_bearer(token[:-4] + "AAAA")


# API keys ------------------------------------------------------------------------------


async def test_api_key_authenticates_as_its_tenant_with_its_scopes(
    access: AccessService,
) -> None:
    tenant_id = await _tenant(access)

    key = await access.create_api_key(tenant_id=tenant_id, name="storefront", scopes=READ)
    principal = await access.authenticate_api_key(key)

    parts = split_api_key(key)
    assert parts is not None
    assert principal.tenant_id == tenant_id
    assert principal.subject == parts[0]
    assert principal.scopes == READ
    assert principal.kind is CredentialKind.API_KEY


async def test_api_key_is_stored_only_as_a_hash(
    access: AccessService, sessions: async_sessionmaker[AsyncSession]
) -> None:
    key = await access.create_api_key(tenant_id=await _tenant(access), name="pos", scopes=READ)
    parts = split_api_key(key)
    assert parts is not None

    async with sessions() as session:
        row = await session.scalar(select(ApiKey).where(ApiKey.id == parts[0]))

    assert row is not None
    assert parts[1] not in row.key_hash
    assert key not in row.key_hash


async def test_revoked_api_key_is_refused(
    access: AccessService, sessions: async_sessionmaker[AsyncSession]
) -> None:
    key = await access.create_api_key(tenant_id=await _tenant(access), name="pos", scopes=READ)
    await _revoke(sessions, key)

    with pytest.raises(InvalidApiKey) as caught:
        await access.authenticate_api_key(key)

    assert "revoked" in caught.value.reason


async def test_revoked_api_key_stops_working_once_the_cache_window_has_passed(
    access: AccessService, sessions: async_sessionmaker[AsyncSession], clock: ManualClock
) -> None:
    key = await access.create_api_key(tenant_id=await _tenant(access), name="pos", scopes=READ)
    await access.authenticate_api_key(key)
    await _revoke(sessions, key)

    clock.now += 4.0
    still_cached = await access.authenticate_api_key(key)
    clock.now += 2.0

    assert still_cached.scopes == READ
    with pytest.raises(InvalidApiKey):
        await access.authenticate_api_key(key)


async def test_revoked_api_key_is_refused_at_once_without_a_cache(
    store: AccessStore, tokens: TokenService, sessions: async_sessionmaker[AsyncSession]
) -> None:
    access = AccessService(store=store, tokens=tokens, api_key_cache_seconds=0)
    key = await access.create_api_key(tenant_id=await _tenant(access), name="pos", scopes=READ)
    await access.authenticate_api_key(key)
    await _revoke(sessions, key)

    with pytest.raises(InvalidApiKey):
        await access.authenticate_api_key(key)


async def test_api_key_cache_holds_no_more_keys_than_its_size(
    store: AccessStore, tokens: TokenService, sessions: async_sessionmaker[AsyncSession]
) -> None:
    access = AccessService(store=store, tokens=tokens, api_key_cache_size=1)
    tenant_id = await _tenant(access)
    first = await access.create_api_key(tenant_id=tenant_id, name="first", scopes=READ)
    second = await access.create_api_key(tenant_id=tenant_id, name="second", scopes=READ)
    await access.authenticate_api_key(first)
    await access.authenticate_api_key(second)
    await _revoke(sessions, first)

    with pytest.raises(InvalidApiKey):
        await access.authenticate_api_key(first)


async def test_api_key_with_a_wrong_secret_is_refused_even_while_cached(
    access: AccessService,
) -> None:
    key = await access.create_api_key(tenant_id=await _tenant(access), name="pos", scopes=READ)
    await access.authenticate_api_key(key)
    key_id = key.split("_")[1]

    with pytest.raises(InvalidApiKey):
        await access.authenticate_api_key(f"sgk_{key_id}_{'A' * 43}")


async def test_unknown_api_key_is_refused(access: AccessService) -> None:
    with pytest.raises(InvalidApiKey) as caught:
        await access.authenticate_api_key(f"sgk_{'0' * 16}_{'A' * 43}")

    assert "unknown" in caught.value.reason


@pytest.mark.parametrize("key", ["", "Bearer x", "sgk_nothex_" + "A" * 43, "sgk_" + "0" * 16])
async def test_malformed_api_key_is_refused(access: AccessService, key: str) -> None:
    with pytest.raises(InvalidApiKey) as caught:
        await access.authenticate_api_key(key)

    assert "malformed" in caught.value.reason


# Tenants -------------------------------------------------------------------------------


async def test_principals_belong_to_the_tenant_their_credential_was_made_for(
    access: AccessService,
) -> None:
    acme, globex = await _tenant(access), await _tenant(access)
    acme_client, acme_secret = await access.create_client(
        tenant_id=acme, name="acme app", scopes=READ
    )
    globex_client, globex_secret = await access.create_client(
        tenant_id=globex, name="globex app", scopes=READ
    )
    acme_key = await access.create_api_key(tenant_id=acme, name="acme pos", scopes=READ)
    globex_key = await access.create_api_key(tenant_id=globex, name="globex pos", scopes=READ)

    acme_token = (await access.exchange(acme_client, acme_secret, None)).access_token
    globex_token = (await access.exchange(globex_client, globex_secret, None)).access_token

    assert (await access.authenticate_bearer(acme_token)).tenant_id == acme
    assert (await access.authenticate_bearer(globex_token)).tenant_id == globex
    assert (await access.authenticate_api_key(acme_key)).tenant_id == acme
    assert (await access.authenticate_api_key(globex_key)).tenant_id == globex


async def test_one_tenants_client_id_with_another_tenants_secret_is_refused(
    access: AccessService,
) -> None:
    acme_client, _ = await access.create_client(
        tenant_id=await _tenant(access), name="acme app", scopes=READ
    )
    _, globex_secret = await access.create_client(
        tenant_id=await _tenant(access), name="globex app", scopes=READ
    )

    with pytest.raises(InvalidClient):
        await access.exchange(acme_client, globex_secret, None)


async def test_credentials_for_an_unknown_tenant_are_not_created(access: AccessService) -> None:
    with pytest.raises(UnknownTenant):
        await access.create_client(tenant_id=TenantId("nobody"), name="x", scopes=READ)
    with pytest.raises(UnknownTenant):
        await access.create_api_key(tenant_id=TenantId("nobody"), name="x", scopes=READ)


async def test_ensuring_an_existing_tenant_keeps_it_as_it_was(
    access: AccessService, sessions: async_sessionmaker[AsyncSession]
) -> None:
    tenant_id = TenantId(f"t-{uuid.uuid4().hex[:12]}")
    await access.ensure_tenant(tenant_id=tenant_id, name="Original")
    await access.ensure_tenant(tenant_id=tenant_id, name="Renamed")

    async with sessions() as session:
        names = (await session.scalars(select(Tenant.name).where(Tenant.id == tenant_id))).all()

    assert names == ["Original"]


# Validation ----------------------------------------------------------------------------


async def test_credentials_need_at_least_one_scope(access: AccessService) -> None:
    tenant_id = await _tenant(access)

    with pytest.raises(ValueError, match="scope"):
        await access.create_client(tenant_id=tenant_id, name="x", scopes=[])
    with pytest.raises(ValueError, match="scope"):
        await access.create_api_key(tenant_id=tenant_id, name="x", scopes=[])


async def test_credentials_need_a_name(access: AccessService) -> None:
    with pytest.raises(ValueError, match="name"):
        await access.create_client(tenant_id=await _tenant(access), name="  ", scopes=READ)


def test_api_key_cache_window_is_capped_at_a_minute(
    store: AccessStore, tokens: TokenService
) -> None:
    with pytest.raises(ValueError, match="api_key_cache_seconds"):
        AccessService(store=store, tokens=tokens, api_key_cache_seconds=61)

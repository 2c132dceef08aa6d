"""A webhook endpoint's URL is the tenant's once: a second one is refused ``URL_TAKEN``,
whether it is seen before writing or only by the database's unique constraint (another
request took it in between); a write that breaks any other constraint is not reported as
``URL_TAKEN``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from stockgraph.domain.ids import TenantId
from stockgraph.domain.webhooks import RefusalCode, WebhookRefused
from stockgraph.persistence import webhook_store
from stockgraph.persistence.models import Tenant
from stockgraph.persistence.webhook_store import SqlWebhookStore

ACME = TenantId("acme")
NOW = datetime(2026, 6, 1, tzinfo=UTC)
URL = "https://oms.example/hooks"


async def _store(engine: AsyncEngine) -> SqlWebhookStore:
    async with engine.begin() as conn:
        await conn.execute(insert(Tenant).values(id=ACME, name="Acme", created_at=NOW))
    return SqlWebhookStore(engine=engine)


async def _create(store: SqlWebhookStore, url: str, tenant: TenantId = ACME) -> int:
    made = await store.create_endpoint(
        tenant, url=url, secret="whsec_x", event_types=["sync.alert"], description="", now=NOW
    )
    return made.id


def _blind_first_look(monkeypatch: pytest.MonkeyPatch) -> None:
    """The store's first look for a URL's holder finds none, as when another request
    takes the URL between that look and the write."""
    real = webhook_store._holder_of
    looks = 0

    def holder_of(tenant_id: TenantId, url: str) -> Any:
        nonlocal looks
        looks += 1
        return real(tenant_id, url if looks > 1 else url + "#not-yet")

    monkeypatch.setattr(webhook_store, "_holder_of", holder_of)


async def test_a_url_the_tenant_has_is_refused_on_create_and_update(engine: AsyncEngine) -> None:
    store = await _store(engine)
    await _create(store, URL)
    other = await _create(store, "https://oms.example/other")
    with pytest.raises(WebhookRefused) as created:
        await _create(store, URL)
    with pytest.raises(WebhookRefused) as updated:
        await store.update_endpoint(ACME, other, now=NOW, url=URL)
    for refused in (created.value, updated.value):
        assert (refused.code, refused.field) == (RefusalCode.URL_TAKEN, "url")
        assert URL in str(refused)


async def test_a_url_taken_between_the_look_and_the_write_is_refused_the_same(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await _store(engine)
    await _create(store, URL)
    other = await _create(store, "https://oms.example/other")
    _blind_first_look(monkeypatch)
    with pytest.raises(WebhookRefused) as created:
        await _create(store, URL)
    assert created.value.code is RefusalCode.URL_TAKEN
    _blind_first_look(monkeypatch)
    with pytest.raises(WebhookRefused) as updated:
        await store.update_endpoint(ACME, other, now=NOW, url=URL)
    assert updated.value.code is RefusalCode.URL_TAKEN


async def test_another_broken_constraint_is_not_called_url_taken(engine: AsyncEngine) -> None:
    store = await _store(engine)
    with pytest.raises(IntegrityError):  # no such tenant: the foreign key refuses it
        await _create(store, URL, tenant=TenantId("ghost"))
    assert [e.url for e in await store.endpoints(ACME, after_id=None, limit=10)] == []

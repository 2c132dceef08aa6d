"""``POST /webhooks/wms/{connectorId}`` answers a WMS plainly: accepted, duplicate or why not."""

from __future__ import annotations

import shutil
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from stockgraph.app import create_app
from stockgraph.connectors.signing import EVENT_ID_HEADER, SIGNATURE_HEADER, sign
from stockgraph.domain.ids import TenantId
from stockgraph.domain.model import WarehouseSpec
from stockgraph.runtime import Runtime
from tests.conftest import make_settings

BODY = (
    b'{"id": "evt-1", "type": "inventory.adjusted", "sequence": 3,'
    b' "created_at": "2026-11-24T10:00:00Z", "data": {"inventory": []}}'
)


@pytest.fixture
async def client(demo_database: str, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    copy = tmp_path / "stockgraph.db"
    shutil.copy(Path(demo_database.removeprefix("sqlite+aiosqlite:///")), copy)
    settings = make_settings(f"sqlite+aiosqlite:///{copy}")
    runtime = Runtime.build(settings)
    await runtime.connect_instances(
        [
            WarehouseSpec(
                tenant_id=TenantId("acme"),
                code="WH-00",
                connector_id="acme-wh-00",
                name="Berlin",
                region="eu",
                location=None,
                dialect="rest",
                settings={
                    "base_url": "http://127.0.0.1:9",
                    "api_key": "k",
                    "webhook_secrets": ["new-secret", "old-secret"],
                },
            )
        ]
    )
    app = create_app(settings, runtime=runtime)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://sg") as http:
        yield http
    await runtime.close()


def _headers(
    body: bytes, secret: str = "new-secret", event_id: str | None = "evt-1", at: float | None = None
) -> dict[str, str]:
    headers = {SIGNATURE_HEADER: sign(body, secret, timestamp=int(at or time.time()))}
    if event_id is not None:
        headers[EVENT_ID_HEADER] = event_id
    return headers


async def test_a_signed_delivery_is_accepted_then_recognised_as_a_duplicate(
    client: httpx.AsyncClient,
) -> None:
    first = await client.post("/webhooks/wms/acme-wh-00", content=BODY, headers=_headers(BODY))
    again = await client.post(
        "/webhooks/wms/acme-wh-00", content=BODY, headers=_headers(BODY, "old-secret")
    )
    assert (first.status_code, first.json()) == (202, {"status": "accepted"})
    assert (again.status_code, again.json()) == (200, {"status": "duplicate"})


@pytest.mark.parametrize(
    ("headers", "status", "needle"),
    [
        (dict, 401, "missing"),
        (lambda: _headers(BODY, secret="wrong"), 401, "no signature matches"),
        (lambda: _headers(BODY, at=time.time() - 600), 401, "tolerance"),
        (lambda: _headers(BODY, at=time.time() + 600), 401, "tolerance"),
        (lambda: _headers(BODY + b" "), 401, "no signature matches"),
        (lambda: _headers(BODY, event_id=None), 400, "X-Event-Id"),
    ],
    ids=["unsigned", "wrong-secret", "stale", "future", "tampered", "no-event-id"],
)
async def test_refusals_say_why(
    client: httpx.AsyncClient, headers: Callable[[], dict[str, str]], status: int, needle: str
) -> None:
    # Signed when the test runs, not when it is collected: a long suite would otherwise
    # reach it with every signature past the tolerance.
    response = await client.post("/webhooks/wms/acme-wh-00", content=BODY, headers=headers())
    assert response.status_code == status
    assert needle in str(response.json())


async def test_an_unknown_connector_is_404(client: httpx.AsyncClient) -> None:
    response = await client.post("/webhooks/wms/nobody", content=BODY, headers=_headers(BODY))
    assert response.status_code == 404

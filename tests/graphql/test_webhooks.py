"""Webhooks in the graph: ops:admin only, tenant-scoped, refusals as userErrors, the secret
shown once."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from stockgraph.auth.scopes import Scope
from stockgraph.domain.global_ids import to_global_id
from stockgraph.domain.ids import TenantId
from stockgraph.runtime import Runtime
from tests.conftest import make_settings
from tests.graphql.helpers import _SCHEMA, run
from tests.integration.webhook_world import alerts

CREATE = (
    "mutation($url: String!, $types: [String!]!){ createWebhookEndpoint(input: "
    '{url: $url, eventTypes: $types, description: "OMS"}) { endpoint { id url eventTypes '
    "description enabled } secret userErrors { field message code } } }"
)
REPLAY = (
    "mutation($id: ID!){ replayDelivery(input: {id: $id}) {"
    " delivery { id } userErrors { field code } } }"
)
UPDATE = (
    "mutation($id: ID!){ updateWebhookEndpoint(input: {id: $id, enabled: false}) {"
    " endpoint { id } userErrors { code } } }"
)
DELETE = (
    "mutation($id: ID!){ deleteWebhookEndpoint(input: {id: $id})"
    " { deletedId userErrors { code } } }"
)
EVERYTHING = (
    "{ webhookEndpoints { edges { node { id url eventTypes description enabled disabledReason "
    "disabledAt createdAt updatedAt } } } deliveries { edges { cursor node { id messageId "
    "endpoint { id url } eventType eventCursor body status attemptCount nextAttemptAt createdAt "
    "deliveredAt attempts { attemptedAt statusCode durationMs error trigger } } } } }"
)


def _copy(demo_database: str, folder: Path) -> str:
    source = Path(demo_database.removeprefix("sqlite+aiosqlite:///"))
    for suffix in ("", "-wal", "-shm"):
        if Path(f"{source}{suffix}").exists():
            shutil.copy(f"{source}{suffix}", folder / f"copy.db{suffix}")
    return f"sqlite+aiosqlite:///{folder / 'copy.db'}"


@pytest.fixture
def writable_database(demo_database: str, tmp_path: Path) -> str:
    """A copy of the demo world that the test may write to."""
    return _copy(demo_database, tmp_path)


@pytest.fixture
async def runtime(writable_database: str) -> AsyncIterator[Runtime]:
    rt = Runtime.build(make_settings(writable_database))
    try:
        yield rt
    finally:
        await rt.close()


async def _endpoint_with_a_delivery(runtime: Runtime) -> tuple[str, str, str]:
    """acme's endpoint id, its secret and the id of a delivery queued for it."""
    created = await run(
        runtime, CREATE, {"url": "https://oms.example/hooks", "types": ["sync.alert"]}
    )
    assert created.errors == []
    payload = created.data["createWebhookEndpoint"]
    await alerts(runtime, TenantId("acme"), 1)
    await runtime.dispatcher.dispatch_pending()
    found = await run(runtime, "{ deliveries { edges { node { id } } } }")
    [edge] = found.data["deliveries"]["edges"]
    return payload["endpoint"]["id"], payload["secret"], edge["node"]["id"]


async def test_creating_an_endpoint_returns_its_secret_once(runtime: Runtime) -> None:
    endpoint_id, secret, _ = await _endpoint_with_a_delivery(runtime)
    assert secret.startswith("whsec_")
    assert "secret" not in _SCHEMA._schema.type_map["WebhookEndpoint"].fields  # type: ignore[union-attr]
    seen = await run(runtime, EVERYTHING)
    assert seen.errors == []
    assert secret not in orjson.dumps(seen.data).decode()
    [endpoint] = seen.data["webhookEndpoints"]["edges"]
    assert endpoint["node"]["id"] == endpoint_id
    assert endpoint["node"]["eventTypes"] == ["sync.alert"]
    [delivery] = seen.data["deliveries"]["edges"]
    assert delivery["node"]["status"] == "PENDING"
    assert delivery["node"]["endpoint"] == {"id": endpoint_id, "url": "https://oms.example/hooks"}


async def test_rotating_a_secret_returns_the_new_one_and_says_how_long_the_old_signs(
    runtime: Runtime,
) -> None:
    endpoint_id, secret, _ = await _endpoint_with_a_delivery(runtime)
    listed = await run(
        runtime, "{ webhookEndpoints { edges { node { previousSecretExpiresAt } } } }"
    )
    assert listed.data["webhookEndpoints"]["edges"][0]["node"] == {"previousSecretExpiresAt": None}
    before = datetime.now(UTC)
    rotated = await run(
        runtime,
        "mutation($id: ID!){ updateWebhookEndpoint(input: {id: $id, rotateSecret: true}) {"
        " endpoint { previousSecretExpiresAt } secret userErrors { code } } }",
        {"id": endpoint_id},
    )
    assert rotated.errors == []
    payload = rotated.data["updateWebhookEndpoint"]
    assert payload["userErrors"] == []
    assert payload["secret"].startswith("whsec_") and payload["secret"] != secret
    until = datetime.fromisoformat(payload["endpoint"]["previousSecretExpiresAt"])
    assert before + timedelta(hours=24) <= until <= datetime.now(UTC) + timedelta(hours=24)
    seen = await run(runtime, EVERYTHING)
    assert payload["secret"] not in orjson.dumps(seen.data).decode()


@pytest.mark.parametrize(
    ("url", "types", "code", "field"),
    [
        ("ftp://oms.example/hooks", ["sync.alert"], "INVALID_URL", ["input", "url"]),
        ("not a url", ["stock.changed"], "INVALID_URL", ["input", "url"]),
        ("https://oms.example/hooks", ["order.shipped"], "UNKNOWN_EVENT_TYPE", None),
    ],
)
async def test_bad_input_to_create_is_a_user_error(
    runtime: Runtime, url: str, types: list[str], code: str, field: list[str] | None
) -> None:
    result = await run(runtime, CREATE, {"url": url, "types": types})
    assert result.errors == []
    payload = result.data["createWebhookEndpoint"]
    assert payload["endpoint"] is None and payload["secret"] is None
    [error] = payload["userErrors"]
    assert error["code"] == code
    assert field is None or error["field"] == field
    listed = await run(runtime, "{ webhookEndpoints { edges { node { id } } } }")
    assert listed.data == {"webhookEndpoints": {"edges": []}}


async def test_a_url_the_tenant_already_has_is_a_user_error(runtime: Runtime) -> None:
    variables = {"url": "https://oms.example/hooks", "types": ["sync.alert"]}
    first = await run(runtime, CREATE, variables)
    assert first.data["createWebhookEndpoint"]["userErrors"] == []
    again = await run(runtime, CREATE, variables)
    assert again.errors == []
    payload = again.data["createWebhookEndpoint"]
    assert payload["endpoint"] is None and payload["secret"] is None
    [error] = payload["userErrors"]
    assert (error["code"], error["field"]) == ("URL_TAKEN", ["input", "url"])
    assert "https://oms.example/hooks" in error["message"]


async def test_unknown_and_other_tenants_ids_are_not_found(runtime: Runtime) -> None:
    endpoint_id, _, delivery_id = await _endpoint_with_a_delivery(runtime)
    unknown = to_global_id("WebhookDelivery", "acme", "msg_999999_1")
    for tenant, query, gid in (
        ("acme", REPLAY, unknown),
        ("acme", REPLAY, "garbage"),
        ("globex", REPLAY, delivery_id),
        ("globex", UPDATE, endpoint_id),
        ("globex", DELETE, endpoint_id),
    ):
        result = await run(runtime, query, {"id": gid}, tenant=tenant)
        assert result.errors == [], (tenant, query)
        [payload] = result.data.values()
        assert [e["code"] for e in payload["userErrors"]] == ["NOT_FOUND"], (tenant, query)
    # globex sees none of it; acme's still stands, untouched
    seen = await run(runtime, EVERYTHING, tenant="globex")
    assert seen.data == {"webhookEndpoints": {"edges": []}, "deliveries": {"edges": []}}
    mine = await run(runtime, EVERYTHING)
    assert mine.data["webhookEndpoints"]["edges"][0]["node"]["enabled"] is True
    assert len(mine.data["deliveries"]["edges"]) == 1


async def test_a_replay_to_a_disabled_endpoint_is_refused(runtime: Runtime) -> None:
    endpoint_id, _, delivery_id = await _endpoint_with_a_delivery(runtime)
    assert (await run(runtime, UPDATE, {"id": endpoint_id})).data["updateWebhookEndpoint"][
        "userErrors"
    ] == []
    result = await run(runtime, REPLAY, {"id": delivery_id})
    assert result.data["replayDelivery"]["userErrors"] == [
        {"field": ["input", "id"], "code": "ENDPOINT_DISABLED"}
    ]
    parked = await run(runtime, "{ deliveries(status: [DISABLED]) { edges { node { id } } } }")
    assert parked.data["deliveries"]["edges"] == [{"node": {"id": delivery_id}}]


async def test_webhooks_need_the_ops_admin_scope(runtime: Runtime) -> None:
    scopes = [s for s in Scope if s is not Scope.OPS_ADMIN]
    for query, variables in (
        (EVERYTHING, {}),
        (CREATE, {"url": "https://oms.example/x", "types": ["sync.alert"]}),
        (REPLAY, {"id": "x"}),
    ):
        result = await run(runtime, query, variables, scopes=scopes)
        assert "FORBIDDEN" in result.codes


async def _pages(runtime: Runtime, field: str, arguments: str) -> list[list[str]]:
    """Every page of ``field`` one node at a time: the ids on each, in order."""
    query = (
        f"query($after: String) {{ {field}(first: 1, after: $after{arguments}) "
        "{ edges { node { id } } pageInfo { hasNextPage endCursor } } }"
    )
    pages: list[list[str]] = []
    after = None
    while True:
        found = await run(runtime, query, {"after": after})
        assert found.errors == []
        connection = found.data[field]
        pages.append([edge["node"]["id"] for edge in connection["edges"]])
        if not connection["pageInfo"]["hasNextPage"]:
            return pages
        after = connection["pageInfo"]["endCursor"]


async def test_endpoints_and_deliveries_page_to_the_end_and_filter_by_endpoint(
    runtime: Runtime,
) -> None:
    endpoints = []
    for url in ("https://a.example/hooks", "https://b.example/hooks"):
        created = await run(runtime, CREATE, {"url": url, "types": ["sync.alert"]})
        endpoints.append(created.data["createWebhookEndpoint"]["endpoint"]["id"])
    await alerts(runtime, TenantId("acme"), 2)
    await runtime.dispatcher.dispatch_pending()

    assert await _pages(runtime, "webhookEndpoints", "") == [[endpoints[0]], [endpoints[1]]]
    every = await _pages(runtime, "deliveries", "")
    assert [len(page) for page in every] == [1, 1, 1, 1]
    assert len({d for page in every for d in page}) == 4  # each page moves on
    only_a = await _pages(runtime, "deliveries", f', endpointId: "{endpoints[0]}"')
    assert [len(page) for page in only_a] == [1, 1]
    assert {d for page in only_a for d in page} < {d for page in every for d in page}

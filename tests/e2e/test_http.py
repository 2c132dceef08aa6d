"""The demo over plain HTTP: the front door, tokens, API keys and the 401 contract."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import httpx
import jwt
import pytest

from tests.e2e.conftest import Demo, stockgraph

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
AVAILABILITY = '{ availability(skus: ["SKU-00001"]) { sku available onHand } }'


def test_the_demo_prints_graphiql_a_token_and_a_curl_example(demo: Demo) -> None:
    assert f"{demo.base}/graphql" in demo.banner
    assert "TOKEN=ey" in demo.banner
    assert "curl -s" in demo.banner


def test_the_demo_writes_three_clients_per_tenant(demo: Demo) -> None:
    creds = demo.credentials
    assert {(c["tenant"], c["role"]) for c in creds} == {
        (t, r) for t in ("acme", "globex") for r in ("read-only", "read-write", "admin")
    }
    for c in creds:
        assert c["client_id"].startswith("sgc_") and c["client_secret"] and c["scopes"]


def test_a_token_from_basic_or_form_credentials_answers_queries(demo: Demo) -> None:
    c = demo.client("acme", "read-only")
    by_form = httpx.post(
        f"{demo.base}/oauth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": c["client_id"],
            "client_secret": c["client_secret"],
            "scope": "inventory:read",
        },
    )
    assert by_form.status_code == 200
    body = by_form.json()
    assert body["token_type"] == "Bearer" and body["scope"] == "inventory:read"
    assert body["expires_in"] > 0
    answer = demo.graphql(AVAILABILITY, Authorization=f"Bearer {body['access_token']}")
    assert answer.status_code == 200
    assert answer.json()["data"]["availability"][0]["sku"] == "SKU-00001"


def test_a_wrong_secret_is_invalid_client(demo: Demo) -> None:
    c = demo.client("acme", "admin")
    response = httpx.post(
        f"{demo.base}/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=(c["client_id"], "wrong"),
    )
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"


def _secret(demo: Demo) -> str:
    return (demo.data_dir / "jwt-secret").read_text().strip()


def _forged(demo: Demo, **changes: object) -> str:
    now = int(time.time())
    claims = {
        "iss": "stockgraph",
        "aud": "stockgraph",
        "sub": "x",
        "tenant": "acme",
        "scope": "inventory:read",
        "iat": now,
        "exp": now + 600,
        "jti": "j",
    }
    claims.update(changes)
    claims = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode(
        claims, _secret(demo), algorithm="HS256", headers={"kid": "hs-1", "typ": "at+jwt"}
    )


def _none_alg() -> str:
    def part(d: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(d).encode()).decode().rstrip("=")

    now = int(time.time())
    claims = {
        "iss": "stockgraph",
        "aud": "stockgraph",
        "sub": "x",
        "tenant": "acme",
        "scope": "inventory:read",
        "iat": now,
        "exp": now + 600,
    }
    return f"{part({'alg': 'none', 'typ': 'at+jwt'})}.{part(claims)}."


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer not.a.token"},
        {"X-API-Key": "sgk_nope_nope"},
    ],
    ids=["none", "empty-bearer", "basic", "garbage", "unknown-api-key"],
)
def test_requests_without_valid_credentials_get_401_with_a_graphql_body(
    demo: Demo, headers: dict[str, str]
) -> None:
    response = demo.graphql(AVAILABILITY, **headers)
    assert response.status_code == 401
    assert response.json() == {
        "errors": [
            {"message": "valid credentials are required", "extensions": {"code": "UNAUTHENTICATED"}}
        ]
    }


@pytest.mark.parametrize(
    "make",
    [
        lambda d: _none_alg(),
        lambda d: _forged(d, exp=int(time.time()) - 3600),
        lambda d: _forged(d, exp=None),
        lambda d: _forged(d, iss="someone-else"),
        lambda d: _forged(d, aud="another-api"),
        lambda d: _forged(d)[:-4] + "AAAA",
        lambda d: _forged(d, padding="x" * 9000),
    ],
    ids=["alg-none", "expired", "no-exp", "wrong-iss", "wrong-aud", "tampered", "over-8kb"],
)
def test_bad_tokens_get_401_and_no_detail(demo: Demo, make: object) -> None:
    token = make(demo)  # type: ignore[operator]
    response = demo.graphql(AVAILABILITY, Authorization=f"Bearer {token}")
    assert response.status_code == 401
    assert response.json()["errors"][0]["message"] == "valid credentials are required"


def test_a_token_forged_with_the_real_secret_is_accepted(demo: Demo) -> None:
    """The positive control for the matrix above: only the broken part is at fault."""
    response = demo.graphql(AVAILABILITY, Authorization=f"Bearer {_forged(demo)}")
    assert response.status_code == 200


def test_an_api_key_created_on_the_command_line_works_and_is_scoped(demo: Demo) -> None:
    made = stockgraph(
        "keys",
        "create",
        "--tenant",
        "globex",
        "--scopes",
        "orders:read",
        "--data-dir",
        str(demo.data_dir),
        "--json",
    )
    assert made.returncode == 0, made.stderr
    key = json.loads(made.stdout)["api_key"]
    assert key.startswith("sgk_")
    response = demo.graphql(AVAILABILITY, **{"X-API-Key": key})
    assert response.status_code == 200
    assert response.json()["errors"][0]["extensions"]["code"] == "FORBIDDEN"


def test_a_client_created_on_the_command_line_gets_tokens(demo: Demo) -> None:
    made = stockgraph(
        "clients",
        "create",
        "--tenant",
        "globex",
        "--scopes",
        "inventory:read",
        "--data-dir",
        str(demo.data_dir),
        "--json",
    )
    assert made.returncode == 0, made.stderr
    created = json.loads(made.stdout)
    assert set(created) == {"client_id", "client_secret"}
    token = httpx.post(
        f"{demo.base}/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=(created["client_id"], created["client_secret"]),
    ).json()["access_token"]
    answer = demo.graphql(
        '{ item(sku: "SKU-00001") { sku } gx: item(sku: "GX-00001") { sku } }',
        Authorization=f"Bearer {token}",
    )
    assert answer.json()["data"] == {"item": None, "gx": {"sku": "GX-00001"}}


def test_a_client_for_an_unknown_tenant_is_a_clear_error(demo: Demo) -> None:
    made = stockgraph(
        "clients",
        "create",
        "--tenant",
        "nobody",
        "--scopes",
        "inventory:read",
        "--data-dir",
        str(demo.data_dir),
        "--json",
    )
    assert made.returncode == 2
    assert "--tenant: no tenant 'nobody'" in made.stderr


def test_graphql_errors_answer_200_with_codes(demo: Demo) -> None:
    response = demo.graphql("{ noSuchField }", Authorization=f"Bearer {demo.token()}")
    assert response.status_code == 200
    assert response.json()["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


def test_unknown_skus_come_back_as_a_warning(demo: Demo) -> None:
    response = demo.graphql(
        '{ availability(skus: ["NOPE"]) { sku } }', Authorization=f"Bearer {demo.token()}"
    )
    body = response.json()
    assert body["data"] == {"availability": []}
    assert body["extensions"]["warnings"][0]["code"] == "UNKNOWN_SKU"


def test_unknown_skus_of_inventory_levels_come_back_as_a_warning(demo: Demo) -> None:
    token = demo.token()
    for _ in range(2):  # the second answer may come from the response cache: still said
        response = demo.graphql(
            '{ inventoryLevels(skus: ["SKU-00001", "NOPE"]) { sku } }',
            Authorization=f"Bearer {token}",
        )
        body = response.json()
        assert {level["sku"] for level in body["data"]["inventoryLevels"]} == {"SKU-00001"}
        assert body["extensions"]["warnings"] == [
            {"code": "UNKNOWN_SKU", "message": "these SKUs name no item of yours", "skus": ["NOPE"]}
        ]


COST_KEYS = {"requestedQueryCost", "actualQueryCost", "throttleStatus", "upstreams"}
THROTTLE_KEYS = {"maximumAvailable", "currentlyAvailable", "restoreRate"}


@pytest.mark.parametrize(
    "query",
    [AVAILABILITY, AVAILABILITY, "{ noSuchField }", '{ availability(skus: ["NOPE"]) { sku } }'],
    ids=["first", "from-the-cache", "invalid", "with-warnings"],
)
def test_every_graphql_answer_carries_its_cost(demo: Demo, query: str) -> None:
    body = demo.graphql(query, Authorization=f"Bearer {demo.token()}").json()
    cost = body["extensions"]["cost"]
    assert set(cost) == COST_KEYS
    assert set(cost["throttleStatus"]) == THROTTLE_KEYS
    assert cost["upstreams"] == []
    if "errors" in body:
        assert (cost["requestedQueryCost"], cost["actualQueryCost"]) == (0, None)
    else:
        assert cost["requestedQueryCost"] >= cost["actualQueryCost"] >= 0


def test_graphiql_is_served_to_browsers_without_credentials(demo: Demo) -> None:
    response = httpx.get(f"{demo.base}/graphql", headers={"Accept": "text/html"})
    assert response.status_code == 200
    assert "graphiql" in response.text.lower()


def test_the_served_sdl_is_the_checked_in_schema(demo: Demo) -> None:
    response = httpx.get(f"{demo.base}/graphql/schema.graphql")
    assert response.text == (ROOT / "schema.graphql").read_text()
    printed = stockgraph("schema", "print")
    assert printed.stdout == response.text


def test_health_and_readiness(demo: Demo) -> None:
    assert httpx.get(f"{demo.base}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{demo.base}/readyz").json()
    assert ready["status"] == "ready"
    assert set(ready["checks"]) == {"database", "cache", "bus", "webhooks"}


def test_jwks_lists_no_secret_for_hs256(demo: Demo) -> None:
    assert httpx.get(f"{demo.base}/.well-known/jwks.json").json() == {"keys": []}


def test_a_bad_setting_stops_start_up_naming_the_key(tmp_path: Path) -> None:
    result = stockgraph(
        "serve",
        "--port",
        "1",
        env={"STOCKGRAPH_MAX_DEPTH": "deep", "STOCKGRAPH_JWT_SECRET": "x" * 40},
    )
    assert result.returncode == 2
    assert "STOCKGRAPH_MAX_DEPTH: expected a valid integer" in result.stderr


def test_metrics_speak_prometheus_and_count_every_wms_call(demo: Demo) -> None:
    response = httpx.get(f"{demo.base}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert "stockgraph_connector_instances 24.0" in text
    assert 'stockgraph_connector_calls_total{instance="acme-wh-00"}' in text
    assert "stockgraph_response_cache_hits" in text


def test_the_demo_fleet_is_synced_and_readable_live(demo: Demo) -> None:
    token = demo.token()
    body = demo.graphql(
        '{ inventoryLevels(skus: ["SKU-00001"], maxAge: 0) { warehouse { dialect } source } }',
        Authorization=f"Bearer {token}",
    ).json()
    levels = body["data"]["inventoryLevels"]
    assert len(levels) == 24
    live = {lv["warehouse"]["dialect"] for lv in levels if lv["source"] == "LIVE"}
    upstreams = body["extensions"]["cost"]["upstreams"]
    assert len(upstreams) == 24
    assert {u["connectorId"] for u in upstreams if not u["servedFromCache"]} >= {
        u["connectorId"] for u in upstreams if u["calls"]
    }
    # The EDI mailboxes share their slow polling budget with live inquiries, so they may
    # answer after the read's deadline; their levels then come back stale, not as errors.
    assert {"rest", "graphql"} <= live

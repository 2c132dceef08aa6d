"""``POST /oauth/token`` (RFC 6749 §4.4) and ``GET /.well-known/jwks.json`` over ASGI."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from urllib.parse import quote_plus

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from starlette.applications import Starlette
from starlette.routing import Route

from stockgraph.auth.endpoints import ClientCredentialsExchange, jwks_endpoint, token_endpoint
from stockgraph.auth.errors import InvalidClient, InvalidScope
from stockgraph.auth.scopes import Scope, format_scopes
from stockgraph.auth.tokens import IssuedToken, SigningKey, TokenService

CLIENT_ID = "sgc_storefront"
CLIENT_SECRET = "correct horse battery staple"
CLIENT_SCOPES = frozenset({Scope.INVENTORY_READ, Scope.ORDERS_READ})
FORM = {"grant_type": "client_credentials"}
NO_STORE = {"cache-control": "no-store", "pragma": "no-cache"}


class FakeExchange(ClientCredentialsExchange):
    """Knows a fixed set of clients; the token it issues names the granted scopes."""

    def __init__(self, clients: dict[str, tuple[str, frozenset[Scope]]]) -> None:
        self._clients = clients

    async def exchange(
        self, client_id: str, client_secret: str, requested: frozenset[Scope] | None
    ) -> IssuedToken:
        known = self._clients.get(client_id)
        if known is None:
            raise InvalidClient(f"unknown client {client_id}")
        secret, scopes = known
        if client_secret != secret:
            raise InvalidClient("wrong secret")
        granted = scopes if requested is None else requested
        if not granted <= scopes:
            raise InvalidScope("too much")
        scope = format_scopes(granted)
        return IssuedToken(
            access_token=f"token-for:{client_id}:{scope}", expires_in=600, scope=scope
        )


def _basic(client_id: str, client_secret: str) -> str:
    """An RFC 6749 §2.3.1 Basic header: each part form-url-encoded, then base64."""
    raw = f"{quote_plus(client_id)}:{quote_plus(client_secret)}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    exchange = FakeExchange(
        {
            CLIENT_ID: (CLIENT_SECRET, CLIENT_SCOPES),
            "sgc_odd:id+with%chars": ("sëcret:with&=+ chars", CLIENT_SCOPES),
        }
    )
    app = Starlette(
        routes=[Route("/oauth/token", token_endpoint(exchange), methods=["POST"])],
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http


async def _post(
    http: httpx.AsyncClient,
    form: dict[str, str] | None = None,
    *,
    authorization: str | None = _basic(CLIENT_ID, CLIENT_SECRET),
) -> httpx.Response:
    headers = {} if authorization is None else {"Authorization": authorization}
    return await http.post("/oauth/token", data=form or FORM, headers=headers)


def _assert_error(response: httpx.Response, status: int, error: str) -> None:
    assert response.status_code == status
    body = response.json()
    assert body["error"] == error
    assert isinstance(body["error_description"], str)
    assert body["error_description"]


# Success -------------------------------------------------------------------------------


async def test_basic_authenticated_client_receives_a_bearer_token(
    client: httpx.AsyncClient,
) -> None:
    response = await _post(client)

    assert response.status_code == 200
    assert response.json() == {
        "access_token": f"token-for:{CLIENT_ID}:inventory:read orders:read",
        "token_type": "Bearer",
        "expires_in": 600,
        "scope": "inventory:read orders:read",
    }


async def test_form_authenticated_client_receives_a_bearer_token(
    client: httpx.AsyncClient,
) -> None:
    form = {**FORM, "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}

    response = await _post(client, form, authorization=None)

    assert response.status_code == 200
    assert response.json()["access_token"].startswith(f"token-for:{CLIENT_ID}:")


async def test_basic_credentials_are_form_url_decoded(client: httpx.AsyncClient) -> None:
    authorization = _basic("sgc_odd:id+with%chars", "sëcret:with&=+ chars")

    response = await _post(client, authorization=authorization)

    assert response.status_code == 200


async def test_token_response_must_not_be_cached(client: httpx.AsyncClient) -> None:
    response = await _post(client)

    assert response.headers["cache-control"] == "no-store"
    assert response.headers["pragma"] == "no-cache"
    assert response.headers["content-type"].startswith("application/json")


async def test_absent_scope_grants_all_of_the_clients_scopes(client: httpx.AsyncClient) -> None:
    response = await _post(client)

    assert response.json()["scope"] == "inventory:read orders:read"


async def test_empty_scope_counts_as_absent(client: httpx.AsyncClient) -> None:
    response = await _post(client, {**FORM, "scope": ""})

    assert response.json()["scope"] == "inventory:read orders:read"


async def test_requested_subset_of_scopes_is_granted(client: httpx.AsyncClient) -> None:
    response = await _post(client, {**FORM, "scope": "inventory:read"})

    assert response.status_code == 200
    assert response.json()["scope"] == "inventory:read"


async def test_content_type_with_a_charset_is_accepted(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/oauth/token",
        content=b"grant_type=client_credentials",
        headers={
            "Authorization": _basic(CLIENT_ID, CLIENT_SECRET),
            "Content-Type": "application/x-www-form-urlencoded; charset=UTF-8",
        },
    )

    assert response.status_code == 200


# Client authentication -----------------------------------------------------------------


async def test_wrong_secret_is_invalid_client_with_a_basic_challenge(
    client: httpx.AsyncClient,
) -> None:
    response = await _post(client, authorization=_basic(CLIENT_ID, "wrong"))

    _assert_error(response, 401, "invalid_client")
    assert response.headers["www-authenticate"] == 'Basic realm="stockgraph"'


async def test_unknown_client_gets_the_same_answer_as_a_wrong_secret(
    client: httpx.AsyncClient,
) -> None:
    wrong_secret = await _post(client, authorization=_basic(CLIENT_ID, "wrong"))
    unknown = await _post(client, authorization=_basic("sgc_nobody", CLIENT_SECRET))

    assert unknown.status_code == wrong_secret.status_code == 401
    assert unknown.json() == wrong_secret.json()
    assert unknown.headers["www-authenticate"] == wrong_secret.headers["www-authenticate"]


async def test_wrong_secret_in_the_form_is_invalid_client(client: httpx.AsyncClient) -> None:
    form = {**FORM, "client_id": CLIENT_ID, "client_secret": "wrong"}

    response = await _post(client, form, authorization=None)

    _assert_error(response, 401, "invalid_client")
    assert response.headers["www-authenticate"] == 'Basic realm="stockgraph"'


async def test_request_without_client_credentials_is_invalid_client(
    client: httpx.AsyncClient,
) -> None:
    response = await _post(client, authorization=None)

    _assert_error(response, 401, "invalid_client")


async def test_client_id_without_a_secret_is_invalid_client(client: httpx.AsyncClient) -> None:
    response = await _post(client, {**FORM, "client_id": CLIENT_ID}, authorization=None)

    _assert_error(response, 401, "invalid_client")


async def test_basic_and_form_credentials_together_are_an_invalid_request(
    client: httpx.AsyncClient,
) -> None:
    form = {**FORM, "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}

    response = await _post(client, form)

    _assert_error(response, 400, "invalid_request")


@pytest.mark.parametrize(
    "authorization",
    [
        "Basic",
        "Basic !!!not-base64!!!",
        "Basic " + base64.b64encode(b"no-colon-here").decode(),
        "Basic " + base64.b64encode(b":secret-without-id").decode(),
        "Basic " + base64.b64encode(b"id-without-secret:").decode(),
        "Basic " + base64.b64encode(b"\xff\xfe:\xff").decode(),
    ],
)
async def test_malformed_basic_header_is_invalid_client(
    client: httpx.AsyncClient, authorization: str
) -> None:
    response = await _post(client, authorization=authorization)

    _assert_error(response, 401, "invalid_client")


async def test_authorization_scheme_other_than_basic_is_invalid_client(
    client: httpx.AsyncClient,
) -> None:
    response = await _post(client, authorization="Bearer some-token")

    _assert_error(response, 401, "invalid_client")


# Grant type and scope ------------------------------------------------------------------


async def test_grant_type_other_than_client_credentials_is_unsupported(
    client: httpx.AsyncClient,
) -> None:
    response = await _post(client, {"grant_type": "password", "username": "u", "password": "p"})

    _assert_error(response, 400, "unsupported_grant_type")


async def test_missing_grant_type_is_an_invalid_request(client: httpx.AsyncClient) -> None:
    response = await _post(client, {"scope": "inventory:read"})

    _assert_error(response, 400, "invalid_request")


async def test_scope_beyond_the_clients_scopes_is_invalid_scope(
    client: httpx.AsyncClient,
) -> None:
    response = await _post(client, {**FORM, "scope": "inventory:read ops:admin"})

    _assert_error(response, 400, "invalid_scope")


async def test_unknown_scope_name_is_invalid_scope(client: httpx.AsyncClient) -> None:
    response = await _post(client, {**FORM, "scope": "inventory:read everything"})

    _assert_error(response, 400, "invalid_scope")


# Malformed requests --------------------------------------------------------------------


async def test_json_body_is_an_invalid_request(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/oauth/token",
        json=FORM,
        headers={"Authorization": _basic(CLIENT_ID, CLIENT_SECRET)},
    )

    _assert_error(response, 400, "invalid_request")


async def test_body_without_a_content_type_is_an_invalid_request(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post(
        "/oauth/token",
        content=b"grant_type=client_credentials",
        headers={"Authorization": _basic(CLIENT_ID, CLIENT_SECRET)},
    )

    _assert_error(response, 400, "invalid_request")


async def test_repeated_parameter_is_an_invalid_request(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/oauth/token",
        content=b"grant_type=client_credentials&scope=orders:read&scope=inventory:read",
        headers={
            "Authorization": _basic(CLIENT_ID, CLIENT_SECRET),
            "Content-Type": "application/x-www-form-urlencoded",
        },
    )

    _assert_error(response, 400, "invalid_request")


async def test_body_that_is_not_utf8_form_data_is_an_invalid_request(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post(
        "/oauth/token",
        content=b"grant_type=client_credentials&client_id=%FF%FE",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )

    _assert_error(response, 400, "invalid_request")


async def test_oversized_body_is_an_invalid_request(client: httpx.AsyncClient) -> None:
    response = await _post(client, {**FORM, "padding": "x" * 20_000})

    _assert_error(response, 400, "invalid_request")


@pytest.mark.parametrize("length", [b"abc", b"\xb2", b"-1"])
async def test_content_length_that_is_not_a_number_is_an_invalid_request(
    client: httpx.AsyncClient, length: bytes
) -> None:
    response = await client.post(
        "/oauth/token",
        content=b"grant_type=client_credentials",
        headers={
            b"Authorization": _basic(CLIENT_ID, CLIENT_SECRET).encode("ascii"),
            b"Content-Type": b"application/x-www-form-urlencoded",
            b"Content-Length": length,
        },
    )

    _assert_error(response, 400, "invalid_request")


async def test_error_responses_must_not_be_cached(client: httpx.AsyncClient) -> None:
    responses = [
        await _post(client, {"grant_type": "password"}),
        await _post(client, authorization=_basic(CLIENT_ID, "wrong")),
        await _post(client, {**FORM, "scope": "ops:admin"}),
    ]

    for response in responses:
        assert {name: response.headers[name] for name in NO_STORE} == NO_STORE


async def test_error_descriptions_do_not_echo_the_secret(client: httpx.AsyncClient) -> None:
    response = await _post(client, authorization=_basic(CLIENT_ID, "leaky-secret-value"))

    assert "leaky-secret-value" not in response.text


async def test_get_on_the_token_endpoint_is_not_allowed(client: httpx.AsyncClient) -> None:
    response = await client.get("/oauth/token")

    assert response.status_code == 405


# JWKS ----------------------------------------------------------------------------------


async def test_jwks_endpoint_serves_the_public_keys_cacheable_for_five_minutes() -> None:
    signing_key = SigningKey(
        kid="es-1", algorithm="ES256", material=ec.generate_private_key(ec.SECP256R1())
    )
    tokens = TokenService(
        issuer="https://stockgraph.test",
        audience="stockgraph-api",
        keys=[signing_key, SigningKey.hs256("h" * 40)],
    )
    app = Starlette(routes=[Route("/.well-known/jwks.json", jwks_endpoint(tokens))])
    transport = httpx.ASGITransport(app=app)

    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        response = await http.get("/.well-known/jwks.json")

    assert response.status_code == 200
    assert response.json() == tokens.jwks()
    assert [key["kid"] for key in response.json()["keys"]] == ["es-1"]
    assert response.headers["cache-control"] == "public, max-age=300"

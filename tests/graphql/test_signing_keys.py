"""Asymmetric signing keys from settings: tokens carry their kid and JWKS publishes it."""

from __future__ import annotations

from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from stockgraph.app import create_app
from stockgraph.auth.principal import Principal
from stockgraph.auth.scopes import Scope
from stockgraph.config import ConfigError, load_settings
from stockgraph.domain.ids import TenantId
from stockgraph.runtime import Runtime
from stockgraph.wiring import build_token_service


def _pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, path: Path) -> Path:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


async def test_configured_keys_sign_with_the_first_and_publish_all(
    tmp_path: Path, demo_database: str
) -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    keys = f"new={_pem(ec_key, tmp_path / 'ec.pem')},old={_pem(rsa_key, tmp_path / 'rsa.pem')}"
    settings = load_settings(database_url=demo_database, jwt_private_keys=keys, redis_url=None)
    runtime = Runtime.build(settings)
    app = create_app(settings, runtime=runtime)
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://sg") as client:
                jwks = (await client.get("/.well-known/jwks.json")).json()
                token = runtime.tokens.issue(
                    Principal(TenantId("acme"), "c", frozenset({Scope.INVENTORY_READ}))
                ).access_token
                answer = await client.post(
                    "/graphql",
                    json={"query": '{ item(sku: "SKU-00001") { sku } }'},
                    headers={"Authorization": f"Bearer {token}"},
                )
    finally:
        await runtime.close()
    assert {(k["kid"], k["alg"]) for k in jwks["keys"]} == {("new", "ES256"), ("old", "RS256")}
    assert jwt.get_unverified_header(token)["kid"] == "new"
    signer = jwt.PyJWK(next(k for k in jwks["keys"] if k["kid"] == "new"))
    claims = jwt.decode(token, signer, algorithms=["ES256"], audience="stockgraph")
    assert claims["tenant"] == "acme"
    assert answer.json()["data"] == {"item": {"sku": "SKU-00001"}}


def test_a_missing_key_file_or_secret_stops_start_up(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no key file at"):
        build_token_service(load_settings(jwt_private_keys=f"k={tmp_path / 'none.pem'}"))
    with pytest.raises(ConfigError, match="STOCKGRAPH_JWT_SECRET: expected a signing secret"):
        build_token_service(load_settings(jwt_secret=None, jwt_private_keys=""))
    (tmp_path / "junk.pem").write_text("not a key")
    with pytest.raises(ConfigError, match=r"junk\.pem"):
        build_token_service(load_settings(jwt_private_keys=f"k={tmp_path / 'junk.pem'}"))

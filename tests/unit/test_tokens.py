"""Issuing and verifying access tokens: round trips, rotation, JWKS and every refusal."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from stockgraph.auth.errors import InvalidToken
from stockgraph.auth.principal import CredentialKind, Principal
from stockgraph.auth.scopes import Scope
from stockgraph.auth.tokens import MAX_TOKEN_BYTES, SigningKey, TokenService
from stockgraph.domain.ids import TenantId

ISSUER = "https://stockgraph.test"
AUDIENCE = "stockgraph-api"
HS_SECRET = "s" * 40

PRINCIPAL = Principal(
    tenant_id=TenantId("acme"),
    subject="sgc_storefront",
    scopes=frozenset({Scope.INVENTORY_READ, Scope.ORDERS_WRITE}),
)


def _pem(private_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@pytest.fixture(scope="module")
def rsa_pem() -> bytes:
    return _pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))


@pytest.fixture(scope="module")
def other_rsa_pem() -> bytes:
    return _pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))


@pytest.fixture(scope="module")
def ec_pem() -> bytes:
    return _pem(ec.generate_private_key(ec.SECP256R1()))


@pytest.fixture
def rs_key(rsa_pem: bytes) -> SigningKey:
    return SigningKey.from_pem(rsa_pem, kid="rs-1")


@pytest.fixture
def es_key(ec_pem: bytes) -> SigningKey:
    return SigningKey.from_pem(ec_pem, kid="es-1")


@pytest.fixture
def hs_key() -> SigningKey:
    return SigningKey.hs256(HS_SECRET, kid="hs-1")


def _service(*keys: SigningKey, **options: Any) -> TokenService:
    return TokenService(issuer=ISSUER, audience=AUDIENCE, keys=list(keys), **options)


def _claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "sgc_storefront",
        "tenant": "acme",
        "scope": "inventory:read",
        "iat": now,
        "exp": now + 600,
        "jti": "j-1",
    }
    claims.update(overrides)
    return claims


def _sign(claims: dict[str, Any], key: SigningKey, **header: Any) -> str:
    """A token signed properly by ``key``, with header fields overridden by ``header``."""
    headers: dict[str, Any] = {"kid": key.kid, "typ": "at+jwt", **header}
    headers = {name: value for name, value in headers.items() if value is not None}
    return jwt.encode(claims, key.material, algorithm=key.algorithm, headers=headers)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _forge(header: dict[str, Any], claims: dict[str, Any], signature: bytes | None = None) -> str:
    """A token assembled by hand, with an empty signature unless one is given."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    return f"{signing_input}.{_b64(signature or b'')}"


def _forge_hmac(header: dict[str, Any], claims: dict[str, Any], secret: bytes) -> str:
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    mac = hmac.new(secret, signing_input.encode("ascii"), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(mac)}"


def _public_pem(key: SigningKey) -> bytes:
    assert key.public_key is not None
    return key.public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _refusal(service: TokenService, token: str) -> InvalidToken:
    with pytest.raises(InvalidToken) as caught:
        service.verify(token)
    return caught.value


# Round trips ---------------------------------------------------------------------------


def test_hs256_token_verifies_as_the_principal_it_was_issued_for(hs_key: SigningKey) -> None:
    service = _service(hs_key)

    issued = service.issue(PRINCIPAL)

    assert service.verify(issued.access_token) == PRINCIPAL


def test_rs256_token_verifies_as_the_principal_it_was_issued_for(rs_key: SigningKey) -> None:
    service = _service(rs_key)

    issued = service.issue(PRINCIPAL)

    assert service.verify(issued.access_token) == PRINCIPAL
    assert jwt.get_unverified_header(issued.access_token)["alg"] == "RS256"


def test_es256_token_verifies_as_the_principal_it_was_issued_for(es_key: SigningKey) -> None:
    service = _service(es_key)

    issued = service.issue(PRINCIPAL)

    assert service.verify(issued.access_token) == PRINCIPAL
    assert jwt.get_unverified_header(issued.access_token)["alg"] == "ES256"


def test_verified_principal_is_a_token_credential(hs_key: SigningKey) -> None:
    service = _service(hs_key)
    api_key_principal = Principal(
        tenant_id=TenantId("acme"),
        subject="k",
        scopes=frozenset({Scope.OPS_ADMIN}),
        kind=CredentialKind.API_KEY,
    )

    principal = service.verify(service.issue(api_key_principal).access_token)

    assert principal.kind is CredentialKind.TOKEN


def test_issued_token_reports_bearer_type_lifetime_and_scope(hs_key: SigningKey) -> None:
    issued = _service(hs_key, ttl_seconds=900).issue(PRINCIPAL)

    assert issued.token_type == "Bearer"
    assert issued.expires_in == 900
    assert issued.scope == "inventory:read orders:write"


def test_token_carries_the_documented_claims(hs_key: SigningKey) -> None:
    now = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    token = _service(hs_key, ttl_seconds=600).issue(PRINCIPAL, now=now).access_token

    claims = jwt.decode(token, options={"verify_signature": False})

    assert claims["iss"] == ISSUER
    assert claims["aud"] == AUDIENCE
    assert claims["sub"] == "sgc_storefront"
    assert claims["tenant"] == "acme"
    assert claims["scope"] == "inventory:read orders:write"
    assert claims["iat"] == int(now.timestamp())
    assert claims["exp"] == int(now.timestamp()) + 600
    assert isinstance(claims["jti"], str)
    assert claims["jti"]


def test_every_token_gets_a_fresh_jti(hs_key: SigningKey) -> None:
    service = _service(hs_key)

    jtis = {
        jwt.decode(service.issue(PRINCIPAL).access_token, options={"verify_signature": False})[
            "jti"
        ]
        for _ in range(20)
    }

    assert len(jtis) == 20


def test_token_header_names_the_key_and_the_access_token_type(rs_key: SigningKey) -> None:
    token = _service(rs_key).issue(PRINCIPAL).access_token

    header = jwt.get_unverified_header(token)

    assert header["kid"] == "rs-1"
    assert header["typ"] == "at+jwt"


def test_issue_refuses_a_naive_datetime(hs_key: SigningKey) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        _service(hs_key).issue(PRINCIPAL, now=datetime(2030, 1, 1))


def test_token_without_kid_verifies_when_exactly_one_key_is_configured(
    hs_key: SigningKey,
) -> None:
    token = _sign(_claims(), hs_key, kid=None)

    assert _service(hs_key).verify(token).subject == "sgc_storefront"


def test_token_expired_within_the_leeway_still_verifies(hs_key: SigningKey) -> None:
    now = int(time.time())
    token = _sign(_claims(iat=now - 600, exp=now - 10), hs_key)

    assert _service(hs_key, leeway_seconds=30).verify(token).tenant_id == "acme"


# Rotation ------------------------------------------------------------------------------


def test_new_tokens_are_signed_with_the_active_key(rs_key: SigningKey, es_key: SigningKey) -> None:
    service = _service(rs_key, es_key, active_kid="es-1")

    token = service.issue(PRINCIPAL).access_token

    assert jwt.get_unverified_header(token)["kid"] == "es-1"


def test_first_key_is_active_when_none_is_named(rs_key: SigningKey, es_key: SigningKey) -> None:
    assert _service(es_key, rs_key).active_kid == "es-1"


def test_tokens_of_the_previous_key_still_verify_after_rotation(
    rs_key: SigningKey, other_rsa_pem: bytes
) -> None:
    before = _service(rs_key)
    old_token = before.issue(PRINCIPAL).access_token
    new_key = SigningKey.from_pem(other_rsa_pem, kid="rs-2")

    after = _service(new_key, rs_key, active_kid="rs-2")
    new_token = after.issue(PRINCIPAL).access_token

    assert after.verify(old_token) == PRINCIPAL
    assert after.verify(new_token) == PRINCIPAL
    assert jwt.get_unverified_header(new_token)["kid"] == "rs-2"


def test_rotation_from_a_shared_secret_to_rsa_keeps_old_tokens_valid(
    hs_key: SigningKey, rs_key: SigningKey
) -> None:
    old_token = _service(hs_key).issue(PRINCIPAL).access_token

    after = _service(rs_key, hs_key, active_kid="rs-1")

    assert after.verify(old_token) == PRINCIPAL
    assert after.verify(after.issue(PRINCIPAL).access_token) == PRINCIPAL


def test_tokens_of_a_retired_key_are_refused(rs_key: SigningKey, other_rsa_pem: bytes) -> None:
    old_token = _service(rs_key).issue(PRINCIPAL).access_token
    only_new = _service(SigningKey.from_pem(other_rsa_pem, kid="rs-2"))

    _refusal(only_new, old_token)


# JWKS ----------------------------------------------------------------------------------


def test_rs256_token_verifies_with_pyjwt_against_the_published_jwks(
    rs_key: SigningKey,
) -> None:
    service = _service(rs_key)
    token = service.issue(PRINCIPAL).access_token

    jwk_set = jwt.PyJWKSet.from_dict(service.jwks())
    signing_key = jwk_set[jwt.get_unverified_header(token)["kid"]]
    claims = jwt.decode(token, signing_key, algorithms=["RS256"], audience=AUDIENCE, issuer=ISSUER)

    assert claims["tenant"] == "acme"


def test_es256_token_verifies_with_pyjwt_against_the_published_jwks(
    es_key: SigningKey,
) -> None:
    service = _service(es_key)
    token = service.issue(PRINCIPAL).access_token

    jwk_set = jwt.PyJWKSet.from_dict(service.jwks())
    signing_key = jwk_set[jwt.get_unverified_header(token)["kid"]]
    claims = jwt.decode(token, signing_key, algorithms=["ES256"], audience=AUDIENCE, issuer=ISSUER)

    assert claims["sub"] == "sgc_storefront"


def test_jwks_describes_each_asymmetric_key_for_signing(
    rs_key: SigningKey, es_key: SigningKey
) -> None:
    keys = {jwk["kid"]: jwk for jwk in _service(rs_key, es_key).jwks()["keys"]}

    assert set(keys["rs-1"]) == {"kty", "kid", "alg", "use", "n", "e"}
    assert keys["rs-1"]["kty"] == "RSA"
    assert keys["rs-1"]["alg"] == "RS256"
    assert keys["rs-1"]["use"] == "sig"
    assert set(keys["es-1"]) == {"kty", "kid", "alg", "use", "crv", "x", "y"}
    assert keys["es-1"]["crv"] == "P-256"
    assert keys["es-1"]["alg"] == "ES256"


def test_jwks_never_publishes_shared_secrets(hs_key: SigningKey, rs_key: SigningKey) -> None:
    jwks = _service(hs_key, rs_key).jwks()

    assert [jwk["kid"] for jwk in jwks["keys"]] == ["rs-1"]
    assert HS_SECRET not in json.dumps(jwks)
    assert all("k" not in jwk and "d" not in jwk for jwk in jwks["keys"])


def test_jwks_is_empty_when_only_shared_secrets_are_configured(hs_key: SigningKey) -> None:
    assert _service(hs_key).jwks() == {"keys": []}


# Refusals ------------------------------------------------------------------------------


def test_validly_signed_token_over_8_kb_is_refused(hs_key: SigningKey) -> None:
    token = _sign(_claims(padding="x" * MAX_TOKEN_BYTES), hs_key)

    refusal = _refusal(_service(hs_key), token)

    assert "over 8192" in refusal.reason


def test_oversized_garbage_is_refused_by_length_alone(hs_key: SigningKey) -> None:
    refusal = _refusal(_service(hs_key), "\u00e9" * (MAX_TOKEN_BYTES + 1))

    assert "over 8192" in refusal.reason


@pytest.mark.parametrize(
    "token",
    ["", "abc", "a.b", "a.b.c", "...", "e30.e30.", "eyJhbGciOiJIUzI1NiJ9.!!!.sig", "é.é.é"],
)
def test_malformed_token_is_refused(hs_key: SigningKey, token: str) -> None:
    _refusal(_service(hs_key), token)


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
def test_unsigned_token_with_alg_none_is_refused(hs_key: SigningKey, alg: str) -> None:
    token = _forge({"alg": alg, "typ": "at+jwt", "kid": "hs-1"}, _claims())

    refusal = _refusal(_service(hs_key), token)

    assert "none" in refusal.reason


def test_algorithm_off_the_allow_list_is_refused(rs_key: SigningKey) -> None:
    assert isinstance(rs_key.material, rsa.RSAPrivateKey)
    token = jwt.encode(
        _claims(), rs_key.material, algorithm="RS384", headers={"kid": "rs-1", "typ": "at+jwt"}
    )

    refusal = _refusal(_service(rs_key), token)

    assert "allow-list" in refusal.reason


def test_hs256_signed_with_the_rsa_public_key_is_refused(rs_key: SigningKey) -> None:
    header = {"alg": "HS256", "typ": "at+jwt", "kid": "rs-1"}
    token = _forge_hmac(header, _claims(), _public_pem(rs_key))

    refusal = _refusal(_service(rs_key), token)

    assert "allow-list" in refusal.reason


def test_hs256_signed_with_the_ec_public_key_is_refused(es_key: SigningKey) -> None:
    header = {"alg": "HS256", "typ": "at+jwt", "kid": "es-1"}
    token = _forge_hmac(header, _claims(), _public_pem(es_key))

    refusal = _refusal(_service(es_key), token)

    assert "allow-list" in refusal.reason


def test_hs256_signed_with_the_rsa_public_key_is_refused_when_shared_secrets_are_also_configured(
    hs_key: SigningKey, rs_key: SigningKey
) -> None:
    service = _service(rs_key, hs_key)
    public = _public_pem(rs_key)
    with_rsa_kid = _forge_hmac({"alg": "HS256", "typ": "at+jwt", "kid": "rs-1"}, _claims(), public)
    with_hs_kid = _forge_hmac({"alg": "HS256", "typ": "at+jwt", "kid": "hs-1"}, _claims(), public)

    assert "RS256 key" in _refusal(service, with_rsa_kid).reason
    assert "Signature" in _refusal(service, with_hs_kid).reason


def test_expired_token_is_refused(hs_key: SigningKey) -> None:
    service = _service(hs_key, ttl_seconds=3600)
    token = service.issue(PRINCIPAL, now=datetime.now(UTC) - timedelta(hours=2)).access_token

    refusal = _refusal(service, token)

    assert "expired" in refusal.reason


def test_token_without_exp_is_refused(hs_key: SigningKey) -> None:
    claims = _claims()
    del claims["exp"]

    refusal = _refusal(_service(hs_key), _sign(claims, hs_key))

    assert "exp" in refusal.reason


@pytest.mark.parametrize("claim", ["iat", "iss", "aud", "sub", "tenant", "scope"])
def test_token_missing_a_required_claim_is_refused(hs_key: SigningKey, claim: str) -> None:
    claims = _claims()
    del claims[claim]

    refusal = _refusal(_service(hs_key), _sign(claims, hs_key))

    assert claim in refusal.reason


@pytest.mark.parametrize(
    ("claim", "value"),
    [("exp", "9999999999"), ("iat", 1.5), ("sub", 42), ("tenant", ""), ("scope", ["ops:admin"])],
)
def test_token_with_a_claim_of_the_wrong_type_is_refused(
    hs_key: SigningKey, claim: str, value: object
) -> None:
    _refusal(_service(hs_key), _sign(_claims(**{claim: value}), hs_key))


def test_token_issued_in_the_future_is_refused(hs_key: SigningKey) -> None:
    now = int(time.time())

    _refusal(_service(hs_key), _sign(_claims(iat=now + 3600, exp=now + 7200), hs_key))


def test_token_from_another_issuer_is_refused(hs_key: SigningKey) -> None:
    refusal = _refusal(_service(hs_key), _sign(_claims(iss="https://evil.test"), hs_key))

    assert "issuer" in refusal.reason.lower()


def test_token_for_another_audience_is_refused(hs_key: SigningKey) -> None:
    refusal = _refusal(_service(hs_key), _sign(_claims(aud="another-api"), hs_key))

    assert "audience" in refusal.reason.lower()


def test_token_with_an_audience_list_is_refused(hs_key: SigningKey) -> None:
    _refusal(_service(hs_key), _sign(_claims(aud=[AUDIENCE, "another-api"]), hs_key))


def test_token_with_a_tampered_payload_is_refused(rs_key: SigningKey) -> None:
    service = _service(rs_key)
    header, _, signature = service.issue(PRINCIPAL).access_token.split(".")
    forged_claims = _b64(json.dumps(_claims(tenant="globex", scope="ops:admin")).encode())

    refusal = _refusal(service, f"{header}.{forged_claims}.{signature}")

    assert "Signature" in refusal.reason


def test_token_with_a_tampered_signature_is_refused(es_key: SigningKey) -> None:
    service = _service(es_key)
    header, payload, signature = service.issue(PRINCIPAL).access_token.split(".")
    middle = len(signature) // 2
    flipped = "A" if signature[middle] != "A" else "B"
    tampered = signature[:middle] + flipped + signature[middle + 1 :]

    _refusal(service, f"{header}.{payload}.{tampered}")


def test_token_with_an_unknown_kid_is_refused(hs_key: SigningKey) -> None:
    refusal = _refusal(_service(hs_key), _sign(_claims(), hs_key, kid="hs-9"))

    assert "unknown kid" in refusal.reason


def test_token_whose_kid_names_a_key_of_another_algorithm_is_refused(
    hs_key: SigningKey, es_key: SigningKey
) -> None:
    token = _sign(_claims(), hs_key, kid="es-1")

    refusal = _refusal(_service(es_key, hs_key), token)

    assert "ES256 key" in refusal.reason


def test_token_without_kid_is_refused_when_several_keys_are_configured(
    hs_key: SigningKey, rs_key: SigningKey
) -> None:
    refusal = _refusal(_service(hs_key, rs_key), _sign(_claims(), hs_key, kid=None))

    assert "no kid" in refusal.reason


def test_token_with_an_unknown_scope_name_is_refused(hs_key: SigningKey) -> None:
    token = _sign(_claims(scope="inventory:read inventory:delete"), hs_key)

    refusal = _refusal(_service(hs_key), token)

    assert "inventory:delete" in refusal.reason


def test_jwt_of_another_type_is_refused(hs_key: SigningKey) -> None:
    _refusal(_service(hs_key), _sign(_claims(), hs_key, typ="JWT"))


def test_refusals_share_one_public_message_whatever_the_cause(hs_key: SigningKey) -> None:
    service = _service(hs_key)
    expired = service.issue(PRINCIPAL, now=datetime.now(UTC) - timedelta(days=1))
    refusals = [
        _refusal(service, "garbage"),
        _refusal(service, expired.access_token),
        _refusal(service, _sign(_claims(aud="x"), hs_key)),
        _refusal(service, _sign(_claims(), hs_key, kid="nope")),
    ]

    assert {str(refusal) for refusal in refusals} == {InvalidToken.public_message}
    assert len({refusal.reason for refusal in refusals}) == len(refusals)


# Configuration -------------------------------------------------------------------------


def test_shared_secret_shorter_than_32_bytes_is_rejected() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        SigningKey.hs256("s" * 31)


def test_pem_rsa_key_signs_with_rs256(rs_key: SigningKey) -> None:
    assert rs_key.algorithm == "RS256"
    assert isinstance(rs_key.public_key, rsa.RSAPublicKey)


def test_pem_ec_p256_key_signs_with_es256(es_key: SigningKey) -> None:
    assert es_key.algorithm == "ES256"
    assert isinstance(es_key.public_key, ec.EllipticCurvePublicKey)


def test_pem_ec_key_off_p256_is_rejected() -> None:
    pem = _pem(ec.generate_private_key(ec.SECP384R1()))

    with pytest.raises(ValueError, match="P-256"):
        SigningKey.from_pem(pem, kid="es-384")


def test_pem_rsa_key_under_2048_bits_is_rejected() -> None:
    pem = _pem(rsa.generate_private_key(public_exponent=65537, key_size=1024))

    with pytest.raises(ValueError, match="2048"):
        SigningKey.from_pem(pem, kid="rs-weak")


def test_text_that_is_not_a_pem_key_is_rejected() -> None:
    with pytest.raises(ValueError, match="PEM"):
        SigningKey.from_pem(b"-----BEGIN NOTHING-----", kid="x")


def test_key_repr_shows_no_secret_material(hs_key: SigningKey) -> None:
    assert HS_SECRET not in repr(hs_key)


def test_service_needs_at_least_one_key() -> None:
    with pytest.raises(ValueError, match="at least one"):
        _service()


def test_service_rejects_an_active_kid_it_does_not_hold(hs_key: SigningKey) -> None:
    with pytest.raises(ValueError, match="active_kid"):
        _service(hs_key, active_kid="hs-2")


def test_service_rejects_two_keys_with_one_kid(hs_key: SigningKey) -> None:
    with pytest.raises(ValueError, match="duplicate"):
        _service(hs_key, SigningKey.hs256("t" * 40, kid="hs-1"))


def test_allow_list_is_exactly_the_algorithms_of_the_configured_keys(
    hs_key: SigningKey, es_key: SigningKey
) -> None:
    assert _service(hs_key, es_key).algorithms == frozenset({"HS256", "ES256"})

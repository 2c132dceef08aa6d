"""Issuing and verifying the JWT access tokens that ``POST /oauth/token`` hands out.

Tokens follow RFC 9068 (JWT profile for OAuth 2.0 access tokens): header ``typ: at+jwt``
and ``kid``; claims ``iss aud sub exp iat jti scope`` plus ``tenant``. Verification follows
RFC 8725: the algorithm allow-list is fixed by configuration (never by the token), the key
is picked by ``kid`` and must use the algorithm the header names, and every failure is one
:class:`~stockgraph.auth.errors.InvalidToken` whose public message says nothing about why.

Key rotation: configure the new key and keep the old ones in ``keys``; new tokens are
signed with ``active_kid`` while tokens signed by any configured key still verify, until
the old key is removed after the longest token lifetime has passed::

    tokens = TokenService(
        issuer="https://stockgraph.example",
        audience="stockgraph",
        keys=[
            SigningKey.from_pem(new_pem, kid="2025-06"),
            SigningKey.from_pem(old_pem, kid="2025-01"),
        ],
        active_kid="2025-06",
    )
    issued = tokens.issue(principal)
    assert tokens.verify(issued.access_token) == principal
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, TypeAlias

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ec import (
    SECP256R1,
    EllipticCurvePrivateKey,
    EllipticCurvePublicKey,
)
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from stockgraph.auth.errors import InvalidToken
from stockgraph.auth.principal import CredentialKind, Principal
from stockgraph.auth.scopes import UnknownScope, format_scopes, parse_scopes
from stockgraph.domain.ids import TenantId

SigningAlgorithm: TypeAlias = Literal["HS256", "RS256", "ES256"]
PrivateKey: TypeAlias = RSAPrivateKey | EllipticCurvePrivateKey
PublicKey: TypeAlias = RSAPublicKey | EllipticCurvePublicKey

SUPPORTED_ALGORITHMS: frozenset[str] = frozenset({"HS256", "RS256", "ES256"})
MAX_TOKEN_BYTES = 8 * 1024
"""Longer tokens are refused before any parsing: a cheap bound on work per request."""

MIN_HS256_SECRET_BYTES = 32
MIN_RSA_KEY_BITS = 2048
JWT_TYP = "at+jwt"
"""The ``typ`` header of access tokens (RFC 9068 §2.1)."""
BEARER = "Bearer"

_ACCEPTED_TYP = frozenset({"at+jwt", "application/at+jwt"})
_REQUIRED_CLAIMS = ["exp", "iat", "iss", "aud", "sub", "tenant", "scope"]
_MAX_KID_LENGTH = 128


@dataclass(frozen=True, slots=True, kw_only=True)
class IssuedToken:
    """An access token and what the token endpoint reports about it (RFC 6749 §5.1)."""

    access_token: str = field(repr=False)
    expires_in: int
    scope: str
    token_type: str = BEARER


@dataclass(frozen=True, slots=True, kw_only=True)
class SigningKey:
    """One key that signs and verifies tokens, named by ``kid``.

    ``material`` is the HS256 secret (bytes) or the RSA / EC P-256 private key;
    ``public_key`` is derived from the private key for RS256 and ES256 and is ``None`` for
    HS256. Neither appears in ``repr``. Build keys with :meth:`hs256` or :meth:`from_pem`.
    """

    kid: str
    algorithm: SigningAlgorithm
    material: bytes | PrivateKey = field(repr=False)
    public_key: PublicKey | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.kid or len(self.kid) > _MAX_KID_LENGTH or not self.kid.isprintable():
            raise ValueError(f"a kid is 1 to {_MAX_KID_LENGTH} printable characters")
        if self.algorithm == "HS256":
            self._check_hs256()
        elif self.algorithm == "RS256":
            self._check_rs256()
        elif self.algorithm == "ES256":
            self._check_es256()
        else:
            raise ValueError(f"unsupported signing algorithm {self.algorithm!r}")

    def _check_hs256(self) -> None:
        if not isinstance(self.material, bytes):
            raise ValueError("an HS256 key's material is the secret, as bytes")
        if len(self.material) < MIN_HS256_SECRET_BYTES:
            raise ValueError(f"an HS256 secret needs at least {MIN_HS256_SECRET_BYTES} bytes")
        if self.public_key is not None:
            raise ValueError("an HS256 key has no public key")

    def _check_rs256(self) -> None:
        if not isinstance(self.material, RSAPrivateKey):
            raise ValueError("an RS256 key's material is an RSA private key")
        if self.material.key_size < MIN_RSA_KEY_BITS:
            raise ValueError(f"an RS256 key needs at least {MIN_RSA_KEY_BITS} bits")
        derived = self.material.public_key()
        if self.public_key is None:
            object.__setattr__(self, "public_key", derived)
        elif not (
            isinstance(self.public_key, RSAPublicKey)
            and self.public_key.public_numbers() == derived.public_numbers()
        ):
            raise ValueError("the public key does not belong to the RSA private key")

    def _check_es256(self) -> None:
        if not isinstance(self.material, EllipticCurvePrivateKey):
            raise ValueError("an ES256 key's material is an EC private key")
        if not isinstance(self.material.curve, SECP256R1):
            raise ValueError("an ES256 key must be on the P-256 curve")
        derived = self.material.public_key()
        if self.public_key is None:
            object.__setattr__(self, "public_key", derived)
        elif not (
            isinstance(self.public_key, EllipticCurvePublicKey)
            and self.public_key.public_numbers() == derived.public_numbers()
        ):
            raise ValueError("the public key does not belong to the EC private key")

    @classmethod
    def hs256(cls, secret: str, kid: str = "hs-1") -> SigningKey:
        """A shared-secret key; the secret must be at least 32 bytes (UTF-8)."""
        return cls(kid=kid, algorithm="HS256", material=secret.encode("utf-8"))

    @classmethod
    def from_pem(cls, pem: bytes, kid: str) -> SigningKey:
        """A key from an unencrypted PEM private key: RSA becomes RS256, EC P-256 ES256."""
        try:
            private = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"not an unencrypted PEM private key: {exc}") from exc
        if isinstance(private, RSAPrivateKey):
            return cls(kid=kid, algorithm="RS256", material=private)
        if isinstance(private, EllipticCurvePrivateKey):
            return cls(kid=kid, algorithm="ES256", material=private)
        raise ValueError(f"unsupported key type {type(private).__name__}; use RSA or EC P-256")

    @property
    def verification_key(self) -> bytes | PublicKey:
        """What checks a signature: the secret for HS256, the public key otherwise."""
        if self.public_key is not None:
            return self.public_key
        if isinstance(self.material, bytes):
            return self.material
        raise ValueError("an asymmetric key without a public key")  # pragma: no cover


class TokenService:
    """Issues and verifies access tokens for one issuer and audience.

    ``keys`` are every key whose tokens are accepted; ``active_kid`` names the one new
    tokens are signed with (the first key when omitted). The accepted algorithms are
    exactly those of the configured keys. ``leeway_seconds`` tolerates clock skew on
    ``exp`` and ``iat``.
    """

    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        keys: Sequence[SigningKey],
        active_kid: str | None = None,
        ttl_seconds: int = 3600,
        leeway_seconds: int = 30,
    ) -> None:
        if not issuer or not audience:
            raise ValueError("issuer and audience must not be empty")
        if not keys:
            raise ValueError("at least one signing key is required")
        by_kid: dict[str, SigningKey] = {}
        for key in keys:
            if key.kid in by_kid:
                raise ValueError(f"duplicate kid {key.kid!r}")
            by_kid[key.kid] = key
        active = keys[0].kid if active_kid is None else active_kid
        if active not in by_kid:
            raise ValueError(f"active_kid {active!r} is not among the configured keys")
        if ttl_seconds <= 0:
            raise ValueError("ttl_seconds must be positive")
        if leeway_seconds < 0:
            raise ValueError("leeway_seconds must not be negative")
        self._issuer = issuer
        self._audience = audience
        self._keys: Mapping[str, SigningKey] = by_kid
        self._active = by_kid[active]
        self._algorithms = frozenset(key.algorithm for key in keys)
        self._ttl = ttl_seconds
        self._leeway = leeway_seconds
        self._jwt = jwt.PyJWT(options={"enforce_minimum_key_length": True})

    @property
    def active_kid(self) -> str:
        return self._active.kid

    @property
    def ttl_seconds(self) -> int:
        return self._ttl

    @property
    def algorithms(self) -> frozenset[str]:
        """The allow-list: the algorithms of the configured keys."""
        return self._algorithms

    def issue(self, principal: Principal, now: datetime | None = None) -> IssuedToken:
        """Sign a token for ``principal`` with the active key, valid for ``ttl_seconds``."""
        if now is None:
            now = datetime.now(UTC)
        elif now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        issued_at = int(now.timestamp())
        scope = format_scopes(principal.scopes)
        claims: dict[str, Any] = {
            "iss": self._issuer,
            "aud": self._audience,
            "sub": principal.subject,
            "tenant": principal.tenant_id,
            "scope": scope,
            "iat": issued_at,
            "exp": issued_at + self._ttl,
            "jti": secrets.token_urlsafe(16),
        }
        key = self._active
        token = self._jwt.encode(
            claims,
            key.material,
            algorithm=key.algorithm,
            headers={"kid": key.kid, "typ": JWT_TYP},
        )
        return IssuedToken(access_token=token, expires_in=self._ttl, scope=scope)

    def verify(self, token: str) -> Principal:
        """The principal a valid token speaks for; :class:`InvalidToken` for anything else."""
        return self.verify_until(token)[0]

    def verify_until(self, token: str) -> tuple[Principal, int]:
        """Like :meth:`verify`, with the token's expiry (``exp``, Unix seconds)."""
        if len(token) > MAX_TOKEN_BYTES:
            raise InvalidToken(f"token is {len(token)} characters, over {MAX_TOKEN_BYTES}")
        if not token.isascii():
            raise InvalidToken("token contains non-ASCII characters")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"malformed token: {exc}") from exc
        key = self._key_for(header)
        try:
            claims = self._jwt.decode(
                token,
                key.verification_key,
                algorithms=[key.algorithm],
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": list(_REQUIRED_CLAIMS), "strict_aud": True},
            )
        except jwt.ExpiredSignatureError as exc:
            raise InvalidToken("token has expired") from exc
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"{type(exc).__name__}: {exc}") from exc
        return _principal_from(claims), int(claims["exp"])

    def _key_for(self, header: Mapping[str, Any]) -> SigningKey:
        alg = header.get("alg")
        if not isinstance(alg, str) or not alg:
            raise InvalidToken("header has no alg")
        if alg.lower() == "none":
            raise InvalidToken("unsigned token (alg none)")
        if alg not in self._algorithms:
            raise InvalidToken(f"algorithm {alg[:16]!r} is not on the allow-list")
        typ = header.get("typ")
        if not isinstance(typ, str) or typ.lower() not in _ACCEPTED_TYP:
            raise InvalidToken("header typ is not at+jwt")
        kid = header.get("kid")
        if kid is None:
            if len(self._keys) != 1:
                raise InvalidToken("token has no kid and several keys are configured")
            (key,) = self._keys.values()
        else:
            if not isinstance(kid, str) or kid not in self._keys:
                raise InvalidToken(f"unknown kid {str(kid)[:_MAX_KID_LENGTH]!r}")
            key = self._keys[kid]
        if key.algorithm != alg:
            raise InvalidToken(f"kid {key.kid!r} is an {key.algorithm} key, header says {alg}")
        return key

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        """The JWK Set (RFC 7517) of the asymmetric keys' public halves; HS secrets never."""
        public = [key for key in self._keys.values() if key.public_key is not None]
        return {"keys": [_public_jwk(key) for key in public]}


def _principal_from(claims: Mapping[str, Any]) -> Principal:
    subject = claims.get("sub")
    tenant = claims.get("tenant")
    scope = claims.get("scope")
    for name in ("exp", "iat"):
        value = claims.get(name)
        if not isinstance(value, int) or isinstance(value, bool):
            raise InvalidToken(f"claim {name} is not an integer")
    if not isinstance(subject, str) or not subject:
        raise InvalidToken("claim sub is not a non-empty string")
    if not isinstance(tenant, str) or not tenant:
        raise InvalidToken("claim tenant is not a non-empty string")
    if not isinstance(scope, str):
        raise InvalidToken("claim scope is not a string")
    try:
        scopes = parse_scopes(scope)
    except UnknownScope as exc:
        raise InvalidToken(f"claim scope: {exc}") from exc
    return Principal(
        tenant_id=TenantId(tenant), subject=subject, scopes=scopes, kind=CredentialKind.TOKEN
    )


def _public_jwk(key: SigningKey) -> dict[str, str]:
    public = key.public_key
    fields: tuple[str, ...]
    if isinstance(public, RSAPublicKey):
        full = RSAAlgorithm.to_jwk(public, as_dict=True)
        fields = ("kty", "n", "e")
    elif isinstance(public, EllipticCurvePublicKey):
        full = ECAlgorithm.to_jwk(public, as_dict=True)
        fields = ("kty", "crv", "x", "y")
    else:  # pragma: no cover - jwks() passes asymmetric keys only
        raise ValueError(f"key {key.kid!r} has no public half")
    jwk = {name: str(full[name]) for name in fields}
    jwk.update(kid=key.kid, alg=key.algorithm, use="sig")
    return jwk

"""Generating, hashing and checking client secrets and API keys.

Client ids look like ``sgc_<random>``; API keys look like ``sgk_<keyid>_<secret>``, where the
key id is public (it is the database key and appears in audit logs) and only a hash of the
secret is stored. The recognisable prefixes let secret scanners and humans tell them apart.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

from stockgraph.domain.ids import ClientId

CLIENT_ID_PREFIX = "sgc_"
API_KEY_PREFIX = "sgk_"

SECRET_BYTES = 32
"""Bytes of randomness in every client secret and API key secret."""

_KEY_ID_BYTES = 8
_API_KEY = re.compile(r"sgk_([0-9a-f]{16})_([A-Za-z0-9_-]{32,128})")
_MAX_API_KEY_LENGTH = 4 + 16 + 1 + 128


def new_client_id() -> ClientId:
    """A fresh, public OAuth client id: ``sgc_`` and 16 random bytes, URL-safe."""
    return ClientId(CLIENT_ID_PREFIX + secrets.token_urlsafe(16))


def new_client_secret() -> str:
    """A fresh client secret: 32 random bytes, URL-safe base64 (43 characters)."""
    return secrets.token_urlsafe(SECRET_BYTES)


def new_api_key() -> tuple[str, str]:
    """A fresh API key as ``(key_id, full_key)``.

    The full key is ``sgk_<key_id>_<secret>``; it is shown to its owner once and only
    ``hash_secret(secret)`` is kept.

    >>> key_id, key = new_api_key()
    >>> split_api_key(key)[0] == key_id
    True
    """
    key_id = secrets.token_hex(_KEY_ID_BYTES)
    return key_id, f"{API_KEY_PREFIX}{key_id}_{secrets.token_urlsafe(SECRET_BYTES)}"


def split_api_key(key: str) -> tuple[str, str] | None:
    """``(key_id, secret)`` of a well-formed API key, or ``None`` for anything else."""
    if len(key) > _MAX_API_KEY_LENGTH:
        return None
    match = _API_KEY.fullmatch(key)
    if match is None:
        return None
    return match.group(1), match.group(2)


def hash_secret(secret: str) -> str:
    """The stored form of a secret: SHA-256, hex.

    A plain fast hash is the right choice here, unlike for passwords. Every secret this
    module hands out carries 256 bits of randomness, so there is nothing for a dictionary
    or brute-force attack to guess, and a slow key-derivation function (bcrypt, scrypt,
    Argon2) would add no protection. It would instead cost tens of milliseconds of CPU on
    every API-key request and token exchange, which lets anyone holding a made-up key
    exhaust the server: a denial-of-service lever.
    """
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def verify_secret(secret: str, stored_hash: str) -> bool:
    """Whether ``secret`` hashes to ``stored_hash``, compared in constant time."""
    return hmac.compare_digest(
        hash_secret(secret).encode("ascii"), stored_hash.encode("utf-8", "replace")
    )

"""Client ids, client secrets and API keys: their shape, their randomness, their hashes."""

from __future__ import annotations

import base64
import hashlib
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stockgraph.auth.secrets import (
    hash_secret,
    new_api_key,
    new_client_id,
    new_client_secret,
    split_api_key,
    verify_secret,
)

URL_SAFE = re.compile(r"[A-Za-z0-9_-]+")


def _urlsafe_bytes(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def test_client_id_is_prefixed_and_url_safe() -> None:
    client_id = new_client_id()

    assert client_id.startswith("sgc_")
    assert URL_SAFE.fullmatch(client_id.removeprefix("sgc_"))
    assert len(client_id) <= 64


def test_client_ids_do_not_repeat() -> None:
    assert len({new_client_id() for _ in range(200)}) == 200


def test_client_secret_carries_at_least_32_random_bytes() -> None:
    secret = new_client_secret()

    assert URL_SAFE.fullmatch(secret)
    assert len(_urlsafe_bytes(secret)) >= 32


def test_client_secrets_do_not_repeat() -> None:
    assert len({new_client_secret() for _ in range(200)}) == 200


def test_api_key_is_prefixed_with_its_public_key_id() -> None:
    key_id, key = new_api_key()

    assert key.startswith(f"sgk_{key_id}_")


def test_api_key_splits_into_its_key_id_and_secret() -> None:
    key_id, key = new_api_key()

    parts = split_api_key(key)

    assert parts is not None
    assert parts[0] == key_id
    assert key == f"sgk_{key_id}_{parts[1]}"
    assert len(_urlsafe_bytes(parts[1])) >= 32


def test_api_key_ids_do_not_repeat() -> None:
    assert len({new_api_key()[0] for _ in range(200)}) == 200


@pytest.mark.parametrize(
    "key",
    [
        "",
        "sgk_",
        "sgk_0123456789abcdef",
        "sgk_0123456789abcdef_",
        "sgk_0123456789abcdef_short",
        "sgc_0123456789abcdef_" + "a" * 43,
        "SGK_0123456789abcdef_" + "a" * 43,
        "sgk_0123456789ABCDEF_" + "a" * 43,
        "sgk_0123456789abcde_" + "a" * 43,
        "sgk_0123456789abcdef_" + "a" * 42 + "!",
        " sgk_0123456789abcdef_" + "a" * 43,
        "sgk_0123456789abcdef_" + "a" * 43 + "\n",
        "sgk_0123456789abcdef_" + "a" * 10_000,
    ],
)
def test_malformed_api_key_does_not_split(key: str) -> None:
    assert split_api_key(key) is None


@given(st.text(max_size=300))
def test_splitting_any_text_yields_nothing_or_parts_that_rebuild_it(text: str) -> None:
    parts = split_api_key(text)

    assert parts is None or text == f"sgk_{parts[0]}_{parts[1]}"


def test_secret_hash_is_sha256_hex() -> None:
    assert hash_secret("s3cret") == hashlib.sha256(b"s3cret").hexdigest()


def test_secret_verifies_against_its_own_hash() -> None:
    secret = new_client_secret()

    assert verify_secret(secret, hash_secret(secret))


def test_other_secret_does_not_verify() -> None:
    assert not verify_secret(new_client_secret(), hash_secret(new_client_secret()))


@pytest.mark.parametrize("stored", ["", "not-a-hash", "ü" * 64, "0" * 64])
def test_secret_does_not_verify_against_a_corrupt_stored_hash(stored: str) -> None:
    assert not verify_secret("anything", stored)


@given(st.text(), st.text())
def test_verification_agrees_with_equality_of_secrets(secret: str, other: str) -> None:
    assert verify_secret(secret, hash_secret(secret))
    assert verify_secret(other, hash_secret(secret)) == (other == secret)

"""Finding the real PostgreSQL and Redis that integration tests need.

Locally a missing service skips its tests with a reason; under ``CI=true`` it fails them,
so a broken CI machine never passes by skipping.
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlsplit

import pytest

DEFAULT_DATABASE_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def _reachable(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or default_port
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def _require(name: str, url: str, default_port: int) -> str:
    if _reachable(url, default_port):
        return url
    message = f"{name} is not reachable at {url}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{message}; CI=true requires it", pytrace=False)
    pytest.skip(f"{message}; set {name} to run these tests")


def postgres_url() -> str:
    """The PostgreSQL URL from ``DATABASE_URL`` (a PostgreSQL one), or the local default."""
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith("postgres"):
        url = DEFAULT_DATABASE_URL
    return _require("DATABASE_URL", url, 5432)


def redis_url() -> str:
    return _require("REDIS_URL", os.environ.get("REDIS_URL", DEFAULT_REDIS_URL), 6379)

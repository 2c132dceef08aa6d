"""``stockgraph migrate`` and ``stockgraph serve`` with a topology file, as operators run them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import free_port, stockgraph, stop

pytestmark = pytest.mark.e2e

TOPOLOGY = """
[[tenants]]
id = "initech"
name = "Initech"

[[warehouses]]
tenant = "initech"
code = "AUS-1"
name = "Austin"
dialect = "rest"
region = "us-central"
lat = 30.27
lng = -97.74
[warehouses.connection]
base_url = "http://127.0.0.1:9"
api_key = "not-a-real-key"
webhook_secrets = ["whsec-aus"]
[warehouses.connection.mapping]
identity_skus = true

[[warehouses]]
tenant = "initech"
code = "PDX-1"
name = "Portland"
dialect = "graphql"
region = "us-west"
[warehouses.connection]
endpoint = "http://127.0.0.1:9/graphql"
access_token = "not-a-real-token"
webhook_secrets = ["whsec-pdx"]
"""


def test_serve_refuses_an_unmigrated_database_with_a_clear_message(tmp_path: Path) -> None:
    env = {"DATABASE_URL": f"sqlite:///{tmp_path / 'empty.db'}", "STOCKGRAPH_JWT_SECRET": "s" * 40}
    result = stockgraph("serve", "--port", str(free_port()), env=env)
    assert result.returncode == 2
    assert "run `stockgraph migrate`" in result.stderr


@dataclass
class Serving:
    process: subprocess.Popen[bytes]
    base: str
    env: dict[str, str]
    log: Path


@contextmanager
def serving(tmp_path: Path) -> Iterator[Serving]:
    """``stockgraph serve`` over the topology above, healthy; stopped with SIGINT after,
    and killed (and reaped) if it does not stop."""
    config = tmp_path / "stockgraph.toml"
    config.write_text(TOPOLOGY)
    env = {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'sg.db'}",
        "STOCKGRAPH_JWT_SECRET": "s" * 40,
        "STOCKGRAPH_CONFIG": str(config),
    }
    assert stockgraph("migrate", env=env).returncode == 0
    port = free_port()
    log_path = tmp_path / "serve.log"
    log = log_path.open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "stockgraph.cli", "serve", "--port", str(port)],
        env={**os.environ, **env},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline
            time.sleep(0.2)
        yield Serving(process, base, env, log_path)
    finally:
        stop(process)
        log.close()


def _credential(kind: str, env: dict[str, str]) -> dict[str, str]:
    """A new client or API key (``kind``) of initech that may read inventory."""
    made = stockgraph(
        kind, "create", "--tenant", "initech", "--scopes", "inventory:read", "--json", env=env
    )
    assert made.returncode == 0, made.stderr
    created: dict[str, str] = json.loads(made.stdout)
    return created


def test_serve_applies_the_topology_and_answers_its_clients(tmp_path: Path) -> None:
    with serving(tmp_path) as server:
        base, env = server.base, server.env
        client = _credential("clients", env)
        token = httpx.post(
            f"{base}/oauth/token",
            data={"grant_type": "client_credentials"},
            auth=(client["client_id"], client["client_secret"]),
        ).json()["access_token"]
        answer = httpx.post(
            f"{base}/graphql",
            json={
                "query": "{ warehouses { edges { node { code name dialect region"
                " location { lat lng } } } } }"
            },
            headers={"Authorization": f"Bearer {token}"},
        ).json()
        assert answer["data"]["warehouses"]["edges"] == [
            {
                "node": {
                    "code": "AUS-1",
                    "name": "Austin",
                    "dialect": "rest",
                    "region": "us-central",
                    "location": {"lat": 30.27, "lng": -97.74},
                }
            },
            {
                "node": {
                    "code": "PDX-1",
                    "name": "Portland",
                    "dialect": "graphql",
                    "region": "us-west",
                    "location": None,
                }
            },
        ]
        assert httpx.get(f"{base}/graphql", headers={"Accept": "text/html"}).status_code == 401
        server.process.send_signal(signal.SIGINT)
        assert server.process.wait(timeout=15) == 0


def test_serve_stops_while_a_subscriber_streams_server_sent_events(tmp_path: Path) -> None:
    """An ops dashboard subscribed over SSE never ends its request by itself: a stopping
    server ends the stream with ``complete`` and exits, rather than wait for it forever."""
    with serving(tmp_path) as server:
        key = _credential("keys", server.env)["api_key"]
        headers = {"X-API-Key": key, "Accept": "text/event-stream"}
        subscription = {"query": "subscription { stockChanged { cursor sku } }"}
        with httpx.stream(
            "POST", f"{server.base}/graphql", json=subscription, headers=headers, timeout=60
        ) as streaming:
            assert streaming.status_code == 200
            assert streaming.headers["content-type"].startswith("text/event-stream")
            server.process.send_signal(signal.SIGINT)
            lines = list(streaming.iter_lines())  # to the end of the stream
            assert "event: complete" in lines
            assert server.process.wait(timeout=30) == 0
        log = server.log.read_text()
        assert log.rstrip().endswith("stockgraph stopped")
        assert "Traceback" not in log and "timeout graceful shutdown" not in log

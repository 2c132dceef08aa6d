"""``stockgraph migrate`` and ``stockgraph serve`` with a topology file, as operators run them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import free_port, stockgraph

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


def test_serve_applies_the_topology_and_answers_its_clients(tmp_path: Path) -> None:
    config = tmp_path / "stockgraph.toml"
    config.write_text(TOPOLOGY)
    env = {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'sg.db'}",
        "STOCKGRAPH_JWT_SECRET": "s" * 40,
        "STOCKGRAPH_CONFIG": str(config),
    }
    assert stockgraph("migrate", env=env).returncode == 0
    port = free_port()
    log = (tmp_path / "serve.log").open("w")
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
            assert process.poll() is None, (tmp_path / "serve.log").read_text()
            assert time.monotonic() < deadline
            time.sleep(0.2)
        made = stockgraph(
            "clients",
            "create",
            "--tenant",
            "initech",
            "--scopes",
            "inventory:read",
            "--json",
            env=env,
        )
        assert made.returncode == 0, made.stderr
        client = json.loads(made.stdout)
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
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=15) == 0
        log.close()

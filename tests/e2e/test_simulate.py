"""``stockgraph simulate`` runs a fleet on its own; ``stockgraph serve`` syncs it by topology."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import TEST_SECRET, build_world
from tests.e2e.conftest import free_port, stockgraph, stop

pytestmark = pytest.mark.e2e


def _wait_for(predicate: object, what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {seconds} s")
        time.sleep(0.2)


def test_serve_syncs_a_simulated_fleet_of_every_dialect(tmp_path: Path) -> None:
    port = free_port()
    fleet_file = tmp_path / "fleet.toml"
    topology = tmp_path / "topology.toml"
    fleet_file.write_text(
        f'tenant = "acme"\nskus = 20\nstockgraph_url = "http://127.0.0.1:{port}"\n'
        "activity = 5.0\n"
        '[[instances]]\nconnector_id = "sim-rest"\ncode = "SIM-R"\ndialect = "rest"\n'
        '[[instances]]\nconnector_id = "sim-gql"\ncode = "SIM-G"\ndialect = "graphql"\n'
        '[[instances]]\nconnector_id = "sim-edi"\ncode = "SIM-X"\ndialect = "x12"\n'
    )
    database = f"sqlite+aiosqlite:///{tmp_path / 'sg.db'}"
    asyncio.run(build_world(database))
    env = {
        "DATABASE_URL": database,
        "STOCKGRAPH_JWT_SECRET": TEST_SECRET,
        "STOCKGRAPH_CONFIG": str(topology),
        "STOCKGRAPH_LOG_LEVEL": "warning",
    }
    logs = [(tmp_path / n).open("w") for n in ("simulate.log", "serve.log")]
    simulate = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "stockgraph.cli",
            "simulate",
            "--config",
            str(fleet_file),
            "--topology-out",
            str(topology),
        ],
        stdout=logs[0],
        stderr=subprocess.STDOUT,
        env={**os.environ, **env},
    )
    serve: subprocess.Popen[bytes] | None = None
    try:
        _wait_for(topology.exists, "the fleet's topology file")
        serve = subprocess.Popen(
            [sys.executable, "-m", "stockgraph.cli", "serve", "--port", str(port)],
            stdout=logs[1],
            stderr=subprocess.STDOUT,
            env={**os.environ, **env},
        )
        base = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            try:
                return httpx.get(f"{base}/readyz", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        _wait_for(ready, "stockgraph serve")
        made = stockgraph(
            "keys", "create", "--tenant", "acme", "--scopes", "inventory:read", "--json", env=env
        )
        key = made.stdout.strip().split('"')[3]

        def levels() -> list[dict[str, object]]:
            body = httpx.post(
                f"{base}/graphql",
                json={
                    "query": '{ inventoryLevels(skus: ["SKU-00001", "SKU-00002"]) '
                    "{ sku warehouse { code } onHand source } }"
                },
                headers={"X-API-Key": key},
            ).json()
            return [
                lv
                for lv in body["data"]["inventoryLevels"]
                if str(lv["warehouse"]["code"]).startswith("SIM-")  # type: ignore[index]
            ]

        _wait_for(lambda: len(levels()) == 6, "a full sync of all three simulators")
        live = httpx.post(
            f"{base}/graphql",
            json={
                "query": '{ inventoryLevels(skus: ["SKU-00003"], maxAge: 0) '
                "{ warehouse { code } source stale } }"
            },
            headers={"X-API-Key": key},
        ).json()["data"]["inventoryLevels"]
        by_code = {lv["warehouse"]["code"]: lv for lv in live}
        assert by_code["SIM-R"]["source"] == by_code["SIM-G"]["source"] == "LIVE"
        # The EDI mailbox spends its one call per interval on polls; a live read that finds
        # it spent answers from the projection, marked stale, rather than wait.
        assert by_code["SIM-X"]["source"] == "LIVE" or by_code["SIM-X"]["stale"] is True
    finally:
        for process in (serve, simulate):
            if process is not None:
                stop(process)
        for log in logs:
            log.close()

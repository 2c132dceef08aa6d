"""The real thing: ``stockgraph demo`` in a subprocess, spoken to over HTTP."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

STARTUP_SECONDS = 60


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stockgraph(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stockgraph.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
        check=False,
    )


def stop(process: subprocess.Popen[Any], grace: float = 15) -> int | None:
    """Stop a Stockgraph process as an operator would (SIGINT), killing it if it is still
    running after ``grace`` seconds; always reaped, so no process outlives its test."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


@dataclass
class Demo:
    base: str
    data_dir: Path
    process: subprocess.Popen[str]
    banner: str

    @property
    def credentials(self) -> list[dict[str, str]]:
        return list(json.loads((self.data_dir / "credentials.json").read_text()))

    def client(self, tenant: str, role: str) -> dict[str, str]:
        return next(c for c in self.credentials if c["tenant"] == tenant and c["role"] == role)

    def token(self, tenant: str = "acme", role: str = "read-only") -> str:
        c = self.client(tenant, role)
        response = httpx.post(
            f"{self.base}/oauth/token",
            data={"grant_type": "client_credentials"},
            auth=(c["client_id"], c["client_secret"]),
        )
        response.raise_for_status()
        return str(response.json()["access_token"])

    def graphql(
        self, query: str, variables: dict[str, object] | None = None, **headers: str
    ) -> httpx.Response:
        return httpx.post(
            f"{self.base}/graphql",
            json={"query": query, "variables": variables or {}},
            headers=headers,
        )


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    data_dir = tmp_path_factory.mktemp("demo-e2e")
    port = free_port()
    log = data_dir / "demo.log"
    out = log.open("w")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "stockgraph.cli",
            "demo",
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
        ],
        stdout=out,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "STOCKGRAPH_LOG_LEVEL": "warning"},
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + STARTUP_SECONDS
    while True:
        if process.poll() is not None:
            pytest.fail(f"stockgraph demo exited with {process.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            stop(process)
            pytest.fail(f"stockgraph demo did not answer within {STARTUP_SECONDS} s")
        time.sleep(0.2)
    try:
        yield Demo(base, data_dir, process, banner=log.read_text())
    finally:
        stop(process)
        out.close()

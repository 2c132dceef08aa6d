"""Storefront read path: Stockgraph against a textbook strawberry server and fixed bytes.

Three servers answer the same two storefront queries, measured side by side in one run:

- Stockgraph, already running (``--stockgraph``), with a bearer token;
- the textbook strawberry peer (``../shared/bench/peer_strawberry.py``), started here;
- ``benchmarks/plain_server.py``, started here, serving Stockgraph's own response bytes
  for each query: the same bytes with no GraphQL, the floor of the stack.

Cells (a query at a concurrency) run one after another, the three servers back to back in each
cell with the order rotated from cell to cell, because absolute speed drifts on these
machines and only ratios taken in one run mean much. Load comes from ``wrk`` pinned to one
core (an asyncio + httpx closed loop is the fallback when wrk is missing). The result is a
Markdown table per query and concurrency on stdout; ``--json`` keeps the raw figures.

    .venv/bin/python benchmarks/storefront_query.py \\
        --stockgraph http://127.0.0.1:8000 --credentials /tmp/sg-bench/credentials.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime as dt
import importlib.metadata
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
from _shared import BenchmarkError, cpu_ticks, free_port, log, pinned, run_in_workdir

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PEER = REPO_ROOT.parent / "shared" / "bench" / "peer_strawberry.py"
PLAIN_SERVER = Path(__file__).resolve().parent / "plain_server.py"
DEFAULT_CREDENTIALS = Path(".stockgraph-demo") / "credentials.json"
CLK_TCK = os.sysconf("SC_CLK_TCK")
SKU_COUNT = 20
FIRST_SKUS = tuple(f"SKU-{i:05d}" for i in range(SKU_COUNT))
WAREHOUSES = 24
CATALOGUE_SKUS = 500


@dataclass(frozen=True)
class Query:
    name: str
    key: str
    field: str
    document: str
    rows_per_sku: int
    skus: tuple[str, ...] = FIRST_SKUS

    @property
    def body(self) -> bytes:
        payload = {"query": self.document, "variables": {"skus": list(self.skus)}}
        return json.dumps(payload, separators=(",", ":")).encode()

    @property
    def expected_rows(self) -> int:
        return len(self.skus) * self.rows_per_sku

    @property
    def title(self) -> str:
        if self.rows_per_sku == 1:
            return f"{self.name}, {len(self.skus)} SKUs (sku available onHand)"
        return (
            f"{self.name}, {len(self.skus)} SKUs x {self.rows_per_sku} warehouses "
            f"= {self.expected_rows} rows, all contract fields"
        )


QUERIES: tuple[Query, ...] = (
    Query(
        name="availability",
        key="availability",
        field="availability",
        document="query($skus:[String!]!){ availability(skus:$skus){ sku available onHand } }",
        rows_per_sku=1,
    ),
    Query(
        name="inventoryLevels",
        key="levels",
        field="inventoryLevels",
        document=(
            "query($skus:[String!]!){ inventoryLevels(skus:$skus){ sku warehouse{ id name } "
            "onHand available committed reserved incoming damaged safetyStock asOf source "
            "stale } }"
        ),
        rows_per_sku=WAREHOUSES,
    ),
)
_SKU_COVERAGE = "query($skus:[String!]!){ inventoryLevels(skus:$skus){ sku } }"


@dataclass
class Server:
    key: str
    label: str
    base_url: str
    headers: Callable[[float], dict[str, str]]
    pid: int | None = None
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    def url(self, query: Query) -> str:
        if self.key == "plain":
            return f"{self.base_url}/graphql?q={query.key}"
        return f"{self.base_url}/graphql"


@dataclass
class Probe:
    status: int
    body: bytes
    rows: int
    header_bytes: int

    @property
    def response_bytes(self) -> int:
        return self.header_bytes + len(self.body)


@dataclass
class Measurement:
    server: str
    query: str
    concurrency: int
    round: int
    loadgen: str
    requests: int
    duration_s: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float
    errors: dict[str, int]
    bytes_per_response: float | None
    expected_bytes: int
    cpu_ms_per_request: float | None
    cpu_utilisation: float | None
    warnings: list[str] = field(default_factory=list)
    loadgen_output: str = ""


# ---------------------------------------------------------------------------------------
# Stockgraph credentials


class StockgraphAuth:
    """A bearer token for Stockgraph, from ``--token`` or fetched from the credentials file."""

    def __init__(
        self, base_url: str, token: str | None, credentials: Path | None, tenant: str, role: str
    ) -> None:
        self.base_url = base_url
        self.tenant = tenant
        self.role = role
        self._token = token
        self._expires_at = float("inf")
        self._client: tuple[str, str] | None = None
        if token is None:
            if credentials is None:
                raise BenchmarkError("give --token or --credentials")
            self._client = self._read_credentials(credentials)
            self._fetch()

    def _read_credentials(self, path: Path) -> tuple[str, str]:
        try:
            entries = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise BenchmarkError(
                f"no credentials file at {path}: start Stockgraph's demo "
                "(it writes credentials.json in its data folder) or pass --token"
            ) from None
        except (OSError, ValueError) as exc:
            raise BenchmarkError(f"cannot read credentials from {path}: {exc}") from exc
        for entry in entries if isinstance(entries, list) else []:
            if entry.get("tenant") == self.tenant and entry.get("role") == self.role:
                return str(entry["client_id"]), str(entry["client_secret"])
        raise BenchmarkError(
            f"{path} holds no client for tenant {self.tenant!r}, role {self.role!r}"
        )

    def _fetch(self) -> None:
        assert self._client is not None
        url = f"{self.base_url}/oauth/token"
        try:
            reply = httpx.post(
                url, data={"grant_type": "client_credentials"}, auth=self._client, timeout=30
            )
        except httpx.HTTPError as exc:
            raise BenchmarkError(f"cannot reach Stockgraph at {url}: {exc}") from exc
        if reply.status_code != 200:
            raise BenchmarkError(f"{url} answered HTTP {reply.status_code}: {reply.text[:300]}")
        payload = reply.json()
        token = payload.get("access_token")
        if not token:
            raise BenchmarkError(f"{url} returned no access_token: {reply.text[:300]}")
        self._token = str(token)
        expires_in = payload.get("expires_in")
        self._expires_at = (
            time.monotonic() + float(expires_in) if expires_in is not None else float("inf")
        )

    def headers(self, valid_for_s: float) -> dict[str, str]:
        """Headers carrying a token that stays valid for at least ``valid_for_s`` seconds."""
        if self._client is not None and self._expires_at - time.monotonic() < valid_for_s + 30:
            self._fetch()
        return {"Authorization": f"Bearer {self._token}"}

    @property
    def source(self) -> str:
        if self._client is None:
            return "--token"
        return f"client credentials (tenant {self.tenant}, role {self.role})"


# ---------------------------------------------------------------------------------------
# Servers started here


def start_server(server: Server, cmd: list[str], logs: Path, ready_timeout_s: float = 60.0) -> None:
    """Start ``cmd`` and wait until ``server`` answers a GraphQL-shaped POST."""
    server.log_path = logs / f"{server.key}.log"
    with server.log_path.open("wb") as log:
        server.process = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
        )
    server.pid = server.process.pid
    probe_url = server.url(QUERIES[0])
    deadline = time.monotonic() + ready_timeout_s
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise BenchmarkError(
                f"{server.label} exited with code {server.process.returncode} on start:\n"
                + tail(server.log_path)
            )
        try:
            httpx.post(probe_url, json={"query": "{ __typename }"}, timeout=2)
        except httpx.HTTPError:
            time.sleep(0.1)
            continue
        return
    raise BenchmarkError(
        f"{server.label} did not answer within {ready_timeout_s:.0f} s:\n" + tail(server.log_path)
    )


def stop_server(server: Server) -> None:
    process = server.process
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def tail(path: Path | None, lines: int = 20) -> str:
    if path is None or not path.exists():
        return ""
    return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])


# ---------------------------------------------------------------------------------------
# Process figures from /proc


def cpus_allowed(pid: int | None) -> str | None:
    if pid is None:
        return None
    try:
        status = Path(f"/proc/{pid}/status").read_text(encoding="ascii")
    except OSError:
        return None
    match = re.search(r"^Cpus_allowed_list:\s*(\S+)", status, re.MULTILINE)
    return match.group(1) if match else None


def pid_listening_on(port: int) -> int | None:
    """The process that holds the listening TCP socket on ``port`` on this host, if any."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text(encoding="ascii").splitlines()[1:]:
                cols = line.split()
                if cols[1].rsplit(":", 1)[1] == f"{port:04X}" and cols[3] == "0A":
                    inodes.add(cols[9])
    if not inodes:
        return None
    targets = {f"socket:[{inode}]" for inode in inodes}
    found: list[int] = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (proc / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) in targets:
                        found.append(int(proc.name))
                        break
    return min(found) if found else None


# ---------------------------------------------------------------------------------------
# Checking the answers


def header_bytes(response: httpx.Response) -> int:
    status_line = f"HTTP/1.1 {response.status_code} {response.reason_phrase}\r\n"
    return len(status_line) + sum(len(k) + 2 + len(v) + 2 for k, v in response.headers.raw) + 2


def probe(server: Server, query: Query, valid_for_s: float = 60.0) -> Probe:
    """One request; a 200 with rows and no ``errors``, or a BenchmarkError that says why."""
    headers = {"Content-Type": "application/json", **server.headers(valid_for_s)}
    try:
        response = httpx.post(server.url(query), content=query.body, headers=headers, timeout=60)
    except httpx.HTTPError as exc:
        hint = (
            " (is it running? `.venv/bin/stockgraph demo --port 8000 --data-dir /tmp/sg-bench`)"
            if server.key == "stockgraph"
            else ""
        )
        raise BenchmarkError(f"{server.label} at {server.url(query)}: {exc!r}{hint}") from exc
    where = f"{server.label} answering {query.name}"
    if response.status_code != 200:
        raise BenchmarkError(f"{where}: HTTP {response.status_code}: {response.text[:500]}")
    try:
        payload = response.json()
    except ValueError:
        raise BenchmarkError(f"{where}: not JSON: {response.text[:500]}") from None
    if payload.get("errors"):
        raise BenchmarkError(f"{where}: errors: {json.dumps(payload['errors'])[:500]}")
    rows = (payload.get("data") or {}).get(query.field)
    if not isinstance(rows, list) or not rows:
        raise BenchmarkError(f"{where}: no rows in data.{query.field}: {response.text[:500]}")
    return Probe(response.status_code, response.content, len(rows), header_bytes(response))


def levels_per_sku(server: Server, skus: Sequence[str]) -> dict[str, int]:
    """How many inventory levels ``server`` holds for each of ``skus``."""
    query = Query("inventoryLevels", "levels", "inventoryLevels", _SKU_COVERAGE, 1, tuple(skus))
    counts = dict.fromkeys(skus, 0)
    try:
        response = httpx.post(
            server.url(query),
            content=query.body,
            headers={"Content-Type": "application/json", **server.headers(60)},
            timeout=60,
        )
    except httpx.HTTPError as exc:
        raise BenchmarkError(f"{server.label} at {server.url(query)}: {exc!r}") from exc
    payload = response.json() if response.status_code == 200 else {}
    if response.status_code != 200 or payload.get("errors"):
        raise BenchmarkError(
            f"{server.label} answering inventoryLevels while choosing SKUs: "
            f"HTTP {response.status_code}: {response.text[:500]}"
        )
    for row in payload["data"]["inventoryLevels"]:
        counts[row["sku"]] = counts.get(row["sku"], 0) + 1
    return counts


def choose_skus(server: Server, spec: str) -> tuple[tuple[str, ...], str]:
    """The SKUs to query, and a line saying how they were chosen.

    ``first`` is SKU-00000 … SKU-00019 whatever Stockgraph holds; ``auto`` keeps them when
    Stockgraph stocks each in all warehouses (as the peer does), and otherwise takes the
    first SKUs of the catalogue that it does stock everywhere, so both servers answer the
    same number of rows; anything else is a comma-separated list.
    """
    if spec == "first":
        return FIRST_SKUS, f"{FIRST_SKUS[0]} … {FIRST_SKUS[-1]}"
    if spec != "auto":
        chosen = tuple(s.strip() for s in spec.split(",") if s.strip())
        return chosen, ", ".join(chosen)
    full: list[str] = []
    catalogue = [f"SKU-{i:05d}" for i in range(CATALOGUE_SKUS)]
    for start in range(0, CATALOGUE_SKUS, SKU_COUNT):
        counts = levels_per_sku(server, catalogue[start : start + SKU_COUNT])
        full += [sku for sku, n in counts.items() if n == WAREHOUSES]
        if len(full) >= SKU_COUNT:
            break
    if full[:SKU_COUNT] == list(FIRST_SKUS):
        return FIRST_SKUS, f"{FIRST_SKUS[0]} … {FIRST_SKUS[-1]}"
    if len(full) < SKU_COUNT:
        raise BenchmarkError(
            f"Stockgraph stocks only {len(full)} SKUs in all {WAREHOUSES} warehouses, "
            f"{SKU_COUNT} needed; pass --skus first or a list"
        )
    chosen = tuple(full[:SKU_COUNT])
    return chosen, (
        f"the first {SKU_COUNT} SKUs Stockgraph stocks in all {WAREHOUSES} warehouses "
        f"(its demo leaves some SKU-warehouse pairs empty; the peer fills all): "
        + ", ".join(chosen)
    )


# ---------------------------------------------------------------------------------------
# Load generators


@dataclass
class LoadResult:
    requests: int
    duration_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float
    errors: dict[str, int]
    bytes_per_response: float | None
    raw: str = ""


_WRK_DONE = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "\\nBENCH-JSON {\\"requests\\":%.0f,\\"duration_us\\":%.0f,\\"bytes\\":%.0f," ..
    "\\"connect\\":%.0f,\\"read\\":%.0f,\\"write\\":%.0f,\\"status\\":%.0f,\\"timeout\\":%.0f," ..
    "\\"p50_us\\":%.0f,\\"p90_us\\":%.0f,\\"p99_us\\":%.0f,\\"mean_us\\":%.1f,\\"max_us\\":%.0f}\\n",
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.mean, latency.max))
end
"""


def lua_string(value: str) -> str:
    if any(ord(ch) < 32 or ord(ch) > 126 for ch in value):
        raise BenchmarkError(f"cannot put {value[:40]!r}… in a wrk script")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def lua_long_string(value: str) -> str:
    level = 0
    while f"]{'=' * level}]" in value:
        level += 1
    eq = "=" * level
    return f"[{eq}[{value}]{eq}]"


def wrk_script(body: bytes, headers: dict[str, str]) -> str:
    lines = ['wrk.method = "POST"', f"wrk.body = {lua_long_string(body.decode())}"]
    lines += [f"wrk.headers[{lua_string(k)}] = {lua_string(v)}" for k, v in headers.items()]
    return "\n".join(lines) + "\n" + _WRK_DONE


class Wrk:
    name = "wrk"

    def __init__(self, cpus: str | None, timeout_s: int, scripts: Path) -> None:
        self.cpus = cpus
        self.timeout_s = timeout_s
        self.scripts = scripts
        probe_run = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
        self.version = (probe_run.stdout + probe_run.stderr).split("[")[0].strip()

    def run(
        self, url: str, body: bytes, headers: dict[str, str], connections: int, seconds: int
    ) -> LoadResult:
        script = self.scripts / "request.lua"
        script.write_text(wrk_script(body, headers), encoding="utf-8")
        cmd = pinned(
            [
                "wrk",
                "-t1",
                f"-c{connections}",
                f"-d{seconds}s",
                f"--timeout={self.timeout_s}s",
                "--latency",
                "-s",
                str(script),
                url,
            ],
            self.cpus,
        )
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        match = re.search(r"^BENCH-JSON (\{.*\})$", done.stdout, re.MULTILINE)
        if done.returncode != 0 or match is None:
            raise BenchmarkError(
                f"wrk failed (exit {done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
            )
        figures = json.loads(match.group(1))
        requests = int(figures["requests"])
        errors = {k: int(figures[k]) for k in ("connect", "read", "write", "status", "timeout")}
        return LoadResult(
            requests=requests,
            duration_s=figures["duration_us"] / 1e6,
            p50_ms=figures["p50_us"] / 1e3,
            p90_ms=figures["p90_us"] / 1e3,
            p99_ms=figures["p99_us"] / 1e3,
            mean_ms=figures["mean_us"] / 1e3,
            max_ms=figures["max_us"] / 1e3,
            errors=errors,
            bytes_per_response=figures["bytes"] / requests if requests else None,
            raw=done.stdout[: match.start()].strip(),
        )


class HttpxLoop:
    """A closed loop of ``connections`` asyncio workers on one httpx client.

    Weaker than wrk: the client's own Python overhead (~0.2-0.5 ms of CPU per request)
    caps what it can offer, so fast servers, the fixed-bytes one above all, are measured
    against the generator's ceiling rather than their own.
    """

    name = "httpx"
    version = f"httpx {httpx.__version__} closed loop"

    def __init__(self, cpus: str | None, timeout_s: int) -> None:
        self.cpus = cpus
        self.timeout_s = timeout_s

    def run(
        self, url: str, body: bytes, headers: dict[str, str], connections: int, seconds: int
    ) -> LoadResult:
        original = os.sched_getaffinity(0)
        if self.cpus:
            os.sched_setaffinity(0, parse_cpus(self.cpus))
        try:
            return asyncio.run(self._run(url, body, headers, connections, seconds))
        finally:
            os.sched_setaffinity(0, original)

    async def _run(
        self, url: str, body: bytes, headers: dict[str, str], connections: int, seconds: int
    ) -> LoadResult:
        latencies: list[float] = []
        errors = {"connect": 0, "read": 0, "write": 0, "status": 0, "timeout": 0}
        received = 0
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        all_headers = {"Content-Type": "application/json", **headers}
        async with httpx.AsyncClient(limits=limits, timeout=self.timeout_s) as client:
            deadline = time.perf_counter() + seconds

            async def worker() -> None:
                nonlocal received
                while time.perf_counter() < deadline:
                    started = time.perf_counter()
                    try:
                        response = await client.post(url, content=body, headers=all_headers)
                    except httpx.TimeoutException:
                        errors["timeout"] += 1
                        continue
                    except httpx.ConnectError:
                        errors["connect"] += 1
                        continue
                    except httpx.HTTPError:
                        errors["read"] += 1
                        continue
                    latencies.append(time.perf_counter() - started)
                    received += len(response.content)
                    if response.status_code >= 400:
                        errors["status"] += 1

            began = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(connections)))
            elapsed = time.perf_counter() - began
        if not latencies:
            raise BenchmarkError(f"no request to {url} completed: {errors}")
        latencies.sort()
        return LoadResult(
            requests=len(latencies),
            duration_s=elapsed,
            p50_ms=percentile(latencies, 50) * 1e3,
            p90_ms=percentile(latencies, 90) * 1e3,
            p99_ms=percentile(latencies, 99) * 1e3,
            mean_ms=statistics.fmean(latencies) * 1e3,
            max_ms=latencies[-1] * 1e3,
            errors=errors,
            bytes_per_response=received / len(latencies),
        )


def percentile(ordered: Sequence[float], pct: float) -> float:
    index = min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered)) - 1))
    return ordered[index]


def parse_cpus(spec: str) -> set[int]:
    cpus: set[int] = set()
    for part in spec.split(","):
        low, _, high = part.partition("-")
        cpus.update(range(int(low), int(high or low) + 1))
    return cpus


# ---------------------------------------------------------------------------------------
# The run


def measure(
    loadgen: Wrk | HttpxLoop,
    server: Server,
    query: Query,
    expected: Probe,
    connections: int,
    args: argparse.Namespace,
    round_no: int,
) -> Measurement:
    headers = {"Content-Type": "application/json", **server.headers(args.warmup + args.duration)}
    url = server.url(query)
    if args.warmup > 0:
        loadgen.run(url, query.body, headers, connections, args.warmup)
    before = cpu_ticks(server.pid)
    result = loadgen.run(url, query.body, headers, connections, args.duration)
    after = cpu_ticks(server.pid)

    cpu_ms_per_request = cpu_utilisation = None
    if before is not None and after is not None and result.requests:
        cpu_s = (after - before) / CLK_TCK
        cpu_ms_per_request = cpu_s * 1e3 / result.requests
        cpu_utilisation = cpu_s / result.duration_s

    expected_bytes = expected.response_bytes if isinstance(loadgen, Wrk) else len(expected.body)
    warnings = []
    failed = {k: v for k, v in result.errors.items() if v}
    if failed:
        warnings.append(
            "errors: "
            + ", ".join(f"{v} {k}" for k, v in failed.items())
            + f" out of {result.requests} requests"
        )
    if result.bytes_per_response is not None and result.bytes_per_response < 0.97 * expected_bytes:
        warnings.append(
            f"responses averaged {result.bytes_per_response:.0f} bytes where the verified one "
            f"had {expected_bytes}: some were probably errors (throttled? token expired?)"
        )
    try:
        after_probe = probe(server, query)
    except BenchmarkError as exc:
        warnings.append(f"the check after the cell failed: {exc}")
    else:
        if after_probe.rows != expected.rows:
            warnings.append(
                f"after the cell it answered {after_probe.rows} rows, not {expected.rows}"
            )

    return Measurement(
        server=server.key,
        query=query.name,
        concurrency=connections,
        round=round_no,
        loadgen=loadgen.name,
        requests=result.requests,
        duration_s=result.duration_s,
        rps=result.requests / result.duration_s if result.duration_s else 0.0,
        p50_ms=result.p50_ms,
        p90_ms=result.p90_ms,
        p99_ms=result.p99_ms,
        mean_ms=result.mean_ms,
        max_ms=result.max_ms,
        errors=result.errors,
        bytes_per_response=result.bytes_per_response,
        expected_bytes=expected_bytes,
        cpu_ms_per_request=cpu_ms_per_request,
        cpu_utilisation=cpu_utilisation,
        warnings=warnings,
        loadgen_output=result.raw,
    )


def rotated(items: Sequence[Server], by: int) -> list[Server]:
    by %= len(items)
    return [*items[by:], *items[:by]]


def median_or_none(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def summarise(
    runs: Sequence[Measurement],
    servers: Sequence[Server],
    queries: Sequence[Query],
    conc: Sequence[int],
) -> list[dict[str, Any]]:
    cells = []
    for query in queries:
        for connections in conc:
            per_server: dict[str, dict[str, Any]] = {}
            for server in servers:
                mine = [
                    m
                    for m in runs
                    if m.server == server.key
                    and m.query == query.name
                    and m.concurrency == connections
                ]
                if not mine:
                    continue
                per_server[server.key] = {
                    "label": server.label,
                    "rounds": len(mine),
                    "rps": median_or_none([m.rps for m in mine]),
                    "p50_ms": median_or_none([m.p50_ms for m in mine]),
                    "p99_ms": median_or_none([m.p99_ms for m in mine]),
                    "cpu_ms_per_request": median_or_none([m.cpu_ms_per_request for m in mine]),
                    "warnings": [w for m in mine for w in m.warnings],
                }
            ratios: dict[str, float | None] = {}
            sg = per_server.get("stockgraph")
            for other in ("peer", "plain"):
                them = per_server.get(other)
                ratios[f"stockgraph/{other} rps"] = (
                    sg["rps"] / them["rps"] if sg and them and them["rps"] else None
                )
                sg_cpu = sg["cpu_ms_per_request"] if sg else None
                their_cpu = them["cpu_ms_per_request"] if them else None
                ratios[f"stockgraph/{other} cpu_ms_per_request"] = (
                    sg_cpu / their_cpu if sg_cpu is not None and their_cpu else None
                )
            cells.append(
                {
                    "query": query.name,
                    "title": query.title,
                    "concurrency": connections,
                    "servers": per_server,
                    "ratios": ratios,
                }
            )
    return cells


def fmt_rate(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if value >= 100 else f"{value:,.1f}"


def fmt_ms(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def fmt_ratio(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}x" if value >= 0.1 else f"{value:.3f}x"


def markdown(meta: dict[str, Any], cells: Sequence[dict[str, Any]]) -> str:
    out = ["## Storefront queries: Stockgraph, textbook strawberry, fixed bytes", ""]
    out += [f"- {k}: {v}" for k, v in meta["describe"].items()]
    for cell in cells:
        conn = cell["concurrency"]
        plural = "connection" if conn == 1 else "connections"
        out += ["", f"### {cell['title']} — {conn} {plural}", ""]
        out += ["| server | req/s | p50 ms | p99 ms | server CPU ms/req |"]
        out += ["| --- | ---: | ---: | ---: | ---: |"]
        notes = []
        for row in cell["servers"].values():
            out.append(
                f"| {row['label']} | {fmt_rate(row['rps'])} | {fmt_ms(row['p50_ms'])} "
                f"| {fmt_ms(row['p99_ms'])} | {fmt_ms(row['cpu_ms_per_request'])} |"
            )
            notes += [f"- **warning**, {row['label']}: {w}" for w in row["warnings"]]
        r = cell["ratios"]
        line = (
            f"Stockgraph / peer req/s: **{fmt_ratio(r['stockgraph/peer rps'])}** · "
            f"Stockgraph / plain req/s: **{fmt_ratio(r['stockgraph/plain rps'])}**"
        )
        if r["stockgraph/peer cpu_ms_per_request"] is not None:
            line += (
                f" · CPU per request, Stockgraph / peer: "
                f"{fmt_ratio(r['stockgraph/peer cpu_ms_per_request'])}"
            )
        out += ["", line]
        if notes:
            out += ["", *notes]
    return "\n".join(out) + "\n"


def redacted(argv: Sequence[str]) -> list[str]:
    out: list[str] = []
    for arg in argv:
        if out and out[-1] == "--token":
            out.append("…")
        elif arg.startswith("--token="):
            out.append("--token=…")
        else:
            out.append(arg)
    return out


def versions() -> dict[str, str]:
    found = {}
    for dist in ("strawberry-graphql", "graphql-core", "starlette", "uvicorn", "httpx"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            found[dist] = importlib.metadata.version(dist)
    return found


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    default_python = REPO_ROOT / ".venv" / "bin" / "python"
    two_cores = (os.cpu_count() or 1) >= 2 and shutil.which("taskset") is not None
    p = argparse.ArgumentParser(
        description="Stockgraph against the textbook strawberry peer and fixed bytes, "
        "on two storefront queries.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--stockgraph", default="http://127.0.0.1:8000", help="Stockgraph base URL")
    p.add_argument("--token", help="bearer token for Stockgraph (else --credentials)")
    p.add_argument(
        "--credentials",
        type=Path,
        default=DEFAULT_CREDENTIALS,
        help="the demo's credentials.json (relative paths: working directory, then repository)",
    )
    p.add_argument("--tenant", default="acme")
    p.add_argument("--role", default="read-only")
    p.add_argument(
        "--stockgraph-pid",
        help="Stockgraph's server process, for CPU ms per request; 'auto' finds the process "
        "listening on the URL's port on this host",
    )
    p.add_argument("--peer", type=Path, default=DEFAULT_PEER, help="peer_strawberry.py")
    p.add_argument(
        "--python",
        default=str(default_python if default_python.exists() else sys.executable),
        help="interpreter for the servers started here",
    )
    p.add_argument("--duration", type=int, default=10, help="seconds measured per cell")
    p.add_argument("--warmup", type=int, default=2, help="seconds of warm-up before each cell")
    p.add_argument("--concurrency", default="1,16", help="comma-separated connection counts")
    p.add_argument(
        "--queries",
        default=",".join(q.name for q in QUERIES),
        help="comma-separated, from: " + ", ".join(q.name for q in QUERIES),
    )
    p.add_argument(
        "--skus",
        default="auto",
        help="'first': SKU-00000 … SKU-00019; 'auto': those if Stockgraph stocks each in all "
        "24 warehouses, else the first 20 it does; or a comma-separated list",
    )
    p.add_argument("--rounds", type=int, default=1, help="repeat every cell; report medians")
    p.add_argument("--loadgen", choices=("auto", "wrk", "httpx"), default="auto")
    p.add_argument("--timeout", type=int, default=30, help="per-request timeout, seconds")
    p.add_argument(
        "--load-cpus",
        default="1" if two_cores else "",
        help="CPUs for the load generator (taskset list; empty: unpinned)",
    )
    p.add_argument(
        "--server-cpus",
        default="0" if two_cores else "",
        help="CPUs for the peer and plain servers started here (empty: unpinned)",
    )
    p.add_argument("--json", type=Path, help="write the raw figures here")
    args = p.parse_args(argv)
    if args.duration < 1 or args.warmup < 0 or args.rounds < 1:
        p.error("--duration must be ≥ 1, --warmup ≥ 0, --rounds ≥ 1")
    try:
        args.concurrency = [int(c) for c in args.concurrency.split(",") if c.strip()]
    except ValueError:
        p.error("--concurrency takes integers, e.g. 1,16")
    by_name = {q.name: q for q in QUERIES}
    unknown = [n for n in args.queries.split(",") if n not in by_name]
    if unknown:
        p.error(f"unknown queries: {', '.join(unknown)}")
    args.queries = [by_name[n] for n in args.queries.split(",")]
    return args


def resolve_credentials(path: Path) -> Path:
    if path.is_absolute() or path.exists():
        return path
    in_repo = REPO_ROOT / path
    return in_repo if in_repo.exists() else path


def resolve_stockgraph_pid(spec: str | None, base_url: str) -> int | None:
    if spec is None:
        return None
    if spec != "auto":
        pid = int(spec)
        if cpu_ticks(pid) is None:
            raise BenchmarkError(f"no process {pid} to read CPU time from")
        return pid
    port = httpx.URL(base_url).port or 80
    found = pid_listening_on(port)
    if found is None:
        raise BenchmarkError(f"--stockgraph-pid auto: no process on this host listens on {port}")
    return found


def run(args: argparse.Namespace, workdir: Path) -> int:
    base = args.stockgraph.rstrip("/").removesuffix("/graphql")
    auth = StockgraphAuth(
        base,
        args.token,
        None if args.token else resolve_credentials(args.credentials),
        args.tenant,
        args.role,
    )
    stockgraph = Server(
        "stockgraph",
        "Stockgraph",
        base,
        auth.headers,
        pid=resolve_stockgraph_pid(args.stockgraph_pid, base),
    )
    no_auth: Callable[[float], dict[str, str]] = lambda _valid_for_s: {}  # noqa: E731
    peer = Server("peer", "peer: textbook strawberry", "", no_auth)
    plain = Server("plain", "plain: same bytes, no GraphQL", "", no_auth)
    servers = [stockgraph, peer, plain]
    runs: list[Measurement] = []

    if args.loadgen == "wrk" or (args.loadgen == "auto" and shutil.which("wrk")):
        if not shutil.which("wrk"):
            raise BenchmarkError("wrk is not installed (apt-get install -y wrk)")
        loadgen: Wrk | HttpxLoop = Wrk(args.load_cpus or None, args.timeout, workdir)
    else:
        log("wrk not found: falling back to the weaker asyncio + httpx closed loop")
        loadgen = HttpxLoop(args.load_cpus or None, args.timeout)

    log(f"checking Stockgraph at {base} …")
    skus, skus_note = choose_skus(stockgraph, args.skus)
    queries = [dataclasses.replace(q, skus=skus) for q in args.queries]
    sg_cpus = cpus_allowed(stockgraph.pid)
    if args.server_cpus and sg_cpus is not None and sg_cpus != args.server_cpus:
        log(
            f"note: Stockgraph may run on CPUs {sg_cpus}, the servers started here on "
            f"{args.server_cpus}; start it under `taskset -c {args.server_cpus}` for a "
            "like-for-like run"
        )
    expected: dict[tuple[str, str], Probe] = {}
    for query in queries:
        expected["stockgraph", query.name] = probe(stockgraph, query)

    if not args.peer.exists():
        raise BenchmarkError(f"no peer at {args.peer} (see --peer)")
    try:
        peer.base_url = f"http://127.0.0.1:{free_port()}"
        log(f"starting the peer on {peer.base_url} …")
        start_server(
            peer,
            pinned(
                [
                    args.python,
                    str(args.peer),
                    "--port",
                    peer.base_url.rsplit(":", 1)[1],
                    "--warehouses",
                    str(WAREHOUSES),
                    "--skus",
                    str(CATALOGUE_SKUS),
                ],
                args.server_cpus or None,
            ),
            workdir,
        )
        for query in queries:
            mine = expected["stockgraph", query.name]
            theirs = expected["peer", query.name] = probe(peer, query)
            if mine.rows != theirs.rows:
                raise BenchmarkError(
                    f"{query.name}: Stockgraph answered {mine.rows} rows and the peer "
                    f"{theirs.rows}; seed Stockgraph with the demo catalogue "
                    f"({WAREHOUSES} warehouses, {CATALOGUE_SKUS} SKUs) or pass --skus auto"
                )
            if mine.rows != query.expected_rows:
                log(f"note: {query.name} answered {mine.rows} rows, {query.expected_rows} expected")

        body_args: list[str] = []
        for query in queries:
            path = workdir / f"{query.key}.json"
            path.write_bytes(expected["stockgraph", query.name].body)
            body_args += ["--body", f"{query.key}={path}"]
        plain.base_url = f"http://127.0.0.1:{free_port()}"
        log(f"starting the plain server on {plain.base_url} …")
        start_server(
            plain,
            pinned(
                [
                    args.python,
                    str(PLAIN_SERVER),
                    "--port",
                    plain.base_url.rsplit(":", 1)[1],
                    *body_args,
                ],
                args.server_cpus or None,
            ),
            workdir,
        )
        for query in queries:
            got = expected["plain", query.name] = probe(plain, query)
            if got.body != expected["stockgraph", query.name].body:
                raise BenchmarkError(
                    f"the plain server does not serve Stockgraph's {query.name} bytes"
                )

        cells = [(q, c) for _ in range(args.rounds) for q in queries for c in args.concurrency]
        per_cell = len(servers) * (args.warmup + args.duration)
        log(
            f"measuring {len(cells)} cells, {len(servers)} servers each, with {loadgen.version}, "
            f"about {len(cells) * per_cell / 60:.1f} min"
        )
        for index, (query, connections) in enumerate(cells):
            round_no = index // (len(queries) * len(args.concurrency)) + 1
            for server in rotated(servers, index):
                m = measure(
                    loadgen,
                    server,
                    query,
                    expected[server.key, query.name],
                    connections,
                    args,
                    round_no,
                )
                runs.append(m)
                cpu = (
                    f", {m.cpu_ms_per_request:.3f} CPU ms/req"
                    if m.cpu_ms_per_request is not None
                    else ""
                )
                log(
                    f"  [{index + 1}/{len(cells)}] {query.name:16} c={connections:<3} "
                    f"{server.key:10} {m.rps:9.1f} req/s  p50 {m.p50_ms:8.2f} ms  "
                    f"p99 {m.p99_ms:8.2f} ms{cpu}"
                    + "".join(f"\n      warning: {w}" for w in m.warnings)
                )
    finally:
        for server in (plain, peer):
            stop_server(server)

    summary = summarise(runs, servers, queries, args.concurrency)
    describe = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "host": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "packages": ", ".join(f"{k} {v}" for k, v in versions().items()),
        "load": (
            f"{loadgen.version}, 1 thread, "
            + (f"pinned to CPU {args.load_cpus}" if args.load_cpus else "unpinned")
            + f"; {args.warmup} s warm-up + {args.duration} s per server and cell"
            + (f", {args.rounds} rounds (medians)" if args.rounds > 1 else "")
            + "; server order rotated cell by cell"
        ),
        "servers": (
            "peer and plain: one uvicorn worker each, "
            + (f"pinned to CPU {args.server_cpus}" if args.server_cpus else "unpinned")
            + "; Stockgraph: "
            + (
                f"pid {stockgraph.pid}, CPUs {cpus_allowed(stockgraph.pid)}"
                if stockgraph.pid
                else "as started (no --stockgraph-pid, so no CPU figure)"
            )
        ),
        "response bytes": "; ".join(
            f"{q.name}: Stockgraph {len(expected['stockgraph', q.name].body):,}, "
            f"peer {len(expected['peer', q.name].body):,}"
            for q in queries
        ),
        "SKUs": skus_note,
        "token": auth.source,
    }
    meta = {
        "describe": describe,
        "stockgraph": base,
        "peer": str(args.peer),
        "loadgen": loadgen.name,
        "versions": versions(),
        "rows": {f"{k[0]}/{k[1]}": v.rows for k, v in expected.items()},
        "argv": redacted(sys.argv[1:]),
    }
    print(markdown(meta, summary), end="")
    if args.json:
        raw = {"meta": meta, "summary": summary, "runs": [asdict(m) for m in runs]}
        args.json.write_text(json.dumps(raw, indent=2) + "\n", encoding="utf-8")
        log(f"raw figures written to {args.json}")
    return 1 if any(m.warnings for m in runs) else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    return run_in_workdir("storefront_query", lambda workdir: run(args, workdir))


if __name__ == "__main__":
    sys.exit(main())

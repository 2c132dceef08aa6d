"""One WMS budget shared by two Stockgraph processes: does the WMS ever see too much?

A retailer runs several Stockgraph processes; each WMS limits what all of them together send
it. This starts, in a temporary folder:

- one simulated ``rest`` WMS that allows ``--wms-limit`` requests per second (a token bucket
  holding one second's worth) and answers 429 beyond that, counting each 429;
- two ``stockgraph serve --migrate`` processes on a fresh PostgreSQL database of their own
  and one Redis, both connected to that WMS and told its limit in the topology;

then offers ``--rate`` reads a second of ``inventoryLevels(skus: 10 SKUs, maxAge: 0)`` for
``--duration`` seconds, alternating between the two processes, on a fixed schedule that
never waits for answers (an open model). Every read asks Stockgraph for the WMS's live
figures; the budget they share in Redis lets through what the WMS allows, and the rest come
back from the projection marked ``stale: true``.

Reported: requests sent and answered (HTTP 200, data, no ``errors``), errors, answers with a
stale level, what the WMS served per second (its own counter, sampled every 100 ms: the
average and the busiest one-second window), the 429s it answered (target: none), and
latency p50/p99. A Markdown table goes to stdout, progress to stderr, every figure to
``--json PATH``. The exit status is 1 when a target is missed.

    .venv/bin/python benchmarks/budget.py --json /tmp/budget.json

``stockgraph simulate`` builds every ``rest`` member at the fleet's fixed 50 requests per
second, so the WMS is started by this script (``--serve-wms``, in a process of its own) from
a fleet file in ``simulate``'s format whose instances carry ``requests_per_second``: the
fleet's own member, served by the ``rest`` simulator built with that limit.
``tests/e2e/test_two_processes.py`` runs this same scenario and asserts on its figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import platform
import re
import secrets
import signal
import subprocess
import sys
import time
import tomllib
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
# Run as a script, this folder is on sys.path already; imported (as the e2e test does), not.
for _folder in (HERE, REPO_ROOT):
    if str(_folder) not in sys.path:
        sys.path.insert(0, str(_folder))

from _shared import (  # noqa: E402
    BenchmarkError,
    checkout,
    client_token,
    free_port,
    log,
    percentile,
    run_in_workdir,
    tail,
)

from stockgraph.connectors import fleet  # noqa: E402
from stockgraph.connectors.rest.simulator import build_simulator  # noqa: E402
from stockgraph.persistence.catalog_store import SqlCatalogWriter  # noqa: E402
from stockgraph.persistence.database import create_engine, normalise_url  # noqa: E402
from stockgraph.persistence.migrate import upgrade  # noqa: E402
from stockgraph.services.demo import ACME, demo_items  # noqa: E402

DEFAULT_DATABASE_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
TENANT = ACME.tenant_id
CATALOGUE_SKUS = 20
QUERY_SKUS = tuple(f"SKU-{i:05d}" for i in range(10))
WAREHOUSE_CODE = "WMS-1"
PROCESSES = 2
LEVELS_DOCUMENT = (
    "query($skus:[String!]!){ inventoryLevels(skus:$skus, maxAge:0)"
    "{ sku warehouse{ code } onHand source stale } }"
)
PLAIN_LEVELS_DOCUMENT = (
    "query($skus:[String!]!){ inventoryLevels(skus:$skus){ sku warehouse{ code } onHand } }"
)
SAMPLE_EVERY_S = 0.1
LATE_MS = 10.0
LIVE_READ_FAILED = re.compile(r"live read from (\S+) failed: (.*)")


def busiest_window(samples: Sequence[tuple[float, int]], window_s: float = 1.0) -> int:
    """The most a counter rose within ``window_s`` between two of its ``(time, value)`` samples.

    Samples every 100 ms see any one-second window to within 100 ms at either end.
    """
    best = 0
    j = 0
    for i, (started, value) in enumerate(samples):
        j = max(j, i)
        while j + 1 < len(samples) and samples[j + 1][0] - started <= window_s:
            j += 1
        best = max(best, samples[j][1] - value)
    return best


def _write_atomically(path: Path, text: str) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text, encoding="utf-8")
    partial.replace(path)


# ---------------------------------------------------------------------------------------
# The rate-limited WMS, in a process of its own (``--serve-wms``)


def write_fleet(
    path: Path, *, connector_id: str, requests_per_second: float, stockgraph_url: str
) -> None:
    """A fleet file in ``stockgraph simulate``'s format, each instance with its own limit."""
    path.write_text(
        f'tenant = "{TENANT}"\n'
        f"skus = {CATALOGUE_SKUS}\n"
        f'stockgraph_url = "{stockgraph_url}"\n'
        "activity = 0.0\n"
        "\n"
        "[[instances]]\n"
        f'connector_id = "{connector_id}"\n'
        f'code = "{WAREHOUSE_CODE}"\n'
        'dialect = "rest"\n'
        f"requests_per_second = {requests_per_second!r}\n",
        encoding="utf-8",
    )


async def serve_wms(spec: dict[str, Any], topology_out: Path) -> None:
    """Serve a fleet file's ``rest`` instances at their own limits until SIGINT or SIGTERM.

    Each is the fleet's member (same item codes, stock and connection settings as
    ``stockgraph simulate`` would make), served by a ``rest`` simulator built with the
    instance's ``requests_per_second``; the topology tells Stockgraph that limit too
    (``rate_limit``, with the simulator's burst: one second's worth).
    """
    skus = [f"SKU-{i:05d}" for i in range(int(spec["skus"]))]
    members: list[fleet.FleetMember] = []
    codes: list[str] = []
    for instance in spec["instances"]:
        if instance["dialect"] != "rest":
            raise BenchmarkError(f"{instance['connector_id']}: only rest instances are served")
        limit = float(instance["requests_per_second"])
        member = fleet.build_member(
            connector_id=instance["connector_id"],
            dialect="rest",
            skus=skus,
            webhook_url=None,
            seed=instance["connector_id"],
        )
        member.app = build_simulator(
            wms=member.wms, api_key=member.settings["api_key"], requests_per_second=limit
        )
        member.settings["rate_limit"] = {"rate": limit, "burst": max(1.0, limit)}
        members.append(member)
        codes.append(instance["code"])
    await fleet.start(members)
    await asyncio.to_thread(
        _write_atomically, topology_out, fleet.topology_toml(spec["tenant"], members, codes)
    )
    for member in members:
        print(f"{member.connector_id} rest http://127.0.0.1:{member.port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await fleet.stop(members)


# ---------------------------------------------------------------------------------------
# The database, the processes and the load


@dataclass(kw_only=True)
class Scenario:
    """What to run; the defaults are the issue's: 30 live reads/s for 20 s, a 5 req/s WMS."""

    duration_s: float = 20.0
    rate: float = 30.0
    """Reads offered per second, alternating between the two processes."""
    wms_limit: float = 5.0
    """Requests per second the WMS allows (its bucket holds one second's worth)."""
    database_url: str = DEFAULT_DATABASE_URL
    """A PostgreSQL server; the run creates a database of its own there and drops it after."""
    redis_url: str = DEFAULT_REDIS_URL
    python: str = sys.executable
    """The interpreter for ``stockgraph serve`` and the WMS."""
    settle_s: float = 1.5
    """Quiet time before the load, so the WMS's budget starts full."""

    @property
    def burst(self) -> float:
        return max(1.0, self.wms_limit)


@dataclass
class Answer:
    """One read: when it was due and sent, and what came back."""

    index: int
    process: int
    due_s: float
    late_ms: float
    latency_ms: float
    status: int | None
    error: str | None
    levels: int
    stale: int
    live: int
    upstream_calls: int
    retry_after_ms: int | None


@dataclass
class Outcome:
    """Every figure of a run."""

    sent: int
    answered: int
    """HTTP 200 with data and no ``errors``."""
    errors: int
    error_kinds: dict[str, int]
    incomplete: int
    """Answered, but without a level for every SKU asked for."""
    stale_answers: int
    """Answered with at least one level ``stale: true``."""
    levels: int
    stale_levels: int
    live_levels: int
    late_sends: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    wms_calls_during_load: int
    """What the WMS served between the schedule's start and its last request."""
    load_window_s: float
    wms_calls_until_answered: int
    """What it served from the schedule's start until the last answer came back."""
    answered_window_s: float
    wms_calls_per_s: float
    wms_busiest_second: int
    wms_calls_per_second: list[int]
    """Per whole second from the schedule's start (from the samples)."""
    wms_throttled: int
    """429s the WMS answered over the whole run, start-up included."""
    wms_throttled_during_load: int
    wms_background_calls_per_s: float
    """What it served per second before the load, with no read running."""
    reported_upstream_calls: int
    """The sum of ``extensions.cost.upstreams[].calls`` over the answers."""
    reported_retry_after: int
    """Answers whose upstream use carried a ``retryAfterMs``."""
    live_read_failures: dict[str, int]
    """``live read from … failed`` log lines per reason, both processes together."""
    per_process: list[dict[str, int]]
    answers: list[dict[str, Any]] = field(repr=False)

    @property
    def stale_share(self) -> float:
        return self.stale_answers / self.answered if self.answered else 0.0

    def summary(self) -> str:
        return (
            f"sent {self.sent}, answered {self.answered}, errors {self.errors} "
            f"{self.error_kinds or ''}, incomplete {self.incomplete}, stale answers "
            f"{self.stale_answers}; WMS served {self.wms_calls_during_load} in "
            f"{self.load_window_s:.2f} s (busiest second {self.wms_busiest_second}), "
            f"{self.wms_calls_until_answered} until answered, 429s {self.wms_throttled}; "
            f"live read failures {self.live_read_failures}"
        )


async def _create_database(server_url: str, name: str) -> str:
    from sqlalchemy import text
    from sqlalchemy.engine import make_url
    from sqlalchemy.ext.asyncio import create_async_engine
    from sqlalchemy.pool import NullPool

    server = make_url(normalise_url(server_url))
    admin = create_async_engine(server, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as connection:
            await connection.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        await admin.dispose()
    return server.set(database=name).render_as_string(hide_password=False)


async def _drop_database(server_url: str, name: str) -> None:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine
    from sqlalchemy.pool import NullPool

    admin = create_async_engine(
        normalise_url(server_url), poolclass=NullPool, isolation_level="AUTOCOMMIT"
    )
    try:
        async with admin.connect() as connection:
            await connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        await admin.dispose()


async def _seed(database_url: str) -> None:
    """Migrate, then the tenant and the catalogue the WMS stocks (its warehouse comes from
    the topology, its levels from the WMS)."""
    await upgrade(database_url)
    engine = create_engine(database_url)
    try:
        catalog = SqlCatalogWriter(engine=engine)
        await catalog.upsert_tenant(TENANT, ACME.name)
        await catalog.upsert_items(demo_items(ACME)[:CATALOGUE_SKUS])
    finally:
        await engine.dispose()


def _forget_budget(redis_url: str, namespace: str) -> None:
    """Delete what the run's processes kept in Redis (budgets, buckets), all under its namespace."""
    import redis

    client = redis.Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2)
    try:
        for key in client.scan_iter(match=f"{namespace}:*"):
            client.delete(key)
    finally:
        client.close()


def _stop(processes: Sequence[subprocess.Popen[bytes] | None]) -> None:
    """Interrupt every process still running, then wait for each (killing laggards)."""
    running = [p for p in processes if p is not None and p.poll() is None]
    for process in running:
        process.send_signal(signal.SIGINT)
    for process in running:
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@dataclass
class Stack:
    """The WMS and the two Stockgraph processes of one run, in ``workdir``."""

    scenario: Scenario
    workdir: Path
    connector_id: str = field(default_factory=lambda: f"budget-{uuid.uuid4().hex[:10]}")
    namespace: str = field(default_factory=lambda: f"stockgraph-bench-{uuid.uuid4().hex[:10]}")
    database_name: str = field(default_factory=lambda: f"sg_budget_{uuid.uuid4().hex[:12]}")
    database_url: str = ""
    ports: list[int] = field(default_factory=list)
    wms: subprocess.Popen[bytes] | None = None
    servers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    wms_url: str = ""
    token: str = ""
    env: dict[str, str] = field(default_factory=dict)
    _files: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    @property
    def bases(self) -> list[str]:
        return [f"http://127.0.0.1:{port}" for port in self.ports]

    @property
    def control_url(self) -> str:
        return f"{self.wms_url}/_control/state"

    def server_log(self, n: int) -> Path:
        return self.workdir / f"serve-{n}.log"

    @property
    def wms_log(self) -> Path:
        return self.workdir / "wms.log"

    def start(self) -> None:
        s = self.scenario
        self.workdir.mkdir(parents=True, exist_ok=True)
        log(f"creating database {self.database_name} …")
        try:
            self.database_url = asyncio.run(_create_database(s.database_url, self.database_name))
        except Exception as exc:
            raise BenchmarkError(
                f"cannot create a database on {s.database_url}: {type(exc).__name__}: {exc}"
            ) from exc
        asyncio.run(_seed(self.database_url))
        self.ports = [free_port() for _ in range(PROCESSES)]

        fleet_file = self.workdir / "fleet.toml"
        topology = self.workdir / "topology.toml"
        write_fleet(
            fleet_file,
            connector_id=self.connector_id,
            requests_per_second=s.wms_limit,
            stockgraph_url=self.bases[0],
        )
        log(f"starting the rest WMS at {s.wms_limit:g} requests/s …")
        self.wms = self._spawn(
            [str(Path(__file__).resolve()), "--serve-wms", str(fleet_file), str(topology)],
            self.wms_log,
        )
        deadline = time.monotonic() + 60
        while not topology.exists():
            if self.wms.poll() is not None:
                raise BenchmarkError(
                    f"the WMS exited ({self.wms.returncode}):\n" + tail(self.wms_log)
                )
            if time.monotonic() > deadline:
                raise BenchmarkError("the WMS wrote no topology within 60 s")
            time.sleep(0.1)
        warehouse = tomllib.loads(topology.read_text(encoding="utf-8"))["warehouses"][0]
        self.wms_url = str(warehouse["connection"]["base_url"]).rstrip("/")

        self.env = {
            **os.environ,
            "DATABASE_URL": self.database_url,
            "REDIS_URL": s.redis_url,
            "STOCKGRAPH_CONFIG": str(topology),
            "STOCKGRAPH_JWT_SECRET": secrets.token_urlsafe(48),
            # The load must never be THROTTLED by the client's own cost bucket.
            "STOCKGRAPH_COST_BUCKET_SIZE": "1000000000",
            "STOCKGRAPH_COST_RESTORE_RATE": "1000000000",
            "STOCKGRAPH_RESPONSE_CACHE_SIZE": "0",
            "STOCKGRAPH_LOG_LEVEL": "info",
            "STOCKGRAPH_REDIS_NAMESPACE": self.namespace,
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p
            ),
        }
        log(f"starting {PROCESSES} Stockgraph processes on ports {self.ports} …")
        for n, port in enumerate(self.ports):
            self.servers.append(
                self._spawn(
                    ["-m", "stockgraph.cli", "serve", "--migrate", "--port", str(port)],
                    self.server_log(n),
                    env=self.env,
                )
            )
        for n in range(PROCESSES):
            self._wait_ready(n)
        self.token = self._token()

    def _spawn(
        self, args: list[str], out: Path, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        handle = self._files.enter_context(out.open("wb"))
        return subprocess.Popen(
            [self.scenario.python, *args],
            stdin=subprocess.DEVNULL,
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=env or {**os.environ, "PYTHONPATH": str(REPO_ROOT)},
            cwd=self.workdir,
        )

    def _wait_ready(self, n: int, timeout_s: float = 90.0) -> None:
        deadline = time.monotonic() + timeout_s
        process = self.servers[n]
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise BenchmarkError(
                    f"stockgraph serve #{n} exited ({process.returncode}):\n"
                    + tail(self.server_log(n))
                )
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.bases[n]}/readyz", timeout=2).status_code == 200:
                    return
            time.sleep(0.2)
        raise BenchmarkError(
            f"stockgraph serve #{n} was not ready within {timeout_s:.0f} s:\n"
            + tail(self.server_log(n))
        )

    def _token(self) -> str:
        return client_token(
            python=self.scenario.python,
            env=self.env,
            workdir=self.workdir,
            base_url=self.bases[0],
            tenant=TENANT,
        )

    def wait_synced(self, timeout_s: float = 60.0) -> float:
        """Seconds until both processes answer a level of every SKU from the projection."""
        started = time.monotonic()
        pending = set(range(PROCESSES))
        while pending:
            for n in sorted(pending):
                response = httpx.post(
                    f"{self.bases[n]}/graphql",
                    json={"query": PLAIN_LEVELS_DOCUMENT, "variables": {"skus": list(QUERY_SKUS)}},
                    headers={"Authorization": f"Bearer {self.token}"},
                    timeout=30,
                )
                body = response.json()
                if response.status_code != 200 or body.get("errors"):
                    raise BenchmarkError(
                        f"process #{n}: HTTP {response.status_code}: {response.text[:500]}"
                    )
                if len(body["data"]["inventoryLevels"]) == len(QUERY_SKUS):
                    pending.discard(n)
            if pending and time.monotonic() - started > timeout_s:
                raise BenchmarkError(
                    f"processes {sorted(pending)} hold no level of every SKU after "
                    f"{timeout_s:.0f} s:\n" + tail(self.server_log(min(pending)))
                )
            if pending:
                time.sleep(0.25)
        return time.monotonic() - started

    def wms_state(self) -> tuple[int, int]:
        """What the WMS has ``served`` (every API request, 429s included) and ``throttled``."""
        state = httpx.get(self.control_url, timeout=10).json()
        return int(state["served"]), int(state["throttled"])

    def live_read_failures(self) -> Counter[str]:
        reasons: Counter[str] = Counter()
        for n in range(PROCESSES):
            text = self.server_log(n).read_text(encoding="utf-8", errors="replace")
            for match in LIVE_READ_FAILED.finditer(text):
                if match[1] == self.connector_id:
                    # "<id>: rate budget needs 0.19s, only 0.098s left" → "rate budget needs …"
                    reason = match[2].removeprefix(f"{self.connector_id}: ")
                    reasons[re.sub(r"[\d.]+s?\b", "…", reason).strip()] += 1
        return reasons

    def stop(self) -> None:
        try:
            _stop(self.servers)
            _stop([self.wms])
        finally:
            self._files.close()
            if self.database_url:
                try:
                    asyncio.run(_drop_database(self.scenario.database_url, self.database_name))
                except Exception as exc:
                    log(f"warning: could not drop database {self.database_name}: {exc}")
            with contextlib.suppress(Exception):
                _forget_budget(self.scenario.redis_url, self.namespace)


async def _read(
    client: httpx.AsyncClient, stack: Stack, index: int, due: float, started_at: float
) -> Answer:
    process = index % PROCESSES
    loop = asyncio.get_running_loop()
    late_ms = (loop.time() - due) * 1000
    began = time.perf_counter()
    status: int | None = None
    error: str | None = None
    levels: list[dict[str, Any]] = []
    upstreams: list[dict[str, Any]] = []
    try:
        response = await client.post(
            f"{stack.bases[process]}/graphql",
            json={"query": LEVELS_DOCUMENT, "variables": {"skus": list(QUERY_SKUS)}},
            headers={"Authorization": f"Bearer {stack.token}"},
        )
        status = response.status_code
        payload = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        error = type(exc).__name__
        payload = {}
    latency_ms = (time.perf_counter() - began) * 1000
    if error is None:
        if status != 200:
            error = f"HTTP {status}"
        elif payload.get("errors"):
            codes = {
                str((e.get("extensions") or {}).get("code", "no code")) for e in payload["errors"]
            }
            error = "errors: " + ",".join(sorted(codes))
        elif not isinstance((payload.get("data") or {}).get("inventoryLevels"), list):
            error = "no data"
        else:
            levels = payload["data"]["inventoryLevels"]
        upstreams = ((payload.get("extensions") or {}).get("cost") or {}).get("upstreams") or []
    retry_after = [u["retryAfterMs"] for u in upstreams if u.get("retryAfterMs") is not None]
    return Answer(
        index=index,
        process=process,
        due_s=round(due - started_at, 4),
        late_ms=round(late_ms, 3),
        latency_ms=round(latency_ms, 3),
        status=status,
        error=error,
        levels=len(levels),
        stale=sum(1 for lv in levels if lv.get("stale")),
        live=sum(1 for lv in levels if lv.get("source") == "LIVE"),
        upstream_calls=sum(int(u.get("calls") or 0) for u in upstreams),
        retry_after_ms=max(retry_after) if retry_after else None,
    )


@dataclass
class Load:
    answers: list[Answer]
    samples: list[tuple[float, int]]
    """(seconds from the schedule's start, the WMS's ``served``) every 100 ms."""
    before: tuple[int, int]
    at_last_send: tuple[int, int]
    after: tuple[int, int]
    load_window_s: float
    answered_window_s: float


async def _drive(stack: Stack) -> Load:
    """Offer the reads on their schedule, sampling the WMS's counter meanwhile."""
    s = stack.scenario
    count = round(s.rate * s.duration_s)
    interval = 1.0 / s.rate
    loop = asyncio.get_running_loop()
    limits = httpx.Limits(max_connections=512, max_keepalive_connections=64)
    async with (
        httpx.AsyncClient(timeout=60, limits=limits) as client,
        httpx.AsyncClient(timeout=10) as control,
    ):

        async def state() -> tuple[float, tuple[int, int]]:
            """When (the middle of the request) and the WMS's ``served`` and ``throttled``."""
            asked = loop.time()
            body = (await control.get(stack.control_url)).json()
            return (asked + loop.time()) / 2, (int(body["served"]), int(body["throttled"]))

        first_at, before = await state()
        start = loop.time() + 0.05
        samples: list[tuple[float, int]] = [(first_at - start, before[0])]
        done = asyncio.Event()

        async def sample() -> None:
            while not done.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(done.wait(), SAMPLE_EVERY_S)
                at, (served, _) = await state()
                samples.append((at - start, served))

        sampler = asyncio.create_task(sample())
        tasks = []
        for i in range(count):
            due = start + i * interval
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(_read(client, stack, i, due, start)))
        last_send_at, at_last_send = await state()
        answers = list(await asyncio.gather(*tasks))
        answered_at, after = await state()
        done.set()
        await sampler
    samples.sort()
    return Load(
        answers=answers,
        samples=samples,
        before=before,
        at_last_send=at_last_send,
        after=after,
        load_window_s=last_send_at - first_at,
        answered_window_s=answered_at - first_at,
    )


def _per_second(samples: Sequence[tuple[float, int]], seconds: int) -> list[int]:
    """The counter's rise over each whole second from the start, from the nearest samples."""

    def at(t: float) -> int:
        return min(samples, key=lambda sample: abs(sample[0] - t))[1]

    return [at(k + 1.0) - at(float(k)) for k in range(seconds)]


def run_scenario(scenario: Scenario, workdir: Path) -> Outcome:
    """Start everything, offer the load, stop everything; the figures of the run.

    Raises :class:`BenchmarkError` when the setup fails (with the log that says why).
    """
    if not scenario.database_url.startswith("postgres"):
        raise BenchmarkError(f"a PostgreSQL URL is needed, got {scenario.database_url!r}")
    if scenario.rate <= 0 or scenario.duration_s <= 0 or scenario.wms_limit <= 0:
        raise BenchmarkError("rate, duration and the WMS limit must be > 0")
    stack = Stack(scenario=scenario, workdir=workdir)
    try:
        stack.start()
        synced = stack.wait_synced()
        log(f"both processes hold every level {synced:.1f} s after ready")
        quiet_before = stack.wms_state()[0]
        time.sleep(scenario.settle_s)
        background = (stack.wms_state()[0] - quiet_before) / scenario.settle_s
        log(
            f"offering {scenario.rate:g} reads/s for {scenario.duration_s:g} s "
            f"to the two processes in turn …"
        )
        load = asyncio.run(_drive(stack))
        time.sleep(0.2)  # the last lines of the logs
        failures = stack.live_read_failures()
        _, throttled_total = stack.wms_state()
    finally:
        stack.stop()
    return _outcome(scenario, load, background, throttled_total, failures)


def _outcome(
    scenario: Scenario,
    load: Load,
    background: float,
    throttled_total: int,
    failures: Counter[str],
) -> Outcome:
    answers = load.answers
    ok = [a for a in answers if a.error is None]
    latencies = [a.latency_ms for a in answers if a.status is not None]
    load_calls = load.at_last_send[0] - load.before[0]
    per_process = []
    for n in range(PROCESSES):
        mine = [a for a in answers if a.process == n]
        per_process.append(
            {
                "sent": len(mine),
                "answered": sum(1 for a in mine if a.error is None),
                "stale_answers": sum(1 for a in mine if a.error is None and a.stale),
                "live_answers": sum(1 for a in mine if a.error is None and a.live),
                "upstream_calls": sum(a.upstream_calls for a in mine),
            }
        )
    in_load = [(t, v) for t, v in load.samples if t <= scenario.duration_s + SAMPLE_EVERY_S]
    return Outcome(
        sent=len(answers),
        answered=len(ok),
        errors=len(answers) - len(ok),
        error_kinds=dict(Counter(a.error for a in answers if a.error is not None)),
        incomplete=sum(1 for a in ok if a.levels != len(QUERY_SKUS)),
        stale_answers=sum(1 for a in ok if a.stale),
        levels=sum(a.levels for a in ok),
        stale_levels=sum(a.stale for a in ok),
        live_levels=sum(a.live for a in ok),
        late_sends=sum(1 for a in answers if a.late_ms > LATE_MS),
        p50_ms=percentile(latencies, 50),
        p90_ms=percentile(latencies, 90),
        p99_ms=percentile(latencies, 99),
        max_ms=max(latencies, default=float("nan")),
        wms_calls_during_load=load_calls,
        load_window_s=load.load_window_s,
        wms_calls_until_answered=load.after[0] - load.before[0],
        answered_window_s=load.answered_window_s,
        wms_calls_per_s=load_calls / load.load_window_s,
        wms_busiest_second=busiest_window(in_load),
        wms_calls_per_second=_per_second(load.samples, int(scenario.duration_s)),
        wms_throttled=throttled_total,
        wms_throttled_during_load=load.after[1] - load.before[1],
        wms_background_calls_per_s=background,
        reported_upstream_calls=sum(a.upstream_calls for a in answers),
        reported_retry_after=sum(1 for a in answers if a.retry_after_ms is not None),
        live_read_failures=dict(failures.most_common()),
        per_process=per_process,
        answers=[asdict(a) for a in answers],
    )


# ---------------------------------------------------------------------------------------
# Report


def checks(scenario: Scenario, o: Outcome) -> list[tuple[str, bool]]:
    """The targets, each with whether this run met it."""
    bound = scenario.wms_limit * scenario.duration_s + scenario.burst
    return [
        ("no 429 at the WMS", o.wms_throttled == 0),
        (
            f"the WMS served at most {bound:g} requests in the {scenario.duration_s:g} s of "
            f"load (limit x duration + burst)",
            o.wms_calls_during_load <= bound,
        ),
        ("every read answered 200 with data and no errors", o.answered == o.sent),
        ("every answer holds a level of every SKU", o.incomplete == 0),
        ("some answers marked stale", o.stale_answers > 0),
    ]


def markdown(meta: dict[str, Any], scenario: Scenario, o: Outcome) -> str:
    s = scenario
    out = [
        f"# Two Stockgraph processes, one rest WMS limited to {s.wms_limit:g} requests/s",
        "",
        *(f"- {k}: {v}" for k, v in meta["describe"].items()),
        "",
        f"{s.rate:g} `inventoryLevels(skus: {len(QUERY_SKUS)} SKUs, maxAge: 0)` reads per "
        f"second for {s.duration_s:g} s, alternating between the processes, on a fixed "
        "schedule (open model); both share one PostgreSQL database and one Redis.",
        "",
        "| sent | answered | errors | answers with a stale level | WMS calls / s "
        "(average / busiest 1 s) | 429s at the WMS | p50 | p99 |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        f"| {o.sent} | {o.answered} | {o.errors} | {o.stale_answers} ({o.stale_share:.0%}) | "
        f"{o.wms_calls_per_s:.2f} / {o.wms_busiest_second} | {o.wms_throttled} | "
        f"{o.p50_ms:.1f} ms | {o.p99_ms:.1f} ms |",
        "",
        f"- WMS calls: {o.wms_calls_during_load} in the {o.load_window_s:.2f} s of load, "
        f"{o.wms_calls_until_answered} until the last answer ({o.answered_window_s:.2f} s); "
        f"{o.wms_background_calls_per_s:.2f}/s before the load with no read running; per "
        f"second: {', '.join(map(str, o.wms_calls_per_second))}",
        f"- upstream calls the answers reported (`extensions.cost.upstreams`): "
        f"{o.reported_upstream_calls}; answers that carried a `retryAfterMs`: "
        f"{o.reported_retry_after}",
        f"- levels: {o.levels}, of which LIVE {o.live_levels} and stale {o.stale_levels}; "
        f"answers missing a level: {o.incomplete}",
        "- live reads logged as failed: "
        + (", ".join(f"{n} times `{r}`" for r, n in o.live_read_failures.items()) or "none"),
        "- per process: "
        + "; ".join(
            f"#{n}: {p['answered']}/{p['sent']} answered, {p['stale_answers']} stale, "
            f"{p['upstream_calls']} upstream calls"
            for n, p in enumerate(o.per_process)
        ),
        f"- latency: p50 {o.p50_ms:.1f} ms, p90 {o.p90_ms:.1f} ms, p99 {o.p99_ms:.1f} ms, "
        f"max {o.max_ms:.1f} ms; sends more than {LATE_MS:g} ms behind schedule: {o.late_sends}",
    ]
    if o.error_kinds:
        out.append(f"- errors by kind: {o.error_kinds}")
    out += ["", "Targets:", ""]
    out += [f"- {name}: **{'met' if met else 'not met'}**" for name, met in checks(s, o)]
    return "\n".join(out) + "\n"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    default_python = REPO_ROOT / ".venv" / "bin" / "python"
    env_database = os.environ.get("DATABASE_URL", "")
    p = argparse.ArgumentParser(
        description="Two Stockgraph processes sharing one rate-limited WMS's budget.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--duration", type=float, default=20.0, help="seconds of load")
    p.add_argument("--rate", type=float, default=30.0, help="live reads offered per second")
    p.add_argument(
        "--wms-limit", type=float, default=5.0, help="requests per second the WMS allows"
    )
    p.add_argument(
        "--database-url",
        default=env_database if env_database.startswith("postgres") else DEFAULT_DATABASE_URL,
        help="PostgreSQL server (DATABASE_URL); a database of the run's own is made there",
    )
    p.add_argument(
        "--redis-url", default=os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL, help="REDIS_URL"
    )
    p.add_argument(
        "--python",
        default=str(default_python if default_python.exists() else sys.executable),
        help="interpreter for stockgraph serve and the WMS",
    )
    p.add_argument("--json", type=Path, help="write every figure here")
    p.add_argument(
        "--serve-wms",
        nargs=2,
        metavar=("FLEET", "TOPOLOGY"),
        type=Path,
        help="only serve the rest WMS of FLEET at its requests_per_second and write the "
        "topology to TOPOLOGY, until interrupted (what the benchmark runs as its WMS)",
    )
    args = p.parse_args(argv)
    if args.rate <= 0 or args.duration <= 0 or args.wms_limit <= 0:
        p.error("--rate, --duration and --wms-limit must be > 0")
    return args


def run(args: argparse.Namespace, workdir: Path) -> int:
    scenario = Scenario(
        duration_s=args.duration,
        rate=args.rate,
        wms_limit=args.wms_limit,
        database_url=args.database_url,
        redis_url=args.redis_url,
        python=args.python,
    )
    outcome = run_scenario(scenario, workdir)
    meta = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "describe": {
            "host": f"{platform.machine()}, {os.cpu_count()} CPUs, "
            f"Python {platform.python_version()}",
            "commit": checkout(),
            "services": "PostgreSQL (a fresh database), Redis; one uvicorn worker per process",
        },
        "argv": sys.argv[1:],
    }
    print(markdown(meta, scenario, outcome), end="")
    if args.json:
        raw = {
            "meta": meta,
            "scenario": asdict(scenario),
            "outcome": asdict(outcome),
            "checks": dict(checks(scenario, outcome)),
        }
        args.json.write_text(json.dumps(raw, indent=2) + "\n", encoding="utf-8")
        log(f"raw figures written to {args.json}")
    return 0 if all(met for _, met in checks(scenario, outcome)) else 1


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve_wms:
        fleet_file, topology_out = args.serve_wms
        spec = tomllib.loads(fleet_file.read_text(encoding="utf-8"))
        asyncio.run(serve_wms(spec, topology_out))
        return 0
    return run_in_workdir("budget", lambda workdir: run(args, workdir))


if __name__ == "__main__":
    sys.exit(main())

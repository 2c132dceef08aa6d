"""Two ``stockgraph serve`` processes, one PostgreSQL database, one Redis: a subscriber
leaves a stopped process for the other and misses nothing.

Both processes serve one topology: tenant ``acme`` with two ``rest`` WMS instances that
only push signed webhooks. The instances are marked fully synced beforehand and the dialect
is never polled, so the webhooks posted here are the only changes to stock. The outbox relays
look at the outbox only when woken by their own commits (``STOCKGRAPH_OUTBOX_POLL_SECONDS=600``)
and Redis is not retried for the test's length: a change one process commits reaches the
other's subscribers through the Redis stream, which both processes report reading.

1. Subscribers on A and on B; webhooks posted to A reach B's subscriber.
2. Webhooks posted to B reach A's subscriber, each once, in order.
3. A is stopped mid-stream (SIGTERM, then SIGKILL if it lingers) while a sender keeps
   posting to B, and another posts to A until A refuses, then retries that webhook on B
   with the same event id, as a WMS would; a subscriber on B resumes after the last cursor
   A's subscriber saw, gets every change committed since, then live ones.
4. What A's subscriber and then B's received is the outbox, exactly: no gap, no duplicate.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import tomli_w
from redis.asyncio import Redis
from sqlalchemy import text
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from stockgraph.connectors.base import EventKind, WmsEvent, WmsLevel
from stockgraph.connectors.fleet import wms_code
from stockgraph.connectors.rest.wire import render_event
from stockgraph.connectors.signing import EVENT_ID_HEADER, SIGNATURE_HEADER, sign
from stockgraph.domain.events import Topic
from stockgraph.persistence.catalog_store import SqlCatalogWriter
from stockgraph.persistence.database import create_engine
from stockgraph.persistence.inbox_store import SqlConnectorStates
from stockgraph.persistence.migrate import upgrade
from stockgraph.schema.events import event_cursor
from stockgraph.services.demo import ACME, demo_items
from tests.e2e.conftest import free_port
from tests.integration import conftest as integration
from tests.services import redis_url

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.redis]

postgres_database_url = integration.postgres_database_url
"""The integration tests' fixture: a new, empty PostgreSQL database per test, dropped after."""

PROTOCOL = Subprotocol("graphql-transport-ws")
STOCK_CHANGED = (
    "subscription($after: String) { stockChanged(after: $after) "
    "{ cursor sku warehouse { code } level { onHand } cause } }"
)
TENANT = str(ACME.tenant_id)
SKUS = [f"{ACME.sku_prefix}-{i:05d}" for i in range(4)]
STOPPING_SKUS = [f"{ACME.sku_prefix}-{i:05d}" for i in range(4, 5)]
"""Counted only by webhooks posted to A while it stops, so that no other sender's counts of
the same level interleave with theirs."""
CATALOGUE = [*SKUS, *STOPPING_SKUS]
WAREHOUSES = ("WH-1", "WH-2")
LOCATION = "MAIN"
STARTUP_S = 90.0
HANG_GUARD_S = 30.0
"""How long a wait for an awaited event may take before the test fails instead of hanging."""
STOP_GRACE_S = 10.0
"""How long a stopping process may take after SIGTERM before it is killed."""
SEND_PACE_S = 0.04
"""Between two webhooks of the sender, so that the stream is still flowing while A stops."""

REVERSE = 3
"""Webhooks posted to A while B's subscriber listens."""
STOP_AFTER = 8
"""Changes ingested by B that A's subscriber sees before A is stopped."""
AFTER_STOP = 4
"""Webhooks B acknowledges after A has exited, before the subscriber resumes on B."""
LIVE_TAIL = 4
"""Webhooks posted after the resumed subscriber has caught up: they can only come live."""
MAX_WEBHOOKS = 500


# ---------------------------------------------------------------------------------------
# Two processes on one fresh database


@dataclass
class Server:
    name: str
    port: int
    log: Path
    process: asyncio.subprocess.Process

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/graphql"

    def tail(self, lines: int = 30) -> str:
        logged = self.log.read_text(encoding="utf-8", errors="replace") if self.log.exists() else ""
        return f"--- {self.name} ({self.log}) ---\n" + "\n".join(logged.splitlines()[-lines:])


@dataclass(frozen=True)
class Instance:
    connector_id: str
    code: str
    secret: str


@dataclass
class Stack:
    a: Server
    b: Server
    token: str
    database_url: str
    instances: tuple[Instance, ...]

    def logs(self) -> str:
        return self.a.tail() + "\n" + self.b.tail()


async def _seed(database_url: str, instances: Sequence[Instance]) -> None:
    """Migrate; the tenant and its catalogue; every instance marked fully synced, so no
    process asks its WMS for anything: webhooks are the only source of change."""
    await upgrade(database_url)
    engine = create_engine(database_url)
    try:
        catalog = SqlCatalogWriter(engine=engine)
        await catalog.upsert_tenant(ACME.tenant_id, ACME.name)
        await catalog.upsert_items([item for item in demo_items(ACME) if item.sku in CATALOGUE])
        states = SqlConnectorStates(engine=engine)
        for instance in instances:
            await states.save(instance.connector_id, full_sync=True)
    finally:
        await engine.dispose()


def _topology(instances: Sequence[Instance], wms_port: int) -> str:
    return tomli_w.dumps(
        {
            "tenants": [{"id": TENANT, "name": ACME.name}],
            "warehouses": [
                {
                    "tenant": TENANT,
                    "code": instance.code,
                    "name": f"Webhook-only WMS {instance.code}",
                    "dialect": "rest",
                    "region": "test",
                    "connector_id": instance.connector_id,
                    "connection": {
                        # Nothing listens there, and nothing is asked of it.
                        "base_url": f"http://127.0.0.1:{wms_port}",
                        "api_key": secrets.token_urlsafe(12),
                        "webhook_secrets": [instance.secret],
                        "mapping": {"skus": {wms_code("rest", sku): sku for sku in CATALOGUE}},
                    },
                }
                for instance in instances
            ],
        }
    )


async def _ready(server: Server) -> None:
    """Poll ``/readyz`` until the process answers ready (or fail with its log)."""
    deadline = time.monotonic() + STARTUP_S
    async with httpx.AsyncClient(timeout=2) as client:
        while True:
            if server.process.returncode is not None:
                pytest.fail(f"{server.name} exited ({server.process.returncode})\n{server.tail()}")
            with contextlib.suppress(httpx.TransportError):
                if (await client.get(f"{server.base}/readyz")).status_code == 200:
                    return
            if time.monotonic() > deadline:
                pytest.fail(f"{server.name} not ready within {STARTUP_S:.0f} s\n{server.tail()}")
            await asyncio.sleep(0.2)


STREAM_BUS = "ok (redis streams)"


async def _bus(server: Server) -> str:
    async with httpx.AsyncClient(timeout=2) as client:
        answer = await client.get(f"{server.base}/readyz")
    return str(answer.json()["checks"]["bus"])


async def _reading_the_stream(server: Server) -> None:
    """Poll ``/readyz`` until the process reads the Redis stream (its bus says so)."""
    deadline = time.monotonic() + STARTUP_S
    while (bus := await _bus(server)) != STREAM_BUS:
        if time.monotonic() > deadline:
            pytest.fail(f"{server.name}'s bus is {bus!r}, not {STREAM_BUS!r}\n{server.tail()}")
        await asyncio.sleep(0.1)


async def _token(env: dict[str, str], cwd: Path, server: Server) -> str:
    """A bearer token of a new read-only client made with ``stockgraph clients create``."""
    made = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "stockgraph.cli",
        "clients",
        "create",
        "--json",
        "--tenant",
        TENANT,
        "--scopes",
        "inventory:read",
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await made.communicate()
    assert made.returncode == 0, err.decode(errors="replace")[-2000:]
    client = json.loads(out.decode().strip().splitlines()[-1])
    await _ready(server)
    async with httpx.AsyncClient(timeout=30) as http:
        response = await http.post(
            f"{server.base}/oauth/token",
            data={"grant_type": "client_credentials"},
            auth=(client["client_id"], client["client_secret"]),
        )
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


async def stop(process: asyncio.subprocess.Process) -> str:
    """SIGTERM, then SIGKILL if the process lingers; how it ended."""
    if process.returncode is not None:
        return f"had exited ({process.returncode})"
    process.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(process.wait(), STOP_GRACE_S)
    except TimeoutError:
        process.kill()
        await process.wait()
        return f"killed after {STOP_GRACE_S:g} s"
    return f"exited ({process.returncode})"


@pytest.fixture
async def stack(postgres_database_url: str, tmp_path: Path) -> AsyncIterator[Stack]:
    run = uuid.uuid4().hex[:10]
    namespace = f"sg-twoserve-{run}"
    instances = tuple(
        Instance(f"twoserve-{run}-{code.lower()}", code, secrets.token_urlsafe(24))
        for code in WAREHOUSES
    )
    await _seed(postgres_database_url, instances)
    topology = tmp_path / "topology.toml"
    topology.write_text(_topology(instances, free_port()), encoding="utf-8")
    env = {
        **os.environ,
        "DATABASE_URL": postgres_database_url,
        "REDIS_URL": redis_url(),
        "STOCKGRAPH_CONFIG": str(topology),
        "STOCKGRAPH_JWT_SECRET": secrets.token_urlsafe(48),
        "STOCKGRAPH_REDIS_NAMESPACE": namespace,
        # No safety-net poll of the outbox, and a reader that loses Redis would not try it
        # again (waking its relay) within the test: another process's change can only
        # arrive through the Redis stream.
        "STOCKGRAPH_OUTBOX_POLL_SECONDS": "600",
        "STOCKGRAPH_REDIS_RETRY_SECONDS": "600",
        "STOCKGRAPH_LOG_LEVEL": "info",
    }
    redis = Redis.from_url(redis_url())
    servers: list[Server] = []
    with contextlib.ExitStack() as files:
        try:
            for name in ("A", "B"):
                port = free_port()
                log = tmp_path / f"serve-{name}.log"
                process = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "stockgraph.cli",
                    "serve",
                    "--port",
                    str(port),
                    stdin=subprocess.DEVNULL,
                    stdout=files.enter_context(log.open("wb")),
                    stderr=subprocess.STDOUT,
                    env=env,
                    cwd=tmp_path,
                )
                servers.append(Server(name, port, log, process))
            a, b = servers
            # The client is made while the processes start; A then issues its token.
            token, _ = await asyncio.gather(_token(env, tmp_path, a), _ready(b))
            await asyncio.gather(_reading_the_stream(a), _reading_the_stream(b))
            yield Stack(a, b, token, postgres_database_url, instances)
        finally:
            await asyncio.gather(*(stop(s.process) for s in servers))
            async for key in redis.scan_iter(match=f"{namespace}:*"):
                await redis.delete(key)
            await redis.aclose()


# ---------------------------------------------------------------------------------------
# Webhooks and subscribers


@dataclass(frozen=True)
class Webhook:
    """Webhook ``index`` counts one SKU at one instance at an on-hand no other one uses."""

    index: int
    instance: Instance
    sku: str

    @property
    def on_hand(self) -> int:
        return 100 + self.index

    @property
    def event_id(self) -> str:
        return f"{self.instance.connector_id}-{self.index}"

    def body(self) -> bytes:
        """The rest dialect's own ``inventory.counted`` webhook."""
        sequence = self.index + 1
        level = WmsLevel(
            wms_sku=wms_code("rest", self.sku),
            location=LOCATION,
            unit="EA",
            on_hand=Decimal(self.on_hand),
            sequence=sequence,
        )
        event = WmsEvent(
            event_id=self.event_id,
            sequence=sequence,
            kind=EventKind.CYCLE_COUNT,
            occurred_at=datetime.now(UTC),
            levels=(level,),
        )
        return render_event(event, case_qty={})


class Refused(Exception):
    """A process did not take a webhook: it is stopping or gone."""


@dataclass
class Sender:
    """Posts signed webhooks; ``acked`` in the order they were accepted."""

    http: httpx.AsyncClient
    instances: tuple[Instance, ...]
    acked: list[Webhook] = field(default_factory=list)
    issued: int = 0
    failure: str | None = None
    _progress: asyncio.Condition = field(default_factory=asyncio.Condition)

    def new(self, skus: Sequence[str] = SKUS) -> Webhook:
        """The next webhook: instances in turn, then ``skus`` in turn."""
        i = self.issued
        if i >= MAX_WEBHOOKS:
            raise AssertionError(f"{MAX_WEBHOOKS} webhooks sent and the scenario is not over")
        self.issued += 1
        instance = self.instances[i % len(self.instances)]
        return Webhook(i, instance, skus[(i // len(self.instances)) % len(skus)])

    async def deliver(
        self, server: Server, webhook: Webhook, *, retry: bool = False, may_refuse: bool = False
    ) -> None:
        """Post ``webhook`` to ``server``; it must be accepted (202), or on a ``retry``
        accepted or known already (200 duplicate). :class:`Refused` when the server is not
        there to answer or answers 5xx (a failure unless it ``may_refuse``); any other
        answer fails the test."""
        body = webhook.body()
        try:
            try:
                response = await self.http.post(
                    f"{server.base}/webhooks/wms/{webhook.instance.connector_id}",
                    content=body,
                    headers={
                        SIGNATURE_HEADER: sign(
                            body, webhook.instance.secret, timestamp=int(time.time())
                        ),
                        EVENT_ID_HEADER: webhook.event_id,
                        "Content-Type": "application/json",
                    },
                )
            except httpx.TransportError as exc:
                raise Refused(f"{server.name}: {type(exc).__name__}") from exc
            if response.status_code >= 500:
                raise Refused(f"{server.name}: HTTP {response.status_code}")
            accepted = {202, 200} if retry else {202}
            if response.status_code not in accepted:
                raise AssertionError(
                    f"{server.name} answered webhook {webhook.index} with "
                    f"{response.status_code}: {response.text[:300]}"
                )
        except Refused:
            if may_refuse:
                raise
            async with self._progress:
                self.failure = f"{server.name} refused webhook {webhook.index}"
                self._progress.notify_all()
            raise
        except BaseException as exc:
            async with self._progress:
                self.failure = f"{type(exc).__name__}: {exc}"
                self._progress.notify_all()
            raise
        async with self._progress:
            self.acked.append(webhook)
            self._progress.notify_all()

    async def post(self, server: Server, skus: Sequence[str] = SKUS) -> Webhook:
        webhook = self.new(skus)
        await self.deliver(server, webhook)
        return webhook

    async def keep_posting(self, server: Server, until: asyncio.Event) -> None:
        while not until.is_set():
            await self.post(server)
            await asyncio.sleep(SEND_PACE_S)

    async def post_until_refused(self, server: Server, retry_on: Server) -> int:
        """Post to ``server`` until it refuses; the refused webhook then goes to
        ``retry_on`` with the same event id, as a WMS retries. How many ``server`` took."""
        taken = 0
        while True:
            webhook = self.new(STOPPING_SKUS)
            try:
                await self.deliver(server, webhook, may_refuse=True)
            except Refused:
                await self.deliver(retry_on, webhook, retry=True)
                return taken
            taken += 1
            await asyncio.sleep(SEND_PACE_S)

    async def wait_acked(self, count: int) -> None:
        async with self._progress:
            await asyncio.wait_for(
                self._progress.wait_for(lambda: len(self.acked) >= count or bool(self.failure)),
                HANG_GUARD_S,
            )
        assert self.failure is None, f"the sender failed: {self.failure}"


Change = dict[str, Any]


@dataclass
class Subscriber:
    """One ``stockChanged`` subscription over graphql-transport-ws, read in the background."""

    name: str
    ws: ClientConnection
    changes: list[Change] = field(default_factory=list)
    ended: str | None = None
    """Why the stream ended (None while it runs)."""
    _progress: asyncio.Condition = field(default_factory=asyncio.Condition)
    _reader: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, name: str, server: Server, token: str, *, after: str) -> Subscriber:
        ws = await connect(server.ws_url, subprotocols=[PROTOCOL], open_timeout=HANG_GUARD_S)
        await ws.send(
            json.dumps({"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}})
        )
        ack = json.loads(await asyncio.wait_for(ws.recv(), HANG_GUARD_S))
        assert ack["type"] == "connection_ack", ack
        payload = {"query": STOCK_CHANGED, "variables": {"after": after}}
        await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": payload}))
        subscriber = cls(name, ws)
        subscriber._reader = asyncio.create_task(subscriber._read())
        return subscriber

    async def _read(self) -> None:
        reason = "the server completed the subscription"
        try:
            async for raw in self.ws:
                message = json.loads(raw)
                if message["type"] == "ping":
                    await self.ws.send(json.dumps({"type": "pong"}))
                    continue
                if message["type"] != "next" or message["payload"].get("errors"):
                    reason = f"unexpected message {str(message)[:500]}"
                    break
                async with self._progress:
                    self.changes.append(message["payload"]["data"]["stockChanged"])
                    self._progress.notify_all()
        except ConnectionClosed as exc:
            reason = f"connection closed ({exc})"
        finally:
            async with self._progress:
                self.ended = reason
                self._progress.notify_all()

    async def wait_until(self, what: str, done: Callable[[list[Change]], bool]) -> None:
        """Until ``done(changes)``; fails if the stream ends first or nothing comes for long."""
        async with self._progress:
            try:
                await asyncio.wait_for(
                    self._progress.wait_for(lambda: done(self.changes) or self.ended is not None),
                    HANG_GUARD_S,
                )
            except TimeoutError:
                pytest.fail(f"{self.name}: still waiting for {what}; {self._seen()}")
        if not done(self.changes):
            pytest.fail(f"{self.name}: ended ({self.ended}) before {what}; {self._seen()}")

    async def wait_count(self, count: int) -> None:
        await self.wait_until(f"{count} changes", lambda changes: len(changes) >= count)

    async def wait_ended(self) -> None:
        async with self._progress:
            await asyncio.wait_for(
                self._progress.wait_for(lambda: self.ended is not None), HANG_GUARD_S
            )

    def _seen(self) -> str:
        return f"{len(self.changes)} seen: {[c['level']['onHand'] for c in self.changes]}"

    async def close(self) -> None:
        await self.ws.close()
        if self._reader is not None:
            await self._reader


def on_hands(changes: Sequence[Change]) -> set[int]:
    return {int(c["level"]["onHand"]) for c in changes}


def summary(change: Change) -> tuple[str, str, str, int]:
    return (change["cursor"], change["sku"], change["warehouse"]["code"], change["level"]["onHand"])


async def outbox(database_url: str) -> list[tuple[int, tuple[str, str, str, int]]]:
    """Every stock change committed, in outbox order: (id, what a subscriber should see)."""
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            rows = (
                await conn.execute(
                    text(
                        "SELECT o.id, o.sku, w.code, o.payload FROM outbox_events o "
                        "JOIN warehouses w ON w.id = o.warehouse_id "
                        "WHERE o.topic = :topic ORDER BY o.id"
                    ),
                    {"topic": Topic.STOCK_CHANGED.value},
                )
            ).all()
    finally:
        await engine.dispose()
    return [
        (
            int(r.id),
            (event_cursor(int(r.id)), r.sku, r.code, json.loads(r.payload)["level"]["onHand"]),
        )
        for r in rows
    ]


def in_send_order(webhooks: Sequence[Webhook]) -> dict[tuple[str, str], list[int]]:
    by_level: dict[tuple[str, str], list[int]] = defaultdict(list)
    for w in webhooks:
        by_level[(w.instance.code, w.sku)].append(w.on_hand)
    return dict(by_level)


async def finish(task: asyncio.Task[Any]) -> None:
    """Cancel ``task`` if it still runs; its own failure is reported where it is awaited."""
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


@contextlib.contextmanager
def explained(stack: Stack, context: Callable[[], str]) -> Iterator[None]:
    """A failure inside says where the scenario stood and what both processes logged."""
    try:
        yield
    except (AssertionError, TimeoutError, pytest.fail.Exception) as exc:
        raise AssertionError(f"{exc}\n{context()}\n{stack.logs()}") from exc


# ---------------------------------------------------------------------------------------
# The scenario


async def test_a_subscriber_leaving_a_stopped_process_resumes_on_the_other_with_nothing_missed(
    stack: Stack,
) -> None:
    a, b, token = stack.a, stack.b, stack.token
    notes: list[str] = []

    async def subscribe(name: str, server: Server, after: str) -> Subscriber:
        subscriber = await Subscriber.open(name, server, token, after=after)
        cleanup.push_async_callback(subscriber.close)
        return subscriber

    async with (
        httpx.AsyncClient(timeout=HANG_GUARD_S) as http,
        contextlib.AsyncExitStack() as cleanup,
    ):
        sender = Sender(http, stack.instances)
        with explained(stack, lambda: "; ".join(notes)):
            # Both from the start of the (empty) outbox: nothing is lost while they register.
            on_a = await subscribe("A", a, event_cursor(0))
            on_b = await subscribe("B", b, event_cursor(0))

            # 1. Ingested on A, seen on B. After the first, both subscribers are live.
            await sender.post(a)
            await on_a.wait_count(1)
            await on_b.wait_count(1)
            for _ in range(REVERSE - 1):
                await sender.post(a)
            await on_b.wait_count(REVERSE)
            await on_b.close()
            notes.append(f"B's subscriber saw {len(on_b.changes)} changes ingested on A")

            # 2. Ingested on B, seen on A, until A is stopped mid-stream.
            stop_sending = asyncio.Event()
            sending = asyncio.create_task(sender.keep_posting(b, stop_sending))
            cleanup.push_async_callback(finish, sending)
            await on_a.wait_count(REVERSE + STOP_AFTER)
            # Webhooks go to A too while it stops; what it refuses is retried on B.
            await sender.post(a, STOPPING_SKUS)
            to_a = asyncio.create_task(sender.post_until_refused(a, retry_on=b))
            cleanup.push_async_callback(finish, to_a)
            sent_at_stop = len(sender.acked)
            how = await stop(a.process)
            taken_by_a = await to_a
            await on_a.wait_ended()
            stopped = len(sender.acked)
            notes.append(
                f"A stopped after {sent_at_stop} webhooks: {how}; {stopped - sent_at_stop} "
                f"accepted meanwhile ({taken_by_a} by A); A's subscriber saw "
                f"{len(on_a.changes)} ({on_a.ended})"
            )

            # 3. B keeps ingesting; the subscriber resumes on B after the last cursor A gave,
            # catches up, then gets live changes.
            await sender.wait_acked(stopped + AFTER_STOP)
            missed_until = sender.acked[-1]
            resumed = await subscribe("B, resumed", b, on_a.changes[-1]["cursor"])
            await resumed.wait_until(
                f"webhook {missed_until.index}, accepted before resuming",
                lambda changes: missed_until.on_hand in on_hands(changes),
            )
            caught_up = len(sender.acked)
            await sender.wait_acked(caught_up + LIVE_TAIL)
            stop_sending.set()
            await sending
            expected = {w.on_hand for w in sender.acked}
            await resumed.wait_until(
                f"all {len(expected)} accepted webhooks (A's subscriber saw "
                f"{sorted(on_hands(on_a.changes))})",
                lambda changes: on_hands(on_a.changes) | on_hands(changes) >= expected,
            )
            await resumed.close()
            notes.append(
                f"{len(sender.acked)} webhooks in all; the resumed subscriber caught up "
                f"after {caught_up}, then saw {len(resumed.changes)} changes"
            )

            # 4. The outbox, and a fresh replay of it from the first cursor on B.
            committed = await outbox(stack.database_url)
            replay = await subscribe("B, replay", b, event_cursor(0))
            await replay.wait_count(len(committed))
            await replay.close()

    full = [change for _, change in committed]
    ids = {cursor: event_id for event_id, (cursor, *_) in committed}
    # Each accepted webhook is one committed change: its SKU, warehouse and level.
    assert sorted(((s, w, n) for _, s, w, n in full), key=lambda change: change[2]) == [
        (w.sku, w.instance.code, w.on_hand) for w in sorted(sender.acked, key=lambda w: w.index)
    ]
    # B's subscriber got what A ingested, in order, once.
    assert [summary(c) for c in on_b.changes] == full[:REVERSE]
    # A's subscriber, then the one resumed on B: the outbox in order, no gap, no duplicate.
    on_a_then_b = on_a.changes + resumed.changes
    assert [summary(c) for c in on_a_then_b] == full
    assert [summary(c) for c in replay.changes] == full
    assert {c["cause"] for c in on_a_then_b} == {"WEBHOOK"}
    received_ids = [ids[c["cursor"]] for c in on_a_then_b]
    assert received_ids == sorted(set(received_ids))
    # Every level went through its counts in the order the WMS sent them.
    per_level = in_send_order(sender.acked)
    assert {
        key: [on_hand for _, sku, code, on_hand in full if (code, sku) == key] for key in per_level
    } == per_level
    # Each part happened: A's subscriber saw B's changes before the stop; the resumed one got
    # what it had missed and then live changes.
    assert len(on_a.changes) >= REVERSE + STOP_AFTER
    assert len(resumed.changes) >= AFTER_STOP + LIVE_TAIL
    # And the stream carried it: B never stopped reading it.
    assert await _bus(b) == STREAM_BUS

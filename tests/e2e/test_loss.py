"""The loss test: 10,000 signed webhooks through faults and a killed server, exactly once.

One ``stockgraph serve`` process with one tenant and one ``rest`` warehouse. A simulated
WMS of that warehouse (the WMS's truth) does 10,000 things on its floor; its pusher sends
each event as a signed webhook, 8 in flight, with 10 % of attempts failing in transit
(half never arriving, half arriving with the answer lost), 10 % sent twice and 5 % held
back behind the next one, each retried until acknowledged. Midway the server is killed
(SIGKILL: the route acknowledges only once the inbox row is committed, so a kill must lose
nothing acknowledged) and started again; the sender retries through the outage. A
subscriber follows ``stockChanged`` over graphql-transport-ws, resuming ``after`` its last
cursor whenever its connection drops or it is told it fell behind.

Everything is checked afterwards from recorded histories: the sender's attempts, the
server's inbox, ledger, projection and outbox, and what the subscriber received.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.typing import Subprotocol

from stockgraph.connectors.base import EventKind, WmsEvent, WmsLevel
from stockgraph.connectors.delivery import Outcome, RetrySchedule
from stockgraph.connectors.rest import wire
from stockgraph.connectors.simulation import SimEvent, SimulatedWms, WebhookPusher
from stockgraph.persistence.database import normalise_url
from stockgraph.schema.relay import from_cursor
from tests.e2e.conftest import free_port, stockgraph, stop
from tests.integration import conftest as integration

pytestmark = pytest.mark.e2e

# The integration tests' fixtures: a new SQLite file or PostgreSQL database per test, each
# backend in turn.
sqlite_url = integration.sqlite_url
postgres_database_url = integration.postgres_database_url
database_url = integration.database_url

EVENTS = 10_000
RESTART_AT = EVENTS // 2
IN_FLIGHT = 8
SKUS = [f"LOSS-{n:03d}" for n in range(36)]
LOCATION = "A-01"
TENANT = "lossco"
CONNECTOR = "lossco-loss-1"
SECRET = "whsec-loss"
STARTUP_SECONDS = 60
SETTLE_SECONDS = 120
"""How long to wait for the server to apply and publish everything (a bound, not a figure)."""

TOPOLOGY = f"""
[[tenants]]
id = "{TENANT}"
name = "Loss Co"

[[warehouses]]
tenant = "{TENANT}"
code = "LOSS-1"
name = "Loss test warehouse"
dialect = "rest"
region = "eu-west"
[warehouses.connection]
# Nothing listens here: the instance's first full sync fails and is retried in the
# background, so every level comes from the webhooks under test.
base_url = "http://127.0.0.1:9"
api_key = "not-a-real-key"
webhook_secrets = ["{SECRET}"]
[warehouses.connection.mapping]
identity_skus = true
"""

STOCK_CHANGED = """
subscription($after: String) {
  stockChanged(after: $after) { cursor sku warehouse { code } level { onHand } delta { onHand } }
}
"""
PROTOCOL = Subprotocol("graphql-transport-ws")


# ---------------------------------------------------------------------------------------
# The server


@dataclass
class Server:
    """``stockgraph serve`` on a fixed port, killed and started again on demand."""

    env: dict[str, str]
    port: int
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    killed_at: float | None = None
    """Wall time of the SIGKILL (the sender's clock)."""

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"--- start {self.starts}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                [sys.executable, "-m", "stockgraph.cli", "serve", "--port", str(self.port)],
                env={**os.environ, **self.env},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            if self.process.poll() is not None:
                pytest.fail(f"stockgraph serve exited with {self.process.returncode}:\n{self.log}")
            try:
                if httpx.get(f"{self.base}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"stockgraph serve did not answer within {STARTUP_SECONDS} s")
            time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL: no shutdown, no flush; what was acknowledged must be on disk already."""
        assert self.process is not None
        self.killed_at = time.time()
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=15)

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process)

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


async def _seed_catalogue(database_url: str) -> None:
    """The tenant and its items: webhooks only move stock of items Stockgraph knows."""
    from pydantic import SecretStr

    from stockgraph.config import load_settings
    from stockgraph.domain.ids import Sku, TenantId
    from stockgraph.domain.model import Item
    from stockgraph.runtime import Runtime

    runtime = Runtime.build(
        load_settings(database_url=database_url, jwt_secret=SecretStr("s" * 40))
    )
    try:
        await runtime.catalog_writer.upsert_tenant(TenantId(TENANT), "Loss Co")
        await runtime.catalog_writer.upsert_items(
            [Item(tenant_id=TenantId(TENANT), sku=Sku(sku), name=sku) for sku in SKUS]
        )
    finally:
        await runtime.close()


@pytest.fixture
def server(database_url: str, tmp_path: Path) -> Iterator[Server]:
    config = tmp_path / "stockgraph.toml"
    config.write_text(TOPOLOGY)
    env = {
        "DATABASE_URL": database_url,
        "STOCKGRAPH_JWT_SECRET": "s" * 40,
        "STOCKGRAPH_CONFIG": str(config),
        "STOCKGRAPH_LOG_LEVEL": "warning",
    }
    migrated = stockgraph("migrate", env=env)
    assert migrated.returncode == 0, migrated.stderr
    asyncio.run(_seed_catalogue(database_url))
    running = Server(env=env, port=free_port(), log_path=tmp_path / "serve.log")
    running.start()
    try:
        yield running
    finally:
        running.stop()


def _token(server: Server) -> str:
    made = stockgraph(
        "clients", "create", "--tenant", TENANT, "--scopes", "inventory:read", "--json",
        env=server.env,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    client = json.loads(made.stdout.strip().splitlines()[-1])
    response = httpx.post(
        f"{server.base}/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=(client["client_id"], client["client_secret"]),
    )
    response.raise_for_status()
    return str(response.json()["access_token"])


# ---------------------------------------------------------------------------------------
# The subscriber


@dataclass
class Received:
    event: int
    """The outbox id the change's cursor names."""
    sku: str
    warehouse: str
    on_hand: int
    delta: int


@dataclass
class Subscriber:
    """Follows ``stockChanged``; on any drop it resumes ``after`` the last change it kept."""

    url: str
    token: str
    received: list[Received] = field(default_factory=list)
    cursor: str | None = None
    connections: int = 0
    resumed_after_lagging: int = 0
    errors: list[str] = field(default_factory=list)
    stopping: bool = False

    async def run(self) -> None:
        while not self.stopping:
            try:
                ws = await connect(self.url, subprotocols=[PROTOCOL], max_queue=None)
            except (OSError, InvalidHandshake, InvalidStatus, TimeoutError):
                await asyncio.sleep(0.1)
                continue
            self.connections += 1
            try:
                await self._follow(ws)
            except (ConnectionClosed, OSError):
                await asyncio.sleep(0.1)
            finally:
                await ws.close()

    async def _follow(self, ws: ClientConnection) -> None:
        await ws.send(
            json.dumps({"type": "connection_init", "payload": {"Authorization": self.token}})
        )
        ack = json.loads(await ws.recv())
        if ack.get("type") != "connection_ack":
            self.errors.append(f"connection_init answered {ack}")
            return
        number = 0
        while not self.stopping:
            number += 1
            variables = {"after": self.cursor}
            payload = {"query": STOCK_CHANGED, "variables": variables}
            await ws.send(json.dumps({"id": str(number), "type": "subscribe", "payload": payload}))
            async for raw in ws:
                message = json.loads(raw)
                kind = message.get("type")
                if kind == "ping":
                    await ws.send(json.dumps({"type": "pong"}))
                    continue
                if kind == "next" and not message["payload"].get("errors"):
                    self._keep(message["payload"]["data"]["stockChanged"])
                    continue
                if kind == "complete":
                    break  # subscribe again, after the last change kept
                errors = message.get("payload")
                if kind == "next":
                    errors = message["payload"]["errors"]
                if "resumeAfter" in json.dumps(errors):
                    self.resumed_after_lagging += 1
                else:
                    self.errors.append(f"{kind}: {json.dumps(errors)[:500]}")
                break
            else:
                return  # the connection closed

    def _keep(self, change: dict[str, Any]) -> None:
        kind, _, number = (from_cursor(change["cursor"]) or "").partition(":")
        assert kind == "event", change
        self.received.append(
            Received(
                event=int(number),
                sku=change["sku"],
                warehouse=change["warehouse"]["code"],
                on_hand=int(change["level"]["onHand"]),
                delta=int(change["delta"]["onHand"]),
            )
        )
        self.cursor = change["cursor"]


# ---------------------------------------------------------------------------------------
# The WMS and its pusher


def _render(event: SimEvent) -> bytes:
    """The rest dialect's webhook body (every SKU in eaches)."""
    levels = tuple(
        WmsLevel(
            wms_sku=str(level["sku"]),
            location=str(level["location"]),
            unit=wire.EACH,
            on_hand=Decimal(int(level["on_hand"])),
            damaged=Decimal(int(level["damaged"])),
            quality_control=Decimal(int(level["quality_control"])),
            incoming=Decimal(int(level["incoming"])),
            sequence=int(level["sequence"]),
        )
        for level in event.levels
    )
    wms_event = WmsEvent(
        event_id=event.event_id,
        sequence=event.sequence,
        kind=EventKind(event.kind),
        occurred_at=event.occurred_at,
        levels=levels,
    )
    return wire.render_event(wms_event, case_qty={})


def _wms() -> SimulatedWms:
    wms = SimulatedWms(
        name="loss", locations=[LOCATION], stock={(sku, LOCATION): 40 for sku in SKUS}, seed=11
    )
    wms.faults.update({"send_failure_rate": 0.10, "duplicate_rate": 0.10, "reorder_rate": 0.05})
    return wms


# ---------------------------------------------------------------------------------------
# What the server holds


@dataclass
class Held:
    inbox: list[tuple[str, str]]
    """(event id, status) of every inbox row of the connector."""
    movements: list[dict[str, Any]]
    """The connector's ledger rows, in id order."""
    levels: dict[str, tuple[int, int | None]]
    """SKU → (on hand, source sequence) in the projection."""
    outbox: list[tuple[int, str, dict[str, Any]]]
    """(id, sku, payload) of every ``stock.changed`` event of the tenant, in id order."""


async def _held(database_url: str) -> Held:
    engine = create_async_engine(normalise_url(database_url), poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            inbox = [
                (r[0], r[1])
                for r in await conn.execute(
                    text("SELECT event_id, status FROM inbox_events WHERE connector_id = :c"),
                    {"c": CONNECTOR},
                )
            ]
            movements = [
                dict(r._mapping)
                for r in await conn.execute(
                    text(
                        "SELECT id, sku, d_on_hand, cause, reference, source_sequence "
                        "FROM stock_movements WHERE tenant_id = :t ORDER BY id"
                    ),
                    {"t": TENANT},
                )
            ]
            levels = {
                r[0]: (int(r[1]), r[2])
                for r in await conn.execute(
                    text(
                        "SELECT sku, on_hand, source_sequence FROM stock_levels "
                        "WHERE tenant_id = :t"
                    ),
                    {"t": TENANT},
                )
            }
            outbox = [
                (int(r[0]), r[1], json.loads(r[2]))
                for r in await conn.execute(
                    text(
                        "SELECT id, sku, payload FROM outbox_events "
                        "WHERE tenant_id = :t AND topic = 'stock.changed' ORDER BY id"
                    ),
                    {"t": TENANT},
                )
            ]
    finally:
        await engine.dispose()
    return Held(inbox, movements, levels, outbox)


async def _progress(database_url: str) -> tuple[int, int]:
    """(inbox rows not applied yet, the newest stock.changed event's id)."""
    engine = create_async_engine(normalise_url(database_url), poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            pending = await conn.scalar(
                text("SELECT count(*) FROM inbox_events WHERE status = 'PENDING'")
            )
            newest = await conn.scalar(
                text(
                    "SELECT max(id) FROM outbox_events "
                    "WHERE tenant_id = :t AND topic = 'stock.changed'"
                ),
                {"t": TENANT},
            )
    finally:
        await engine.dispose()
    return int(pending or 0), int(newest or 0)


# ---------------------------------------------------------------------------------------
# The run


@dataclass
class Run:
    wms: SimulatedWms
    pusher: WebhookPusher
    subscriber: Subscriber
    warm_up: set[str]
    """Event ids sent before the subscriber was known to be listening."""


async def _run(server: Server, database_url: str) -> Run:
    wms = _wms()
    pusher = WebhookPusher(
        url=f"{server.base}/webhooks/wms/{CONNECTOR}",
        secret=SECRET,
        faults=wms.faults,
        rng=wms.rng,
        render=_render,
        client=httpx.AsyncClient(timeout=5.0, limits=httpx.Limits(max_connections=IN_FLIGHT)),
        schedule=RetrySchedule(deadline_s=120.0, base_s=0.05, cap_s=1.0),
        in_flight=IN_FLIGHT,
    )
    wms.listeners.append(pusher)
    token = await asyncio.to_thread(_token, server)
    subscriber = Subscriber(
        url=server.base.replace("http://", "ws://") + "/graphql", token=f"Bearer {token}"
    )
    following = asyncio.create_task(subscriber.run())
    warm_up: set[str] = set()
    try:
        # Until a change arrives, the subscription may not be listening yet.
        while not subscriber.received:
            warm_up.add((await _one(wms, pusher)).event_id)
            await asyncio.sleep(0.05)
            assert len(warm_up) < 200, f"the subscriber received nothing: {subscriber.errors}"
        restart: asyncio.Task[None] | None = None
        for number in range(len(wms.events), EVENTS):
            if number == RESTART_AT:
                restart = asyncio.create_task(asyncio.to_thread(_restart, server))
            await wms.activity()
        await pusher.drain()
        assert restart is not None
        await restart
        deadline = time.monotonic() + SETTLE_SECONDS
        while time.monotonic() < deadline:
            pending, newest = await _progress(database_url)
            if not pending and subscriber.received[-1].event >= newest:
                break
            await asyncio.sleep(0.2)
        await asyncio.sleep(0.5)  # anything received twice would arrive now
    finally:
        subscriber.stopping = True
        following.cancel()
        await asyncio.gather(following, return_exceptions=True)
        await pusher.aclose()
    return Run(wms, pusher, subscriber, warm_up)


async def _one(wms: SimulatedWms, pusher: WebhookPusher) -> SimEvent:
    await wms.activity()
    await pusher.drain()
    return wms.events[-1]


def _restart(server: Server) -> None:
    server.kill()
    server.start()


# ---------------------------------------------------------------------------------------
# The test


async def test_ten_thousand_webhooks_through_faults_and_a_kill_are_applied_exactly_once(
    server: Server, database_url: str
) -> None:
    run = await _run(server, database_url)
    held = await _held(database_url)
    assert len(run.wms.events) == EVENTS

    _every_event_was_acknowledged_through_every_fault(run, server)
    _the_inbox_kept_each_acknowledged_event_once(run, server, held)
    ledger = _the_ledger_applied_each_event_once_in_wms_order(run, held)
    _the_projection_is_the_wms_truth(run, held)
    _the_subscriber_received_every_change_once_in_order(run, held, ledger)


Ledger = dict[str, list[tuple[int, int, int]]]
"""SKU → (source sequence, on hand after, on-hand delta) of each of its movements, in order."""


def _every_event_was_acknowledged_through_every_fault(run: Run, server: Server) -> None:
    history = run.pusher.history
    acknowledged = {e for e, record in history.items() if record.acknowledged}
    unacknowledged = sorted(e.event_id for e in run.wms.events if e.event_id not in acknowledged)
    assert not unacknowledged, (
        f"{len(unacknowledged)} events never acknowledged, e.g. "
        + "; ".join(f"{e}: {history[e].reason if e in history else 'never sent'}"
                    for e in unacknowledged[:5])
        + f"\nserver log:\n{server.log}"
    )  # fmt: skip
    outcomes = Counter(a.outcome for record in history.values() for a in record.attempts)
    for needed in (Outcome.LOST_ON_THE_WAY, Outcome.ANSWER_LOST, Outcome.UNREACHABLE):
        assert outcomes[needed], f"no attempt ended {needed.value}: {outcomes}"
    sent_twice = sum(
        1
        for r in history.values()
        if Counter(a.outcome for a in r.attempts)[Outcome.ACKNOWLEDGED] > 1
    )
    assert sent_twice, "no event was acknowledged twice: the duplicate fault did nothing"
    assert server.starts == 2
    assert run.subscriber.connections >= 2, "the subscriber never had to reconnect"


def _the_inbox_kept_each_acknowledged_event_once(run: Run, server: Server, held: Held) -> None:
    sent = {e.event_id for e in run.wms.events}
    kept = Counter(event_id for event_id, _ in held.inbox)
    lost = sorted(sent - set(kept))
    doubled = sorted(e for e, n in kept.items() if n > 1)
    strays = sorted(set(kept) - sent)
    assert not lost, f"{len(lost)} acknowledged events not in the inbox, e.g. {lost[:10]}"
    assert not doubled, f"{len(doubled)} events kept more than once, e.g. {doubled[:10]}"
    assert not strays, f"inbox rows of events never sent: {strays[:10]}"
    not_applied = sorted((e, s) for e, s in held.inbox if s != "APPLIED")
    assert not not_applied, f"{len(not_applied)} inbox rows not applied, e.g. {not_applied[:10]}"
    # The route acknowledges once the inbox row is committed: that held through the kill.
    killed_at = server.killed_at
    assert killed_at is not None
    acked_at = {e: r.acknowledged_at for e, r in run.pusher.history.items() if r.acknowledged_at}
    before_kill = {e for e, at in acked_at.items() if at < killed_at}
    assert any(acked_at[e] > killed_at - 1.0 for e in before_kill), (
        "nothing was acknowledged in the second before the kill"
    )
    forgotten = sorted(before_kill - set(kept))
    assert not forgotten, (
        f"{len(forgotten)} events acknowledged before the kill were lost: {forgotten[:10]}"
    )


def _the_ledger_applied_each_event_once_in_wms_order(run: Run, held: Held) -> Ledger:
    """Each event applied at most once, never an older level over a newer one, each applied
    level the WMS's at that event; an event that moved nothing was superseded by a newer
    one received or left the level as it was."""
    prefix = f"wms://{CONNECTOR}/events/"
    applied = Counter(str(m["reference"]).removeprefix(prefix) for m in held.movements)
    twice = sorted(e for e, n in applied.items() if n > 1)
    assert not twice, f"{len(twice)} events applied more than once, e.g. {twice[:10]}"
    causes = Counter(m["cause"] for m in held.movements)
    assert set(causes) == {"WEBHOOK"}, f"movements not caused by webhooks: {causes}"
    unknown = sorted(set(applied) - {e.event_id for e in run.wms.events})
    assert not unknown, f"movements of events never sent: {unknown[:10]}"
    truth = {e.sequence: int(e.levels[0]["on_hand"]) for e in run.wms.events}
    sku_of = {e.sequence: str(e.levels[0]["sku"]) for e in run.wms.events}
    ledger: Ledger = defaultdict(list)
    running: dict[str, int] = defaultdict(int)
    wrong: list[str] = []
    for m in held.movements:
        sku, sequence, delta = m["sku"], int(m["source_sequence"]), int(m["d_on_hand"])
        running[sku] += delta
        if ledger[sku] and ledger[sku][-1][0] >= sequence:
            wrong.append(f"{sku}: sequence {sequence} applied after {ledger[sku][-1][0]}")
        if sku_of[sequence] != sku or truth[sequence] != running[sku]:
            wrong.append(f"{sku} at sequence {sequence}: {running[sku]}, WMS {truth[sequence]}")
        ledger[sku].append((sequence, running[sku], delta))
    assert not wrong, f"{len(wrong)} ledger rows disagree with the WMS: {wrong[:10]}"
    # A newer event of the same SKU that reached the inbox supersedes an older one, whether
    # it moved stock or only confirmed the count held (a touch, no ledger row): had it come
    # second, the older would have been applied first and show in the ledger.
    received = {event_id for event_id, _status in held.inbox}
    received_sequences: dict[str, list[int]] = defaultdict(list)
    for event in run.wms.events:
        if event.event_id in received:
            received_sequences[sku_of[event.sequence]].append(event.sequence)
    skipped = []
    for event in run.wms.events:
        if event.event_id in applied:
            continue
        moves = ledger[sku_of[event.sequence]]
        superseded = any(s > event.sequence for s in received_sequences[sku_of[event.sequence]])
        before = [on_hand for s, on_hand, _ in moves if s < event.sequence]
        unchanged = (before[-1] if before else 0) == truth[event.sequence]
        if not (superseded or unchanged):
            skipped.append(event.event_id)
    assert not skipped, (
        f"{len(skipped)} events neither applied, superseded nor unchanged, e.g. {skipped[:10]}"
    )
    return ledger


def _the_projection_is_the_wms_truth(run: Run, held: Held) -> None:
    last_sequence = {str(e.levels[0]["sku"]): e.sequence for e in run.wms.events}
    expected = {
        sku: (cell.on_hand, last_sequence.get(sku)) for (sku, _loc), cell in run.wms.cells.items()
    }
    differ = {sku: (held.levels.get(sku), want) for sku, want in expected.items()
              if held.levels.get(sku) != want}  # fmt: skip
    assert not differ, f"levels (Stockgraph, WMS) as (on hand, sequence) differ: {differ}"


def _the_subscriber_received_every_change_once_in_order(
    run: Run, held: Held, ledger: Ledger
) -> None:
    """Every stock.changed the outbox holds, once, in cursor order, as the ledger says."""
    subscriber = run.subscriber
    assert not subscriber.errors, subscriber.errors[:5]
    ids = [r.event for r in subscriber.received]
    repeated = sorted(i for i, n in Counter(ids).items() if n > 1)
    assert not repeated, f"{len(repeated)} changes received more than once, e.g. {repeated[:10]}"
    assert ids == sorted(ids), "changes received out of cursor order"
    outbox_ids = [i for i, _sku, _payload in held.outbox]
    # The first subscription started live: only warm-up changes may precede what it got.
    before_first = [i for i in outbox_ids if i < ids[0]]
    assert len(before_first) <= len(run.warm_up), f"{len(before_first)} changes before the first"
    missed = sorted(set(outbox_ids) - set(ids) - set(before_first))
    assert not missed, f"{len(missed)} changes in the outbox never received, e.g. {missed[:10]}"
    strays = sorted(set(ids) - set(outbox_ids))
    assert not strays, f"received changes that are not in the outbox: {strays[:10]}"
    assert len(held.outbox) == len(held.movements), "not one outbox event per ledger movement"
    position: dict[str, int] = defaultdict(int)
    by_id = {r.event: r for r in subscriber.received}
    disagree = []
    for event_id, sku, payload in held.outbox:
        sequence, on_hand, delta = ledger[sku][position[sku]]
        position[sku] += 1
        level = payload["level"]
        if (level["onHand"], level["sourceSequence"]) != (on_hand, sequence):
            disagree.append(f"outbox {event_id} {sku}: {level}, ledger {on_hand} at {sequence}")
        got = by_id.get(event_id)
        if got is not None and (got.sku, got.warehouse, got.on_hand, got.delta) != (
            sku, "LOSS-1", on_hand, delta
        ):  # fmt: skip
            disagree.append(f"received {got}, ledger {sku} {on_hand} ({delta:+d})")
    assert not disagree, f"{len(disagree)} changes disagree with the ledger: {disagree[:10]}"

"""A change ingested by one process reaches the subscribers of another (PostgreSQL + Redis)."""

from __future__ import annotations

import asyncio
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import text

from stockgraph.app import create_app
from stockgraph.auth.principal import Principal
from stockgraph.auth.scopes import Scope
from stockgraph.connectors.signing import sign
from stockgraph.domain.ids import CorrelationId, Sku, TenantId, WarehouseId
from stockgraph.domain.mapping import InstanceMapping
from stockgraph.domain.model import InitialStock
from stockgraph.domain.quantities import StockQuantities
from stockgraph.events.streams import event_id
from stockgraph.runtime import Runtime
from stockgraph.schema.build import build_schema
from stockgraph.schema.context import Context
from stockgraph.services.ingestion import ConnectorInstance
from tests.conftest import build_world, make_settings
from tests.ingestion.conftest import SECRET, JsonConnector
from tests.services import redis_url

SCHEMA = build_schema()
CHANGES = 'subscription { stockChanged(skus: ["SKU-00001"]) { cursor sku level { onHand } } }'


@pytest.fixture
async def single(demo_database: str, tmp_path: Path) -> AsyncIterator[Runtime]:
    copy = tmp_path / "stockgraph.db"
    shutil.copy(Path(demo_database.removeprefix("sqlite+aiosqlite:///")), copy)
    # No polling: only a commit's own wake-up can bring its events to subscribers.
    settings = make_settings(f"sqlite+aiosqlite:///{copy}", outbox_poll_seconds=600)
    runtime = Runtime.build(settings)
    app = create_app(settings, runtime=runtime)
    async with app.router.lifespan_context(app):
        yield runtime


@pytest.fixture
async def processes(postgres_database_url: str) -> AsyncIterator[list[Runtime]]:
    await build_world(postgres_database_url)
    # The relays look at the outbox only when woken by their own commits: a change in the
    # other process must come through Redis. The namespace is this test's own, as the
    # database is: the stream's ids are the database's outbox ids.
    settings = make_settings(
        postgres_database_url,
        redis_url=redis_url(),
        outbox_poll_seconds=600,
        redis_namespace=f"test-{uuid.uuid4().hex}",
    )
    async with AsyncExitStack() as stack:
        runtimes = []
        for _ in range(2):
            runtime = Runtime.build(settings)
            app = create_app(settings, runtime=runtime)
            await stack.enter_async_context(app.router.lifespan_context(app))
            await asyncio.wait_for(runtime.invalidations.subscribed.wait(), 5)
            assert runtime.stream is not None
            await asyncio.wait_for(runtime.stream.reading.wait(), 5)
            runtimes.append(runtime)
        yield runtimes


async def _ingest(runtime: Runtime, on_hand: int) -> None:
    """What process B's webhook route and inbox worker do with one signed event."""
    async with runtime.engine.connect() as conn:
        wid = (
            await conn.execute(text("SELECT id FROM warehouses WHERE connector_id = 'acme-wh-00'"))
        ).scalar_one()
    instance = ConnectorInstance(
        connector_id="acme-wh-00",
        tenant_id=TenantId("acme"),
        warehouse_id=WarehouseId(wid),
        warehouse_code="WH-00",
        connector=JsonConnector(),
        mapping=InstanceMapping(skus={"W1": "SKU-00001"}, default_location="WH-00"),
        webhook_secrets=(SECRET,),
    )
    runtime.instances["acme-wh-00"] = instance  # what connecting a configured WMS does
    ingestion = runtime.ingestion
    body = orjson.dumps(
        {"id": f"e{on_hand}", "seq": 1000 + on_hand, "levels": [{"sku": "W1", "qty": on_hand}]}
    )
    await ingestion.receive(
        "acme-wh-00",
        event_id=f"e{on_hand}",
        body=body,
        signature=sign(body, SECRET, timestamp=int(time.time())),
    )
    await ingestion.apply_pending()


async def _first_change_seen(receiver: Runtime, ingester: Runtime, on_hand: int) -> Any:
    return await _first_change_after(receiver, lambda: _ingest(ingester, on_hand))


async def _first_change_after(receiver: Runtime, change: Callable[[], Awaitable[object]]) -> Any:
    """What a ``stockChanged`` subscriber of ``receiver`` sees first once ``change`` is made."""
    context = Context(
        principal=Principal(TenantId("acme"), "dashboard", frozenset(Scope)),
        services=receiver.services(),
    )
    stream: Any = await SCHEMA.subscribe(CHANGES, context_value=context)
    first = asyncio.ensure_future(stream.__anext__())
    await asyncio.sleep(0.2)  # subscribed
    await change()
    result = await asyncio.wait_for(first, 5)
    await stream.aclose()
    return result


async def test_a_webhook_applied_in_a_process_wakes_its_own_subscribers(single: Runtime) -> None:
    result = await _first_change_seen(single, single, 37)
    assert result.errors is None, result.errors
    assert result.data["stockChanged"]["level"]["onHand"] == 37


async def test_stock_loaded_in_a_process_wakes_its_own_subscribers(single: Runtime) -> None:
    """Loading initial stock writes the outbox outside any unit of work: its store tells
    the relay itself."""
    # The database is this test's own copy: one level is taken away to be loaded again.
    async with single.engine.begin() as conn:
        wid = (
            await conn.execute(
                text("SELECT id FROM warehouses WHERE tenant_id = 'acme' ORDER BY code LIMIT 1")
            )
        ).scalar_one()
        await conn.execute(
            text("DELETE FROM stock_levels WHERE warehouse_id = :w AND sku = 'SKU-00001'"),
            {"w": wid},
        )
    loaded: list[int] = []

    async def load() -> None:
        loaded.append(
            await single.stock_store.load_initial(
                TenantId("acme"),
                [
                    InitialStock(
                        WarehouseId(wid), Sku("SKU-00001"), StockQuantities.from_physical(on_hand=9)
                    )
                ],
                correlation_id=CorrelationId("seed-test"),
                actor="test",
            )
        )

    result = await _first_change_after(single, load)
    assert loaded == [1]
    assert result.errors is None, result.errors
    assert result.data["stockChanged"]["level"]["onHand"] == 9


@pytest.mark.postgres
@pytest.mark.redis
async def test_a_subscriber_of_one_process_gets_what_another_process_ingested(
    processes: list[Runtime],
) -> None:
    a, b = processes
    context = Context(
        principal=Principal(TenantId("acme"), "dashboard", frozenset(Scope)),
        services=a.services(),
    )
    stream: Any = await SCHEMA.subscribe(CHANGES, context_value=context)
    first = asyncio.ensure_future(stream.__anext__())
    await asyncio.sleep(0.2)  # subscribed on A
    await _ingest(b, 41)
    result = await asyncio.wait_for(first, 5)
    assert result.errors is None, result.errors
    assert result.data["stockChanged"]["level"]["onHand"] == 41
    await _ingest(b, 42)
    second = await asyncio.wait_for(stream.__anext__(), 5)
    assert second.data["stockChanged"]["level"]["onHand"] == 42
    assert second.data["stockChanged"]["cursor"] != result.data["stockChanged"]["cursor"]
    await stream.aclose()


@pytest.mark.postgres
@pytest.mark.redis
async def test_a_subscriber_that_leaves_one_process_resumes_on_another_with_nothing_missed(
    processes: list[Runtime],
) -> None:
    a, b = processes
    seen = await _first_change_seen(a, b, 51)  # subscribed on A, ingested by B
    cursor = seen.data["stockChanged"]["cursor"]
    # A's subscriber is gone (its stream closed); meanwhile B ingests two more changes.
    await _ingest(b, 52)
    await _ingest(b, 53)
    context = Context(
        principal=Principal(TenantId("acme"), "dashboard", frozenset(Scope)),
        services=b.services(),
    )
    resumed: Any = await SCHEMA.subscribe(
        'subscription($after: String) { stockChanged(skus: ["SKU-00001"], after: $after) '
        "{ cursor level { onHand } } }",
        variable_values={"after": cursor},
        context_value=context,
    )
    got = [await asyncio.wait_for(resumed.__anext__(), 5) for _ in range(2)]
    assert [r.data["stockChanged"]["level"]["onHand"] for r in got] == [52, 53]
    pending = asyncio.ensure_future(resumed.__anext__())
    await _ingest(a, 54)  # then live, from the other process again
    live = await asyncio.wait_for(pending, 5)
    assert live.data["stockChanged"]["level"]["onHand"] == 54
    cursors = {cursor, live.data["stockChanged"]["cursor"]}
    cursors |= {r.data["stockChanged"]["cursor"] for r in got}
    assert len(cursors) == 4
    await resumed.aclose()


@pytest.mark.postgres
@pytest.mark.redis
async def test_the_redis_stream_carries_a_change_to_the_other_process_without_its_relay(
    processes: list[Runtime],
) -> None:
    a, b = processes
    assert a.stream is not None and b.stream is not None and b.redis is not None
    b_published = b.relay.published
    seen = await _first_change_seen(b, a, 61)  # subscribed on B, ingested by A
    assert seen.errors is None, seen.errors
    assert seen.data["stockChanged"]["level"]["onHand"] == 61

    # The stream holds what A's relay appended, and B read it from there: B's relay,
    # woken only by B's own commits (and polling every 600 s), published nothing.
    entries = await b.redis.xrange(a.stream.key)
    [(entry, fields)] = [e for e in entries if b'"onHand":61' in e[1][b"payload"]]
    assert fields[b"sku"] == b"SKU-00001" and fields[b"tenant"] == b"acme"
    assert a.stream.stats.appended >= 1
    assert b.stream.stats.read >= 1
    assert b.relay.published == b_published
    assert b.relay.published is not None and b.relay.published < event_id(entry)
    assert (await b.readiness())["bus"] == "ok (redis streams)"
    # When B's relay looks (its poll), what the stream delivered is not offered again.
    assert await b.relay.publish_pending() == 0
    assert b.stream.stats.already_there == 0

"""Outbound webhooks end to end over a real database: outages, dead letters, replays, 410,
Retry-After, a hanging endpoint beside a healthy one, and several processes at once.

Tests taking ``database_url`` run on SQLite and on PostgreSQL. Time is a clock moved by
hand: nothing here sleeps through a retry delay.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from datetime import timedelta
from email.utils import format_datetime

import httpx
import orjson
import pytest
from sqlalchemy import func, select

from stockgraph.domain.global_ids import event_cursor, warehouse_id
from stockgraph.domain.ids import TenantId
from stockgraph.domain.webhooks import (
    DEFAULT_RETRY_DELAYS,
    DeliveryStatus,
    RefusalCode,
    WebhookEndpoint,
    WebhookRefused,
)
from stockgraph.events.dispatch import Dispatcher
from stockgraph.persistence.migrate import upgrade
from stockgraph.persistence.models import WebhookAttemptRow
from stockgraph.persistence.webhook_queue import SqlWebhookQueue
from stockgraph.runtime import Runtime
from tests.graphql.helpers import run
from tests.integration.webhook_world import (
    Clock,
    Receiver,
    alerts,
    build,
    deliveries,
    new_tenant,
    send_round,
    signature_holds,
    signed_with,
    statuses,
    stock_changes,
)

URL = "https://backend.example/hooks"


async def _endpoint(runtime: Runtime, tenant: TenantId, endpoint_id: int) -> WebhookEndpoint:
    """The endpoint as the service lists it now."""
    listed, _ = await runtime.webhooks.endpoints(tenant, after_id=None, limit=100)
    [found] = [e for e in listed if e.id == endpoint_id]
    return found


SLOW = "https://slow.example/hooks"


async def _alerted(runtime: Runtime, url: str = URL) -> tuple[TenantId, WebhookEndpoint, str]:
    """A new tenant with one endpoint at ``url`` for its sync alerts, and its secret."""
    tenant = await new_tenant(runtime)
    endpoint, secret = await runtime.webhooks.create_endpoint(
        tenant, url=url, event_types=["sync.alert"]
    )
    return tenant, endpoint, secret


@pytest.fixture
async def world(database_url: str) -> AsyncIterator[tuple[Runtime, Receiver, Clock]]:
    await upgrade(database_url)
    receiver, clock = Receiver(), Clock()
    runtime = build(database_url, receiver, clock)
    try:
        yield runtime, receiver, clock
    finally:
        await runtime.close()


async def test_an_outage_ends_with_every_event_delivered_exactly_once(
    world: tuple[Runtime, Receiver, Clock],
) -> None:
    runtime, receiver, clock = world
    tenant = await new_tenant(runtime)
    endpoint, secret = await runtime.webhooks.create_endpoint(
        tenant, url=URL, event_types=["sync.alert", "stock.changed"]
    )
    outage_ends = clock.now + timedelta(seconds=60)

    async def down_for_a_minute(_: httpx.Request) -> httpx.Response:
        return httpx.Response(503 if clock.now < outage_ends else 200)

    receiver.answers[URL] = down_for_a_minute
    await alerts(runtime, tenant, 3)
    code = await stock_changes(runtime, tenant, ["SKU-1", "SKU-2"])
    for second in range(0, 900, 5):
        if second == 30:
            await alerts(runtime, tenant, 2)  # committed in the middle of the outage
        await send_round(runtime)
        clock.advance(5)

    found = await deliveries(runtime, tenant)
    assert len(found) == 7
    assert statuses(found) == {DeliveryStatus.DELIVERED}
    delivered = Counter(a.message_id for a in receiver.received(URL, ok=True))
    assert delivered == Counter({d.id: 1 for d in found})
    assert receiver.received(URL, ok=False), "the outage was never seen"
    assert all(signature_holds(a, secret) for a in receiver.arrivals)
    for delivery in found:
        codes = [a.status_code for a in delivery.attempts]
        assert codes[-1] == 200 and set(codes[:-1]) <= {503}, codes
        assert delivery.attempt_count == len(codes)
    stock = [orjson.loads(d.body) for d in found if d.event_type == "stock.changed"]
    assert {s["data"]["sku"] for s in stock} == {"SKU-1", "SKU-2"}
    assert {s["data"]["warehouseId"] for s in stock} == {warehouse_id(tenant, code)}
    for delivery in found:
        body = orjson.loads(delivery.body)
        assert body["type"] == delivery.event_type
        assert body["data"]["cursor"] == event_cursor(delivery.event_id)
        assert body["timestamp"].endswith("Z")
    assert (await _endpoint(runtime, tenant, endpoint.id)).enabled


async def test_an_endpoint_that_never_recovers_is_dead_only_after_the_whole_schedule(
    world: tuple[Runtime, Receiver, Clock],
) -> None:
    runtime, receiver, clock = world
    tenant, _, _ = await _alerted(runtime)

    async def broken(_: httpx.Request) -> httpx.Response:
        return httpx.Response(500)

    receiver.answers[URL] = broken
    await alerts(runtime, tenant, 1)
    started = clock.now
    for attempt in range(1, len(DEFAULT_RETRY_DELAYS) + 2):
        await send_round(runtime)
        [delivery] = await deliveries(runtime, tenant)
        assert delivery.attempt_count == attempt
        if attempt <= len(DEFAULT_RETRY_DELAYS):
            assert delivery.status is DeliveryStatus.FAILING
            assert delivery.next_attempt_at is not None
            clock.to(delivery.next_attempt_at)
    assert delivery.status is DeliveryStatus.DEAD
    assert delivery.attempt_count == len(DEFAULT_RETRY_DELAYS) + 1
    assert (clock.now - started).total_seconds() >= 0.8 * sum(DEFAULT_RETRY_DELAYS)
    clock.advance(7 * 86400)
    await send_round(runtime)
    assert len(receiver.received(URL)) == len(DEFAULT_RETRY_DELAYS) + 1  # dead stays quiet

    del receiver.answers[URL]  # it is back
    replay = await run(
        runtime,
        "mutation($id: ID!){ replayDelivery(input: {id: $id}) {"
        " delivery { messageId status } userErrors { code } } }",
        {"id": _delivery_gid(tenant, delivery.id)},
        tenant=tenant,
    )
    assert replay.errors == []
    assert replay.data["replayDelivery"] == {
        "delivery": {"messageId": delivery.id, "status": "PENDING"},
        "userErrors": [],
    }
    await send_round(runtime)
    [after] = await deliveries(runtime, tenant)
    assert after.status is DeliveryStatus.DELIVERED
    assert after.attempts[-1].trigger.value == "REPLAY"
    assert [a.message_id for a in receiver.received(URL, ok=True)] == [delivery.id]


async def test_gone_disables_the_endpoint_until_an_operator_enables_it(
    world: tuple[Runtime, Receiver, Clock],
) -> None:
    runtime, receiver, clock = world
    tenant, endpoint, _ = await _alerted(runtime)

    async def gone(_: httpx.Request) -> httpx.Response:
        return httpx.Response(410)

    receiver.answers[URL] = gone
    await alerts(runtime, tenant, 3)
    await runtime.dispatcher.dispatch_pending()
    await runtime.sender.send_due()
    await runtime.sender.drain()
    disabled = await _endpoint(runtime, tenant, endpoint.id)
    assert not disabled.enabled
    assert disabled.disabled_reason is not None and "410" in disabled.disabled_reason
    assert statuses(await deliveries(runtime, tenant)) == {DeliveryStatus.DISABLED}
    sent = len(receiver.arrivals)
    await alerts(runtime, tenant, 1)  # kept while disabled, not sent
    for _ in range(5):
        clock.advance(3600)
        await send_round(runtime)
    assert len(receiver.arrivals) == sent
    assert len(await deliveries(runtime, tenant)) == 4

    refused = await runtime.webhooks.deliveries(tenant, before=None, limit=1)
    with pytest.raises(WebhookRefused) as refusal:
        await runtime.webhooks.replay(tenant, refused[0][0].id)
    assert refusal.value.code is RefusalCode.ENDPOINT_DISABLED

    del receiver.answers[URL]
    await runtime.webhooks.update_endpoint(tenant, endpoint.id, enabled=True)
    await send_round(runtime)
    assert statuses(await deliveries(runtime, tenant)) == {DeliveryStatus.DELIVERED}
    assert len(receiver.received(URL, ok=True)) == 4


async def test_a_rotated_out_secret_signs_beside_the_new_one_until_the_overlap_ends(
    world: tuple[Runtime, Receiver, Clock],
) -> None:
    runtime, receiver, clock = world
    tenant, endpoint, first = await _alerted(runtime)

    async def one_request() -> set[str]:
        """The signatures of the request an alert makes now."""
        await alerts(runtime, tenant, 1)
        await send_round(runtime)
        arrival = receiver.arrivals[-1]
        signatures = arrival.headers["webhook-signature"].split(" ")
        assert len(signatures) == len(set(signatures))
        return {next(s for s in secrets if signed_with(arrival, s) == sig) for sig in signatures}

    secrets = [first]
    assert await one_request() == {first}
    updated, second = await runtime.webhooks.update_endpoint(
        tenant, endpoint.id, rotate_secret=True
    )
    assert second is not None and second != first
    secrets.append(second)
    assert updated.previous_secret_until == clock.now + timedelta(hours=24)
    assert await one_request() == {second, first}  # the receiver may verify with either
    clock.advance(23 * 3600)
    assert await one_request() == {second, first}
    # Rotated again within the overlap: the secret it replaces is the one that overlaps.
    _, third = await runtime.webhooks.update_endpoint(tenant, endpoint.id, rotate_secret=True)
    assert third is not None
    secrets.append(third)
    assert await one_request() == {third, second}
    clock.advance(24 * 3600)
    assert await one_request() == {third}
    listed = await _endpoint(runtime, tenant, endpoint.id)
    assert listed.previous_secret_until == clock.now  # over: the new secret signs alone


async def test_without_an_overlap_a_rotated_secret_signs_alone_at_once(database_url: str) -> None:
    await upgrade(database_url)
    receiver, clock = Receiver(), Clock()
    runtime = build(database_url, receiver, clock, webhook_secret_overlap_hours=0)
    try:
        tenant, endpoint, _ = await _alerted(runtime)
        updated, secret = await runtime.webhooks.update_endpoint(
            tenant, endpoint.id, rotate_secret=True
        )
        assert secret is not None and updated.previous_secret_until is None
        await alerts(runtime, tenant, 1)
        await send_round(runtime)
        assert signature_holds(receiver.arrivals[-1], secret)
    finally:
        await runtime.close()


async def test_a_replay_asked_while_an_attempt_is_in_flight_follows_it(
    world: tuple[Runtime, Receiver, Clock],
) -> None:
    """The attempt under way is not doubled; once it is recorded (delivered, here), the
    replay is sent, with its own trigger, rather than lost under the attempt's outcome."""
    runtime, receiver, _clock = world
    tenant, _, _ = await _alerted(runtime)
    entered, release = asyncio.Event(), asyncio.Event()

    async def held(_: httpx.Request) -> httpx.Response:
        entered.set()
        await release.wait()
        return httpx.Response(200)

    receiver.answers[URL] = held
    await alerts(runtime, tenant, 1)
    await runtime.dispatcher.dispatch_pending()
    await runtime.sender.send_due()
    await asyncio.wait_for(entered.wait(), 5)
    [delivery] = await deliveries(runtime, tenant)
    await runtime.webhooks.replay(tenant, delivery.id)
    assert await runtime.sender.send_due() == 0  # in flight: not taken a second time
    del receiver.answers[URL]
    release.set()
    await runtime.sender.drain()
    [after_first] = await deliveries(runtime, tenant)
    assert after_first.status is DeliveryStatus.PENDING  # the replay still to come
    await send_round(runtime)
    [done] = await deliveries(runtime, tenant)
    assert done.status is DeliveryStatus.DELIVERED
    assert [a.trigger.value for a in done.attempts] == ["SCHEDULE", "REPLAY"]
    assert [a.message_id for a in receiver.arrivals] == [delivery.id, delivery.id]
    assert receiver.most_at_once == 1


@pytest.mark.parametrize("kind", ["seconds", "http-date"])
async def test_retry_after_pushes_the_next_attempt_later(
    world: tuple[Runtime, Receiver, Clock], kind: str
) -> None:
    runtime, receiver, clock = world
    tenant, _, _ = await _alerted(runtime)

    async def busy(_: httpx.Request) -> httpx.Response:
        later = clock.now + timedelta(seconds=3600)
        value = "3600" if kind == "seconds" else format_datetime(later, usegmt=True)
        return httpx.Response(429, headers={"Retry-After": value})

    receiver.answers[URL] = busy
    await alerts(runtime, tenant, 1)
    await send_round(runtime)
    [delivery] = await deliveries(runtime, tenant)
    assert delivery.status is DeliveryStatus.FAILING
    assert delivery.next_attempt_at is not None
    wait = (delivery.next_attempt_at - clock.now).total_seconds()
    assert 3599 <= wait <= 3601  # the schedule alone says 4 to 6 seconds
    clock.advance(600)
    await send_round(runtime)
    assert len(receiver.arrivals) == 1


async def test_a_hanging_endpoint_never_holds_back_a_healthy_one(database_url: str) -> None:
    await upgrade(database_url)
    receiver, clock = Receiver(), Clock()
    runtime = build(
        database_url, receiver, clock, webhook_timeout_seconds=300, webhook_max_in_flight=2
    )
    try:
        tenant = await new_tenant(runtime)
        await runtime.webhooks.create_endpoint(tenant, url=SLOW, event_types=["sync.alert"])
        await runtime.webhooks.create_endpoint(tenant, url=URL, event_types=["sync.alert"])
        never = asyncio.Event()

        async def hang(_: httpx.Request) -> httpx.Response:
            await never.wait()
            return httpx.Response(200)

        receiver.answers[SLOW] = hang
        await alerts(runtime, tenant, 6)
        await runtime.dispatcher.dispatch_pending()

        async def healthy_all_arrived() -> None:
            # Arrived, and the attempts that carried them finished (an answer reaches the
            # receiver a moment before its sender's task records it).
            while len(receiver.received(URL, ok=True)) < 6 or runtime.sender.in_flight > 2:
                await runtime.sender.send_due()
                await asyncio.sleep(0.005)

        await asyncio.wait_for(healthy_all_arrived(), 60)
        # The slow endpoint is still stuck on its first two, and took no more.
        assert receiver.received(SLOW) == []
        assert receiver.active and sum(receiver.active.values()) == 2
        assert runtime.sender.in_flight == 2
        found = await deliveries(runtime, tenant)
        done = {d.endpoint.url: 0 for d in found}
        for d in found:
            done[d.endpoint.url] += d.status is DeliveryStatus.DELIVERED
        assert done == {URL: 6, SLOW: 0}
    finally:
        await runtime.close()


@pytest.mark.postgres
async def test_two_processes_queue_each_event_once_and_never_send_an_attempt_twice_at_once(
    postgres_database_url: str,
) -> None:
    url = postgres_database_url
    await upgrade(url)
    receiver, clock = Receiver(), Clock()

    async def slowish(_: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.002)
        return httpx.Response(200)

    receiver.answers[URL] = slowish
    receiver.answers[SLOW] = slowish
    one = build(url, receiver, clock, webhook_max_in_flight=8)
    two = build(url, receiver, clock, webhook_max_in_flight=8)
    try:
        tenant = await new_tenant(one)
        await one.webhooks.create_endpoint(tenant, url=URL, event_types=["sync.alert"])
        await two.webhooks.create_endpoint(tenant, url=SLOW, event_types=["sync.alert"])
        dispatchers = [
            Dispatcher(queue=SqlWebhookQueue(engine=rt.engine), clock=clock, batch=7)
            for rt in (one, two)
        ]

        async def produce() -> None:
            for _ in range(10):
                await alerts(one, tenant, 6)
                await asyncio.sleep(0)

        async def dispatch(dispatcher: Dispatcher) -> None:
            for _ in range(30):
                await dispatcher.dispatch_pending()
                await asyncio.sleep(0)

        await asyncio.gather(produce(), *(dispatch(d) for d in dispatchers))
        await asyncio.gather(*(d.dispatch_pending() for d in dispatchers))

        async def send(runtime: Runtime) -> None:
            for _ in range(40):
                await runtime.sender.send_due()
                await asyncio.sleep(0.003)
            await runtime.sender.drain()

        await asyncio.gather(send(one), send(two))
        rows, _ = await one.webhooks.deliveries(tenant, before=None, limit=200)
        assert len(rows) == 120  # 60 events x 2 endpoints, none twice
        assert len({(d.event_id, d.endpoint.id) for d in rows}) == 120
        assert statuses(list(rows)) == {DeliveryStatus.DELIVERED}
        sent = Counter(a.message_id for a in receiver.arrivals)
        assert set(sent.values()) == {1} and len(sent) == 120
        assert receiver.most_at_once == 1
        assert all(d.attempt_count == 1 for d in rows)
    finally:
        await one.close()
        await two.close()


def _delivery_gid(tenant: str, message_id: str) -> str:
    from stockgraph.domain.global_ids import to_global_id

    return to_global_id("WebhookDelivery", tenant, message_id)


async def test_retention_deletes_deliveries_that_are_over_and_keeps_the_rest(
    world: tuple[Runtime, Receiver, Clock],
) -> None:
    runtime, receiver, clock = world
    tenant = await new_tenant(runtime)
    await runtime.webhooks.create_endpoint(tenant, url=URL, event_types=["sync.alert"])
    await runtime.webhooks.create_endpoint(tenant, url=SLOW, event_types=["sync.alert"])

    async def broken(_: httpx.Request) -> httpx.Response:
        return httpx.Response(500)

    receiver.answers[SLOW] = broken
    await alerts(runtime, tenant, 2)
    await send_round(runtime)
    assert statuses(await deliveries(runtime, tenant)) == {
        DeliveryStatus.DELIVERED,
        DeliveryStatus.FAILING,
    }
    queue = SqlWebhookQueue(engine=runtime.engine)

    assert await queue.prune_finished(before=clock.now - timedelta(seconds=1)) == 0
    assert await queue.prune_finished(before=clock.now + timedelta(seconds=1)) == 2
    left = await deliveries(runtime, tenant)
    assert {d.endpoint.url for d in left} == {SLOW}
    assert statuses(left) == {DeliveryStatus.FAILING}
    assert all(d.attempts for d in left)
    assert await _attempt_rows(runtime) == sum(len(d.attempts) for d in left)


async def test_deleting_an_endpoint_takes_its_deliveries_and_attempts_with_it(
    world: tuple[Runtime, Receiver, Clock],
) -> None:
    runtime, _receiver, _clock = world
    tenant, other = await new_tenant(runtime), await new_tenant(runtime)
    endpoint, _ = await runtime.webhooks.create_endpoint(
        tenant, url=URL, event_types=["sync.alert"]
    )
    await alerts(runtime, tenant, 2)
    await send_round(runtime)
    assert len(await deliveries(runtime, tenant)) == 2
    assert await _attempt_rows(runtime) == 2

    with pytest.raises(WebhookRefused) as refusal:  # not theirs
        await runtime.webhooks.delete_endpoint(other, endpoint.id)
    assert refusal.value.code is RefusalCode.NOT_FOUND
    assert len(await deliveries(runtime, tenant)) == 2
    await runtime.webhooks.delete_endpoint(tenant, endpoint.id)
    assert await deliveries(runtime, tenant) == []
    assert await _attempt_rows(runtime) == 0
    listed, _ = await runtime.webhooks.endpoints(tenant, after_id=None, limit=10)
    assert listed == []
    with pytest.raises(WebhookRefused):
        await runtime.webhooks.delete_endpoint(tenant, endpoint.id)


async def _attempt_rows(runtime: Runtime) -> int:
    async with runtime.engine.connect() as conn:
        return int(await conn.scalar(select(func.count()).select_from(WebhookAttemptRow)) or 0)

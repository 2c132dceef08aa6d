"""A simulated WMS delivers each webhook until it is acknowledged, and keeps every attempt."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime

import httpx
import orjson
import pytest
from starlette.applications import Starlette

from stockgraph.connectors.delivery import Outcome, RetrySchedule, WebhookSender
from stockgraph.connectors.signing import EVENT_ID_HEADER, SIGNATURE_HEADER, verify
from stockgraph.connectors.simulation import (
    FaultGate,
    Faults,
    SimEvent,
    SimulatedWms,
    WebhookPusher,
    control_routes,
)

URL = "http://stockgraph.test/webhooks/wms/rest-1"
SECRET = "whsec-test"
Handler = Callable[[httpx.Request], Awaitable[httpx.Response]]


class Script(random.Random):
    """Answers ``random()`` from a list, then 0.5 for ever: the fault and jitter draws."""

    def __init__(self, draws: Iterable[float] = ()) -> None:
        super().__init__(0)
        self.draws = list(draws)

    def random(self) -> float:
        return self.draws.pop(0) if self.draws else 0.5


class FakeTime:
    """A clock that only moves when the sender sleeps."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


class Receiver:
    """Stockgraph's side: answers each request with the next scripted status (or error)."""

    def __init__(self, answers: Iterable[int | Exception], then: int = 202) -> None:
        self.answers = list(answers)
        self.then = then
        self.kept: list[tuple[str, bytes]] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        answer = self.answers.pop(0) if self.answers else self.then
        if isinstance(answer, Exception):
            raise answer
        body = await request.aread()
        verify(body, request.headers[SIGNATURE_HEADER], [SECRET], now=1_700_000_000)
        self.kept.append((request.headers[EVENT_ID_HEADER], body))
        return httpx.Response(answer, json={"status": answer})


def sender(
    receiver: Handler,
    time: FakeTime,
    *,
    faults: Faults | None = None,
    rng: random.Random | None = None,
    schedule: RetrySchedule | None = None,
) -> WebhookSender:
    return WebhookSender(
        url=URL,
        secret=SECRET,
        client=httpx.AsyncClient(transport=httpx.MockTransport(receiver)),
        faults=faults or Faults(),
        rng=rng or Script(),
        schedule=schedule or RetrySchedule(deadline_s=10.0, base_s=0.1, cap_s=1.0),
        clock=time.clock,
        sleep=time.sleep,
    )


async def test_a_webhook_is_retried_through_refusals_and_5xx_until_acknowledged() -> None:
    refused = httpx.ConnectError("connection refused")
    receiver = Receiver([refused, refused, 503, 429, 500])
    time = FakeTime()

    delivering = sender(receiver, time)
    assert await delivering.deliver("evt-1", b'{"n": 1}')
    record = delivering.history["evt-1"]

    assert [a.outcome for a in record.attempts] == [
        Outcome.UNREACHABLE,
        Outcome.UNREACHABLE,
        Outcome.SERVER_ERROR,
        Outcome.SERVER_ERROR,
        Outcome.SERVER_ERROR,
        Outcome.ACKNOWLEDGED,
    ]
    assert [a.status for a in record.attempts] == [None, None, 503, 429, 500, 202]
    assert record.acknowledged and record.gave_up_at is None
    assert record.acknowledged_at == time.now
    # Full jitter (the draw is 0.5) over a doubling, capped ceiling.
    assert time.slept == [0.05, 0.1, 0.2, 0.4, 0.5]
    assert receiver.kept == [("evt-1", b'{"n": 1}')] * 4


async def test_a_sender_gives_up_at_its_deadline_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    receiver = Receiver([], then=503)
    time = FakeTime()
    started = time.now

    delivering = sender(receiver, time)
    with caplog.at_level(logging.WARNING, logger="stockgraph.simulation"):
        assert not await delivering.deliver("evt-2", b"{}")
    record = delivering.history["evt-2"]

    assert not record.acknowledged
    assert record.gave_up_at is not None and record.gave_up_at - started <= 10.0
    assert record.reason == "no acknowledgement within 10 s (last attempt: server error)"
    assert len(record.attempts) > 5
    assert {a.outcome for a in record.attempts} == {Outcome.SERVER_ERROR}
    assert sum(time.slept) <= 10.0
    assert f"webhook evt-2 to {URL}: giving up after {len(record.attempts)} attempt(s)" in (
        caplog.text
    )


async def test_a_lost_answer_is_retried_though_the_receiver_kept_the_event() -> None:
    receiver = Receiver([])
    time = FakeTime()
    # Attempt 1 is lost on the way (0.1 < rate, then 0.2 < 0.5); 0.5 is the jitter draw;
    # attempt 2 arrives but its answer is lost (0.3 < rate, then 0.7); attempt 3 goes through.
    rng = Script([0.1, 0.2, 0.5, 0.3, 0.7, 0.5, 0.9])
    faults = Faults(send_failure_rate=0.5)

    delivering = sender(receiver, time, faults=faults, rng=rng)
    assert await delivering.deliver("evt-3", b"{}")
    record = delivering.history["evt-3"]

    assert [(a.outcome, a.status) for a in record.attempts] == [
        (Outcome.LOST_ON_THE_WAY, None),
        (Outcome.ANSWER_LOST, 202),
        (Outcome.ACKNOWLEDGED, 202),
    ]
    assert record.acknowledged
    assert [event_id for event_id, _ in receiver.kept] == ["evt-3", "evt-3"]


async def test_a_rejected_webhook_is_not_retried() -> None:
    receiver = Receiver([401])
    time = FakeTime()

    delivering = sender(receiver, time)
    assert not await delivering.deliver("evt-4", b"{}")
    record = delivering.history["evt-4"]

    assert [(a.outcome, a.status) for a in record.attempts] == [(Outcome.REJECTED, 401)]
    assert not record.acknowledged and record.gave_up_at == time.now
    assert record.reason is not None and record.reason.startswith("rejected with HTTP 401")
    assert time.slept == []


def test_a_retry_schedule_refuses_negative_or_infinite_figures() -> None:
    with pytest.raises(ValueError, match="deadline_s must be a number >= 0"):
        RetrySchedule(deadline_s=-1)
    with pytest.raises(ValueError, match="cap_s must be a number >= 0"):
        RetrySchedule(cap_s=float("inf"))


def _event(number: int) -> SimEvent:
    return SimEvent(
        event_id=f"evt-{number}",
        sequence=number,
        kind="RECEIPT",
        occurred_at=datetime.now(UTC),
        levels=[],
    )


async def test_a_pusher_delivers_concurrently_and_drain_sends_what_it_held_back() -> None:
    active = 0
    most = 0
    kept: list[str] = []

    async def slow(request: httpx.Request) -> httpx.Response:
        nonlocal active, most
        active += 1
        most = max(most, active)
        await asyncio.sleep(0.01)
        active -= 1
        kept.append(request.headers[EVENT_ID_HEADER])
        return httpx.Response(202)

    faults = Faults()
    pusher = WebhookPusher(
        url=URL,
        secret=SECRET,
        faults=faults,
        rng=random.Random(1),
        render=lambda event: orjson.dumps(event.as_dict()),
        client=httpx.AsyncClient(transport=httpx.MockTransport(slow)),
        in_flight=4,
    )
    try:
        for number in range(1, 20):
            await pusher(_event(number))
        faults.reorder_rate = 1.0
        await pusher(_event(20))
        assert pusher.held and "evt-20" not in pusher.history

        await pusher.drain()
    finally:
        await pusher.aclose()

    assert most == 4
    assert sorted(kept) == sorted(f"evt-{n}" for n in range(1, 21))
    assert pusher.sent == 20 and pusher.failed == 0
    assert all(record.acknowledged for record in pusher.history.values())


async def test_the_control_route_sets_the_send_failure_rate() -> None:
    wms = SimulatedWms(name="sim", locations=["A"], stock={})
    app = Starlette(routes=control_routes(wms, FaultGate(wms.faults, wms.rng)))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://sim") as client:
        set_rate = await client.post("/_control/faults", json={"send_failure_rate": 0.1})
        too_high = await client.post("/_control/faults", json={"send_failure_rate": 1.5})

    assert set_rate.status_code == 200 and set_rate.json()["send_failure_rate"] == 0.1
    assert wms.faults.send_failure_rate == 0.1
    assert too_high.status_code == 400
    assert "probability" in too_high.json()["error"]

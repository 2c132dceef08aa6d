"""A simulator's latency runs from a request's arrival, with the answer worked out inside it."""

from __future__ import annotations

import asyncio
import random
import time

from starlette.responses import Response

from stockgraph.connectors.simulation import FaultGate, Faults

LATENCY_S = 0.05


def gate(**faults: float) -> FaultGate:
    return FaultGate(Faults(latency_ms=LATENCY_S * 1000, **faults), random.Random(0))


async def test_the_answer_is_made_at_once_and_sent_after_the_latency() -> None:
    made: list[float] = []

    async def produce() -> Response:
        made.append(time.monotonic())
        return Response(b"ok")

    g = gate()
    started = time.monotonic()
    response = await g.answer(produce)
    finished = time.monotonic()
    assert response.body == b"ok"
    assert made[0] - started < LATENCY_S  # worked out before the latency ran out
    assert finished - started >= LATENCY_S
    assert g.served == 1


async def test_work_inside_the_latency_is_not_added_to_it() -> None:
    """Two requests whose answers take most of the latency to work out, one after the
    other on the one event loop: each is answered once its own latency has passed since it
    arrived, not after the latency and then both pieces of work."""
    work_s = LATENCY_S * 0.6

    async def busy() -> Response:
        time.sleep(work_s)  # noqa: ASYNC251 - holds the loop, as a real answer's work does
        return Response(b"ok")

    g = gate()
    started = time.monotonic()
    await asyncio.gather(g.answer(busy), g.answer(busy))
    elapsed = time.monotonic() - started
    assert elapsed >= 2 * work_s
    assert elapsed < LATENCY_S + 1.5 * work_s  # the old way took LATENCY_S + 2 * work_s


async def test_requests_arriving_together_start_their_latency_together() -> None:
    """Three requests reach the process at once and each answer takes a third of the
    latency to work out: all three clocks start on arrival, so the last answer goes when
    the latency has passed. Started after the others' work instead, the last one's clock
    would start two pieces of work late."""
    latency_s, work_s = 0.2, 0.06
    g = FaultGate(Faults(latency_ms=latency_s * 1000), random.Random(0))
    finished: list[float] = []

    async def busy() -> Response:
        time.sleep(work_s)  # noqa: ASYNC251 - holds the loop, as a real answer's work does
        return Response(b"ok")

    async def ask() -> None:
        await g.answer(busy)
        finished.append(time.monotonic())

    started = time.monotonic()
    await asyncio.gather(ask(), ask(), ask())
    assert len(finished) == 3
    assert min(finished) - started >= latency_s
    assert max(finished) - started < latency_s + work_s  # late clocks: >= latency + 2 works


async def test_a_fault_is_also_answered_after_the_latency() -> None:
    async def produce() -> Response:
        raise AssertionError("a request answered 503 is not worked out")

    g = gate(error_rate=1.0)
    started = time.monotonic()
    response = await g.answer(produce)
    assert response.status_code == 503
    assert time.monotonic() - started >= LATENCY_S
    g.faults.error_rate, g.faults.burst_429 = 0.0, 1
    assert (await g.answer(produce)).status_code == 429
    assert g.throttled == 1

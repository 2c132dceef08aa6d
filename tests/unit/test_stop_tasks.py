"""Background tasks are stopped even when one misses a cancellation, as a library call that
swallows it does (redis-py's blocking XREAD, now and then): the process still shuts down."""

from __future__ import annotations

import asyncio
import logging

import pytest

from stockgraph.wiring import stop_tasks


async def _swallowing(times: int, stop: asyncio.Event | None = None) -> None:
    """Runs until cancelled once more than ``times`` cancellations were swallowed (or, with
    ``stop``, until it is set)."""
    swallowed = 0
    while stop is None or not stop.is_set():
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            if swallowed >= times:
                raise
            swallowed += 1
            asyncio.current_task().uncancel()  # type: ignore[union-attr]


async def test_a_task_that_swallows_a_cancellation_is_cancelled_again_until_it_ends() -> None:
    stubborn = asyncio.create_task(_swallowing(2))
    plain = asyncio.create_task(asyncio.sleep(3600))
    await asyncio.sleep(0)
    await asyncio.wait_for(stop_tasks([stubborn, plain], every=0.01), timeout=5)
    assert stubborn.cancelled() and plain.cancelled()


async def test_a_task_that_never_ends_is_named_and_left_after_the_patience(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stop = asyncio.Event()
    forever = asyncio.create_task(_swallowing(10**9, stop), name="forever")
    await asyncio.sleep(0)
    with caplog.at_level(logging.ERROR, logger="stockgraph.runtime"):
        await asyncio.wait_for(stop_tasks([forever], patience=0.05, every=0.01), timeout=5)
    assert not forever.done()
    assert "still running" in caplog.text and "forever" in caplog.text
    stop.set()
    forever.cancel()  # swallowed, and then it sees ``stop``
    await forever


async def test_a_task_that_failed_is_logged_and_the_others_still_stopped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def failing() -> None:
        raise RuntimeError("boom")

    broken = asyncio.create_task(failing(), name="broken")
    waiting = asyncio.create_task(asyncio.sleep(3600))
    await asyncio.sleep(0)
    with caplog.at_level(logging.ERROR, logger="stockgraph.runtime"):
        await stop_tasks([broken, waiting], every=0.01)
    assert waiting.cancelled()
    assert "task broken failed" in caplog.text and "boom" in caplog.text

"""Cached answers made old by a change in one process are dropped in every process."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Collection

import pytest
from redis.asyncio import Redis

from stockgraph.cache.invalidation import Invalidations
from tests.services import redis_url

pytestmark = pytest.mark.redis


class Process:
    """What one Stockgraph process holds: its invalidations and what its cache was told."""

    def __init__(self, channel: str) -> None:
        self.dropped: list[tuple[str, set[str] | None]] = []
        self.heard = asyncio.Event()
        self.forgotten = 0
        self.redis = Redis.from_url(redis_url())
        self.listener = Redis.from_url(redis_url())
        self.invalidations = Invalidations(
            apply=self._apply,
            forget_all=self._forget,
            redis=self.redis,
            listener=self.listener,
            channel=channel,
        )
        self.task = asyncio.ensure_future(self.invalidations.run())

    def _apply(self, tenant: str, skus: Collection[str] | None) -> None:
        self.dropped.append((tenant, None if skus is None else set(skus)))
        self.heard.set()

    async def told(self, count: int) -> None:
        """Wait until this process's cache has been told ``count`` changes."""
        async with asyncio.timeout(2.0):
            while len(self.dropped) < count:
                self.heard.clear()
                await self.heard.wait()

    def _forget(self) -> None:
        self.forgotten += 1

    async def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        await self.invalidations.aclose()
        await self.redis.aclose()


@pytest.fixture
async def processes() -> AsyncIterator[tuple[Process, Process]]:
    channel = f"stockgraph:test:invalidations:{uuid.uuid4().hex}"
    pair = (Process(channel), Process(channel))
    try:
        for process in pair:
            await asyncio.wait_for(process.invalidations.subscribed.wait(), 5)
        yield pair
    finally:
        for process in pair:
            await process.close()


async def test_a_change_in_one_process_reaches_the_others_cache(
    processes: tuple[Process, Process],
) -> None:
    a, b = processes
    assert (a.forgotten, b.forgotten) == (1, 1)  # a fresh subscription starts from nothing
    a.invalidations.changed("acme", ["SKU-1"])
    a.invalidations.changed("acme", ["SKU-2"])  # the same turn: one message
    a.invalidations.changed("globex", None)
    await a.invalidations.flush()
    await b.told(2)
    assert sorted(b.dropped, key=lambda d: d[0]) == [
        ("acme", {"SKU-1", "SKU-2"}),
        ("globex", None),
    ]
    # The process that made the change applied it at once, and not again from the channel.
    assert a.dropped == [("acme", {"SKU-1"}), ("acme", {"SKU-2"}), ("globex", None)]


async def test_malformed_messages_are_ignored(processes: tuple[Process, Process]) -> None:
    a, b = processes
    channel = a.invalidations._channel
    await a.redis.publish(channel, b"not json")
    await a.redis.publish(channel, b'{"origin": "x"}')
    a.invalidations.changed("acme", ["SKU-3"])
    await a.invalidations.flush()
    await b.told(1)
    assert b.dropped == [("acme", {"SKU-3"})]

"""The webhook dispatcher: outbox events in, one delivery per subscribed endpoint out.

Writers wake it after they commit (:meth:`Dispatcher.wake`, like the outbox relay); it
then moves the shared cursor over every committed event, queueing deliveries in the same
transaction (see :class:`~stockgraph.persistence.webhook_queue.SqlWebhookQueue`). Any
number of processes may run one: they take turns on the cursor. A slow poll is a safety
net for a wake-up that never came (another process committed, say, without Redis).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Protocol

from stockgraph.persistence.webhook_queue import FanOut

log = logging.getLogger("stockgraph.webhooks")

Clock = Callable[[], datetime]
"""Now, as an aware UTC datetime; tests pass one they move by hand."""


class DeliveryQueue(Protocol):
    """Where the dispatcher queues deliveries (``SqlWebhookQueue``)."""

    async def has_pending(self) -> bool: ...

    async def fan_out(self, *, now: datetime, limit: int = 500) -> FanOut: ...


class Dispatcher:
    """Turns committed outbox events into deliveries, in order, exactly once each."""

    def __init__(
        self,
        *,
        queue: DeliveryQueue,
        clock: Clock,
        on_queued: Callable[[], None] = lambda: None,
        batch: int = 500,
        idle_seconds: float = 1.0,
        coalesce_seconds: float = 0.05,
    ) -> None:
        if batch < 1:
            raise ValueError(f"batch must be at least 1, not {batch}")
        self._queue = queue
        self._clock = clock
        self._on_queued = on_queued
        self._batch = batch
        self._idle = idle_seconds
        self._coalesce = coalesce_seconds
        self._woken = asyncio.Event()
        self.cursor: int | None = None
        """The id of the last outbox event this dispatcher moved past; None before."""

    def wake(self) -> None:
        """Something was committed: queue its deliveries now."""
        self._woken.set()

    async def run(self) -> None:
        """Dispatch until cancelled: when woken, else every ``idle_seconds``."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._woken.wait(), self._idle)
            self._woken.clear()
            try:
                # A cheap read first: the write lock is taken only when there is work.
                if await self._queue.has_pending():
                    await self.dispatch_pending()
                    # Commits meanwhile are taken together on the next pass: at most one
                    # write transaction per ``coalesce_seconds``, however fast they come.
                    await asyncio.sleep(self._coalesce)
            except Exception:
                log.exception("the webhook dispatcher failed; retrying")
                await asyncio.sleep(self._idle)

    async def dispatch_pending(self) -> int:
        """Queue deliveries for every committed event past the cursor; how many queued."""
        queued = 0
        while True:
            done = await self._queue.fan_out(now=self._clock(), limit=self._batch)
            self.cursor = done.cursor
            queued += done.deliveries
            if done.deliveries:
                self._on_queued()
            if done.events < self._batch:
                return queued


__all__ = ["Clock", "DeliveryQueue", "Dispatcher"]

"""Telling every process which cached answers a committed change made old.

Each process keeps its own cache of answers (:mod:`stockgraph.cache.response`), so a change
ingested by one process must reach the caches of all. :class:`Invalidations` applies a
change to this process's cache at once and, with Redis, publishes it on a channel that every
process listens to. Changes are coalesced per tenant until the next turn of the event loop,
so a burst of a thousand events costs a handful of messages, not a thousand.

Pub/sub delivers only to those listening: a process that was not subscribed (Redis away,
a reconnect) may have missed changes, so whenever it (re)subscribes it drops everything it
had cached. The caches' TTL bounds what a silently lost message could cost. (Events reach
other processes' subscribers through the Redis stream, :mod:`stockgraph.events.streams`,
not through this channel.) With
:class:`~stockgraph.cache.shared.SharedAnswers`, the same flush moves the versions that
make answers shared in Redis old, before the message goes out.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Collection, Sequence
from typing import Protocol

import orjson
from redis.asyncio import Redis

from stockgraph.cache.failover import Failover
from stockgraph.cache.shared import SharedAnswers

log = logging.getLogger("stockgraph.cache")

Apply = Callable[[str, Collection[str] | None], None]
"""Drops a tenant's cached answers covering the SKUs (all of them for None)."""

CHANNEL = "stockgraph:invalidations"


class Invalidated(Protocol):
    """A cache that drops what a change made old."""

    def invalidate(self, tenant_id: str, skus: Collection[str] | None) -> None: ...

    def clear(self) -> None: ...


def invalidate_all(caches: Sequence[Invalidated]) -> Apply:
    """One :data:`Apply` that tells every cache in ``caches``."""

    def apply(tenant_id: str, skus: Collection[str] | None) -> None:
        for cache in caches:
            cache.invalidate(tenant_id, skus)

    return apply


def clear_all(caches: Sequence[Invalidated]) -> Callable[[], None]:
    """Forgets everything every cache in ``caches`` holds."""

    def clear() -> None:
        for cache in caches:
            cache.clear()

    return clear


class Invalidations:
    """Applies changes to this process's caches and shares them with the other processes."""

    def __init__(
        self,
        *,
        apply: Apply,
        forget_all: Callable[[], None],
        redis: Redis | None = None,
        listener: Redis | None = None,
        shared: SharedAnswers | None = None,
        channel: str = CHANNEL,
        retry_seconds: float = 1.0,
    ) -> None:
        self._apply = apply
        self._forget_all = forget_all
        self._redis = redis
        self._listener = listener or redis
        self._shared = shared
        self._channel = channel
        self._retry = retry_seconds
        self.origin = uuid.uuid4().hex
        self._pending: dict[str, set[str] | None] = {}
        self._flushing: asyncio.Task[None] | None = None
        self._failover = Failover(name="cache invalidations", retry_seconds=retry_seconds)
        self.subscribed = asyncio.Event()
        """Set while this process hears other processes' changes (always, without Redis)."""
        if redis is None:
            self.subscribed.set()

    async def aclose(self) -> None:
        """Publish what is pending and close the listening connection."""
        await self.flush()
        if self._listener is not None and self._listener is not self._redis:
            await self._listener.aclose()

    def changed(self, tenant_id: str, skus: Collection[str] | None) -> None:
        """A change to ``tenant_id``'s projection (``skus``; everything for None) committed."""
        self._apply(tenant_id, skus)
        if self._redis is None:
            return
        if tenant_id in self._pending and self._pending[tenant_id] is None:
            pass  # everything of the tenant is going out already
        elif skus is None:
            self._pending[tenant_id] = None
        else:
            pending = self._pending.get(tenant_id) or set()
            pending.update(skus)
            self._pending[tenant_id] = pending
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.ensure_future(self._flush())

    async def flush(self) -> None:
        """Wait until every change so far has been published (for tests and shutdown)."""
        while self._flushing is not None and not self._flushing.done():
            await self._flushing

    async def _flush(self) -> None:
        await asyncio.sleep(0)  # let the rest of this turn's changes join the message
        redis = self._redis
        while self._pending and redis is not None:
            pending, self._pending = self._pending, {}
            for tenant_id, skus in pending.items():
                message = {
                    "origin": self.origin,
                    "tenant": tenant_id,
                    "skus": None if skus is None else sorted(skus),
                }
                if not self._failover.use_primary():
                    continue
                try:
                    if self._shared is not None:
                        await self._shared.bump(tenant_id, skus)
                    await redis.publish(self._channel, orjson.dumps(message))
                except Failover.ERRORS as error:
                    self._failover.failed(error)
                else:
                    self._failover.succeeded()

    async def run(self) -> None:
        """Hear other processes' changes until cancelled; reconnects after failures.

        ``listener`` should be a client without a read timeout: a quiet channel is not a
        failure.
        """
        redis = self._listener
        if redis is None:
            return
        while True:
            pubsub = redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self._channel)
                # Whatever was published while nobody here listened is lost: start afresh.
                self._forget_all()
                self.subscribed.set()
                async for message in pubsub.listen():
                    self._receive(message.get("data"))
            except asyncio.CancelledError:
                raise
            except Failover.ERRORS as error:
                if self.subscribed.is_set():
                    log.warning(
                        "lost the cache invalidation channel (%s: %s); "
                        "cached answers expire by their TTL until it is back",
                        type(error).__name__,
                        error,
                    )
                self.subscribed.clear()
                await asyncio.sleep(self._retry)
            finally:
                self.subscribed.clear()
                await pubsub.aclose()  # type: ignore[no-untyped-call,unused-ignore]

    def _receive(self, data: object) -> None:
        if not isinstance(data, bytes | str):
            return
        try:
            message = orjson.loads(data)
            origin, tenant, skus = message["origin"], message["tenant"], message["skus"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            log.warning("ignored a malformed cache invalidation: %r", data)
            return
        if origin == self.origin or not isinstance(tenant, str):
            return
        if skus is None:
            self._apply(tenant, None)
        elif isinstance(skus, list):
            self._apply(tenant, [s for s in skus if isinstance(s, str)])


__all__ = ["CHANNEL", "Invalidated", "Invalidations", "clear_all", "invalidate_all"]

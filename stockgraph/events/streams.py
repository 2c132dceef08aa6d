"""The event bus across processes: one Redis stream per deployment.

With Redis, every process's outbox relay appends what the shared outbox committed to one
stream, ``<namespace>:events``, whose entry ids are the outbox ids (``XADD key 42-0 ...``).
Redis refuses an id that is not above the stream's newest ("equal or smaller"), so when two
relays append the same event the stream keeps one entry, in outbox order: the refusal means
"published already", not a failure. Each process reads the stream (``XREAD BLOCK``) from the
last event its bus delivered and hands what it reads, in order, to its
:class:`~stockgraph.events.bus.MemoryBus`: a commit in one process reaches the subscribers
of every other without their relays.

The outbox stays the authority. Where the stream skips ids (trimmed by ``MAXLEN``, or
events that relays delivered on their own while Redis was away and so never appended), the
reader reads the missing ones from the outbox before going on, so the bus never has a gap;
and the bus skips any id it has delivered already, so it never has a duplicate. While the
reader cannot read (Redis away), it says so (:attr:`EventStream.delivering`) and wakes the
relay, which then delivers to the bus itself; when Redis is back, the reader goes on from
the last event the bus delivered.

Example::

    stream = EventStream(redis=redis, reader=blocking_redis, key="stockgraph:events",
                         outbox=event_log, bus=bus)
    relay = Relay(log=event_log, bus=bus, stream=stream)
    tasks = [create_task(relay.run()), create_task(stream.run(lost=relay.wake))]
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import cast

import orjson
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from stockgraph.cache.failover import Failover
from stockgraph.domain.events import OutboxEvent, Topic
from stockgraph.domain.ids import Sku, TenantId, WarehouseId
from stockgraph.events.bus import MemoryBus
from stockgraph.events.relay import Outbox

log = logging.getLogger("stockgraph.events")

Fields = Mapping[bytes, bytes]
"""One stream entry's fields, as Redis returns them."""

Entries = list[tuple[bytes, Fields]]
"""Stream entries, oldest first, as ``XRANGE`` and ``XREAD`` return them."""

_KNOWN_TOPICS = frozenset(topic.value for topic in Topic)


class StreamAhead(Exception):
    """The stream holds events this database's outbox never had: another deployment (another
    database) publishes to the same Redis namespace."""


def entry_id(event_id: int) -> str:
    """The stream entry id of an outbox event: ``42`` is ``"42-0"``."""
    return f"{event_id}-0"


def event_id(entry: bytes | str) -> int:
    """The outbox id a stream entry id stands for (``b"42-0"`` is 42)."""
    text = entry.decode() if isinstance(entry, bytes) else entry
    head, _, _ = text.partition("-")
    return int(head)


def encode(event: OutboxEvent) -> dict[str, str]:
    """The entry fields of ``event`` (its id is the entry's id). Warehouse and SKU are left
    out when the event has none."""
    fields = {
        "tenant": event.tenant_id,
        "topic": event.topic.value,
        "payload": orjson.dumps(event.payload).decode(),
        "created_at": event.created_at.isoformat(),
    }
    if event.warehouse_id is not None:
        fields["warehouse"] = str(event.warehouse_id)
    if event.sku is not None:
        fields["sku"] = event.sku
    return fields


def decode(event_id: int, fields: Fields) -> OutboxEvent | None:
    """The event an entry holds; None for a topic this release does not know (skipped, as
    :class:`~stockgraph.persistence.event_log.SqlEventLog` skips it).

    Raises ``ValueError`` for an entry that is not an event (missing or malformed fields).
    """
    try:
        topic = fields[b"topic"].decode()
        if topic not in _KNOWN_TOPICS:
            return None
        warehouse = fields.get(b"warehouse")
        sku = fields.get(b"sku")
        payload = orjson.loads(fields[b"payload"])
        if not isinstance(payload, dict):
            raise ValueError("payload is not a JSON object")
        return OutboxEvent(
            id=event_id,
            tenant_id=TenantId(fields[b"tenant"].decode()),
            topic=Topic(topic),
            warehouse_id=None if warehouse is None else WarehouseId(int(warehouse)),
            sku=None if sku is None else Sku(sku.decode()),
            payload=payload,
            created_at=datetime.fromisoformat(fields[b"created_at"].decode()),
        )
    except (KeyError, UnicodeDecodeError, orjson.JSONDecodeError) as error:
        raise ValueError(f"not an event entry ({type(error).__name__}: {error})") from None


def _already_there(error: BaseException) -> bool:
    return isinstance(error, ResponseError) and "equal or smaller" in str(error)


@dataclass(slots=True)
class StreamStats:
    """What the stream has done in this process since it started."""

    appended: int = 0
    """Events this process's relay appended."""
    already_there: int = 0
    """Events the relay offered that another relay had appended first."""
    read: int = 0
    """Events read from the stream and offered to the bus."""
    filled: int = 0
    """Events the stream lacked, read from the outbox instead."""


class _StatsCollector(Collector):
    def __init__(self, stats: StreamStats) -> None:
        self._stats = stats

    def collect(self) -> Iterator[CounterMetricFamily]:
        figures = {
            "appended": "Events this process appended to the Redis stream",
            "already_there": "Events another process had appended to the stream first",
            "read": "Events read from the Redis stream",
            "filled": "Events missing from the stream, read from the outbox instead",
        }
        for name, help_text in figures.items():
            yield CounterMetricFamily(
                f"stockgraph_event_stream_{name}", help_text, value=getattr(self._stats, name)
            )


class EventStream:
    """Implements the relay's :class:`~stockgraph.events.relay.Stream` on a Redis stream, and
    reads the stream into this process's bus (:meth:`run`).

    ``redis`` appends (a client with short timeouts); ``reader`` blocks in ``XREAD`` for up
    to ``block_seconds`` and needs a read timeout above that.
    """

    def __init__(
        self,
        *,
        redis: Redis,
        reader: Redis,
        key: str,
        outbox: Outbox,
        bus: MemoryBus,
        max_length: int = 100_000,
        batch: int = 500,
        block_seconds: float = 5.0,
        retry_seconds: float = 5.0,
    ) -> None:
        if max_length < 1:
            raise ValueError(f"max_length must be at least 1, not {max_length}")
        if batch < 1:
            raise ValueError(f"batch must be at least 1, not {batch}")
        self._redis = redis
        self._reader = reader
        self.key = key
        self._outbox = outbox
        self._bus = bus
        self._max_length = max_length
        self._batch = batch
        self._block_ms = max(1, int(block_seconds * 1000))
        self._retry = retry_seconds
        self._appends = Failover(name="events", retry_seconds=retry_seconds)
        self._cursor = 0
        self._problem: str | None = "starting"
        self.stats = StreamStats()
        self.reading = asyncio.Event()
        """Set while :meth:`run` delivers the stream to the bus."""

    @property
    def delivering(self) -> bool:
        """Whether :meth:`run` is delivering the stream to the bus now."""
        return self.reading.is_set()

    def register(self, registry: CollectorRegistry) -> None:
        """Expose :attr:`stats` as ``stockgraph_event_stream_*_total`` counters."""
        registry.register(_StatsCollector(self.stats))

    def status(self) -> str:
        """The bus's readiness: ``ok (redis streams)``, or ``ok (degraded: ...)`` while each
        process delivers its own relay's events (every event still, from the outbox)."""
        if not self.reading.is_set():
            return f"ok (degraded: {self._problem})"
        if self._appends.degraded:
            return "ok (degraded: redis unreachable for appends)"
        return "ok (redis streams)"

    async def append(self, events: Sequence[OutboxEvent]) -> bool:
        """``XADD`` each event with its outbox id (bounded by ``MAXLEN ~``); an event the
        stream has already (another relay was first) is left as it is. False when Redis
        cannot be reached now."""
        if not events:
            return True
        if not self._appends.use_primary():
            return False
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for event in events:
                    pipe.xadd(
                        self.key,
                        encode(event),  # type: ignore[arg-type]
                        id=entry_id(event.id),
                        maxlen=self._max_length,
                        approximate=True,
                    )
                replies = await pipe.execute(raise_on_error=False)
            refused = 0
            for reply in replies:
                if isinstance(reply, BaseException):
                    if not _already_there(reply):
                        raise reply
                    refused += 1
        except Failover.ERRORS as error:
            self._appends.failed(error)
            return False
        self._appends.succeeded()
        self.stats.appended += len(events) - refused
        self.stats.already_there += refused
        return True

    async def run(self, *, lost: Callable[[], None] = lambda: None) -> None:
        """Deliver the stream to the bus until cancelled. Whenever it stops delivering (Redis
        away), it calls ``lost`` (the relay's wake-up), retries every ``retry_seconds``, and
        goes on from the last event the bus delivered."""
        while True:
            try:
                await self._check()
                if self._problem != "starting":
                    log.info("reading the event stream %s again", self.key)
                self._problem = None
                self.reading.set()
                while True:
                    await self._read_once()
            except asyncio.CancelledError:
                self.reading.clear()
                self._problem = "stopped"
                raise
            except (*Failover.ERRORS, StreamAhead) as error:
                self.reading.clear()
                if self._problem is None or self._problem == "starting":
                    level = logging.ERROR if isinstance(error, StreamAhead) else logging.WARNING
                    log.log(
                        level,
                        "stopped reading the event stream %s (%s: %s); the relay delivers "
                        "this process's events from the outbox, retrying every %.1f s",
                        self.key,
                        type(error).__name__,
                        error,
                        self._retry,
                    )
                self._problem = f"{type(error).__name__}: {error}"
                lost()
                await asyncio.sleep(self._retry)

    async def aclose(self) -> None:
        """Close the reading connection."""
        await self._reader.aclose()

    async def _check(self) -> None:
        """Start (once) where the bus is, and refuse a stream ahead of the outbox."""
        newest = cast(Entries, await self._reader.xrevrange(self.key, count=1))
        # Read the outbox after the stream: what the stream held was committed by then.
        last = await self._outbox.last_id()
        self._bus.start_after(last)
        if newest and event_id(newest[0][0]) > last:
            raise StreamAhead(
                f"{self.key} holds event {event_id(newest[0][0])} but the outbox ends at "
                f"{last}: another database publishes to this Redis namespace; give each "
                "deployment its own STOCKGRAPH_REDIS_NAMESPACE (or delete the stream)"
            )

    def _position(self) -> int:
        delivered = self._bus.delivered or 0
        return max(self._cursor, delivered)

    async def _read_once(self) -> None:
        start = self._position()
        reply = cast(
            list[tuple[bytes, Entries]] | None,
            await self._reader.xread(
                {self.key: entry_id(start)}, count=self._batch, block=self._block_ms
            ),
        )
        for _key, entries in reply or ():
            for raw_id, fields in entries:
                number = event_id(raw_id)
                if number <= self._position():
                    continue
                if number > self._position() + 1:
                    await self._fill(before=number)
                self.stats.read += 1
                try:
                    event = decode(number, fields)
                except ValueError as error:
                    log.warning("event stream %s entry %s: %s", self.key, raw_id, error)
                    await self._fill(before=number + 1)  # the outbox has it
                    continue
                if event is not None:
                    self._bus.publish([event])
                self._cursor = max(self._cursor, number)

    async def _fill(self, *, before: int) -> None:
        """Deliver from the outbox the events the stream lacks below ``before``."""
        while (start := self._position()) < before - 1:
            # Ids the outbox never holds (rolled back) make gaps too: read no further.
            events = await self._outbox.after(start, limit=min(self._batch, before - 1 - start))
            wanted = [event for event in events if event.id < before]
            self._bus.publish(wanted)
            self.stats.filled += len(wanted)
            if len(events) < self._batch or len(wanted) < len(events):
                self._cursor = max(self._cursor, before - 1)  # nothing else below it
                return
            self._cursor = max(self._cursor, wanted[-1].id)


__all__ = [
    "EventStream",
    "StreamAhead",
    "StreamStats",
    "decode",
    "encode",
    "entry_id",
    "event_id",
]

"""The runtime of one process: every store, service and background task, built from
settings by :meth:`Runtime.build`; the app (:mod:`stockgraph.app`), the CLI and the tests
drive it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import httpx
from prometheus_client import CollectorRegistry, Gauge
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from stockgraph.auth.errors import AuthError
from stockgraph.auth.principal import Principal
from stockgraph.auth.tokens import TokenService
from stockgraph.cache.buckets import FallbackBuckets, MemoryBuckets, RedisBuckets
from stockgraph.cache.failover import Failover
from stockgraph.cache.invalidation import Invalidated, Invalidations, clear_all, invalidate_all
from stockgraph.cache.reads import CachedCatalogReader, CachedStockReader
from stockgraph.cache.response import ResponseCache
from stockgraph.cache.shared import SharedAnswers
from stockgraph.collector import CollectorPauses
from stockgraph.config import ConfigError, Settings, Topology
from stockgraph.connectors.budget import ShareBudget
from stockgraph.connectors.metrics import ConnectorMetrics
from stockgraph.connectors.registry import (
    BUILDERS,
    ConnectorConfigError,
    build_connector,
)
from stockgraph.connectors.shared_budget import SharedBudget
from stockgraph.domain.bucket import BucketPolicy
from stockgraph.domain.ids import Sku, TenantId, WarehouseId
from stockgraph.domain.model import WarehouseSpec
from stockgraph.domain.webhooks import RetrySchedule, WebhookRefused
from stockgraph.events.bus import MemoryBus
from stockgraph.events.delivery import Sender, WebhookMetrics
from stockgraph.events.dispatch import Dispatcher
from stockgraph.events.relay import Relay
from stockgraph.events.retention import OutboxRetention
from stockgraph.events.streams import EventStream
from stockgraph.persistence.access_store import SqlAccessStore
from stockgraph.persistence.catalog_store import SqlCatalogStore, SqlCatalogWriter
from stockgraph.persistence.database import create_engine, session_factory
from stockgraph.persistence.event_log import SqlEventLog
from stockgraph.persistence.inbox_store import SqlConnectorStates, SqlInbox
from stockgraph.persistence.migrate import current_revision, head_revision
from stockgraph.persistence.operations_store import SqlOperationsStore
from stockgraph.persistence.stock_store import SqlStockStore
from stockgraph.persistence.unit_of_work import SqlUnitOfWork
from stockgraph.persistence.webhook_queue import SqlWebhookQueue
from stockgraph.persistence.webhook_store import SqlWebhookStore
from stockgraph.schema.context import Services
from stockgraph.schema.view import CachedAnswer
from stockgraph.services.access import AccessService
from stockgraph.services.catalog import CatalogService
from stockgraph.services.feed import EventFeed
from stockgraph.services.ingestion import (
    ConnectorInstance,
    IngestionService,
)
from stockgraph.services.inventory import InventoryService
from stockgraph.services.live import LiveReads
from stockgraph.services.operations import OperationsService
from stockgraph.services.ports import CatalogReader, CostBuckets, StockReader
from stockgraph.services.sync import SyncService
from stockgraph.services.webhooks import WebhookService
from stockgraph.wiring import (
    build_token_service,
    connection_of,
    gauges,
    outbox_written,
    stop_tasks,
    utc_now,
    warehouse_specs,
)

log = logging.getLogger("stockgraph")


@dataclass
class Runtime:
    """Everything the app holds for its lifetime; also what the CLI and tests drive."""

    settings: Settings
    engine: AsyncEngine
    tokens: TokenService
    access: AccessService
    catalog: CatalogService
    inventory: InventoryService
    catalog_writer: SqlCatalogWriter
    stock_store: SqlStockStore
    response_cache: ResponseCache[CachedAnswer] | None
    shared_answers: SharedAnswers | None
    """Answers shared by every process through Redis, behind :attr:`response_cache`."""
    ingestion: IngestionService
    sync: SyncService
    live: LiveReads
    operations: OperationsService
    buckets: CostBuckets
    """Every client's bucket of query cost: in Redis when configured, else in memory."""
    invalidations: Invalidations
    """Drops cached answers a change made old, here and (with Redis) in every process."""
    bus: MemoryBus
    relay: Relay
    """Publishes what the outbox committed: to the Redis stream, or this process's bus."""
    feed: EventFeed
    retention: OutboxRetention
    webhooks: WebhookService
    dispatcher: Dispatcher
    """Queues a delivery per subscribed endpoint for every committed outbox event."""
    sender: Sender
    """Sends due deliveries, each endpoint in its own lane."""
    instances: dict[str, ConnectorInstance] = field(default_factory=dict)
    metrics: CollectorRegistry = field(default_factory=CollectorRegistry)
    connector_metrics: ConnectorMetrics | None = None
    redis: Redis | None = None
    budget_failover: Failover = field(default_factory=lambda: Failover(name="WMS budgets"))
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when the server starts to stop: streams of results end cleanly rather than wait
    to be cut."""
    stream: EventStream | None = None
    """With Redis, the bus every process shares; it delivers to :attr:`bus`."""

    @classmethod
    def build(
        cls,
        settings: Settings,
        *,
        webhook_transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> Runtime:
        """Everything wired from ``settings``; ``webhook_transport`` routes outbound
        webhooks elsewhere and ``clock`` replaces the wall clock for them (tests)."""
        engine = create_engine(settings.database_url)
        now = clock or utc_now
        tokens = build_token_service(settings)
        namespace = settings.redis_prefix
        # Opens no connection until the first command, which the lifespan's loop sends.
        redis = None
        if settings.redis_url:
            # Short timeouts: while Redis is away, callers fall back instead of waiting.
            redis = Redis.from_url(
                settings.redis_url, socket_timeout=1.0, socket_connect_timeout=1.0
            )
        event_log = SqlEventLog(engine=engine)
        bus = MemoryBus()
        stream = None
        if redis is not None and settings.redis_url:
            # Other processes' events come through the stream, so their cache invalidations
            # need not wake the relay (Redis away, they would not come either).
            stream = EventStream(
                redis=redis,
                # Blocks in XREAD for 5 s at most: a read timeout above that.
                reader=Redis.from_url(
                    settings.redis_url, socket_timeout=10.0, socket_connect_timeout=1.0
                ),
                key=f"{namespace}:events",
                outbox=event_log,
                bus=bus,
                max_length=settings.event_stream_length,
                retry_seconds=settings.redis_retry_seconds,
            )
        relay = Relay(
            log=event_log, bus=bus, stream=stream, idle_seconds=settings.outbox_poll_seconds
        )
        registry = CollectorRegistry()
        queue = SqlWebhookQueue(engine=engine)
        sender = Sender(
            queue=queue,
            clock=now,
            schedule=RetrySchedule(delays=settings.webhook_retry_schedule),
            transport=webhook_transport,
            timeout_seconds=settings.webhook_timeout_seconds,
            max_in_flight=settings.webhook_max_in_flight,
            poll_seconds=settings.outbox_poll_seconds,
            metrics=WebhookMetrics(registry=registry),
        )
        dispatcher = Dispatcher(
            queue=queue,
            clock=now,
            on_queued=sender.wake,
            idle_seconds=settings.outbox_poll_seconds,
        )

        outbox = outbox_written(relay, dispatcher)
        stock = SqlStockStore(engine=engine, on_outbox=outbox)
        catalog_reader: CatalogReader = SqlCatalogStore(engine=engine)
        stock_reader: StockReader = stock
        caches: list[Invalidated] = []
        ttl = settings.response_cache_ttl_seconds
        response_cache: ResponseCache[CachedAnswer] | None = None
        if settings.response_cache_size:
            response_cache = ResponseCache(
                max_entries=settings.response_cache_size, ttl_seconds=ttl
            )
            caches.append(response_cache)
        if settings.read_cache_size:
            cached_stock = CachedStockReader(
                reader=stock,
                cache=ResponseCache(max_entries=settings.read_cache_size, ttl_seconds=ttl),
            )
            cached_catalog = CachedCatalogReader(
                reader=catalog_reader, cache=ResponseCache(max_entries=1024, ttl_seconds=ttl)
            )
            stock_reader, catalog_reader = cached_stock, cached_catalog
            caches += [cached_stock, cached_catalog]
        catalog = CatalogService(reader=catalog_reader)
        instances: dict[str, ConnectorInstance] = {}
        shared_answers = (
            SharedAnswers(
                redis=redis,
                ttl_seconds=ttl,
                prefix=f"{namespace}:answers:",
                failover=Failover(
                    name="shared answers", retry_seconds=settings.redis_retry_seconds
                ),
            )
            if redis is not None and response_cache is not None
            else None
        )
        invalidations = Invalidations(
            apply=invalidate_all(caches),
            shared=shared_answers,
            channel=f"{namespace}:invalidations",
            forget_all=clear_all(caches),
            redis=redis,
            retry_seconds=settings.redis_retry_seconds,
            # Listening waits for messages as long as it takes: no read timeout there.
            listener=(
                Redis.from_url(
                    settings.redis_url, socket_connect_timeout=1.0, health_check_interval=15
                )
                if settings.redis_url
                else None
            ),
        )

        policy = BucketPolicy(
            capacity=settings.cost_bucket_size, restore_rate=settings.cost_restore_rate
        )
        buckets: CostBuckets = MemoryBuckets(policy=policy)
        if redis is not None:
            buckets = FallbackBuckets(
                primary=RedisBuckets(redis=redis, policy=policy, prefix=f"{namespace}:bucket:"),
                fallback=MemoryBuckets(policy=policy),
                retry_seconds=settings.redis_retry_seconds,
            )

        def unit_of_work() -> SqlUnitOfWork:
            return SqlUnitOfWork(engine=engine, on_outbox=outbox)

        ingestion = IngestionService(
            instances=instances.get,
            inbox=SqlInbox(engine=engine),
            unit_of_work=unit_of_work,
            on_change=invalidations.changed,
        )
        sync = SyncService(
            ingestion=ingestion,
            states=SqlConnectorStates(engine=engine),
            unit_of_work=unit_of_work,
            on_change=invalidations.changed,
        )
        live = LiveReads(
            instances=lambda: list(instances.values()),
            ingestion=ingestion,
            unit_of_work=unit_of_work,
            on_change=invalidations.changed,
        )
        return cls(
            settings=settings,
            engine=engine,
            tokens=tokens,
            access=AccessService(
                store=SqlAccessStore(sessions=session_factory(engine)), tokens=tokens
            ),
            catalog=catalog,
            inventory=InventoryService(
                stock=stock_reader, catalog=catalog, written_back=live.written_back
            ),
            catalog_writer=SqlCatalogWriter(engine=engine),
            stock_store=stock,
            invalidations=invalidations,
            ingestion=ingestion,
            sync=sync,
            live=live,
            operations=OperationsService(
                reader=SqlOperationsStore(engine=engine),
                instances=lambda: list(instances.values()),
                progress=ingestion.progress,
            ),
            instances=instances,
            buckets=buckets,
            bus=bus,
            relay=relay,
            feed=EventFeed(log=event_log, bus=bus),
            retention=OutboxRetention(
                outbox=event_log,
                keep=timedelta(hours=settings.outbox_retention_hours),
                every_seconds=settings.outbox_prune_seconds,
                # Events not yet turned into webhook deliveries stay, however old.
                held_back_by=queue.position,
                deliveries=queue,
            ),
            webhooks=WebhookService(
                store=SqlWebhookStore(engine=engine),
                clock=now,
                on_queued=sender.wake,
                secret_overlap=timedelta(hours=settings.webhook_secret_overlap_hours),
            ),
            dispatcher=dispatcher,
            sender=sender,
            metrics=registry,
            budget_failover=Failover(
                name="WMS budgets", retry_seconds=settings.redis_retry_seconds
            ),
            redis=redis,
            response_cache=response_cache,
            shared_answers=shared_answers,
            stream=stream,
        )

    def __post_init__(self) -> None:
        self.connector_metrics = ConnectorMetrics(registry=self.metrics)
        self.pauses = CollectorPauses(registry=self.metrics)
        cache = self.response_cache
        if cache is not None:
            gauges(
                self.metrics,
                "stockgraph_response_cache",
                {
                    "hits": "Answers served from the cache",
                    "misses": "Cacheable answers executed",
                    "entries": "Answers held",
                    "invalidated": "Answers dropped because what they cover changed",
                },
                cache.stats,
            )
        shared = self.shared_answers
        if shared is not None:
            gauges(
                self.metrics,
                "stockgraph_shared_answers",
                {"hits": "Answers found in Redis", "misses": "Answers not found in Redis"},
                lambda: shared,
            )
        instances = Gauge(
            "stockgraph_connector_instances", "WMS instances connected", registry=self.metrics
        )
        instances.set_function(lambda: len(self.instances))
        if self.stream is not None:
            self.stream.register(self.metrics)

    async def check_database(self) -> None:
        """Fail start-up clearly when the database is unreachable or not migrated."""
        current = await current_revision(self.settings.database_url)
        head = head_revision()
        if current != head:
            raise ConfigError(
                f"DATABASE_URL: the database is at revision {current or 'none'}, expected "
                f"{head}; run `stockgraph migrate`"
            )

    async def apply_topology(self, topology: Topology) -> None:
        """Create or update the tenants and warehouses the configuration declares."""
        for tenant in topology.tenants:
            await self.catalog_writer.upsert_tenant(TenantId(tenant.id), tenant.name)
        await self.catalog_writer.upsert_warehouses(warehouse_specs(topology))
        for hook in topology.webhooks:
            try:
                await self.webhooks.declare(
                    TenantId(hook.tenant),
                    url=hook.url,
                    event_types=hook.events,
                    secret=hook.secret.get_secret_value() if hook.secret else None,
                    description=hook.description,
                )
            except WebhookRefused as exc:
                raise ConfigError(f"webhooks: {hook.url}: {exc.message}") from None
        for tenant in topology.tenants:
            self.projection_changed(TenantId(tenant.id))

    def services(self) -> Services:
        """The use-cases GraphQL resolvers may call."""
        return Services(
            catalog=self.catalog,
            inventory=self.inventory,
            operations=self.operations,
            buckets=self.buckets,
            live=self.live,
            feed=self.feed,
            webhooks=self.webhooks,
        )

    def _share_budget(self, connector_id: str) -> ShareBudget | None:
        """With Redis, every process spends one budget per WMS instance (and per label,
        for an instance with a separate inquiry limit)."""
        redis = self.redis
        if redis is None:
            return None
        key = f"{self.settings.redis_prefix}:budget:{connector_id}"
        return lambda local: SharedBudget(
            local=local,
            redis=redis,
            key=f"{key}:{local.label}" if local.label else key,
            failover=self.budget_failover,
        )

    def projection_changed(self, tenant_id: TenantId, skus: Collection[Sku] | None = None) -> None:
        """Called after every committed change to a tenant's projection (the SKUs written)
        or catalogue (None: anything may have changed): cached answers are dropped here and
        (with Redis) in every process. Outbox events the commit wrote have woken the relay
        and the webhook dispatcher already (see :func:`outbox_written`)."""
        self.invalidations.changed(tenant_id, skus)

    async def connect_instances(
        self,
        specs: Sequence[WarehouseSpec],
        *,
        transports: Mapping[str, httpx.AsyncBaseTransport] | None = None,
    ) -> None:
        """Build a connector for every configured instance of a known dialect.

        ``transports`` routes an instance's HTTP to something else (a simulator app).
        """
        ids = await self.catalog_writer.upsert_warehouses(specs)
        for tenant_id in {spec.tenant_id for spec in specs}:
            self.projection_changed(tenant_id)
        for spec in specs:
            if spec.dialect not in BUILDERS:
                continue
            settings, mapping = connection_of(spec)
            try:
                built = build_connector(
                    spec.dialect,
                    connector_id=spec.connector_id,
                    settings=settings,
                    transport=(transports or {}).get(spec.connector_id),
                    metrics=self.connector_metrics,
                    share_budget=self._share_budget(spec.connector_id),
                )
            except ConnectorConfigError as exc:
                raise ConfigError(str(exc)) from None
            old = self.instances.pop(spec.connector_id, None)
            if old is not None:
                await old.connector.aclose()
            self.instances[spec.connector_id] = ConnectorInstance(
                connector_id=spec.connector_id,
                tenant_id=spec.tenant_id,
                warehouse_id=WarehouseId(ids[spec.connector_id]),
                warehouse_code=spec.code,
                connector=built.connector,
                mapping=mapping,
                webhook_secrets=built.webhook_secrets,
                health=built.runtime.stats,
            )

    async def sync_loop(self, *, poll_floor_seconds: float = 1.0) -> None:
        """Fully sync new instances once, then poll the dialects that cannot push."""
        while True:
            started = asyncio.get_running_loop().time()
            outcomes = await asyncio.gather(
                *(self.sync.sync_once(instance) for instance in list(self.instances.values())),
                return_exceptions=True,
            )
            for outcome in outcomes:
                if isinstance(outcome, Exception):
                    log.error("sync failed", exc_info=outcome)
            intervals = [
                1.0 / i.connector.spec.rate.rate
                for i in self.instances.values()
                if i.connector.spec.poll and i.connector.spec.rate.rate > 0
            ]
            wait = max(poll_floor_seconds, min(intervals, default=5.0))
            elapsed = asyncio.get_running_loop().time() - started
            await asyncio.sleep(max(0.0, wait - elapsed))

    def start_background(self) -> None:
        """The inbox worker and the sync loop, until :meth:`close`."""
        self.tasks.append(asyncio.create_task(self.ingestion.run(), name="inbox"))
        self.tasks.append(asyncio.create_task(self.sync_loop(), name="sync"))
        self.tasks.append(asyncio.create_task(self.relay.run(), name="relay"))
        self.tasks.append(asyncio.create_task(self.retention.run(), name="outbox retention"))
        self.pauses.install()
        if self.stream is not None:
            self.tasks.append(
                asyncio.create_task(self.stream.run(lost=self.relay.wake), name="event stream")
            )
        self.tasks.append(asyncio.create_task(self.dispatcher.run(), name="webhook dispatcher"))
        self.tasks.append(asyncio.create_task(self.sender.run(), name="webhook sender"))
        if self.redis is not None:
            self.tasks.append(asyncio.create_task(self.invalidations.run(), name="invalidations"))

    async def open(self) -> None:
        """Before serving: the outbox relay takes its starting point now, so that no
        subscriber can start listening before it (connections open on first use)."""
        await self.relay.start()

    async def close(self) -> None:
        self.pauses.remove()
        await stop_tasks(self.tasks)
        self.tasks.clear()
        await self.live.settle()
        await self.sender.aclose()
        for instance in self.instances.values():
            await instance.connector.aclose()
        self.instances.clear()
        await self.invalidations.aclose()
        if self.stream is not None:
            await self.stream.aclose()
        if self.redis is not None:
            await self.redis.aclose()
        await self.engine.dispose()

    async def authenticate(self, credentials: Mapping[str, str]) -> Principal | None:
        """The caller named by ``Authorization: Bearer`` or ``X-API-Key`` (names in any case):
        an HTTP request's headers, or a WebSocket's ``connection_init`` payload."""
        found = {name.lower(): value for name, value in credentials.items()}
        header = found.get("authorization")
        try:
            if header is not None:
                scheme, _, token = header.partition(" ")
                if scheme.lower() != "bearer" or not token.strip():
                    return None
                return await self.access.authenticate_bearer(token.strip())
            key = found.get("x-api-key")
            if key:
                return await self.access.authenticate_api_key(key.strip())
        except AuthError as exc:
            log.info("rejected credentials: %s", getattr(exc, "reason", type(exc).__name__))
        return None

    async def readiness(self) -> dict[str, str]:
        checks: dict[str, str] = {}
        try:
            async with self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
            checks["database"] = "ok"
        except Exception as exc:
            checks["database"] = f"error: {type(exc).__name__}"
        if self.redis is None:
            checks["cache"] = "ok (in-process)"
        else:
            try:
                await self.redis.ping()
                checks["cache"] = "ok (redis)"
            except Exception as exc:
                # Reads, budgets and cost buckets carry on without Redis (each process on
                # its own): the service is degraded, not unready.
                checks["cache"] = f"ok (degraded: redis unreachable, {type(exc).__name__})"
        checks["bus"] = "ok (in-process)" if self.stream is None else self.stream.status()
        checks["webhooks"] = f"ok ({self.sender.in_flight} attempts in flight)"
        return checks

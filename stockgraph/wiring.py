"""Builders the composition root uses: the token service from settings, warehouses and
mappings from the topology, what follows a commit, Prometheus gauges over live figures.
Nothing here runs until :meth:`stockgraph.runtime.Runtime.build` or ``create_app`` calls
it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry, Gauge
from pydantic import ValidationError

from stockgraph.auth.tokens import SigningKey, TokenService
from stockgraph.config import ConfigError, MappingConfig, Settings, Topology
from stockgraph.domain.ids import TenantId
from stockgraph.domain.mapping import InstanceMapping
from stockgraph.domain.model import GeoPoint, WarehouseSpec
from stockgraph.events.dispatch import Dispatcher
from stockgraph.events.relay import Relay

log = logging.getLogger("stockgraph.runtime")


def build_token_service(settings: Settings) -> TokenService:
    """Signing keys from settings: PEM keys (RS256/ES256) if given, else the HS256 secret."""
    keys: list[SigningKey] = []
    for kid, path in settings.private_key_paths():
        try:
            keys.append(SigningKey.from_pem(path.read_bytes(), kid))
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"STOCKGRAPH_JWT_PRIVATE_KEYS: {path}: {exc}") from None
    if settings.jwt_secret is not None:
        keys.append(SigningKey.hs256(settings.jwt_secret.get_secret_value()))
    if not keys:
        raise ConfigError(
            "STOCKGRAPH_JWT_SECRET: expected a signing secret of at least 32 bytes "
            "(or keys in STOCKGRAPH_JWT_PRIVATE_KEYS)"
        )
    return TokenService(
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        keys=keys,
        active_kid=keys[0].kid,
        ttl_seconds=settings.token_ttl_seconds,
    )


def warehouse_specs(topology: Topology) -> list[WarehouseSpec]:
    return [
        WarehouseSpec(
            tenant_id=TenantId(w.tenant),
            code=w.code,
            connector_id=w.resolved_connector_id,
            name=w.name,
            region=w.region,
            location=GeoPoint(w.lat, w.lng) if w.lat is not None and w.lng is not None else None,
            dialect=w.dialect,
            settings=w.connection,
        )
        for w in topology.warehouses
    ]


def connection_of(spec: WarehouseSpec) -> tuple[dict[str, Any], InstanceMapping]:
    """An instance's connection settings for its dialect, and its ``mapping`` table apart,
    checked."""
    settings = dict(spec.settings)
    mapping = instance_mapping(settings, warehouse_code=spec.code, connector_id=spec.connector_id)
    settings.pop("mapping", None)
    return settings, mapping


def instance_mapping(
    settings: Mapping[str, Any], *, warehouse_code: str, connector_id: str
) -> InstanceMapping:
    """The ``mapping`` table of an instance's connection settings, checked."""
    try:
        config = MappingConfig.model_validate(settings.get("mapping") or {})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"{connector_id}: mapping: {problems}") from None
    return InstanceMapping(
        skus=config.skus,
        identity_skus=config.identity_skus,
        unit_factors={
            (sku, unit): factor
            for sku, units in config.sku_units.items()
            for unit, factor in units.items()
        },
        unit_defaults=config.units,
        locations=config.locations,
        default_location=warehouse_code,
        statuses=config.statuses,
    )


def outbox_written(relay: Relay, dispatcher: Dispatcher | None = None) -> Callable[[], None]:
    """What a commit that wrote outbox events must tell: the relay (subscribers) and the
    webhook dispatcher (endpoints), which then read the outbox past where they are."""

    def wake() -> None:
        relay.wake()
        if dispatcher is not None:
            dispatcher.wake()

    return wake


async def stop_tasks(
    tasks: Iterable[asyncio.Task[Any]], *, patience: float = 10.0, every: float = 0.5
) -> None:
    """Cancel ``tasks`` and wait until they have ended.

    A task can miss a cancellation: a library that swallows it mid-call and carries on
    (redis-py's blocking XREAD does, about once in two hundred cancellations here), after
    which a plain ``await task`` waits for good. Tasks still running are cancelled again
    every ``every`` seconds; one still running after ``patience`` seconds is logged and left.
    A task that ended with an error is logged, and the others are still stopped.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + patience
    pending = set(tasks)
    while pending:
        for task in pending:
            task.cancel()
        done, pending = await asyncio.wait(pending, timeout=every)
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                log.error("task %s failed", task.get_name(), exc_info=task.exception())
        if pending and loop.time() >= deadline:
            names = ", ".join(sorted(task.get_name() for task in pending))
            log.error("tasks still running after %.0f s of cancelling: %s", patience, names)
            return


def utc_now() -> datetime:
    return datetime.now(UTC)


def gauges(
    registry: CollectorRegistry,
    prefix: str,
    figures: Mapping[str, str],
    read: Callable[[], object],
) -> None:
    """One gauge per figure: ``prefix_name``, the attribute ``name`` of what ``read`` gives."""

    def figure(name: str) -> Callable[[], float]:
        return lambda: float(getattr(read(), name))

    for name, help_text in figures.items():
        Gauge(f"{prefix}_{name}", help_text, registry=registry).set_function(figure(name))

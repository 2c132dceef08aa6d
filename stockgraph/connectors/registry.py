"""Dialect names to the code that builds a connector for one configured instance.

A configured instance is its dialect's settings (validated by the dialect's own config
model, whose secret fields are marked) plus a ``mapping`` table read by the composition
root. Dialect modules are imported only when an instance of theirs is built.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import httpx
from pydantic import BaseModel, ValidationError

from stockgraph.connectors.base import Connector, DialectSpec, RatePolicy
from stockgraph.connectors.metrics import ConnectorMetrics
from stockgraph.connectors.runtime import InstanceRuntime


class ConnectorConfigError(ValueError):
    """An instance's connection settings do not fit its dialect; the message names the key."""


@dataclass(frozen=True, slots=True)
class BuiltConnector:
    connector: Connector
    webhook_secrets: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Plumbing:
    """What every instance's runtime gets from the composition root."""

    transport: httpx.AsyncBaseTransport | None = None
    metrics: ConnectorMetrics | None = None


Builder = Callable[[str, Mapping[str, Any], Plumbing, RatePolicy | None], BuiltConnector]


def _validated(model: type[BaseModel], settings: Mapping[str, Any]) -> Any:
    try:
        return model.model_validate(dict(settings))
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConnectorConfigError(f"connection settings: {problems}") from None


def _secrets(config: Any) -> tuple[str, ...]:
    return tuple(s.get_secret_value() for s in getattr(config, "webhook_secrets", ()) or ())


def _tuned(spec: DialectSpec, limit: RatePolicy | None) -> DialectSpec:
    """``spec`` with the limit a configured instance's plan gives (same kind, other figures)."""
    if limit is None:
        return spec
    if limit.kind != spec.rate.kind:
        raise ConnectorConfigError(
            f"the {spec.name} dialect is limited by {spec.rate.kind}, not {limit.kind}"
        )
    return replace(spec, rate=limit)


def _runtime(
    connector_id: str, base_url: str, spec: DialectSpec, plumbing: Plumbing
) -> InstanceRuntime:
    return InstanceRuntime(
        instance_id=connector_id,
        base_url=base_url,
        spec=spec,
        transport=plumbing.transport,
        metrics=plumbing.metrics,
    )


def _rest(
    connector_id: str,
    settings: Mapping[str, Any],
    plumbing: Plumbing,
    limit: RatePolicy | None,
) -> BuiltConnector:
    from stockgraph.connectors.rest.client import RestConnector
    from stockgraph.connectors.rest.spec import SPEC, RestConfig

    config = _validated(RestConfig, settings)
    spec = _tuned(SPEC, limit)
    connector = RestConnector(
        config=config, runtime=_runtime(connector_id, str(config.base_url), spec, plumbing)
    )
    connector.spec = spec
    return BuiltConnector(connector, _secrets(config))


def _graphql(
    connector_id: str,
    settings: Mapping[str, Any],
    plumbing: Plumbing,
    limit: RatePolicy | None,
) -> BuiltConnector:
    from stockgraph.connectors.graphql.client import GraphqlConnector
    from stockgraph.connectors.graphql.spec import SPEC, GraphqlConfig

    config = _validated(GraphqlConfig, settings)
    spec = _tuned(SPEC, limit)
    connector = GraphqlConnector(
        config=config, runtime=_runtime(connector_id, str(config.endpoint), spec, plumbing)
    )
    connector.spec = spec
    return BuiltConnector(connector, _secrets(config))


def _x12(
    connector_id: str,
    settings: Mapping[str, Any],
    plumbing: Plumbing,
    limit: RatePolicy | None,
) -> BuiltConnector:
    from stockgraph.connectors.x12.client import X12Connector
    from stockgraph.connectors.x12.spec import SPEC, X12Config

    config = _validated(X12Config, settings)
    spec = _tuned(SPEC, limit)
    connector = X12Connector(
        config=config, runtime=_runtime(connector_id, str(config.mailbox_url), spec, plumbing)
    )
    connector.spec = spec
    return BuiltConnector(connector, ())


BUILDERS: dict[str, Builder] = {"rest": _rest, "graphql": _graphql, "x12": _x12}


def build_connector(
    dialect: str,
    *,
    connector_id: str,
    settings: Mapping[str, Any],
    transport: httpx.AsyncBaseTransport | None = None,
    metrics: ConnectorMetrics | None = None,
) -> BuiltConnector:
    """A connector for one instance; ``transport`` is the test seam (an ASGI simulator).

    Two optional settings tune the budget to the instance's plan where it differs from the
    dialect's default: ``rate_limit = {rate = ..., burst = ...}`` (requests or credits per
    second and the bucket size, in the dialect's own kind of limit) and, for polled
    dialects, ``poll_interval_seconds``.
    """
    builder = BUILDERS.get(dialect)
    if builder is None:
        known = ", ".join(sorted(BUILDERS))
        raise ConnectorConfigError(f"{connector_id}: unknown dialect {dialect!r} (known: {known})")
    settings = dict(settings)
    try:
        limit = _limit(
            dialect, settings.pop("rate_limit", None), settings.pop("poll_interval_seconds", None)
        )
        return builder(connector_id, settings, Plumbing(transport, metrics), limit)
    except ConnectorConfigError as exc:
        raise ConnectorConfigError(f"{connector_id}: {exc}") from None


def _number(value: Any, key: str) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
        raise ConnectorConfigError(f"{key}: expected a number > 0, got {value!r}")
    return float(value)


def _limit(dialect: str, rate_limit: Any, interval: Any) -> RatePolicy | None:
    kinds = {"rest": "requests_per_second", "graphql": "credits", "x12": "polling_interval"}
    kind = kinds[dialect]
    if interval is not None:
        if kind != "polling_interval":
            raise ConnectorConfigError(
                f"poll_interval_seconds: the {dialect} dialect is not polled"
            )
        return RatePolicy(
            kind="polling_interval", rate=1.0 / _number(interval, "poll_interval_seconds"), burst=1
        )
    if rate_limit is None:
        return None
    if not isinstance(rate_limit, Mapping) or set(rate_limit) - {"rate", "burst"}:
        raise ConnectorConfigError("rate_limit: expected a table of rate and burst")
    return RatePolicy(
        kind=kind,  # type: ignore[arg-type]
        rate=_number(rate_limit.get("rate"), "rate_limit.rate"),
        burst=_number(rate_limit.get("burst"), "rate_limit.burst"),
    )

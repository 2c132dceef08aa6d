"""Dialect names to the code that builds a connector for one configured instance.

A configured instance is its dialect's settings (validated by the dialect's own config
model, whose secret fields are marked) plus a ``mapping`` table read by the composition
root. Dialect modules are imported only when an instance of theirs is built.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import httpx
from pydantic import BaseModel, ValidationError

from stockgraph.connectors.base import Connector, DialectSpec, RatePolicy
from stockgraph.connectors.budget import ShareBudget
from stockgraph.connectors.metrics import ConnectorMetrics
from stockgraph.connectors.runtime import InstanceRuntime


class ConnectorConfigError(ValueError):
    """An instance's connection settings do not fit its dialect; the message names the key."""


@dataclass(frozen=True, slots=True)
class BuiltConnector:
    connector: Connector
    webhook_secrets: tuple[str, ...]
    runtime: InstanceRuntime


@dataclass(frozen=True, slots=True)
class Plumbing:
    """What every instance's runtime gets from the composition root."""

    transport: httpx.AsyncBaseTransport | None = None
    metrics: ConnectorMetrics | None = None
    share_budget: ShareBudget | None = None


Builder = Callable[[str, Mapping[str, Any], Plumbing], BuiltConnector]


def _validated(model: type[BaseModel], settings: Mapping[str, Any]) -> Any:
    try:
        return model.model_validate(dict(settings))
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConnectorConfigError(f"connection settings: {problems}") from None


def _secrets(config: Any) -> tuple[str, ...]:
    return tuple(s.get_secret_value() for s in getattr(config, "webhook_secrets", ()) or ())


def _runtime(
    connector_id: str, base_url: str, spec: DialectSpec, plumbing: Plumbing
) -> InstanceRuntime:
    return InstanceRuntime(
        instance_id=connector_id,
        base_url=base_url,
        spec=spec,
        transport=plumbing.transport,
        metrics=plumbing.metrics,
        share_budget=plumbing.share_budget,
    )


@dataclass(frozen=True, slots=True)
class _Dialect:
    """Where a dialect lives and which of its config fields is the WMS's address."""

    package: str
    connector: str
    config: str
    address: str


_DIALECTS = {
    "rest": _Dialect("stockgraph.connectors.rest", "RestConnector", "RestConfig", "base_url"),
    "graphql": _Dialect(
        "stockgraph.connectors.graphql", "GraphqlConnector", "GraphqlConfig", "endpoint"
    ),
    "x12": _Dialect("stockgraph.connectors.x12", "X12Connector", "X12Config", "mailbox_url"),
}


def _builder(dialect: _Dialect) -> Builder:
    def build(connector_id: str, settings: Mapping[str, Any], plumbing: Plumbing) -> BuiltConnector:
        module = importlib.import_module(dialect.package)
        settings = dict(settings)
        declared: DialectSpec = module.SPEC
        limit = _limit(
            declared,
            settings.pop("rate_limit", None),
            settings.pop("poll_interval_seconds", None),
        )
        inquiries = _inquiry_limit(declared, settings.pop("inquiry_limit", None))
        config = _validated(getattr(module, dialect.config), settings)
        spec = replace(declared, rate=limit) if limit else declared
        spec = replace(spec, inquiries=inquiries) if inquiries else spec
        runtime = _runtime(connector_id, str(getattr(config, dialect.address)), spec, plumbing)
        connector = getattr(module, dialect.connector)(config=config, runtime=runtime)
        connector.spec = spec
        return BuiltConnector(connector, _secrets(config), runtime)

    return build


BUILDERS: dict[str, Builder] = {name: _builder(d) for name, d in _DIALECTS.items()}


def build_connector(
    dialect: str,
    *,
    connector_id: str,
    settings: Mapping[str, Any],
    transport: httpx.AsyncBaseTransport | None = None,
    metrics: ConnectorMetrics | None = None,
    share_budget: ShareBudget | None = None,
) -> BuiltConnector:
    """A connector for one instance; ``transport`` is the test seam (an ASGI simulator).

    Optional settings tune the budget to the instance's plan where it differs from the
    dialect's default: ``rate_limit = {rate = ..., burst = ...}`` (requests or credits per
    second and the bucket size, in the dialect's own kind of limit); for polled dialects,
    ``poll_interval_seconds``; and, for a dialect that limits its inquiries apart from its
    polls (``x12``), ``inquiry_limit = {rate = ..., burst = ...}`` (requests per second
    and how many may go at once).
    """
    builder = BUILDERS.get(dialect)
    if builder is None:
        known = ", ".join(sorted(BUILDERS))
        raise ConnectorConfigError(f"{connector_id}: unknown dialect {dialect!r} (known: {known})")
    try:
        return builder(connector_id, settings, Plumbing(transport, metrics, share_budget))
    except ConnectorConfigError as exc:
        raise ConnectorConfigError(f"{connector_id}: {exc}") from None


def _number(value: Any, key: str) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
        raise ConnectorConfigError(f"{key}: expected a number > 0, got {value!r}")
    return float(value)


def _limit(spec: DialectSpec, rate_limit: Any, interval: Any) -> RatePolicy | None:
    """The limit an instance's settings give, in the kind of limit its dialect has."""
    kind = spec.rate.kind
    if interval is not None:
        if kind != "polling_interval":
            raise ConnectorConfigError(
                f"poll_interval_seconds: the {spec.name} dialect is not polled"
            )
        return RatePolicy(
            kind="polling_interval", rate=1.0 / _number(interval, "poll_interval_seconds"), burst=1
        )
    if rate_limit is None:
        return None
    rate, burst = _rate_table(rate_limit, "rate_limit")
    return RatePolicy(kind=kind, rate=rate, burst=burst)


def _rate_table(value: Any, key: str) -> tuple[float, float]:
    if not isinstance(value, Mapping) or set(value) - {"rate", "burst"}:
        raise ConnectorConfigError(f"{key}: expected a table of rate and burst")
    return _number(value.get("rate"), f"{key}.rate"), _number(value.get("burst"), f"{key}.burst")


def _inquiry_limit(spec: DialectSpec, value: Any) -> RatePolicy | None:
    """The separate inquiry limit an instance's settings give, of the kind declared."""
    if value is None:
        return None
    if spec.inquiries is None:
        raise ConnectorConfigError(
            f"inquiry_limit: the {spec.name} dialect has no separate inquiry limit"
        )
    rate, burst = _rate_table(value, "inquiry_limit")
    return replace(spec.inquiries, rate=rate, burst=burst)

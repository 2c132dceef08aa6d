"""Dialect names to the code that builds a connector for one configured instance.

A configured instance is its dialect's settings (validated by the dialect's own config
model, whose secret fields are marked) plus a ``mapping`` table read by the composition
root. Dialect modules are imported only when an instance of theirs is built.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import BaseModel, ValidationError

from stockgraph.connectors.base import Connector, DialectSpec
from stockgraph.connectors.runtime import InstanceRuntime


class ConnectorConfigError(ValueError):
    """An instance's connection settings do not fit its dialect; the message names the key."""


@dataclass(frozen=True, slots=True)
class BuiltConnector:
    connector: Connector
    webhook_secrets: tuple[str, ...]


Builder = Callable[[str, Mapping[str, Any], httpx.AsyncBaseTransport | None], BuiltConnector]


def _validated(model: type[BaseModel], settings: Mapping[str, Any], connector_id: str) -> Any:
    try:
        return model.model_validate(dict(settings))
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConnectorConfigError(f"{connector_id}: connection settings: {problems}") from None


def _secrets(config: Any) -> tuple[str, ...]:
    return tuple(s.get_secret_value() for s in getattr(config, "webhook_secrets", ()) or ())


def _rest(
    connector_id: str, settings: Mapping[str, Any], transport: httpx.AsyncBaseTransport | None
) -> BuiltConnector:
    from stockgraph.connectors.rest.client import RestConnector
    from stockgraph.connectors.rest.spec import SPEC, RestConfig

    config = _validated(RestConfig, settings, connector_id)
    runtime = InstanceRuntime(
        instance_id=connector_id, base_url=str(config.base_url), spec=SPEC, transport=transport
    )
    return BuiltConnector(RestConnector(config=config, runtime=runtime), _secrets(config))


def _graphql(
    connector_id: str, settings: Mapping[str, Any], transport: httpx.AsyncBaseTransport | None
) -> BuiltConnector:
    from stockgraph.connectors.graphql.client import GraphqlConnector
    from stockgraph.connectors.graphql.spec import SPEC, GraphqlConfig

    config = _validated(GraphqlConfig, settings, connector_id)
    runtime = InstanceRuntime(
        instance_id=connector_id, base_url=str(config.endpoint), spec=SPEC, transport=transport
    )
    return BuiltConnector(GraphqlConnector(config=config, runtime=runtime), _secrets(config))


BUILDERS: dict[str, Builder] = {"rest": _rest, "graphql": _graphql}


def dialect_spec(dialect: str) -> DialectSpec:
    """The spec a dialect declares (importing its module)."""
    if dialect == "rest":
        from stockgraph.connectors.rest.spec import SPEC as rest_spec

        return rest_spec
    if dialect == "graphql":
        from stockgraph.connectors.graphql.spec import SPEC as graphql_spec

        return graphql_spec
    raise ConnectorConfigError(f"unknown dialect {dialect!r}")


def build_connector(
    dialect: str,
    *,
    connector_id: str,
    settings: Mapping[str, Any],
    transport: httpx.AsyncBaseTransport | None = None,
) -> BuiltConnector:
    """A connector for one instance; ``transport`` is the test seam (an ASGI simulator)."""
    builder = BUILDERS.get(dialect)
    if builder is None:
        known = ", ".join(sorted(BUILDERS))
        raise ConnectorConfigError(f"{connector_id}: unknown dialect {dialect!r} (known: {known})")
    return builder(connector_id, settings, transport)

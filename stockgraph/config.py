"""Settings: environment variables plus a TOML file of tenants and warehouses.

Environment (all optional)::

    DATABASE_URL                  sqlite+aiosqlite:///./stockgraph.db (or postgresql://...)
    REDIS_URL                     redis://127.0.0.1:6379/0 (shared cache, bus and budgets)
    STOCKGRAPH_CONFIG             path to the TOML file of tenants and warehouses
    STOCKGRAPH_JWT_SECRET         HS256 signing secret (at least 32 bytes)
    STOCKGRAPH_JWT_PRIVATE_KEYS   kid=path.pem,kid2=path2.pem (RS256/ES256; first is active)
    STOCKGRAPH_JWT_ISSUER, STOCKGRAPH_JWT_AUDIENCE, STOCKGRAPH_TOKEN_TTL_SECONDS
    STOCKGRAPH_GRAPHIQL           serve GraphiQL on GET /graphql (true/false)
    STOCKGRAPH_MAX_DEPTH, STOCKGRAPH_MAX_ALIASES, STOCKGRAPH_MAX_TOKENS,
    STOCKGRAPH_MAX_LIST_SIZE, STOCKGRAPH_MAX_PAGE_SIZE, STOCKGRAPH_DOCUMENT_CACHE_SIZE
    STOCKGRAPH_RESPONSE_CACHE_SIZE (0 turns it off), STOCKGRAPH_RESPONSE_CACHE_TTL_SECONDS
    STOCKGRAPH_READ_CACHE_SIZE    SKUs whose levels each process keeps (0 turns it off)
    STOCKGRAPH_REDIS_RETRY_SECONDS  while Redis is away, how often to try it again (5)
    STOCKGRAPH_MAX_SUBSCRIPTIONS_PER_CONNECTION (20), STOCKGRAPH_MAX_CONNECTIONS_PER_TENANT
    (1000), STOCKGRAPH_CONNECTION_INIT_TIMEOUT_SECONDS (10): WebSocket limits
    STOCKGRAPH_OUTBOX_POLL_SECONDS  how often the relay looks at the outbox unwoken (1)
    STOCKGRAPH_OUTBOX_RETENTION_HOURS  how long events stay replayable (168)
    STOCKGRAPH_EVENT_STREAM_LENGTH  events the Redis stream keeps, about (100000)
    STOCKGRAPH_REDIS_NAMESPACE    prefix of every Redis key and channel (by default one per
                                  database: stockgraph-<hash of DATABASE_URL>)
    STOCKGRAPH_MAX_QUERY_COST     the most one operation may cost (1000)
    STOCKGRAPH_COST_BUCKET_SIZE, STOCKGRAPH_COST_RESTORE_RATE
                                  every client's bucket of cost: 2000 points, 100 restored a second
    STOCKGRAPH_WEBHOOK_RETRY_SCHEDULE  seconds between attempts of an outbound webhook, a JSON
                                  list ([5, 30, 120, 600, 1800, 3600, 10800, 21600, 43200])
    STOCKGRAPH_WEBHOOK_TIMEOUT_SECONDS  the most one attempt may take (10)
    STOCKGRAPH_WEBHOOK_MAX_IN_FLIGHT  attempts at once per endpoint, per process (4)
    STOCKGRAPH_WEBHOOK_SECRET_OVERLAP_HOURS  how long a rotated-out secret still signs (24)

The TOML file::

    [[tenants]]
    id = "acme"
    name = "Acme Retail"

    [[warehouses]]
    tenant = "acme"
    code = "WH-00"
    name = "Berlin DC"
    dialect = "rest"
    region = "eu-central"
    lat = 52.52
    lng = 13.40
    [warehouses.connection]
    base_url = "http://127.0.0.1:9100"

    [[webhooks]]
    tenant = "acme"
    url = "https://oms.example.com/stockgraph"
    events = ["stock.changed", "sync.alert"]
    secret = "whsec_..."          # optional: Standard Webhooks form, 24+ random bytes

A bad value stops start-up with a :class:`ConfigError` that names the key and says what
was expected.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from stockgraph.domain.webhooks import (
    DEFAULT_RETRY_DELAYS,
    WebhookRefused,
    check_event_types,
    check_secret,
    check_url,
)

SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
KNOWN_DIALECTS = ("rest", "graphql", "x12", "simulated")


class ConfigError(Exception):
    """A setting is missing or has a bad value; the message names the key."""


class TenantConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=SLUG.pattern)
    name: str = Field(min_length=1, max_length=200)


class WarehouseConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    tenant: str = Field(pattern=SLUG.pattern)
    code: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")
    name: str = Field(min_length=1, max_length=200)
    dialect: str
    region: str = Field(min_length=1, max_length=64)
    lat: float | None = Field(default=None, ge=-90, le=90)
    lng: float | None = Field(default=None, ge=-180, le=180)
    connector_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9._-]{1,128}$")
    connection: dict[str, Any] = Field(default_factory=dict)

    @field_validator("dialect")
    @classmethod
    def _known_dialect(cls, value: str) -> str:
        if value not in KNOWN_DIALECTS:
            raise ValueError(f"one of {', '.join(KNOWN_DIALECTS)}")
        return value

    @property
    def resolved_connector_id(self) -> str:
        """The id a WMS uses in its webhook URL: ``tenant-code`` unless set."""
        return self.connector_id or f"{self.tenant}-{self.code}".lower()


class MappingConfig(BaseModel):
    """``[warehouses.connection.mapping]``: one WMS instance's codes in ours.

    ``skus`` maps WMS SKUs to ours (``identity_skus`` lets unlisted codes map to
    themselves); ``units`` gives base units per WMS unit for every SKU and ``sku_units``
    per SKU (``{"ACME-1" = {"CS" = 12}}``); ``locations`` maps WMS locations to warehouse
    codes (unlisted ones are the instance's own warehouse); ``statuses`` maps order
    statuses to the contract's.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    skus: dict[str, str] = Field(default_factory=dict)
    identity_skus: bool = False
    units: dict[str, int] = Field(default_factory=dict)
    sku_units: dict[str, dict[str, int]] = Field(default_factory=dict)
    locations: dict[str, str] = Field(default_factory=dict)
    statuses: dict[str, str] = Field(default_factory=dict)

    @field_validator("units")
    @classmethod
    def _positive_units(cls, value: dict[str, int]) -> dict[str, int]:
        if any(v < 1 for v in value.values()):
            raise ValueError("unit factors of at least 1")
        return value


class WebhookConfig(BaseModel):
    """``[[webhooks]]``: an endpoint a tenant's events are POSTed to (one per tenant and URL).

    Without ``secret`` one is made when the endpoint is first created (rotate it with the
    ``updateWebhookEndpoint`` mutation to learn it).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    tenant: str = Field(pattern=SLUG.pattern)
    url: str
    events: tuple[str, ...]
    secret: SecretStr | None = None
    description: str = Field(default="", max_length=500)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        try:
            return check_url(value)
        except WebhookRefused:
            raise ValueError("an absolute http:// or https:// URL") from None

    @field_validator("events")
    @classmethod
    def _known_events(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        try:
            return check_event_types(value)
        except WebhookRefused as exc:
            raise ValueError(exc.message) from None

    @field_validator("secret")
    @classmethod
    def _standard_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            try:
                check_secret(value.get_secret_value())
            except WebhookRefused as exc:
                raise ValueError(exc.message) from None
        return value


class Topology(BaseModel):
    """The tenants, warehouses and webhook endpoints declared in the TOML file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tenants: tuple[TenantConfig, ...] = ()
    warehouses: tuple[WarehouseConfig, ...] = ()
    webhooks: tuple[WebhookConfig, ...] = ()

    def check(self) -> Topology:
        tenants = {t.id for t in self.tenants}
        if len(tenants) != len(self.tenants):
            raise ConfigError("tenants: expected unique ids, found duplicates")
        seen_codes: set[tuple[str, str]] = set()
        seen_connectors: set[str] = set()
        for i, wh in enumerate(self.warehouses):
            if wh.tenant not in tenants:
                raise ConfigError(
                    f"warehouses[{i}].tenant: expected one of the declared tenants "
                    f"({', '.join(sorted(tenants)) or 'none'}), got {wh.tenant!r}"
                )
            key = (wh.tenant, wh.code)
            if key in seen_codes:
                raise ConfigError(
                    f"warehouses[{i}].code: {wh.code!r} appears twice for {wh.tenant}"
                )
            seen_codes.add(key)
            if wh.resolved_connector_id in seen_connectors:
                raise ConfigError(
                    f"warehouses[{i}].connector_id: {wh.resolved_connector_id!r} is not unique"
                )
            seen_connectors.add(wh.resolved_connector_id)
        seen_urls: set[tuple[str, str]] = set()
        for i, hook in enumerate(self.webhooks):
            if hook.tenant not in tenants:
                raise ConfigError(
                    f"webhooks[{i}].tenant: expected one of the declared tenants "
                    f"({', '.join(sorted(tenants)) or 'none'}), got {hook.tenant!r}"
                )
            if (hook.tenant, hook.url) in seen_urls:
                raise ConfigError(
                    f"webhooks[{i}].url: {hook.url!r} appears twice for {hook.tenant}"
                )
            seen_urls.add((hook.tenant, hook.url))
        return self


class Settings(BaseSettings):
    """Typed settings; see the module docstring for the variables."""

    model_config = SettingsConfigDict(env_prefix="STOCKGRAPH_", extra="ignore", frozen=True)

    database_url: str = Field(
        default="sqlite+aiosqlite:///./stockgraph.db", validation_alias="DATABASE_URL"
    )
    redis_url: str | None = Field(default=None, validation_alias="REDIS_URL")
    config: Path | None = None
    jwt_secret: SecretStr | None = None
    jwt_private_keys: str = ""
    jwt_issuer: str = Field(default="stockgraph", min_length=1)
    jwt_audience: str = Field(default="stockgraph", min_length=1)
    token_ttl_seconds: int = Field(default=3600, ge=60, le=86400)
    graphiql: bool = False
    max_depth: int = Field(default=12, ge=2, le=100)
    max_aliases: int = Field(default=30, ge=1, le=1000)
    max_tokens: int = Field(default=4000, ge=100, le=100_000)
    max_list_size: int = Field(default=250, ge=1, le=10_000)
    max_page_size: int = Field(default=100, ge=1, le=1000)
    document_cache_size: int = Field(default=512, ge=0, le=100_000)
    response_cache_size: int = Field(default=4096, ge=0, le=1_000_000)
    response_cache_ttl_seconds: float = Field(default=5.0, gt=0, le=3600)
    read_cache_size: int = Field(default=50_000, ge=0, le=10_000_000)
    redis_retry_seconds: float = Field(default=5.0, gt=0, le=600)
    outbox_poll_seconds: float = Field(default=1.0, gt=0, le=3600)
    outbox_retention_hours: float = Field(default=168.0, gt=0, le=24 * 3660)
    outbox_prune_seconds: float = Field(default=300.0, gt=0, le=86400)
    event_stream_length: int = Field(default=100_000, ge=1000, le=100_000_000)
    max_subscriptions_per_connection: int = Field(default=20, ge=1, le=10_000)
    max_connections_per_tenant: int = Field(default=1000, ge=1, le=1_000_000)
    connection_init_timeout_seconds: float = Field(default=10.0, gt=0, le=600)
    redis_namespace: str = Field(
        # Empty: one per database (see redis_prefix).
        default="",
        pattern=r"^([A-Za-z0-9][A-Za-z0-9_.:-]{0,63})?$",
    )
    max_query_cost: int = Field(default=1000, ge=1, le=10_000_000)
    cost_bucket_size: float = Field(default=2000.0, gt=0, le=1e12)
    cost_restore_rate: float = Field(default=100.0, gt=0, le=1e12)
    log_level: str = Field(default="info", pattern=r"^(debug|info|warning|error)$")
    webhook_retry_schedule: tuple[float, ...] = Field(default=DEFAULT_RETRY_DELAYS, min_length=1)
    webhook_timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    webhook_max_in_flight: int = Field(default=4, ge=1, le=1000)
    webhook_secret_overlap_hours: float = Field(default=24.0, ge=0, le=24 * 30)

    @field_validator("webhook_retry_schedule")
    @classmethod
    def _positive_delays(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if any(delay <= 0 for delay in value):
            raise ValueError("a JSON list of delays in seconds, each above zero")
        return value

    @field_validator("cost_bucket_size")
    @classmethod
    def _bucket_holds_the_largest_operation(cls, value: float, info: ValidationInfo) -> float:
        largest = info.data.get("max_query_cost")
        if isinstance(largest, int) and value < largest:
            raise ValueError(
                f"at least STOCKGRAPH_MAX_QUERY_COST ({largest}), or an operation "
                "the maximum allows could never run"
            )
        return value

    @field_validator("database_url")
    @classmethod
    def _database_scheme(cls, value: str) -> str:
        if not value.startswith(("sqlite", "postgres")):
            raise ValueError("a sqlite:// or postgresql:// URL")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("a redis://, rediss:// or unix:// URL")
        return value

    @field_validator("jwt_secret")
    @classmethod
    def _secret_length(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value().encode()) < 32:
            raise ValueError("a secret of at least 32 bytes")
        return value

    @property
    def redis_prefix(self) -> str:
        """What every Redis key and channel starts with: one namespace per deployment.

        Processes that share a database share the namespace; deployments with different
        databases never read each other's budgets, buckets or answers from one Redis.
        """
        if self.redis_namespace:
            return self.redis_namespace
        digest = hashlib.blake2b(self.database_url.encode(), digest_size=4).hexdigest()
        return f"stockgraph-{digest}"

    def private_key_paths(self) -> list[tuple[str, Path]]:
        """``kid=path`` pairs from STOCKGRAPH_JWT_PRIVATE_KEYS, in order (first is active)."""
        pairs: list[tuple[str, Path]] = []
        for part in filter(None, (p.strip() for p in self.jwt_private_keys.split(","))):
            kid, sep, path = part.partition("=")
            if not sep or not kid or not path:
                raise ConfigError(
                    "STOCKGRAPH_JWT_PRIVATE_KEYS: expected kid=path.pem[,kid=path.pem], "
                    f"got {part!r}"
                )
            if not Path(path).is_file():
                raise ConfigError(f"STOCKGRAPH_JWT_PRIVATE_KEYS: no key file at {path!r}")
            pairs.append((kid, Path(path)))
        return pairs


_ENV_NAMES = {"database_url": "DATABASE_URL", "redis_url": "REDIS_URL"}


def _describe(error: Mapping[str, Any], name_of: Any) -> str:
    loc = error.get("loc", ())
    key = name_of(loc)
    expected = str(error.get("msg", "a valid value"))
    for prefix in ("Value error, ", "Input should be "):
        expected = expected.removeprefix(prefix)
    if "input" in error and error.get("type") != "missing":
        return f"{key}: expected {expected}; got {error['input']!r}"
    return f"{key}: {expected}"


def load_settings(**overrides: Any) -> Settings:
    """Read settings from the environment; keyword ``overrides`` win (the CLI's flags)."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:

        def env_name(loc: tuple[Any, ...]) -> str:
            field = str(loc[0]) if loc else "?"
            if field.isupper():
                return field
            return _ENV_NAMES.get(field, f"STOCKGRAPH_{field.upper()}")

        raise ConfigError("; ".join(_describe(e, env_name) for e in exc.errors())) from None


def load_topology(path: Path | None) -> Topology:
    """Parse and check the TOML file of tenants and warehouses (empty if ``path`` is None)."""
    if path is None:
        return Topology()
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"STOCKGRAPH_CONFIG: no file at {str(path)!r}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    return parse_topology(raw, origin=str(path))


def parse_topology(raw: Mapping[str, Any], *, origin: str = "config") -> Topology:
    try:
        topology = Topology.model_validate(raw)
    except ValidationError as exc:

        def toml_key(loc: tuple[Any, ...]) -> str:
            key = ""
            for part in loc:
                key += f"[{part}]" if isinstance(part, int) else (f".{part}" if key else str(part))
            return f"{origin}: {key}"

        raise ConfigError("; ".join(_describe(e, toml_key) for e in exc.errors())) from None
    return topology.check()

"""What the ``rest`` dialect declares: its capabilities, its limits and its configuration."""

from __future__ import annotations

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, SecretStr, field_validator

from stockgraph.connectors.base import DialectSpec, RatePolicy

MAX_BATCH = 100
"""The most item codes one ``POST /v1/inventory/lookup`` accepts."""

MAX_PAGE_SIZE = 200
"""The largest ``page_size`` ``GET /v1/inventory`` accepts."""

SPEC = DialectSpec(
    name="rest",
    push=True,
    poll=False,
    max_batch=MAX_BATCH,
    rate=RatePolicy(kind="requests_per_second", rate=10.0, burst=10.0),
    idempotency=True,
)
"""Pushes signed webhooks, is never polled, 10 requests per second (bursts of 10), and
dedupes order submissions by ``external_id``."""


class RestConfig(BaseModel):
    """How to reach one ``rest`` WMS instance.

    >>> config = RestConfig(
    ...     base_url="https://wms.example.com", api_key="k-123", webhook_secrets=["whsec-1"]
    ... )
    >>> config.api_key
    SecretStr('**********')
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    base_url: AnyHttpUrl
    api_key: SecretStr = Field(json_schema_extra={"secret": True})
    """Sent as ``Authorization: ApiKey <key>``."""
    webhook_secrets: list[SecretStr] = Field(min_length=1, json_schema_extra={"secret": True})
    """Every secret a webhook signature may be made with (more than one while rotating)."""
    page_size: int = Field(default=100, ge=1, le=MAX_PAGE_SIZE)
    """Levels asked for per page of the inventory listing."""

    @field_validator("api_key")
    @classmethod
    def _api_key_not_blank(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().strip():
            raise ValueError("the API key is empty")
        return value

    @field_validator("webhook_secrets")
    @classmethod
    def _secrets_not_blank(cls, value: list[SecretStr]) -> list[SecretStr]:
        if any(not secret.get_secret_value() for secret in value):
            raise ValueError("a webhook secret is empty")
        return value

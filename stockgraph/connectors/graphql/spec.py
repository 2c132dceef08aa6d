"""What the ``graphql`` dialect can do and how one instance of it is configured."""

from __future__ import annotations

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, SecretStr

from stockgraph.connectors.base import DialectSpec, RatePolicy

BUCKET_SIZE = 1000.0
"""Credits the WMS's bucket holds when full."""
RESTORE_RATE = 50.0
"""Credits the WMS's bucket regains per second."""

SPEC = DialectSpec(
    name="graphql",
    push=True,
    poll=False,
    max_batch=50,
    rate=RatePolicy(kind="credits", rate=RESTORE_RATE, burst=BUCKET_SIZE),
    idempotency=True,
)
"""The WMS pushes signed webhooks, prices each query in credits, and dedupes orders by
their external id."""


class GraphqlConfig(BaseModel):
    """One instance's connection settings.

    >>> config = GraphqlConfig(
    ...     endpoint="https://wms.example/graphql", access_token="tok", webhook_secrets=["s1"]
    ... )
    >>> config.access_token
    SecretStr('**********')
    >>> str(config.endpoint)
    'https://wms.example/graphql'
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    endpoint: AnyHttpUrl
    """The full URL of the WMS's GraphQL endpoint."""
    access_token: SecretStr = Field(min_length=1)
    """Sent as ``X-Access-Token`` on every request."""
    webhook_secrets: list[SecretStr] = Field(default_factory=list)
    """Secrets the WMS may sign its webhooks with; several while one is being rotated."""
    page_size: int = Field(default=50, ge=1, le=250)
    """Inventory items asked for per page when listing every level."""

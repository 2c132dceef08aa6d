"""What the ``x12`` dialect declares: its capabilities, its limits and its configuration."""

from __future__ import annotations

from typing import Literal

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, SecretStr
from pydantic.config import JsonDict

from stockgraph.connectors.base import DialectSpec, RatePolicy

MAX_BATCH = 500
"""The most SKUs one 846 inquiry asks about."""

MAX_PAGE_SIZE = 500
"""The most documents one ``GET /mailbox/outbound`` returns."""

SPEC = DialectSpec(
    name="x12",
    push=False,
    poll=True,
    max_batch=MAX_BATCH,
    rate=RatePolicy(kind="polling_interval", rate=0.2, burst=1.0),
    inquiries=RatePolicy(kind="requests_per_second", rate=5.0, burst=10.0),
)
"""Never pushes: its mailbox is polled, at most once every five seconds. What is posted to
the mailbox (846 inquiries, 940 orders, 997 acknowledgements) is limited apart from the
polls: five a second, ten at once, unless the instance's ``inquiry_limit`` says otherwise."""

_SECRET: JsonDict = {"secret": True}
_INTERCHANGE_ID = r"^[0-9A-Za-z][0-9A-Za-z .\-]{0,14}$"


class X12Config(BaseModel):
    """How to reach one EDI warehouse's mailbox, and who each side is in the ISA.

    >>> config = X12Config(
    ...     mailbox_url="https://edi.example.com", username="acme", password="s3cret",
    ...     our_id="STOCKGRAPH", their_id="3PLWEST",
    ... )
    >>> config.password
    SecretStr('**********')
    >>> X12Config(
    ...     mailbox_url="https://edi.example.com", username="acme", password="s3cret",
    ...     our_id="A NAME LONGER THAN FIFTEEN", their_id="3PLWEST",
    ... )
    Traceback (most recent call last):
    pydantic_core._pydantic_core.ValidationError: 1 validation error for X12Config
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    mailbox_url: AnyHttpUrl
    """Where ``/mailbox/outbound`` and ``/mailbox/inbound`` live."""
    username: str = Field(min_length=1)
    password: SecretStr = Field(min_length=1, json_schema_extra=_SECRET)
    """Sent with ``username`` as HTTP Basic credentials."""
    our_id: str = Field(pattern=_INTERCHANGE_ID)
    """Our interchange id: ISA06 of what we send, ISA08 of what we accept."""
    their_id: str = Field(pattern=_INTERCHANGE_ID)
    """The warehouse's interchange id: ISA08 of what we send, ISA06 of what we accept."""
    our_qualifier: str = Field(default="ZZ", pattern=r"^[0-9A-Z]{2}$")
    their_qualifier: str = Field(default="ZZ", pattern=r"^[0-9A-Z]{2}$")
    usage: Literal["P", "T"] = "P"
    """ISA15 of what we send: production or test."""
    page_size: int = Field(default=100, ge=1, le=MAX_PAGE_SIZE)
    """Documents read from the mailbox per poll."""

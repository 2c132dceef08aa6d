"""Building connectors from configuration: bad settings name the instance and the key."""

from __future__ import annotations

import pytest

from stockgraph.connectors.base import RatePolicy
from stockgraph.connectors.registry import ConnectorConfigError, build_connector

REST = {"base_url": "http://127.0.0.1:9", "api_key": "k", "webhook_secrets": ["s"]}
X12 = {
    "mailbox_url": "http://127.0.0.1:9",
    "username": "u",
    "password": "p",
    "our_id": "US",
    "their_id": "THEM",
}


@pytest.mark.parametrize(
    ("dialect", "settings", "needle"),
    [
        ("sap", REST, "unknown dialect 'sap'"),
        ("rest", {**REST, "api_key": ""}, "api_key"),
        ("rest", {k: v for k, v in REST.items() if k != "base_url"}, "base_url"),
        ("rest", {**REST, "rate_limit": {"rate": 0, "burst": 5}}, "rate_limit.rate"),
        ("rest", {**REST, "rate_limit": {"rate": 5, "per": 1}}, "rate_limit"),
        ("rest", {**REST, "poll_interval_seconds": 5}, "not polled"),
        ("x12", {**X12, "poll_interval_seconds": -1}, "poll_interval_seconds"),
        ("rest", {**REST, "inquiry_limit": {"rate": 5, "burst": 5}}, "no separate inquiry"),
        ("x12", {**X12, "inquiry_limit": {"rate": 0, "burst": 5}}, "inquiry_limit.rate"),
        ("x12", {**X12, "inquiry_limit": 5}, "inquiry_limit: expected a table"),
    ],
)
def test_bad_settings_name_the_instance_and_the_key(
    dialect: str, settings: dict[str, object], needle: str
) -> None:
    with pytest.raises(ConnectorConfigError) as caught:
        build_connector(dialect, connector_id="wh-9", settings=settings)
    assert str(caught.value).startswith("wh-9: ")
    assert needle in str(caught.value)


async def test_an_instance_plan_changes_its_budget() -> None:
    built = build_connector("x12", connector_id="edi", settings={**X12, "poll_interval_seconds": 2})
    try:
        assert built.connector.spec.rate.rate == 0.5
        assert built.webhook_secrets == ()
    finally:
        await built.connector.aclose()


async def test_an_instance_plan_sets_its_inquiry_limit_apart_from_its_polls() -> None:
    settings = {**X12, "poll_interval_seconds": 2, "inquiry_limit": {"rate": 40, "burst": 60}}
    built = build_connector("x12", connector_id="edi", settings=settings)
    try:
        assert built.connector.spec.rate == RatePolicy("polling_interval", 0.5, 1)
        assert built.connector.spec.inquiries == RatePolicy("requests_per_second", 40, 60)
        assert built.runtime.inquiry_budget.policy == built.connector.spec.inquiries
        assert built.runtime.budget.policy == built.connector.spec.rate
    finally:
        await built.connector.aclose()

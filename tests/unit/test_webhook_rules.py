"""The pure rules of outbound webhooks: signatures, the body, the schedule, Retry-After."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import orjson
import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from stockgraph.domain.events import OutboxEvent, Topic
from stockgraph.domain.global_ids import event_cursor, warehouse_id
from stockgraph.domain.ids import Sku, TenantId, WarehouseId
from stockgraph.domain.retry_after import read_retry_after
from stockgraph.domain.webhooks import (
    DEFAULT_RETRY_DELAYS,
    DeliveryStatus,
    Outcome,
    RefusalCode,
    RetrySchedule,
    WebhookRefused,
    check_event_types,
    check_secret,
    check_url,
    new_secret,
    next_step,
    webhook_body,
)
from stockgraph.events.signing import signed_headers

NOW = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
EVENT = OutboxEvent(
    id=41,
    tenant_id=TenantId("acme"),
    topic=Topic.STOCK_CHANGED,
    warehouse_id=WarehouseId(3),
    sku=Sku("SKU-00001"),
    payload={"delta": {"onHand": 2}, "cause": "WEBHOOK", "occurredAt": "2026-03-04T05:06:00Z"},
    created_at=NOW,
)


def test_a_signature_verifies_with_the_standard_webhooks_verifier() -> None:
    secret = new_secret()
    body = webhook_body(EVENT, "WH-00")
    headers = signed_headers([secret], "msg_41_1", body, datetime.now(UTC))
    assert Webhook(secret).verify(body, headers) == orjson.loads(body)
    tampered = body.replace('"onHand":2', '"onHand":3')
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(tampered, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(body, headers)


def test_signed_with_two_secrets_either_verifies_and_no_other() -> None:
    """A rotation's overlap: the standard's verifier takes any one signature of the header."""
    new, old = new_secret(), new_secret()
    body = webhook_body(EVENT, "WH-00")
    headers = signed_headers([new, old], "msg_41_2", body, datetime.now(UTC))
    assert headers["webhook-signature"].count("v1,") == 2
    for secret in (new, old):
        assert Webhook(secret).verify(body, headers) == orjson.loads(body)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(body, headers)
    with pytest.raises(ValueError, match="at least one secret"):
        signed_headers([], "msg_41_3", body, datetime.now(UTC))


def test_the_body_carries_the_payload_cursor_sku_and_the_apis_warehouse_id() -> None:
    body = orjson.loads(webhook_body(EVENT, "WH-00"))
    assert body == {
        "type": "stock.changed",
        "timestamp": "2026-03-04T05:06:07Z",
        "data": {
            "delta": {"onHand": 2},
            "cause": "WEBHOOK",
            "occurredAt": "2026-03-04T05:06:00Z",
            "cursor": event_cursor(41),
            "sku": "SKU-00001",
            "warehouseId": warehouse_id("acme", "WH-00"),
        },
    }


def test_every_delay_is_jittered_within_a_fifth_of_the_schedule() -> None:
    schedule = RetrySchedule()
    assert schedule.attempts == len(DEFAULT_RETRY_DELAYS) + 1 == 10
    for n, delay in enumerate(DEFAULT_RETRY_DELAYS, start=1):
        low = schedule.delay_after(n, jitter=0.0)
        high = schedule.delay_after(n, jitter=0.999999)
        assert low == pytest.approx(0.8 * delay)
        assert high is not None and 0.8 * delay < high < 1.2 * delay
    assert schedule.delay_after(len(DEFAULT_RETRY_DELAYS) + 1, jitter=0.5) is None


def test_the_last_failed_attempt_of_the_schedule_is_dead_and_not_before() -> None:
    schedule = RetrySchedule(delays=(5.0, 30.0, 120.0))
    steps = [
        next_step(status_code=500, attempt_count=n, schedule=schedule, jitter=0.5)
        for n in range(1, 5)
    ]
    assert [s.status for s in steps] == [DeliveryStatus.FAILING] * 3 + [DeliveryStatus.DEAD]
    gone = next_step(status_code=410, attempt_count=1, schedule=schedule, jitter=0.5)
    assert (gone.outcome, gone.status) == (Outcome.GONE, DeliveryStatus.DISABLED)
    timeout = next_step(status_code=None, attempt_count=1, schedule=schedule, jitter=0.5)
    assert timeout.status is DeliveryStatus.FAILING


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_in_seconds_or_as_a_date_is_honoured_and_capped(status: int) -> None:
    schedule = RetrySchedule(delays=(5.0, 600.0))

    def delay(value: str) -> float | None:
        return next_step(
            status_code=status,
            attempt_count=1,
            schedule=schedule,
            jitter=0.5,
            headers={"Retry-After": value},
            now=NOW,
        ).delay_seconds

    assert delay("120") == 120
    assert delay(format_datetime(NOW + timedelta(seconds=300), usegmt=True)) == 300
    assert delay("86400") == 600  # never past the schedule's longest delay
    assert delay("1") == 5  # never sooner than the schedule
    assert delay("whenever") == 5


def test_retry_after_is_ignored_on_other_statuses() -> None:
    step = next_step(
        status_code=500,
        attempt_count=1,
        schedule=RetrySchedule(delays=(5.0, 600.0)),
        jitter=0.5,
        headers={"retry-after": "300"},
        now=NOW,
    )
    assert step.delay_seconds == 5
    assert read_retry_after(None, now=NOW) is None


@pytest.mark.parametrize(
    "url",
    ["ftp://a.example/x", "a.example/x", "https://", "javascript:alert(1)", "http://a b/", ""],
)
def test_only_absolute_http_urls_are_accepted(url: str) -> None:
    with pytest.raises(WebhookRefused) as refused:
        check_url(url)
    assert refused.value.code is RefusalCode.INVALID_URL


def test_event_types_and_secrets_are_checked() -> None:
    assert check_event_types(["sync.alert", "sync.alert"]) == ("sync.alert",)
    for wrong in (["order.shipped"], []):
        with pytest.raises(WebhookRefused) as refused:
            check_event_types(wrong)
        assert refused.value.code is RefusalCode.UNKNOWN_EVENT_TYPE
    assert check_secret(new_secret()).startswith("whsec_")
    for weak in ("whsec_c2hvcnQ=", "not-a-secret", "whsec_!!!"):
        with pytest.raises(WebhookRefused):
            check_secret(weak)

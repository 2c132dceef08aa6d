"""The demo sends acme's events to its own receiver, which verifies every signature and
answers 503 now and then: deliveries show retried attempts that end delivered."""

from __future__ import annotations

import time

import pytest

from tests.e2e.conftest import Demo

pytestmark = pytest.mark.e2e

DELIVERIES = (
    "{ deliveries(first: 20) { edges { node { messageId status attemptCount"
    " attempts { statusCode trigger } } } } }"
)


def test_the_demo_delivers_webhooks_through_retries(demo: Demo) -> None:
    assert "Webhooks" in demo.banner
    token = demo.token("acme", "admin")
    retried: list[dict[str, object]] = []
    for _ in range(120):  # the simulators' activity produces events; wait for a retry
        answer = demo.graphql(DELIVERIES, Authorization=f"Bearer {token}").json()
        assert "errors" not in answer, answer
        nodes = [edge["node"] for edge in answer["data"]["deliveries"]["edges"]]
        retried = [
            n
            for n in nodes
            if n["status"] == "DELIVERED"
            and n["attempts"]
            and n["attempts"][0]["statusCode"] == 503
        ]
        if retried:
            break
        time.sleep(0.5)  # within what the cost bucket restores
    assert retried, "no delivery was retried and then delivered"
    attempts = retried[0]["attempts"]
    assert isinstance(attempts, list)
    assert attempts[-1]["statusCode"] == 204
    assert retried[0]["attemptCount"] == len(attempts)

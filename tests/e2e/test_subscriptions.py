"""The demo over WebSocket: graphql-transport-ws, authenticated in connection_init."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.e2e.conftest import Demo

pytestmark = pytest.mark.e2e

PROTOCOL = "graphql-transport-ws"
STOCK_CHANGED = """
subscription($after: String) {
  stockChanged(after: $after) {
    cursor sku warehouse { id name }
    level { sku onHand available committed reserved incoming damaged safetyStock asOf source stale }
    delta { onHand available }
    cause correlationId occurredAt publishedAt
  }
}
"""


def _url(demo: Demo) -> str:
    return demo.base.replace("http://", "ws://") + "/graphql"


async def _send(ws: ClientConnection, message: dict[str, Any]) -> None:
    await ws.send(json.dumps(message))


async def _receive(ws: ClientConnection, seconds: float = 15.0) -> dict[str, Any]:
    raw = await asyncio.wait_for(ws.recv(), seconds)
    # Text frames: the reference client (graphql-ws) drops the connection on binary ones.
    assert isinstance(raw, str), f"a binary frame: {raw[:80]!r}"
    message: dict[str, Any] = json.loads(raw)
    return message


async def _connected(demo: Demo, payload: dict[str, str]) -> ClientConnection:
    ws = await connect(_url(demo), subprotocols=[PROTOCOL])  # type: ignore[list-item]
    await _send(ws, {"type": "connection_init", "payload": payload})
    return ws


async def _changes(demo: Demo, count: int, after: str | None = None) -> list[dict[str, Any]]:
    ws = await _connected(demo, {"Authorization": f"Bearer {demo.token()}"})
    try:
        assert (await _receive(ws))["type"] == "connection_ack"
        query = {"query": STOCK_CHANGED, "variables": {"after": after}}
        await _send(ws, {"id": "1", "type": "subscribe", "payload": query})
        changes = []
        while len(changes) < count:
            message = await _receive(ws)
            assert message["type"] == "next", message
            assert "errors" not in message["payload"], message
            changes.append(message["payload"]["data"]["stockChanged"])
        await _send(ws, {"id": "1", "type": "complete"})
        return changes
    finally:
        await ws.close()


def test_changes_arrive_live_with_every_contract_field(demo: Demo) -> None:
    [change] = asyncio.run(_changes(demo, 1))
    assert change["level"]["source"] == "PROJECTION"
    assert change["level"]["sku"] == change["sku"]
    assert set(change) == {
        "cursor",
        "sku",
        "warehouse",
        "level",
        "delta",
        "cause",
        "correlationId",
        "occurredAt",
        "publishedAt",
    }


def test_a_subscriber_resumes_after_its_cursor_with_no_gap_and_no_duplicate(demo: Demo) -> None:
    first = asyncio.run(_changes(demo, 4))
    resumed = asyncio.run(_changes(demo, 3, after=first[0]["cursor"]))
    assert [c["cursor"] for c in resumed] == [c["cursor"] for c in first[1:]]
    assert resumed == first[1:]


async def _shared_changes(demo: Demo, count: int) -> dict[tuple[int, str], list[Any]]:
    """Three subscriptions of one document: two on one connection, one on another."""
    sockets = [await _connected(demo, {"Authorization": f"Bearer {demo.token()}"}) for _ in "ab"]
    got: dict[tuple[int, str], list[Any]] = {(0, "a"): [], (0, "b"): [], (1, "a"): []}
    try:
        for ws in sockets:
            assert (await _receive(ws))["type"] == "connection_ack"
        for number, operation in got:
            payload = {"query": STOCK_CHANGED, "variables": {}}
            message = {"id": operation, "type": "subscribe", "payload": payload}
            await _send(sockets[number], message)
        while min(len(changes) for changes in got.values()) < count:
            for number, ws in enumerate(sockets):
                with contextlib.suppress(TimeoutError):
                    message = await _receive(ws, 0.2)
                    assert message["type"] == "next", message
                    got[(number, message["id"])].append(message["payload"])
        return got
    finally:
        for ws in sockets:
            await ws.close()


def test_subscribers_of_one_document_each_get_every_change_under_their_own_id(
    demo: Demo,
) -> None:
    got = asyncio.run(_shared_changes(demo, 4))
    cursors = [[p["data"]["stockChanged"]["cursor"] for p in ps] for ps in got.values()]
    common = set.intersection(*(set(c) for c in cursors))
    assert len(common) >= 2, cursors
    for payloads in got.values():
        assert "errors" not in payloads[0]
    # From the first change all three saw, they saw the same payloads.
    tails = [
        [p for p in payloads if p["data"]["stockChanged"]["cursor"] in common]
        for payloads in got.values()
    ]
    assert tails[0] == tails[1] == tails[2]
    for seen in cursors:
        assert len(seen) == len(set(seen))


def test_a_connection_without_valid_credentials_is_closed_with_4403(demo: Demo) -> None:
    async def refused(payload: dict[str, str]) -> int | None:
        ws = await _connected(demo, payload)
        with pytest.raises(ConnectionClosed) as closed:
            await _receive(ws)
        return closed.value.rcvd.code if closed.value.rcvd else None

    assert asyncio.run(refused({})) == 4403
    assert asyncio.run(refused({"Authorization": "Bearer not-a-token"})) == 4403


def test_subscribing_before_connection_init_is_closed_with_4401(demo: Demo) -> None:
    async def early() -> int | None:
        ws = await connect(_url(demo), subprotocols=[PROTOCOL])  # type: ignore[list-item]
        query = {"query": STOCK_CHANGED, "variables": {}}
        await _send(ws, {"id": "1", "type": "subscribe", "payload": query})
        with pytest.raises(ConnectionClosed) as closed:
            await _receive(ws)
        return closed.value.rcvd.code if closed.value.rcvd else None

    assert asyncio.run(early()) == 4401


def test_the_legacy_graphql_ws_protocol_is_refused(demo: Demo) -> None:
    async def legacy() -> None:
        try:
            ws = await connect(_url(demo), subprotocols=["graphql-ws"])  # type: ignore[list-item]
        except InvalidStatus:
            return  # refused at the handshake
        with pytest.raises(ConnectionClosed):
            await _send(ws, {"type": "connection_init", "payload": {}})
            await _receive(ws)

    asyncio.run(legacy())


def _sse_events(
    demo: Demo, body: dict[str, Any], count: int, **headers: str
) -> list[tuple[str, str]]:
    """The first ``count`` (event, data) pairs of a Server-Sent Events answer."""
    events: list[tuple[str, str]] = []
    kind = ""
    with httpx.stream(
        "POST",
        f"{demo.base}/graphql",
        json=body,
        headers={"Accept": "text/event-stream", **headers},
        timeout=20,
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("event: "):
                kind = line.removeprefix("event: ")
            elif line.startswith("data: ") or line == "data:":
                events.append((kind, line.removeprefix("data:").strip()))
                if len(events) == count:
                    break
    return events


def test_changes_stream_over_server_sent_events(demo: Demo) -> None:
    body = {"query": STOCK_CHANGED, "variables": {"after": None}}
    [(kind, data)] = _sse_events(demo, body, 1, Authorization=f"Bearer {demo.token()}")
    assert kind == "next"
    assert json.loads(data)["data"]["stockChanged"]["cursor"]


def test_a_query_over_server_sent_events_is_one_result_then_complete(demo: Demo) -> None:
    body = {"query": '{ item(sku: "SKU-00001") { sku } }'}
    events = _sse_events(demo, body, 2, Authorization=f"Bearer {demo.token()}")
    assert [kind for kind, _ in events] == ["next", "complete"]
    assert json.loads(events[0][1])["data"] == {"item": {"sku": "SKU-00001"}}


def test_server_sent_events_without_credentials_get_401(demo: Demo) -> None:
    response = httpx.post(
        f"{demo.base}/graphql",
        json={"query": STOCK_CHANGED},
        headers={"Accept": "text/event-stream"},
    )
    assert response.status_code == 401
    assert response.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"

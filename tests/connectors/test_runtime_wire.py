"""The call chain over real sockets, on the transport WMS calls use when none is injected.

The other runtime tests inject an in-memory transport; these run a small HTTP/1.1 server on
loopback, so what goes out and what comes back crosses aiohttp as in production.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import orjson
import pytest

from stockgraph.connectors.base import DialectSpec, RatePolicy
from stockgraph.connectors.errors import RateLimited, RetriableError
from stockgraph.connectors.retry import RetryPolicy
from stockgraph.connectors.runtime import InstanceRuntime

SPEC = DialectSpec(
    name="test",
    push=False,
    poll=True,
    max_batch=50,
    rate=RatePolicy(kind="requests_per_second", rate=1000.0, burst=1000.0),
)


@dataclass
class Seen:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Server:
    """Answers each request with the next scripted raw answer (None: never answers)."""

    answers: list[bytes | None]
    seen: list[Seen] = field(default_factory=list)
    port: int = 0

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, target, _version = lines[0].split(" ", 2)
                headers = {
                    name.strip().lower(): value.strip()
                    for name, _, value in (line.partition(":") for line in lines[1:] if line)
                }
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                self.seen.append(Seen(method, target, headers, body))
                answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
                if answer is None:
                    await asyncio.sleep(3600)
                writer.write(answer or b"")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def answer(status: str, body: bytes = b"{}", **headers: str) -> bytes:
    lines = [f"HTTP/1.1 {status}", f"content-length: {len(body)}"]
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    wms = Server(answers=[answer("200 OK")])
    listening = await asyncio.start_server(wms, "127.0.0.1", 0)
    wms.port = listening.sockets[0].getsockname()[1]
    try:
        yield wms
    finally:
        listening.close()


def runtime(port: int, **overrides: object) -> InstanceRuntime:
    options: dict[str, object] = {
        "instance_id": "wms-1",
        "base_url": f"http://127.0.0.1:{port}/api",
        "spec": SPEC,
        "headers": {"Authorization": "ApiKey k-1"},
        "retry": RetryPolicy(attempts=2, jitter=lambda: 0.0),
        "max_wait": 5.0,
    }
    options.update(overrides)
    return InstanceRuntime(**options)  # type: ignore[arg-type]


async def test_a_request_and_its_answer_cross_the_wire_whole(server: Server) -> None:
    server.answers = [answer("200 OK", b'{"items": [1, 2]}', x_credits_left="7")]
    rt = runtime(server.port)
    try:
        response = await rt.request(
            "POST", "/levels", params={"sku": ["A-1", "B 2"]}, json={"want": ["A-1"]}
        )
    finally:
        await rt.aclose()
    assert response.status_code == 200
    assert response.json() == {"items": [1, 2]}
    assert response.headers["x-credits-left"] == "7"
    (seen,) = server.seen
    assert (seen.method, seen.target) == ("POST", "/api/levels?sku=A-1&sku=B+2")
    assert seen.headers["authorization"] == "ApiKey k-1"
    assert seen.headers["content-type"] == "application/json"
    assert orjson.loads(seen.body) == {"want": ["A-1"]}


async def test_connections_are_kept_alive_between_calls(server: Server) -> None:
    opened: list[int] = []
    original = server.__call__

    async def counting(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        opened.append(1)
        await original(reader, writer)

    listening = await asyncio.start_server(counting, "127.0.0.1", 0)
    rt = runtime(listening.sockets[0].getsockname()[1])
    try:
        for _ in range(5):
            assert (await rt.request("GET", "/ping")).status_code == 200
    finally:
        await rt.aclose()
        listening.close()
    assert len(server.seen) == 5
    assert len(opened) == 1


async def test_a_429_over_the_wire_is_throttled_for_its_retry_after(server: Server) -> None:
    server.answers = [answer("429 Too Many Requests", retry_after="30")]
    rt = runtime(server.port, max_wait=1.0)
    try:
        with pytest.raises(RateLimited) as raised:
            await rt.request("GET", "/levels")
    finally:
        await rt.aclose()
    assert raised.value.retry_after == 30.0
    assert len(server.seen) == 1


async def test_a_server_error_is_retried_then_answered(server: Server) -> None:
    server.answers = [answer("503 Service Unavailable"), answer("200 OK", b'{"ok": true}')]
    rt = runtime(server.port)
    try:
        response = await rt.request("GET", "/levels")
    finally:
        await rt.aclose()
    assert response.json() == {"ok": True}
    assert len(server.seen) == 2
    assert rt.stats().retries == 1


async def test_a_silent_server_times_out_as_a_retriable_error(server: Server) -> None:
    server.answers = [None]
    rt = runtime(server.port, timeout=0.2, retry=RetryPolicy(attempts=1))
    try:
        with pytest.raises(RetriableError, match="timed out"):
            await rt.request("GET", "/levels")
    finally:
        await rt.aclose()


async def test_nobody_listening_is_a_retriable_error() -> None:
    listening = await asyncio.start_server(lambda _r, _w: None, "127.0.0.1", 0)
    port = listening.sockets[0].getsockname()[1]
    listening.close()
    await listening.wait_closed()
    rt = runtime(port, retry=RetryPolicy(attempts=1))
    try:
        with pytest.raises(RetriableError):
            await rt.request("GET", "/levels")
    finally:
        await rt.aclose()
    assert rt.stats().errors == 1

"""Subscriber fan-out: one change to 1,000 subscribers of the same subscription document.

The same Stockgraph as ``sync_latency.py`` (``stockgraph serve`` on a fresh SQLite file,
quiet simulated rest instances). ``--subscribers`` WebSocket clients (graphql-transport-ws,
a bearer token in ``connection_init``) all subscribe to the same ``stockChanged`` document
with the same variables (one SKU). Then, ``--rounds`` times, one signed webhook counts that
SKU at a new on-hand figure, and every subscriber should get one ``next`` for it. A delivery's
latency runs from the webhook's first byte sent to the moment its frame reached the
subscriber's socket.

The subscribers are a bare WebSocket client over asyncio protocols (one read callback per
arriving chunk, frames parsed after the round): a full client library costs ~30 µs of
Python per message on the receiving side, which for 1,000 messages at once would measure
the client instead of the server.

Reported: deliveries expected, received, missing and duplicated; latency p50/p99/max over
all deliveries and the median of each round's slowest; Stockgraph's CPU per change; its
garbage collections during the rounds (from ``stockgraph_gc_pause_seconds`` on /metrics).
The exit status is 1 when the target (all delivered, p99 < 50 ms) is missed, 2 when the run
could not be measured.

    .venv/bin/python benchmarks/fanout_subscribers.py --json /tmp/fanout_subscribers.json
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import json
import os
import platform
import re
import statistics
import struct
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fanout
import orjson
from _shared import BenchmarkError, checkout, cpu_ticks, log, percentile, run_in_workdir
from fanout import Connection, Stack, cpu_ms
from fanout import webhook_targets as targets_of
from sync_latency import (
    Webhook,
    bearer_token,
    quiet_rest_stack,
    run_loop,
    schedule,
    signed,
    sku_pool,
)

TARGET_P99_MS = 50.0
DOCUMENT = (
    "subscription($skus: [String!]) "
    "{ stockChanged(skus: $skus) { cursor sku warehouse { id } level { onHand available } } }"
)


# ---------------------------------------------------------------------------------------
# A bare graphql-transport-ws subscriber


def _frame(text: str) -> bytes:
    """A masked text frame, as a client must send it."""
    payload = text.encode()
    mask = os.urandom(4)
    size = len(payload)
    head = b"\x81" + (
        bytes([0x80 | size])
        if size < 126
        else b"\xfe" + struct.pack("!H", size)
        if size < 65536
        else b"\xff" + struct.pack("!Q", size)
    )
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + masked


class Subscriber(asyncio.Protocol):
    """One connection: handshake, ``connection_init``, ``subscribe``, then it records each
    chunk of bytes with the time it arrived and parses frames only when asked."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.handshake = bytearray()
        self.upgraded = asyncio.get_running_loop().create_future()
        self.chunks: list[tuple[float, bytes]] = []
        self.buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.upgraded.done():
            self.chunks.append((time.perf_counter(), data))
            return
        self.handshake += data
        head, sep, rest = bytes(self.handshake).partition(b"\r\n\r\n")
        if not sep:
            return
        if not head.startswith(b"HTTP/1.1 101"):
            self.upgraded.set_exception(BenchmarkError(f"upgrade refused: {head[:200]!r}"))
            return
        self.upgraded.set_result(None)
        if rest:
            self.chunks.append((time.perf_counter(), rest))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.upgraded.done():
            self.upgraded.set_exception(BenchmarkError(f"connection lost: {exc}"))

    def send(self, message: dict[str, Any]) -> None:
        assert self.transport is not None
        self.transport.write(_frame(json.dumps(message)))

    def messages(self) -> list[tuple[float, dict[str, Any]]]:
        """Every complete frame received since the last call, with its chunk's arrival time;
        answers pings as it goes."""
        out: list[tuple[float, dict[str, Any]]] = []
        chunks, self.chunks = self.chunks, []
        for arrived, data in chunks:
            self.buffer += data
            while True:
                parsed = self._take()
                if parsed is None:
                    break
                opcode, payload = parsed
                if opcode == 0x9:  # ping: answer with a pong carrying the same bytes
                    assert self.transport is not None
                    mask = os.urandom(4)
                    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
                    self.transport.write(bytes([0x8A, 0x80 | len(payload)]) + mask + body)
                elif opcode in (0x1, 0x2):  # Stockgraph sends its JSON as binary frames
                    out.append((arrived, orjson.loads(payload)))
                elif opcode == 0x8:
                    code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                    raise BenchmarkError(f"closed by the server: {code} {payload[2:]!r}")
        return out

    def _take(self) -> tuple[int, bytes] | None:
        data = self.buffer
        if len(data) < 2:
            return None
        opcode = data[0] & 0x0F
        size = data[1] & 0x7F
        at = 2
        if size == 126:
            if len(data) < 4:
                return None
            size, at = struct.unpack("!H", data[2:4])[0], 4
        elif size == 127:
            if len(data) < 10:
                return None
            size, at = struct.unpack("!Q", data[2:10])[0], 10
        if len(data) < at + size:
            return None
        self.buffer = data[at + size :]
        return opcode, data[at : at + size]


async def open_subscriber(host: str, port: int, token: str, sku: str) -> Subscriber:
    loop = asyncio.get_running_loop()
    _transport, sub = await loop.create_connection(Subscriber, host, port)
    key = base64.b64encode(os.urandom(16)).decode()
    assert sub.transport is not None
    sub.transport.write(
        (
            f"GET /graphql HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: graphql-transport-ws\r\n\r\n"
        ).encode()
    )
    await asyncio.wait_for(sub.upgraded, 30)
    sub.send({"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}})
    deadline = time.perf_counter() + 30
    while True:
        found = sub.messages()
        if any(m.get("type") == "connection_ack" for _t, m in found):
            break
        if found or time.perf_counter() > deadline:
            raise BenchmarkError(f"connection_init answered {found}")
        await asyncio.sleep(0.01)
    sub.send(
        {
            "id": "1",
            "type": "subscribe",
            "payload": {"query": DOCUMENT, "variables": {"skus": [sku]}},
        }
    )
    return sub


# ---------------------------------------------------------------------------------------
# The rounds


@dataclass
class Rounds:
    latencies_ms: list[float] = field(default_factory=list)
    slowest_ms: list[float] = field(default_factory=list)
    expected: int = 0
    received: int = 0
    missing: int = 0
    duplicates: int = 0
    errors: list[str] = field(default_factory=list)


def gc_counts(base: str) -> dict[str, float]:
    """``stockgraph_gc_pause_seconds`` count and sum per generation, and the longest pause."""
    with urllib.request.urlopen(base + "/metrics", timeout=10) as answer:
        text = answer.read().decode()
    found: dict[str, float] = {}
    pattern = (
        r"^stockgraph_gc_pause_(seconds_count|seconds_sum|longest_seconds)"
        r'\{generation="(\d)"\} (\S+)$'
    )
    for kind, generation, value in re.findall(pattern, text, flags=re.MULTILINE):
        found[f"{kind}:{generation}"] = float(value)
    return found


async def measure(
    stack: Stack, token: str, sku: str, webhooks: list[Webhook], args: argparse.Namespace
) -> dict[str, Any]:
    host, port = "127.0.0.1", stack.port
    log(f"[fanout-subs] opening {args.subscribers} subscriptions …")
    subs: list[Subscriber] = []
    for first in range(0, args.subscribers, 100):
        count = min(100, args.subscribers - first)
        subs += await asyncio.gather(
            *(open_subscriber(host, port, token, sku) for _ in range(count))
        )
    await asyncio.sleep(2.0)
    for sub in subs:
        early = sub.messages()
        if early:
            raise BenchmarkError(f"a subscriber got {early[0][1]} before any change")
    conn = Connection(host, port)
    await conn.open()
    rounds = Rounds()
    warm = args.warmup
    gc_before: dict[str, float] = {}
    ticks = None
    try:
        for webhook in webhooks:
            if webhook.index == warm:
                gc_before = gc_counts(stack.base)
                ticks = cpu_ticks(stack.pid)
            body, headers = signed(webhook, "fan")
            sent = time.perf_counter()
            status, answer = await conn.post(webhook.target.path, body, headers)
            if not 200 <= status < 300:
                raise BenchmarkError(f"webhook answered {status}: {answer[:200]!r}")
            await asyncio.sleep(args.gap)
            if webhook.index < warm:
                for sub in subs:
                    sub.messages()
                continue
            tally_round(subs, webhook, sent, rounds)
        ticks_after = cpu_ticks(stack.pid)
        gc_after = gc_counts(stack.base)
    finally:
        await conn.close()
        for sub in subs:
            if sub.transport is not None:
                sub.transport.close()
    measured = len(webhooks) - warm
    server_cpu = cpu_ms(ticks, ticks_after)
    lat = rounds.latencies_ms
    return {
        "subscribers": len(subs),
        "rounds": measured,
        "gap_s": args.gap,
        "expected": rounds.expected,
        "received": rounds.received,
        "missing": rounds.missing,
        "duplicates": rounds.duplicates,
        "errors": rounds.errors[:20],
        "latency_ms": {
            "p50": percentile(lat, 50),
            "p90": percentile(lat, 90),
            "p99": percentile(lat, 99),
            "max": max(lat, default=float("nan")),
        },
        "slowest_per_round_ms": {
            "median": statistics.median(rounds.slowest_ms) if rounds.slowest_ms else None,
            "max": max(rounds.slowest_ms, default=float("nan")),
        },
        "stockgraph_cpu_ms_per_change": None if server_cpu is None else server_cpu / measured,
        "gc": {
            generation: {
                "collections": gc_after.get(f"seconds_count:{generation}", 0.0)
                - gc_before.get(f"seconds_count:{generation}", 0.0),
                "pause_ms": 1000.0
                * (
                    gc_after.get(f"seconds_sum:{generation}", 0.0)
                    - gc_before.get(f"seconds_sum:{generation}", 0.0)
                ),
                "longest_ever_ms": 1000.0 * gc_after.get(f"longest_seconds:{generation}", 0.0),
            }
            for generation in ("0", "1", "2")
        },
    }


def tally_round(subs: Sequence[Subscriber], webhook: Webhook, sent: float, into: Rounds) -> None:
    """Each subscriber should have exactly one ``next`` for this webhook's figure."""
    slowest = 0.0
    for number, sub in enumerate(subs):
        into.expected += 1
        got = 0
        for arrived, message in sub.messages():
            if message.get("type") != "next" or message["payload"].get("errors"):
                into.errors.append(f"subscriber {number}: {str(message)[:300]}")
                continue
            change = message["payload"]["data"]["stockChanged"]
            if int(change["level"]["onHand"]) != webhook.on_hand:
                into.errors.append(f"subscriber {number}: a stray change {change}")
                continue
            got += 1
            if got == 1:
                ms = (arrived - sent) * 1000.0
                into.latencies_ms.append(ms)
                slowest = max(slowest, ms)
        into.received += min(got, 1)
        into.missing += got == 0
        into.duplicates += max(got - 1, 0)
    into.slowest_ms.append(slowest)


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    stack = quiet_rest_stack("fanout-subs", workdir, 1, args)
    try:
        stack.start()
        synced_s = stack.wait_synced()
        log(f"[fanout-subs] {len(stack.members)} rest instance synced {synced_s:.1f} s after ready")
        token = bearer_token(stack)
        pool, codes = sku_pool(stack, 1)
        webhooks = schedule(targets_of(stack), pool, codes, args.warmup + args.rounds)
        if args.load_cpus:
            os.sched_setaffinity(0, {int(c) for c in args.load_cpus.split(",")})
        return run_loop(measure(stack, token, pool[0], webhooks, args))
    finally:
        stack.stop()


def markdown(meta: dict[str, Any], r: dict[str, Any]) -> str:
    lat = r["latency_ms"]
    slow = r["slowest_per_round_ms"]
    gc = r["gc"]
    cpu = r["stockgraph_cpu_ms_per_change"]
    return (
        "\n".join(
            [
                f"# Subscriber fan-out, {meta['date']}",
                "",
                *(f"- {k}: {v}" for k, v in meta["describe"].items()),
                "",
                f"{r['subscribers']} subscribers of one document, {r['rounds']} changes "
                f"{r['gap_s']:g} s apart:",
                "",
                "| expected | received | missing | duplicated | p50 | p90 | p99 | max "
                "| slowest per change (median) | Stockgraph CPU per change |",
                "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
                f"| {r['expected']:,} | {r['received']:,} | {r['missing']:,} | {r['duplicates']:,} "
                f"| {lat['p50']:.1f} ms | {lat['p90']:.1f} ms | {lat['p99']:.1f} ms "
                f"| {lat['max']:.1f} ms | {slow['median']:.1f} ms | "
                + (f"{cpu:.1f} ms |" if cpu is not None else "n/a |"),
                "",
                "Garbage collections in Stockgraph during the changes (generation: count, total "
                "pause; longest pause since start): "
                + "; ".join(
                    f"{g}: {v['collections']:.0f}, {v['pause_ms']:.1f} ms "
                    f"(longest {v['longest_ever_ms']:.1f} ms)"
                    for g, v in gc.items()
                )
                + ".",
                "",
                f"- all delivered, p99 < {TARGET_P99_MS:g} ms: "
                f"**{'met' if passed(r) else 'not met'}**",
                *(["", "Errors:", *(f"- `{e}`" for e in r["errors"])] if r["errors"] else []),
            ]
        )
        + "\n"
    )


def passed(r: dict[str, Any]) -> bool:
    return (
        r["missing"] == 0
        and r["duplicates"] == 0
        and not r["errors"]
        and r["received"] == r["expected"]
        and r["latency_ms"]["p99"] < TARGET_P99_MS
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    shared = fanout.parse_args([])
    p = argparse.ArgumentParser(
        description="One change to many subscribers of the same document, over WebSocket.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--subscribers", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=30, help="changes measured")
    p.add_argument("--warmup", type=int, default=3, help="changes before measuring")
    p.add_argument("--gap", type=float, default=0.5, help="seconds between changes")
    p.add_argument("--python", default=shared.python, help="interpreter for Stockgraph")
    p.add_argument("--server-cpus", default=shared.server_cpus, help="CPUs for Stockgraph")
    p.add_argument(
        "--load-cpus", default=shared.load_cpus, help="CPUs for the fleet and this process"
    )
    p.add_argument("--json", type=Path, help="write every figure here")
    args = p.parse_args(argv)
    if args.subscribers < 1 or args.rounds < 1 or args.warmup < 0 or args.gap <= 0:
        p.error("--subscribers and --rounds must be ≥ 1, --warmup ≥ 0, --gap > 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)

    def measured(workdir: Path) -> int:
        result = run(args, workdir)
        meta = {
            "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "describe": {
                "host": f"{platform.machine()}, {os.cpu_count()} CPUs, "
                f"Python {platform.python_version()}",
                "pinning": (
                    f"Stockgraph on CPU {args.server_cpus}, the fleet, sender and subscribers "
                    f"on CPU {args.load_cpus}"
                    if args.server_cpus and args.load_cpus
                    else "unpinned"
                ),
                "commit": checkout(),
            },
        }
        print(markdown(meta, result))
        if args.json:
            args.json.write_text(json.dumps({"meta": meta, "result": result}, indent=2))
        return 0 if passed(result) else 1

    return run_in_workdir("fanout_subscribers", measured)


if __name__ == "__main__":
    raise SystemExit(main())

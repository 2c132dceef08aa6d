"""Sync latency: from a signed WMS webhook sent to the ``stockChanged`` message received.

A Stockgraph of its own (``stockgraph serve`` over a fresh SQLite file with the demo
catalogue) in front of 8 quiet simulated rest instances, set up as ``fanout.py``'s ingestion
part does. ``--subscribers`` WebSocket clients (graphql-transport-ws, a bearer token in
``connection_init``) each subscribe to ``stockChanged`` for a few SKUs of a pool; then
signed ``inventory.counted`` webhooks go out on an open schedule (``--rate`` a second for
``--duration`` seconds, after a short warm-up), each counting one pool SKU at one instance
at an on-hand figure no other webhook uses. A ``next`` message is matched to its webhook by
that figure, so every delivery has a latency: webhook's first byte sent → message read, both
taken with ``time.perf_counter`` in this one process (the subscribers and the sender share
one event loop).

Reported: webhooks sent and acknowledged, deliveries expected (each acknowledged webhook
times the subscribers of its SKU), received, missing and duplicated, latency p50/p90/p99/max
and Stockgraph's CPU. Stockgraph runs pinned to CPU 0, the fleet and this process to CPU 1.
The exit status is 1 when the p99 target (< 100 ms) is missed or a delivery is missing or
duplicated, 2 when the run could not be measured.

    .venv/bin/python benchmarks/sync_latency.py --json /tmp/sync_latency.json
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import random
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fanout
import orjson
from _shared import (
    BenchmarkError,
    checkout,
    client_token,
    cpu_ticks,
    log,
    percentile,
    terminate_as_interrupt,
)
from fanout import (
    DIALECTS,
    FANOUT_INSTANCES,
    INGEST_INSTANCES,
    TENANT,
    Connection,
    Stack,
    Target,
    cpu_ms,
    demo_instances,
    idle_cpu,
    watch_foreign,
    webhook_body,
    webhook_targets,
)
from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Subprotocol

from stockgraph.connectors.signing import EVENT_ID_HEADER, SIGNATURE_HEADER, sign

TARGET_P99_MS = 100.0
PROMISE_MS = 2000.0
PROTOCOL = Subprotocol("graphql-transport-ws")
STOCK_CHANGED = (
    "subscription($skus: [String!]) "
    "{ stockChanged(skus: $skus) { cursor sku level { onHand } occurredAt } }"
)
FIRST_ON_HAND = 1_000
"""Webhook ``i`` counts ``FIRST_ON_HAND + i``: no two webhooks (and no synced level) agree."""


class _Chosen(random.Random):
    """Makes ``fanout.webhook_body`` count one given item at a given on-hand figure.

    ``webhook_body`` draws its items and figures from the random generator it is handed;
    this one answers each draw with the choice made here, so the body is the rest dialect's
    own webhook that ``fanout.py`` checks, with exactly one known count in it.
    """

    def __init__(self, code: str, on_hand: int) -> None:
        super().__init__(0)
        self.code = code
        self.on_hand = on_hand

    def sample(self, population: Any, k: int, *, counts: Any = None) -> list[str]:  # type: ignore[override]
        return [self.code]

    def randint(self, a: int, b: int) -> int:
        return 1

    def randrange(self, start: int, stop: int | None = None, step: int = 1) -> int:
        return self.on_hand


@dataclass(frozen=True)
class Webhook:
    index: int
    target: Target
    sku: str
    code: str

    @property
    def on_hand(self) -> int:
        return FIRST_ON_HAND + self.index


@dataclass
class Tally:
    """What the sender and the subscribers saw, in ``perf_counter`` seconds."""

    sent_at: dict[int, float] = field(default_factory=dict)
    acked: set[int] = field(default_factory=set)
    ack_ms: list[float] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    late_sends: int = 0
    received: dict[tuple[int, int], float] = field(default_factory=dict)
    """(subscriber, webhook) → when its ``next`` was read."""
    duplicates: int = 0
    strays: int = 0
    """``next`` messages that match no webhook of this run (or the wrong SKU)."""
    errors: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------
# Setup


def bearer_token(stack: Stack) -> str:
    """A bearer token for a new read-only client of the benchmark's tenant."""
    return client_token(
        python=stack.python,
        env=stack.env,
        workdir=stack.workdir,
        base_url=stack.base,
        tenant=TENANT,
    )


def sku_pool(stack: Stack, size: int) -> tuple[list[str], dict[str, dict[str, str]]]:
    """``size`` SKUs every instance maps, and each instance's SKU → item code."""
    codes = {
        m.connector_id: {sku: code for code, sku in m.connection["mapping"]["skus"].items()}
        for m in stack.members
    }
    shared = sorted(set.intersection(*(set(by_sku) for by_sku in codes.values())))
    if len(shared) < size:
        raise BenchmarkError(f"--skus {size}: the instances share only {len(shared)} SKUs")
    return shared[:size], codes


def subscriptions(subscribers: int, pool: Sequence[str], per: int) -> list[list[str]]:
    """Subscriber ``i`` asks for ``per`` consecutive pool SKUs from ``i * per``."""
    return [[pool[(i * per + j) % len(pool)] for j in range(per)] for i in range(subscribers)]


def schedule(
    targets: Sequence[Target], pool: Sequence[str], codes: dict[str, dict[str, str]], count: int
) -> list[Webhook]:
    """Webhook ``i`` goes to instance ``i mod T`` and counts pool SKU ``(i div T) mod S``."""
    out = []
    for i in range(count):
        target = targets[i % len(targets)]
        sku = pool[(i // len(targets)) % len(pool)]
        out.append(Webhook(i, target, sku, codes[target.connector_id][sku]))
    return out


def signed(webhook: Webhook, prefix: str) -> tuple[bytes, dict[str, str]]:
    """The rest dialect's webhook counting ``webhook``'s SKU at its figure, with the next
    sequence and event id of its instance, and the headers that sign it."""
    target = webhook.target
    target.sequence += 1
    event_id = f"{prefix}-{target.connector_id}-{target.sequence}"
    chosen = _Chosen(webhook.code, webhook.on_hand)
    body, _ = webhook_body(target, event_id, target.sequence, chosen)
    headers = {
        SIGNATURE_HEADER: sign(body, target.secret, timestamp=int(time.time())),
        EVENT_ID_HEADER: event_id,
        "Content-Type": "application/json",
    }
    return body, headers


def quiet_rest_stack(name: str, workdir: Path, instances: int, args: argparse.Namespace) -> Stack:
    """A Stockgraph of its own in front of ``instances`` quiet simulated rest WMSs."""
    rest = [i for i in range(FANOUT_INSTANCES) if DIALECTS[i % len(DIALECTS)] == "rest"]
    return Stack(
        name=name,
        workdir=workdir / name,
        instances=demo_instances(rest[:instances]),
        latency_ms=0.0,
        python=args.python,
        server_cpus=args.server_cpus or None,
        other_cpus=args.load_cpus or None,
    )


# ---------------------------------------------------------------------------------------
# The subscribers and the sender, one event loop


async def subscribe(url: str, token: str, skus: Sequence[str]) -> ClientConnection:
    ws = await connect(
        url, subprotocols=[PROTOCOL], ping_interval=None, max_queue=None, open_timeout=60
    )
    await ws.send(json.dumps({"type": "connection_init", "payload": {"Authorization": token}}))
    ack = json.loads(await asyncio.wait_for(ws.recv(), 30))
    if ack.get("type") != "connection_ack":
        raise BenchmarkError(f"connection_init answered {ack}")
    payload = {"query": STOCK_CHANGED, "variables": {"skus": list(skus)}}
    await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": payload}))
    return ws


async def listen(
    ws: ClientConnection,
    number: int,
    skus: Sequence[str],
    tally: Tally,
    by_on_hand: dict[int, Webhook],
) -> None:
    clock = time.perf_counter
    wanted = set(skus)
    received = tally.received
    async for raw in ws:
        now = clock()
        message = orjson.loads(raw)
        if message.get("type") != "next":
            tally.errors.append(f"subscriber {number}: {str(message)[:300]}")
            continue
        payload = message["payload"]
        if payload.get("errors"):
            tally.errors.append(f"subscriber {number}: {str(payload['errors'])[:300]}")
            continue
        change = payload["data"]["stockChanged"]
        webhook = by_on_hand.get(int(change["level"]["onHand"]))
        if webhook is None or webhook.sku != change["sku"] or webhook.sku not in wanted:
            tally.strays += 1
            continue
        key = (number, webhook.index)
        if key in received:
            tally.duplicates += 1
        else:
            received[key] = now


async def send(
    webhooks: Sequence[Webhook], tally: Tally, *, rate: float, workers: int, host: str, port: int
) -> None:
    """An open loop: webhook ``i`` is due ``i / rate`` after the start, on the next free worker."""
    connections = [Connection(host, port) for _ in range(workers)]
    await asyncio.gather(*(c.open() for c in connections))
    clock = time.perf_counter
    start = clock() + 0.05
    next_index = 0

    async def worker(conn: Connection) -> None:
        nonlocal next_index
        while next_index < len(webhooks):
            webhook = webhooks[next_index]
            next_index += 1
            delay = start + webhook.index / rate - clock()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -0.01:
                tally.late_sends += 1
            body, headers = signed(webhook, "sync")
            tally.sent_at[webhook.index] = clock()
            try:
                status, _answer = await conn.post(webhook.target.path, body, headers)
            except (OSError, asyncio.IncompleteReadError) as exc:
                tally.statuses[type(exc).__name__] += 1
                continue
            tally.statuses[str(status)] += 1
            if 200 <= status < 300:
                tally.acked.add(webhook.index)
                tally.ack_ms.append((clock() - tally.sent_at[webhook.index]) * 1000.0)

    try:
        await asyncio.gather(*(worker(c) for c in connections))
    finally:
        for conn in connections:
            await conn.close()


async def measure(
    stack: Stack,
    token: str,
    groups: list[list[str]],
    webhooks: list[Webhook],
    warm: int,
    args: argparse.Namespace,
) -> dict[str, Any]:
    tally = Tally()
    by_on_hand = {w.on_hand: w for w in webhooks}
    url = stack.base.replace("http://", "ws://") + "/graphql"
    log(f"[sync] opening {len(groups)} subscriptions …")
    opened = time.perf_counter()
    sockets: list[ClientConnection] = []
    for first in range(0, len(groups), 50):
        batch = groups[first : first + 50]
        sockets += await asyncio.gather(
            *(subscribe(url, f"Bearer {token}", skus) for skus in batch)
        )
    listeners = [
        asyncio.create_task(listen(ws, n, groups[n], tally, by_on_hand))
        for n, ws in enumerate(sockets)
    ]
    log(f"[sync]   subscribed in {time.perf_counter() - opened:.1f} s")
    await asyncio.sleep(2.0)
    if tally.errors:
        raise BenchmarkError("subscriptions failed: " + "; ".join(tally.errors[:3]))

    listeners_of: dict[str, list[int]] = {}
    for n, skus in enumerate(groups):
        for sku in set(skus):
            listeners_of.setdefault(sku, []).append(n)
    host, port = "127.0.0.1", stack.port
    try:
        log(f"[sync] warm-up: {warm} webhooks at {args.rate:g}/s …")
        await send(
            webhooks[:warm], tally, rate=args.rate, workers=args.workers, host=host, port=port
        )
        await asyncio.sleep(2.0)
        log(f"[sync] {args.duration:g} s at {args.rate:g} webhooks/s …")
        measured = webhooks[warm:]
        tally.ack_ms.clear()
        ticks = cpu_ticks(stack.pid)
        cpu = time.process_time()
        began = time.perf_counter()
        await send(measured, tally, rate=args.rate, workers=args.workers, host=host, port=port)
        sending_s = time.perf_counter() - began
        expected = sum(len(listeners_of.get(w.sku, ())) for w in measured if w.index in tally.acked)
        log(f"[sync]   sent in {sending_s:.1f} s; waiting for the last deliveries …")
        waited = time.perf_counter()
        while time.perf_counter() - waited < args.grace:
            got = sum(1 for _n, i in tally.received if i >= warm)
            if got >= expected:
                break
            await asyncio.sleep(0.1)
        ticks_after = cpu_ticks(stack.pid)
        client_cpu_s = time.process_time() - cpu
        window_s = time.perf_counter() - began
    finally:
        for task in listeners:
            task.cancel()
        await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
        await asyncio.gather(*listeners, return_exceptions=True)

    latencies = [
        (at - tally.sent_at[i]) * 1000.0
        for (_n, i), at in tally.received.items()
        if i >= warm and i in tally.sent_at
    ]
    received = len(latencies)
    missing = sum(
        1
        for w in measured
        if w.index in tally.acked
        for n in listeners_of.get(w.sku, ())
        if (n, w.index) not in tally.received
    )
    acked = sum(1 for w in measured if w.index in tally.acked)
    stockgraph_cpu = cpu_ms(ticks, ticks_after)
    return {
        "subscribers": len(groups),
        "skus_per_subscriber": args.skus_per_subscriber,
        "sku_pool": args.skus,
        "subscribers_per_webhook": sorted({len(listeners_of.get(w.sku, ())) for w in measured}),
        "rate": args.rate,
        "duration_s": args.duration,
        "warmup_webhooks": warm,
        "sent": len([w for w in measured if w.index in tally.sent_at]),
        "sending_s": sending_s,
        "acked": acked,
        "statuses": dict(tally.statuses),
        "late_sends": tally.late_sends,
        "expected_deliveries": expected,
        "received": received,
        "missing": missing,
        "duplicates": tally.duplicates,
        "strays": tally.strays,
        "errors": tally.errors[:20],
        "latency_ms": {
            "p50": percentile(latencies, 50),
            "p90": percentile(latencies, 90),
            "p99": percentile(latencies, 99),
            "max": max(latencies, default=float("nan")),
        },
        "ack_ms": {
            "p50": percentile(tally.ack_ms, 50),
            "p99": percentile(tally.ack_ms, 99),
            "max": max(tally.ack_ms, default=float("nan")),
        },
        "over_promise": sum(1 for ms in latencies if ms > PROMISE_MS),
        "stockgraph_cpu_ms": stockgraph_cpu,
        "stockgraph_cpu_share": (stockgraph_cpu or 0) / 1000.0 / window_s,
        "window_s": window_s,
        "client_cpu_share": client_cpu_s / window_s,
    }


# ---------------------------------------------------------------------------------------
# Running it


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    stack = quiet_rest_stack("sync", workdir, INGEST_INSTANCES, args)
    try:
        stack.start()
        synced_s = stack.wait_synced()
        log(f"[sync] {len(stack.members)} rest instances synced {synced_s:.1f} s after ready")
        token = bearer_token(stack)
        pool, codes = sku_pool(stack, args.skus)
        targets = webhook_targets(stack)
        groups = subscriptions(args.subscribers, pool, args.skus_per_subscriber)
        warm = int(args.rate * 2)
        webhooks = schedule(targets, pool, codes, warm + int(args.rate * args.duration))
        idle = idle_cpu(stack.pid, 3.0)
        if args.load_cpus:
            os.sched_setaffinity(0, {int(c) for c in args.load_cpus.split(",")})
        result = run_loop(measure(stack, token, groups, webhooks, warm, args))
        result["stockgraph_idle_cpu_ms_per_s"] = idle
        return result
    finally:
        stack.stop()


def run_loop(coro: Coroutine[Any, Any, dict[str, Any]]) -> dict[str, Any]:
    """Run on uvloop when it is installed (it is with uvicorn[standard])."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def _ms(value: float) -> str:
    return f"{value:,.1f} ms" if value < 100 else f"{value:,.0f} ms"


def markdown(meta: dict[str, Any], r: dict[str, Any]) -> str:
    lat = r["latency_ms"]
    fans = "/".join(str(n) for n in r["subscribers_per_webhook"])
    cpu = r["stockgraph_cpu_ms"]
    lines = [
        f"# Sync latency, {meta['date']}",
        "",
        *(f"- {k}: {v}" for k, v in meta["describe"].items()),
        "",
        f"{r['subscribers']} subscribers ({r['skus_per_subscriber']} of {r['sku_pool']} SKUs "
        f"each: {fans} per webhook), {r['rate']:g} webhooks/s for {r['duration_s']:g} s:",
        "",
        "| sent | acknowledged | deliveries expected | received | missing | duplicated "
        "| p50 | p90 | p99 | max | Stockgraph CPU |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        f"| {r['sent']:,} | {r['acked']:,} | {r['expected_deliveries']:,} | {r['received']:,} "
        f"| {r['missing']:,} | {r['duplicates']:,} | {_ms(lat['p50'])} | {_ms(lat['p90'])} "
        f"| {_ms(lat['p99'])} | {_ms(lat['max'])} "
        + (f"| {r['stockgraph_cpu_share']:.0%} of a core |" if cpu is not None else "| n/a |"),
        "",
        f"Non-2xx or failed sends: {sum(n for s, n in r['statuses'].items() if s[0] != '2')}; "
        f"sends more than 10 ms late: {r['late_sends']}; stray messages: {r['strays']}; "
        f"deliveries over {PROMISE_MS / 1000:g} s: {r['over_promise']}; acknowledgement p50 / "
        f"p99 / max {_ms(r['ack_ms']['p50'])} / {_ms(r['ack_ms']['p99'])} / "
        f"{_ms(r['ack_ms']['max'])}; this process (sender and subscribers) used "
        f"{r['client_cpu_share']:.0%} of its core.",
        "",
        f"- p99 < {TARGET_P99_MS:g} ms: **{'met' if passed_latency(r) else 'not met'}** "
        f"({_ms(lat['p99'])})",
        f"- every delivery once: **{'met' if passed_deliveries(r) else 'not met'}**",
    ]
    if r["errors"]:
        lines += ["", "Errors:", *(f"- `{e}`" for e in r["errors"])]
    return "\n".join(lines) + "\n"


def passed_latency(r: dict[str, Any]) -> bool:
    return bool(r["received"]) and r["latency_ms"]["p99"] < TARGET_P99_MS


def passed_deliveries(r: dict[str, Any]) -> bool:
    return (
        r["missing"] == 0
        and r["duplicates"] == 0
        and r["acked"] == r["sent"]
        and r["received"] == r["expected_deliveries"]
        and not r["errors"]
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    # --python, --server-cpus and --load-cpus default as fanout.py's do.
    shared = fanout.parse_args([])
    p = argparse.ArgumentParser(
        description="Webhook sent → stockChanged received, under load, over WebSocket.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--subscribers", type=int, default=500, help="WebSocket subscribers")
    p.add_argument("--rate", type=float, default=200.0, help="webhooks sent per second")
    p.add_argument("--duration", type=float, default=60.0, help="seconds of webhooks")
    p.add_argument("--skus", type=int, default=100, help="SKUs the webhooks count")
    p.add_argument("--skus-per-subscriber", type=int, default=2)
    p.add_argument("--workers", type=int, default=64, help="webhook sender connections")
    p.add_argument(
        "--grace", type=float, default=30.0, help="seconds to wait for the last deliveries"
    )
    p.add_argument("--python", default=shared.python, help="interpreter for Stockgraph")
    p.add_argument("--server-cpus", default=shared.server_cpus, help="CPUs for Stockgraph")
    p.add_argument(
        "--load-cpus", default=shared.load_cpus, help="CPUs for the fleet and this process"
    )
    p.add_argument("--json", type=Path, help="write every figure here")
    args = p.parse_args(argv)
    if min(args.subscribers, args.skus, args.skus_per_subscriber, args.workers) < 1:
        p.error("--subscribers, --skus, --skus-per-subscriber and --workers must be ≥ 1")
    if args.skus_per_subscriber > args.skus:
        p.error("--skus-per-subscriber cannot exceed --skus")
    if args.rate <= 0 or args.duration <= 0:
        p.error("--rate and --duration must be > 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    seen: set[str] = set()
    stop = threading.Event()
    watcher = threading.Thread(target=watch_foreign, args=(seen, stop), daemon=True)
    with terminate_as_interrupt(), tempfile.TemporaryDirectory(prefix="sg-sync-") as tmp:
        watcher.start()
        try:
            result = run(args, Path(tmp))
        except BenchmarkError as exc:
            log(f"sync_latency: {exc}")
            return 2
        except KeyboardInterrupt:
            log("sync_latency: interrupted")
            return 130
        finally:
            stop.set()
            watcher.join(timeout=5)
    others = sorted(seen)
    meta = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "describe": {
            "host": f"{platform.machine()}, {os.cpu_count()} CPUs, "
            f"Python {platform.python_version()}",
            "pinning": (
                f"Stockgraph on CPU {args.server_cpus}, the fleet, sender and subscribers on "
                f"CPU {args.load_cpus}"
                if args.server_cpus and args.load_cpus
                else "unpinned"
            ),
            "database": "SQLite (WAL), one uvicorn worker",
            "commit": checkout(),
            "other processes": (
                "**ran meanwhile, figures skewed**: " + ", ".join(f"`{c}`" for c in others)
                if others
                else "none seen"
            ),
        },
        "argv": sys.argv[1:],
    }
    print(markdown(meta, result), end="")
    if args.json:
        args.json.write_text(
            json.dumps({"meta": meta, "result": result}, indent=2) + "\n", encoding="utf-8"
        )
        log(f"raw figures written to {args.json}")
    return 0 if passed_latency(result) and passed_deliveries(result) else 1


if __name__ == "__main__":
    sys.exit(main())

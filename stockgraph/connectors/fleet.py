"""A fleet of simulated WMS instances on loopback, for the demo, ``stockgraph simulate`` and
load tests.

Each member is one dialect's simulator app over its own :class:`SimulatedWms`, speaking its
WMS's own item codes (``ITM000042`` for the ``rest`` WMS, ``sku-42`` for the ``graphql``
one, ``00000042`` for the EDI 3PL) and case packs, served by uvicorn on a socket of its
own. ``settings`` is what Stockgraph needs to connect to it: the dialect's connection
settings plus the ``mapping`` of its codes to ours.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
import socket
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette

from stockgraph.connectors.simulation import SimulatedWms

LOCATION = "MAIN"
CASE_SIZE = 12
SEQUENCE_EPOCH = 1_750_000_000
GRAPHQL_CREDITS = 20_000
GRAPHQL_RESTORE = 1_000
"""The simulated GraphQL WMSs are on a larger plan than the dialect's default (1,000 / 50)."""
X12_POLL_SECONDS = 2.0
"""The simulated 3PLs agree to be polled every two seconds (the dialect's default is five)."""
X12_INQUIRIES_PER_SECOND = 50
"""...and to take 50 inquiries a second, 50 at once, as the simulated REST WMSs take 50
requests (the dialect's default is 5 a second, 10 at once)."""


def wms_code(dialect: str, sku: str) -> str:
    """The code a simulated WMS of ``dialect`` uses for our ``sku`` (``SKU-00042``)."""
    digits = "".join(ch for ch in sku if ch.isdigit()) or "0"
    number = int(digits)
    if dialect == "rest":
        return f"ITM{number:06d}"
    if dialect == "graphql":
        return f"sku-{number}"
    return f"{number:08d}"


@dataclass
class FleetMember:
    connector_id: str
    dialect: str
    wms: SimulatedWms
    app: Starlette
    sock: socket.socket
    settings: dict[str, Any]
    server: uvicorn.Server | None = None
    task: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])


class _QuietServer(uvicorn.Server):
    """A fleet member's server: the process's own server handles the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _listening_socket(host: str, port: int = 0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.setblocking(False)
    return sock


def build_member(
    *,
    connector_id: str,
    dialect: str,
    skus: Sequence[str],
    cased: Sequence[str] = (),
    webhook_url: str | None,
    host: str = "127.0.0.1",
    port: int = 0,
    seed: int | str = 0,
    latency_ms: float = 0.0,
) -> FleetMember:
    """One simulated instance with plausible stock of ``skus`` (``cased`` ones in cases)."""
    rng = random.Random(f"{connector_id}:{seed}")
    codes = {wms_code(dialect, sku): sku for sku in skus}
    stock: dict[tuple[str, str], int] = {}
    for code, sku in codes.items():
        quantity = 0 if rng.random() < 0.1 else rng.randrange(1, 240)
        if sku in cased:
            quantity -= quantity % CASE_SIZE
        stock[(code, LOCATION)] = quantity
    wms = SimulatedWms(name=connector_id, locations=[LOCATION], stock=stock, seed=f"{seed}")
    # A WMS's sequence only ever grows: a simulator restarted later starts above where it
    # stopped (it emits far fewer events than seconds pass), within a 32-bit field.
    wms.sequence = int(time.time()) - SEQUENCE_EPOCH
    wms.faults.update({"latency_ms": latency_ms})
    sock = _listening_socket(host, port)
    base = f"http://{host}:{sock.getsockname()[1]}"
    secret = secrets.token_urlsafe(24)
    case_codes = {wms_code(dialect, sku): CASE_SIZE for sku in cased}
    mapping: dict[str, Any] = {
        "skus": codes,
        "sku_units": {code: {"CS": CASE_SIZE} for code in case_codes},
    }
    app, settings = _BUILDERS[dialect](wms, base, secret, webhook_url, case_codes)
    settings["mapping"] = mapping
    return FleetMember(connector_id, dialect, wms, app, sock, settings)


def _rest(
    wms: SimulatedWms, base: str, secret: str, webhook_url: str | None, cases: dict[str, int]
) -> tuple[Starlette, dict[str, Any]]:
    from stockgraph.connectors.rest.simulator import build_simulator

    key = secrets.token_urlsafe(16)
    app = build_simulator(
        wms=wms,
        api_key=key,
        requests_per_second=50,
        webhook_url=webhook_url,
        webhook_secret=secret if webhook_url else None,
        case_packs=cases,
    )
    return app, {"base_url": base, "api_key": key, "webhook_secrets": [secret]}


def _graphql(
    wms: SimulatedWms, base: str, secret: str, webhook_url: str | None, cases: dict[str, int]
) -> tuple[Starlette, dict[str, Any]]:
    from stockgraph.connectors.graphql.simulator import build_simulator

    token = secrets.token_urlsafe(16)
    app = build_simulator(
        wms=wms,
        access_token=token,
        bucket_size=GRAPHQL_CREDITS,
        restore_rate=GRAPHQL_RESTORE,
        webhook_url=webhook_url,
        webhook_secret=secret if webhook_url else None,
    )
    return app, {
        "endpoint": f"{base}/graphql",
        "access_token": token,
        "webhook_secrets": [secret],
        "rate_limit": {"rate": GRAPHQL_RESTORE, "burst": GRAPHQL_CREDITS},
    }


def _x12(
    wms: SimulatedWms, base: str, secret: str, webhook_url: str | None, cases: dict[str, int]
) -> tuple[Starlette, dict[str, Any]]:
    from stockgraph.connectors.x12.simulator import build_simulator

    password = secrets.token_urlsafe(16)
    ours, theirs = "STOCKGRAPH", f"3PL{zlib.crc32(wms.name.encode()) % 10**6:06d}"
    app = build_simulator(
        wms=wms, username="stockgraph", password=password, interchange_ids=(theirs, ours)
    )
    return app, {
        "mailbox_url": base,
        "username": "stockgraph",
        "password": password,
        "our_id": ours,
        "their_id": theirs,
        "poll_interval_seconds": X12_POLL_SECONDS,
        "inquiry_limit": {"rate": X12_INQUIRIES_PER_SECOND, "burst": X12_INQUIRIES_PER_SECOND},
    }


_BUILDERS: dict[
    str,
    Callable[
        [SimulatedWms, str, str, str | None, dict[str, int]], tuple[Starlette, dict[str, Any]]
    ],
] = {"rest": _rest, "graphql": _graphql, "x12": _x12}

DIALECTS = tuple(_BUILDERS)


async def start(members: Sequence[FleetMember]) -> None:
    """Serve every member on its own socket, in this event loop."""
    for member in members:
        config = uvicorn.Config(member.app, log_level="warning", access_log=False, lifespan="on")
        member.server = _QuietServer(config)
        member.task = asyncio.create_task(member.server.serve(sockets=[member.sock]))
    while not all(m.server is not None and m.server.started for m in members):
        if any(m.task is not None and m.task.done() for m in members):
            failed = next(m for m in members if m.task is not None and m.task.done())
            raise RuntimeError(f"simulator {failed.connector_id} did not start")
        await asyncio.sleep(0.02)


async def stop(members: Sequence[FleetMember]) -> None:
    for member in members:
        if member.server is not None:
            member.server.should_exit = True
    for member in members:
        if member.task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await member.task
        member.sock.close()


async def keep_busy(
    members: Sequence[FleetMember], *, events_per_second: float = 4.0, seed: int = 0
) -> None:
    """Warehouse activity across the fleet: receipts, picks, the odd cycle count."""
    rng = random.Random(seed)
    interval = 1.0 / events_per_second if events_per_second > 0 else 1.0
    while True:
        await asyncio.sleep(interval)
        member = rng.choice(members)
        with contextlib.suppress(Exception):
            await member.wms.activity()


def topology_toml(tenant: str, members: Sequence[FleetMember], codes: Sequence[str]) -> str:
    """A topology file (see ``stockgraph.config``) that connects Stockgraph to ``members``."""
    import tomli_w

    return tomli_w.dumps(
        {
            "tenants": [{"id": tenant, "name": tenant}],
            "warehouses": [
                {
                    "tenant": tenant,
                    "code": code,
                    "name": f"Simulated {member.dialect} WMS {code}",
                    "dialect": member.dialect,
                    "region": "simulated",
                    "connector_id": member.connector_id,
                    "connection": member.settings,
                }
                for member, code in zip(members, codes, strict=True)
            ],
        }
    )

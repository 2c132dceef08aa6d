"""The ``stockgraph`` command: demo, serve, migrate, clients, keys and schema."""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import secrets
import signal
import socket
import sys
import time
from collections.abc import Coroutine, Sequence
from dataclasses import replace
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn
from pydantic import SecretStr

from stockgraph.config import ConfigError, Settings, load_settings, load_topology
from stockgraph.connectors import fleet
from stockgraph.persistence.migrate import upgrade

DEFAULT_DEMO_DIR = Path(".stockgraph-demo")


def _demo_settings(data_dir: Path, **overrides: Any) -> Settings:
    data_dir.mkdir(parents=True, exist_ok=True)
    secret_file = data_dir / "jwt-secret"
    if not secret_file.exists():
        secret_file.write_text(secrets.token_urlsafe(48), encoding="utf-8")
        secret_file.chmod(0o600)
    db = (data_dir / "stockgraph.db").resolve()
    return load_settings(
        database_url=f"sqlite+aiosqlite:///{db}",
        jwt_secret=SecretStr(secret_file.read_text(encoding="utf-8").strip()),
        graphiql=True,
        **overrides,
    )


def _settings(args: argparse.Namespace) -> Settings:
    if getattr(args, "data_dir", None):
        return _demo_settings(Path(args.data_dir))
    overrides: dict[str, Any] = {}
    if getattr(args, "database_url", None):
        overrides["database_url"] = args.database_url
    return load_settings(**overrides)


def _admin_settings(args: argparse.Namespace) -> Settings:
    """Settings for commands that mint credentials but sign no token.

    Creating a client stores only a hash, so a missing signing secret is no reason to
    refuse: an ephemeral key stands in and nothing is signed with it.
    """
    settings = _settings(args)
    if settings.jwt_secret is None and not settings.jwt_private_keys:
        settings = settings.model_copy(update={"jwt_secret": SecretStr(secrets.token_urlsafe(48))})
    return settings


async def _demo(args: argparse.Namespace) -> None:
    from stockgraph.app import create_app
    from stockgraph.runtime import Runtime
    from stockgraph.services.demo import ACME, demo_clients, demo_warehouses, seed_demo

    data_dir = Path(args.data_dir)
    settings = _demo_settings(data_dir)
    await upgrade(settings.database_url)
    runtime = Runtime.build(settings)
    base = f"http://{args.host}:{args.port}"
    members = _demo_fleet(base, simulate=not args.no_simulators)
    created = await seed_demo(
        catalog=runtime.catalog_writer,
        stock=runtime.stock_store,
        simulated={m.connector_id for m in members},
    )
    for tenant in created:
        runtime.projection_changed(tenant)
    started = time.monotonic()
    await fleet.start(members)
    by_id = {m.connector_id: m for m in members}
    await runtime.connect_instances(
        [
            replace(spec, settings=by_id[spec.connector_id].settings)
            for spec in demo_warehouses(ACME)
            if spec.connector_id in by_id
        ]
    )
    reports = await asyncio.gather(*(runtime.sync.full_sync(i) for i in runtime.instances.values()))
    synced = sum(r.applied for r in reports)
    receiver, hook_url = await _demo_webhooks(runtime)
    busy = asyncio.create_task(fleet.keep_busy(members, events_per_second=args.activity))
    cred_file = data_dir / "credentials.json"
    credentials: list[dict[str, str]] = []
    if cred_file.exists():
        credentials = json.loads(cred_file.read_text(encoding="utf-8"))
    if not credentials or not await _credentials_valid(runtime, credentials):
        credentials = await demo_clients(runtime.access)
        cred_file.write_text(json.dumps(credentials, indent=2) + "\n", encoding="utf-8")
        cred_file.chmod(0o600)
    writer = next(
        c for c in credentials if c["tenant"] == ACME.tenant_id and c["role"] == "read-write"
    )
    token = await runtime.access.exchange(writer["client_id"], writer["client_secret"], None)
    app = create_app(settings, runtime=runtime)
    seeded = ", ".join(f"{t}: {n} new levels" for t, n in created.items())
    dialects = ", ".join(f"{sum(m.dialect == d for m in members)} {d}" for d in fleet.DIALECTS)
    simulated = (
        f"\n  WMS fleet    {len(members)} simulated instances ({dialects}), {synced} levels"
        f" synced in {time.monotonic() - started:.1f} s; activity {args.activity}/s"
        if members
        else ""
    )
    query = '{"query":"{ availability(skus: [\\"SKU-00001\\"]) { sku available onHand } }"}'
    deliveries = (
        '{"query":"{ deliveries(first: 5) { edges { node { messageId eventType status '
        'attemptCount attempts { statusCode trigger } } } } }"}'
    )
    print(
        f"""
Stockgraph demo: {seeded}; data in {data_dir}{simulated}
  GraphiQL     {base}/graphql   (paste the token as an "Authorization: Bearer ..." header)
  Clients      {cred_file}  (read-only, read-write and admin per tenant)
  Token        acme read-write, valid {token.expires_in // 60} minutes:

TOKEN={token.access_token}

  Try it:
curl -s {base}/graphql -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \\
  -d '{query}'

  A new token: curl -s -u CLIENT_ID:CLIENT_SECRET -d grant_type=client_credentials \\
  {base}/oauth/token

  Webhooks     acme's stock.changed and sync.alert go to {hook_url}, a receiver that
               checks signatures and answers 503 to a quarter of them (retried). With an
               acme admin token ({cred_file}):
curl -s {base}/graphql -H "Authorization: Bearer $ADMIN_TOKEN" \\
  -H 'Content-Type: application/json' -d '{deliveries}'
Press Ctrl-C to stop.
""",
        flush=True,
    )
    try:
        await _serve(app, args.host, args.port, stopping=runtime.stopping)
    finally:
        busy.cancel()
        await fleet.stop(members)
        await receiver.stop()


DEMO_RECEIVER = "demo receiver"


async def _demo_webhooks(runtime: Any) -> tuple[Any, str]:
    """Start the demo's webhook receiver and point an acme endpoint at it (replacing the
    endpoint of an earlier run, whose receiver had another port)."""
    from stockgraph.config import TenantConfig, Topology, WebhookConfig
    from stockgraph.domain.ids import TenantId
    from stockgraph.domain.webhooks import EVENT_TYPES, new_secret
    from stockgraph.events.receiver import DemoReceiver
    from stockgraph.services.demo import ACME

    secret = new_secret()
    receiver = DemoReceiver(secret=secret)
    await receiver.start()
    tenant = TenantId(ACME.tenant_id)
    earlier, _ = await runtime.webhooks.endpoints(tenant, after_id=None, limit=100)
    for endpoint in earlier:
        if endpoint.description == DEMO_RECEIVER and endpoint.url != receiver.url:
            await runtime.webhooks.delete_endpoint(tenant, endpoint.id)
    topology = Topology(
        tenants=(TenantConfig(id=ACME.tenant_id, name=ACME.name),),
        webhooks=(
            WebhookConfig.model_validate(
                {
                    "tenant": ACME.tenant_id,
                    "url": receiver.url,
                    "events": EVENT_TYPES,
                    "secret": secret,
                    "description": DEMO_RECEIVER,
                }
            ),
        ),
    ).check()
    await runtime.apply_topology(topology)
    return receiver, receiver.url


def _demo_fleet(base: str, *, simulate: bool) -> list[fleet.FleetMember]:
    """A simulated WMS behind every acme warehouse whose dialect Stockgraph speaks."""
    from stockgraph.connectors.registry import BUILDERS
    from stockgraph.services.demo import ACME, demo_items, demo_warehouses

    if not simulate:
        return []
    items = demo_items(ACME)
    skus = [item.sku for item in items]
    cased = [item.sku for item in items if any(u.name == "case" for u in item.units)]
    return [
        fleet.build_member(
            connector_id=spec.connector_id,
            dialect=spec.dialect,
            skus=skus,
            cased=cased if spec.dialect == "rest" else (),
            webhook_url=f"{base}/webhooks/wms/{spec.connector_id}",
            seed=spec.code,
        )
        for spec in demo_warehouses(ACME)
        if spec.dialect in BUILDERS
    ]


async def _credentials_valid(runtime: Any, credentials: list[dict[str, str]]) -> bool:
    from stockgraph.auth.errors import AuthError

    try:
        for c in credentials:
            await runtime.access.exchange(c["client_id"], c["client_secret"], None)
    except (AuthError, KeyError):
        return False
    return True


SHUTDOWN_GRACE_SECONDS = 5
"""How long a stopping server lets requests still running finish before it cuts them.
Subscriptions streamed over Server-Sent Events end by themselves (``complete``) the moment
it starts stopping (``Runtime.stopping``); this bounds whatever else would not finish."""


async def _serve(app: Any, host: str, port: int, *, stopping: asyncio.Event) -> None:
    """Serve ``app`` until a signal; ``stopping`` is set the moment one arrives."""
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=SHUTDOWN_GRACE_SECONDS,
    )
    server = _Server(config, stopping=stopping)
    await server.serve()
    print("stockgraph stopped", flush=True)


class _Server(uvicorn.Server):
    """uvicorn's server, stopping cleanly on Ctrl-C or SIGTERM.

    uvicorn re-raises a captured signal once it has shut down, which inside our own
    event loop surfaces as a KeyboardInterrupt with a traceback; the shutdown (lifespan
    included) has already finished by then, so the signal is not raised again.
    """

    def __init__(self, config: uvicorn.Config, *, stopping: asyncio.Event) -> None:
        super().__init__(config)
        self._stopping = stopping
        self._loop: asyncio.AbstractEventLoop | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        self._captured_signals.clear()
        if self._loop is not None:  # a signal handler: hand the event to the loop
            self._loop.call_soon_threadsafe(self._stopping.set)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().startup(sockets)
        _settle_garbage_collector()


GC_THRESHOLDS = (20_000, 20, 50)
"""Young-generation collections every 20,000 allocations instead of 700, full ones rarer."""


def _settle_garbage_collector() -> None:
    """Keep what start-up built out of every later collection, and collect less often.

    The schema, the plans, the connectors and the caches live as long as the process; left
    in the collector's generations they are walked again by every full collection, which
    showed as pauses of tens of milliseconds in the latency tail of big answers.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


async def _serve_command(args: argparse.Namespace) -> None:
    from stockgraph.app import create_app
    from stockgraph.runtime import Runtime
    from stockgraph.wiring import warehouse_specs

    settings = _settings(args)
    topology = load_topology(settings.config)
    if args.migrate:
        await upgrade(settings.database_url)
    runtime = Runtime.build(settings)
    try:
        # Checked before the server starts, so a bad database stops start-up with a message.
        await runtime.check_database()
        await runtime.apply_topology(topology)
        await runtime.connect_instances(warehouse_specs(topology))
    except BaseException:
        await runtime.close()
        raise
    await _serve(
        create_app(settings, runtime=runtime), args.host, args.port, stopping=runtime.stopping
    )


async def _migrate(args: argparse.Namespace) -> None:
    settings = _settings(args)
    await upgrade(settings.database_url, args.revision)
    print(f"database upgraded to {args.revision}")


async def _create_credential(args: argparse.Namespace) -> None:
    from stockgraph.auth.records import UnknownTenant
    from stockgraph.auth.scopes import format_scopes, parse_scopes
    from stockgraph.domain.ids import TenantId
    from stockgraph.runtime import Runtime

    scopes = parse_scopes(args.scopes)
    runtime = Runtime.build(_admin_settings(args))
    try:
        await runtime.check_database()
        tenant = TenantId(args.tenant)
        if args.kind == "clients":
            client_id, secret = await runtime.access.create_client(
                tenant_id=tenant, name=args.name, scopes=scopes
            )
            out = {"client_id": client_id, "client_secret": secret}
        else:
            key = await runtime.access.create_api_key(
                tenant_id=tenant, name=args.name, scopes=scopes
            )
            out = {"api_key": key}
    except UnknownTenant:
        raise ConfigError(
            f"--tenant: no tenant {args.tenant!r}; declare it in the config file"
        ) from None
    finally:
        await runtime.close()
    if args.json:
        print(json.dumps(out))
    else:
        for k, v in out.items():
            print(f"{k}: {v}")
        print(f"scopes: {format_scopes(scopes)}")
        print("The secret is shown once; Stockgraph keeps only its hash.")


async def _simulate(args: argparse.Namespace) -> None:
    """Run a fleet of simulated WMS instances described by a TOML file, until Ctrl-C."""
    spec = _fleet_file(Path(args.config))
    tenant = spec["tenant"]
    skus = [f"SKU-{i:05d}" for i in range(spec["skus"])]
    instances = spec["instances"]
    members = [
        fleet.build_member(
            connector_id=i["connector_id"],
            dialect=i["dialect"],
            skus=skus,
            webhook_url=f"{spec['stockgraph_url'].rstrip('/')}/webhooks/wms/{i['connector_id']}",
            port=int(i.get("port", 0)),
            seed=i["connector_id"],
            latency_ms=float(i.get("latency_ms", spec.get("latency_ms", 0))),
        )
        for i in instances
    ]
    await fleet.start(members)
    topology = fleet.topology_toml(tenant, members, [i["code"] for i in instances])
    if args.topology_out:
        await asyncio.to_thread(Path(args.topology_out).write_text, topology, encoding="utf-8")
    for member in members:
        print(f"{member.connector_id:<16} {member.dialect:<8} http://127.0.0.1:{member.port}")
    print(
        f"{len(members)} simulators up; topology for STOCKGRAPH_CONFIG "
        f"{'in ' + args.topology_out if args.topology_out else 'not written'}. Ctrl-C stops.",
        flush=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    busy = asyncio.create_task(
        fleet.keep_busy(members, events_per_second=float(spec.get("activity", 2.0)))
    )
    try:
        await stop.wait()
    finally:
        busy.cancel()
        await fleet.stop(members)


def _fleet_file(path: Path) -> dict[str, Any]:
    """``stockgraph simulate``'s TOML: tenant, skus, stockgraph_url, [[instances]]."""
    import tomllib

    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"--config: no file at {str(path)!r}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    for key, kind in (("tenant", str), ("stockgraph_url", str), ("skus", int)):
        if not isinstance(data.get(key), kind):
            raise ConfigError(f"{path}: {key}: expected a {kind.__name__}")
    instances = data.get("instances")
    if not isinstance(instances, list) or not instances:
        raise ConfigError(f"{path}: instances: expected at least one [[instances]] table")
    for n, instance in enumerate(instances):
        for key in ("connector_id", "code", "dialect"):
            if not isinstance(instance.get(key), str):
                raise ConfigError(f"{path}: instances[{n}].{key}: expected a string")
        if instance["dialect"] not in fleet.DIALECTS:
            raise ConfigError(
                f"{path}: instances[{n}].dialect: expected one of {', '.join(fleet.DIALECTS)}"
            )
    return data


def _schema_print(_: argparse.Namespace) -> None:
    from stockgraph.schema.build import build_schema

    sys.stdout.write(build_schema().as_str() + "\n")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="stockgraph", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run everything locally on embedded defaults")
    demo.add_argument("--port", type=int, default=8000)
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--data-dir", default=str(DEFAULT_DEMO_DIR))
    demo.add_argument(
        "--activity", type=float, default=4.0, help="simulated warehouse events per second"
    )
    demo.add_argument(
        "--no-simulators", action="store_true", help="seed stock instead of simulating WMSs"
    )

    serve = sub.add_parser("serve", help="serve the API with settings from the environment")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--database-url")
    serve.add_argument("--migrate", action="store_true", help="upgrade the database first")

    migrate = sub.add_parser("migrate", help="upgrade the database schema")
    migrate.add_argument("--revision", default="head")
    migrate.add_argument("--database-url")
    migrate.add_argument("--data-dir", help="the demo's data folder instead of DATABASE_URL")

    for kind, noun in (("clients", "an OAuth client"), ("keys", "an API key")):
        group = sub.add_parser(kind, help=f"manage {kind}")
        actions = group.add_subparsers(dest="action", required=True)
        create = actions.add_parser("create", help=f"create {noun}; its secret is shown once")
        create.add_argument("--tenant", required=True)
        create.add_argument("--scopes", required=True, help="space- or comma-separated")
        create.add_argument("--name", default=f"{kind} from the command line")
        create.add_argument("--json", action="store_true", help="print JSON for scripts")
        create.add_argument("--database-url")
        create.add_argument("--data-dir", help="the demo's data folder instead of DATABASE_URL")
        create.set_defaults(kind=kind)

    simulate = sub.add_parser("simulate", help="run a fleet of simulated WMS instances")
    simulate.add_argument("--config", required=True, help="the fleet's TOML file")
    simulate.add_argument(
        "--topology-out", help="write a topology file that connects Stockgraph to the fleet"
    )

    schema = sub.add_parser("schema", help="the GraphQL schema")
    schema_actions = schema.add_subparsers(dest="action", required=True)
    schema_actions.add_parser("print", help="print the SDL")
    return p


def _run_server(main: Coroutine[Any, Any, None]) -> None:
    """Long-running commands run on uvloop where it is installed (uvicorn[standard] brings
    it on Linux): its sockets and task switches cost a fraction of asyncio's, which is what
    sending one change to a thousand WebSocket subscribers is made of."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if getattr(args, "data_dir", None):
        args.data_dir = Path(args.data_dir).resolve()
    logging.basicConfig(
        level=os.environ.get("STOCKGRAPH_LOG_LEVEL", "info").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for chatty in ("httpx", "alembic"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
    try:
        if args.command == "demo":
            _run_server(_demo(args))
        elif args.command == "serve":
            _run_server(_serve_command(args))
        elif args.command == "migrate":
            asyncio.run(_migrate(args))
        elif args.command in ("clients", "keys"):
            asyncio.run(_create_credential(args))
        elif args.command == "simulate":
            _run_server(_simulate(args))
        elif args.command == "schema":
            _schema_print(args)
    except ConfigError as exc:
        print(f"stockgraph: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

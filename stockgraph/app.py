"""The composition root's front: the ASGI app and its routes.

With :mod:`stockgraph.runtime` (every store, service and background task of a process) and
:mod:`stockgraph.wiring` (the builders they use), the only modules that know every concrete
class. ``create_app`` puts the runtime behind the schema and the routes; the Starlette
lifespan opens what needs opening (a check of the database, Redis) and closes it all on
shutdown.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute

from stockgraph.auth.endpoints import jwks_endpoint, token_endpoint
from stockgraph.config import Settings, Topology
from stockgraph.connectors.signing import EVENT_ID_HEADER, SIGNATURE_HEADER, InvalidSignature
from stockgraph.runtime import Runtime
from stockgraph.schema.build import SchemaLimits, build_schema
from stockgraph.schema.context import Limits
from stockgraph.schema.view import GraphQLView
from stockgraph.services.ingestion import (
    BadDelivery,
    Receipt,
    UnknownConnector,
)
from stockgraph.wiring import warehouse_specs

log = logging.getLogger("stockgraph")

MAX_WEBHOOK_BYTES = 1_048_576


def create_app(
    settings: Settings, topology: Topology | None = None, *, runtime: Runtime | None = None
) -> Starlette:
    """The ASGI application; nothing is opened until the lifespan starts."""
    rt = runtime or Runtime.build(settings)
    schema = build_schema(
        SchemaLimits(
            max_depth=settings.max_depth,
            max_aliases=settings.max_aliases,
            max_tokens=settings.max_tokens,
            document_cache_size=settings.document_cache_size,
        )
    )
    sdl = schema.as_str() + "\n"
    view = GraphQLView(
        schema,
        authenticate=rt.authenticate,
        services=rt.services(),
        limits=Limits(
            max_list_size=settings.max_list_size,
            max_page_size=settings.max_page_size,
            max_cost=settings.max_query_cost,
        ),
        graphiql=settings.graphiql,
        cache=rt.response_cache,
        shared=rt.shared_answers,
        init_timeout_seconds=settings.connection_init_timeout_seconds,
        max_subscriptions=settings.max_subscriptions_per_connection,
        max_connections_per_tenant=settings.max_connections_per_tenant,
        stopping=rt.stopping,
        max_tokens=settings.max_tokens,
    )

    async def healthz(_: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    async def readyz(_: Request) -> Response:
        checks = await rt.readiness()
        ready = all(v.startswith("ok") for v in checks.values())
        body = {"status": "ready" if ready else "not ready", "checks": checks}
        return Response(
            orjson.dumps(body), status_code=200 if ready else 503, media_type="application/json"
        )

    async def metrics(_: Request) -> Response:
        return Response(generate_latest(rt.metrics), media_type=CONTENT_TYPE_LATEST)

    async def schema_sdl(_: Request) -> Response:
        return PlainTextResponse(sdl)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        await rt.check_database()
        if topology is not None:
            await rt.apply_topology(topology)
            await rt.connect_instances(warehouse_specs(topology))
        await rt.open()
        rt.start_background()
        try:
            yield
        finally:
            await rt.close()

    async def webhook(request: Request) -> Response:
        connector_id = request.path_params["connector_id"]
        declared = request.headers.get("content-length", "0")
        if declared.isdigit() and int(declared) > MAX_WEBHOOK_BYTES:
            return JSONResponse({"error": "body too large"}, status_code=413)
        try:
            receipt = await rt.ingestion.receive(
                connector_id,
                event_id=request.headers.get(EVENT_ID_HEADER),
                body=await request.body(),
                signature=request.headers.get(SIGNATURE_HEADER),
            )
        except UnknownConnector:
            return JSONResponse({"error": f"no WMS instance {connector_id!r}"}, status_code=404)
        except InvalidSignature as exc:
            return JSONResponse({"error": "invalid signature", "reason": str(exc)}, status_code=401)
        except BadDelivery as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        if receipt is Receipt.DUPLICATE:
            return JSONResponse({"status": "duplicate"}, status_code=200)
        return JSONResponse({"status": "accepted"}, status_code=202)

    routes = [
        Route("/webhooks/wms/{connector_id}", webhook, methods=["POST"]),
        Route("/graphql/schema.graphql", schema_sdl, methods=["GET"]),
        Route("/graphql", view),
        WebSocketRoute("/graphql", view),
        Route("/oauth/token", token_endpoint(rt.access), methods=["POST"]),
        Route("/.well-known/jwks.json", jwks_endpoint(rt.tokens), methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.runtime = rt
    return app

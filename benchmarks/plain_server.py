"""A plain Starlette endpoint that answers POST /graphql with fixed bytes.

It is the floor of the storefront benchmark: the same HTTP stack as Stockgraph and the
strawberry peer (uvicorn, one worker, Starlette), the same response bytes, and no GraphQL.
Each response body is read from a file given on the command line and selected by the
``q`` query parameter:

    python benchmarks/plain_server.py --port 8098 \\
        --body availability=/tmp/availability.json --body levels=/tmp/levels.json

    curl -s -X POST 'http://127.0.0.1:8098/graphql?q=availability' -d '{}'

The request body is read (and discarded) so the server does the same socket work a GraphQL
server does for the same request.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

_NOT_FOUND = b'{"errors":[{"message":"unknown q"}]}'


def build(bodies: dict[str, bytes]) -> Starlette:
    """The app: ``POST /graphql?q=NAME`` answers ``bodies[NAME]`` as ``application/json``."""

    async def graphql(request: Request) -> Response:
        await request.body()
        body = bodies.get(request.query_params.get("q", ""))
        if body is None:
            return Response(_NOT_FOUND, status_code=404, media_type="application/json")
        return Response(body, media_type="application/json")

    return Starlette(routes=[Route("/graphql", graphql, methods=["POST"])])


def _body_arg(value: str) -> tuple[str, bytes]:
    name, sep, path = value.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {value!r}")
    try:
        return name, Path(path).read_bytes()
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"cannot read {path}: {exc}") from exc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8098)
    parser.add_argument(
        "--body",
        type=_body_arg,
        action="append",
        required=True,
        metavar="NAME=PATH",
        help="serve the bytes of PATH for POST /graphql?q=NAME (repeatable)",
    )
    args = parser.parse_args()
    uvicorn.run(
        build(dict(args.body)),
        host=args.host,
        port=args.port,
        workers=1,
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()

"""The fan-out's floor: the fleet read by Stockgraph's own connectors and nothing else.

``fanout.py`` runs this on Stockgraph's CPU while the server is idle: every instance of the
topology is asked about the same SKUs at once, through the connector Stockgraph builds for it
(budget, breaker, retries, wire parsing), ``--queries`` times one after another. No query is
parsed, no projection read, no answer mapped, laid over, written back or serialised. What
it reports is how long the fleet itself takes to have answered and been read: a Stockgraph
doing no work of its own could not answer sooner, so the fan-out's p50 less this one's is
what Stockgraph adds.

    python benchmarks/fleet_probe.py TOPOLOGY.toml --skus SKU-00000,SKU-00001 --queries 50

Prints one JSON object: per round, the milliseconds until the first and the last instance
had answered and been read, and the CPU the round took here.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from stockgraph.config import load_topology  # noqa: E402
from stockgraph.connectors.base import Connector  # noqa: E402
from stockgraph.connectors.registry import build_connector  # noqa: E402
from stockgraph.wiring import connection_of, warehouse_specs  # noqa: E402


def connectors(topology: Path, skus: Sequence[str]) -> list[tuple[str, Connector, list[str]]]:
    """Each instance's connector and the WMS codes of ``skus`` at it, built as Stockgraph
    builds them from the topology file."""
    built = []
    for spec in warehouse_specs(load_topology(topology)):
        settings, mapping = connection_of(spec)
        made = build_connector(spec.dialect, connector_id=spec.connector_id, settings=settings)
        built.append((spec.connector_id, made.connector, [mapping.wms_code(s) for s in skus]))
    return built


async def rounds(
    built: list[tuple[str, Connector, list[str]]], queries: int, pause_s: float
) -> list[dict[str, float]]:
    try:
        return await _rounds(built, queries, pause_s)
    finally:
        await asyncio.gather(*(connector.aclose() for _id, connector, _codes in built))


async def _ask(connector: Connector, codes: list[str], started: float) -> float:
    """Ask one instance about ``codes`` (in batches its dialect takes); the time it took
    from ``started`` to have answered and been read."""
    batch = connector.spec.max_batch
    await asyncio.gather(
        *(connector.fetch_levels(codes[i : i + batch]) for i in range(0, len(codes), batch))
    )
    return time.perf_counter() - started


async def _rounds(
    built: list[tuple[str, Connector, list[str]]], queries: int, pause_s: float
) -> list[dict[str, float]]:
    out: list[dict[str, float]] = []
    for _ in range(queries):
        started = time.perf_counter()
        cpu = time.process_time()
        done = await asyncio.gather(
            *(_ask(connector, codes, started) for _id, connector, codes in built)
        )
        out.append(
            {
                "first_ms": min(done) * 1000,
                "last_ms": max(done) * 1000,
                "cpu_ms": (time.process_time() - cpu) * 1000,
            }
        )
        await asyncio.sleep(pause_s)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("topology", type=Path)
    p.add_argument("--skus", required=True, help="comma-separated SKUs, as Stockgraph names them")
    p.add_argument("--queries", type=int, default=50)
    p.add_argument(
        "--pause", type=float, default=0.05, help="seconds between rounds (budgets refill)"
    )
    args = p.parse_args(argv)
    built = connectors(args.topology, [s for s in args.skus.split(",") if s])
    result: dict[str, Any] = {
        "instances": len(built),
        "rounds": asyncio.run(rounds(built, args.queries, args.pause)),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

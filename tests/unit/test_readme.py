"""The configuration the README shows is configuration Stockgraph accepts."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from stockgraph.config import parse_topology
from stockgraph.connectors.registry import build_connector
from stockgraph.domain.mapping import MappedLevel
from stockgraph.wiring import connection_of, warehouse_specs

README = Path(__file__).resolve().parents[2] / "README.md"


async def test_the_readme_topology_example_is_valid() -> None:
    block = re.search(r"```toml\n# stockgraph.toml\n(.*?)```", README.read_text(), re.S)
    assert block is not None
    topology = parse_topology(tomllib.loads(block.group(1)))
    [hook] = topology.webhooks
    assert (hook.tenant, hook.events) == ("acme", ("stock.changed", "sync.alert"))
    spec = warehouse_specs(topology)[0]
    settings, mapping = connection_of(spec)
    assert mapping.sku("ITM000001") == "SKU-00001"
    level = mapping.level("ITM000001", "BIN-A", "CS", 2)
    assert isinstance(level, MappedLevel) and level.on_hand == 24
    built = build_connector(spec.dialect, connector_id="readme", settings=settings)
    try:
        assert built.webhook_secrets == ("whsec-new", "whsec-old")
        assert (built.connector.spec.rate.rate, built.connector.spec.rate.burst) == (5, 20)
    finally:
        await built.connector.aclose()

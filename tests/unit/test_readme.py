"""The configuration the README shows is configuration Stockgraph accepts."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from stockgraph.config import parse_topology
from stockgraph.connectors.registry import build_connector
from stockgraph.wiring import instance_mapping

README = Path(__file__).resolve().parents[2] / "README.md"


async def test_the_readme_topology_example_is_valid() -> None:
    block = re.search(r"```toml\n# stockgraph.toml\n(.*?)```", README.read_text(), re.S)
    assert block is not None
    topology = parse_topology(tomllib.loads(block.group(1)))
    [hook] = topology.webhooks
    assert (hook.tenant, hook.events) == ("acme", ("stock.changed", "sync.alert"))
    warehouse = topology.warehouses[0]
    settings = dict(warehouse.connection)
    mapping = instance_mapping(settings, warehouse_code=warehouse.code, connector_id="readme")
    assert mapping.sku("ITM000001") == "SKU-00001"
    assert mapping.quantity("ITM000001", "CS", 2) == 24
    settings.pop("mapping")
    built = build_connector(warehouse.dialect, connector_id="readme", settings=settings)
    try:
        assert built.webhook_secrets == ("whsec-new", "whsec-old")
        assert (built.connector.spec.rate.rate, built.connector.spec.rate.burst) == (5, 20)
    finally:
        await built.connector.aclose()

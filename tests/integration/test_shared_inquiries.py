"""An x12 mailbox's two limits, shared in Redis by every process: polls and inquiries apart."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import httpx
import pytest

from stockgraph.connectors.errors import RateLimited
from stockgraph.connectors.runtime import deadline
from stockgraph.connectors.simulation import SimulatedWms
from stockgraph.connectors.x12.simulator import Mailbox, build_simulator
from stockgraph.domain.ids import TenantId
from stockgraph.domain.model import WarehouseSpec
from stockgraph.runtime import Runtime
from stockgraph.services.ingestion import ConnectorInstance
from tests.conftest import make_settings
from tests.services import redis_url

pytestmark = pytest.mark.redis

CONNECTOR_ID = "acme-wh-00"


@pytest.fixture
async def two_processes(
    demo_database: str, tmp_path: Path
) -> AsyncIterator[tuple[list[ConnectorInstance], Mailbox]]:
    """One x12 instance as two processes sharing one Redis reach it: 1 poll a minute, and 2
    inquiries at once restored one every 1,000 s."""
    copy = tmp_path / "stockgraph.db"
    shutil.copy(Path(demo_database.removeprefix("sqlite+aiosqlite:///")), copy)
    settings = make_settings(
        f"sqlite+aiosqlite:///{copy}",
        redis_url=redis_url(),
        redis_namespace=f"test-{uuid.uuid4().hex}",
    )
    wms = SimulatedWms(name="x12", locations=["MAIN"], stock={("00000001", "MAIN"): 5})
    simulator = build_simulator(
        wms=wms, username="u", password="p", interchange_ids=("WAREHOUSE", "STOCKGRAPH")
    )
    spec = WarehouseSpec(
        tenant_id=TenantId("acme"),
        code="WH-00",
        connector_id=CONNECTOR_ID,
        name="Berlin DC",
        region="eu-central",
        location=None,
        dialect="x12",
        settings={
            "mailbox_url": "http://wms",
            "username": "u",
            "password": "p",
            "our_id": "STOCKGRAPH",
            "their_id": "WAREHOUSE",
            "poll_interval_seconds": 60,
            "inquiry_limit": {"rate": 0.001, "burst": 2},
            "mapping": {"skus": {"00000001": "SKU-00001"}},
        },
    )
    async with AsyncExitStack() as stack:
        instances = []
        for _ in range(2):
            runtime = Runtime.build(settings)
            stack.push_async_callback(runtime.close)
            await runtime.connect_instances(
                [spec], transports={CONNECTOR_ID: httpx.ASGITransport(app=simulator)}
            )
            instances.append(runtime.instances[CONNECTOR_ID])
        yield instances, simulator.state.mailbox


async def test_processes_share_the_inquiry_limit_and_the_poll_interval_apart(
    two_processes: tuple[list[ConnectorInstance], Mailbox],
) -> None:
    (a, b), mailbox = two_processes
    with deadline(0.1):
        events, _cursor = await b.connector.poll_events(None)  # and its 997: 1 inquiry of 2
        assert events
        with pytest.raises(RateLimited, match="shared rate budget"):
            await a.connector.poll_events(None)  # the poll interval holds the other back

        # Between polls, inquiries go out, from either process, within the shared limit.
        await a.connector.fetch_levels(["00000001"])
        with pytest.raises(RateLimited, match="shared inquiries budget"):
            await b.connector.fetch_levels(["00000001"])
    assert len(mailbox.received) == 2

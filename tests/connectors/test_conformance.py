"""What every dialect must do, run against its own simulator and the real ingestion path.

Each case wires one simulated WMS to a Stockgraph runtime in process: the runtime reaches
the simulator through an ASGI transport, and the simulator's webhooks reach Stockgraph's
own ``/webhooks/wms/{id}`` route the same way. A new dialect gets a harness here and must
pass every test.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import bindparam, text
from starlette.applications import Starlette

from stockgraph.app import create_app
from stockgraph.connectors.errors import RateLimited
from stockgraph.connectors.runtime import deadline
from stockgraph.connectors.simulation import SimulatedWms
from stockgraph.domain.ids import TenantId
from stockgraph.domain.model import WarehouseSpec
from stockgraph.runtime import Runtime
from stockgraph.schema.context import Limits
from tests.conftest import make_settings
from tests.graphql.helpers import run

CONNECTOR_ID = "acme-wh-00"
WEBHOOK_URL = f"http://stockgraph/webhooks/wms/{CONNECTOR_ID}"
SECRET = "whsec-conformance"
SKUS = {f"W-{i:04d}": f"SKU-{i:05d}" for i in range(30)}
CASE_SKU = "W-0003"


@dataclass(frozen=True)
class Harness:
    name: str
    simulator: Callable[[SimulatedWms, httpx.AsyncClient], Starlette]
    settings: dict[str, Any]
    push: bool
    case_packs: bool = False
    """Reports some SKUs in cases (possibly fractional) rather than eaches."""


def _rest(wms: SimulatedWms, client: httpx.AsyncClient) -> Starlette:
    from stockgraph.connectors.rest.simulator import build_simulator

    return build_simulator(
        wms=wms,
        api_key="conformance-key",
        requests_per_second=1000,
        webhook_url=WEBHOOK_URL,
        webhook_secret=SECRET,
        case_packs={CASE_SKU: 12},
        webhook_client=client,
    )


def _graphql(wms: SimulatedWms, client: httpx.AsyncClient) -> Starlette:
    from stockgraph.connectors.graphql.simulator import build_simulator

    app = build_simulator(
        wms=wms,
        access_token="conformance-token",
        bucket_size=100_000,
        restore_rate=10_000,
        webhook_url=WEBHOOK_URL,
        webhook_secret=SECRET,
        webhook_client=client,
    )
    return app


def _x12(wms: SimulatedWms, client: httpx.AsyncClient) -> Starlette:
    from stockgraph.connectors.x12.simulator import build_simulator

    return build_simulator(
        wms=wms,
        username="conformance",
        password="conformance-password",
        interchange_ids=("WAREHOUSE", "STOCKGRAPH"),
    )


HARNESSES = [
    Harness(
        "rest",
        _rest,
        {"base_url": "http://wms", "api_key": "conformance-key", "webhook_secrets": [SECRET]},
        push=True,
        case_packs=True,
    ),
    Harness(
        "graphql",
        _graphql,
        {
            "endpoint": "http://wms/graphql",
            "access_token": "conformance-token",
            "webhook_secrets": [SECRET],
            "rate_limit": {"rate": 10_000, "burst": 100_000},  # the simulator's plan
        },
        push=True,
    ),
    Harness(
        "x12",
        _x12,
        {
            "mailbox_url": "http://wms",
            "username": "conformance",
            "password": "conformance-password",
            "our_id": "STOCKGRAPH",
            "their_id": "WAREHOUSE",
            "poll_interval_seconds": 0.001,
        },
        push=False,
    ),
]


@dataclass
class Wired:
    runtime: Runtime
    wms: SimulatedWms
    simulator: Starlette
    harness: Harness

    @property
    def instance(self) -> Any:
        return self.runtime.instances[CONNECTOR_ID]

    async def deliver(self) -> None:
        """Bring what the WMS did into the projection, however this dialect tells it."""
        if self.harness.push:
            while (await self.runtime.ingestion.apply_pending()).entries:
                pass  # a round takes at most 50 events
        else:
            await self.runtime.sync.poll(self.instance)

    async def projection(self) -> dict[str, int]:
        async with self.runtime.engine.connect() as conn:
            rows = await conn.execute(
                text(
                    "SELECT l.sku, l.on_hand FROM stock_levels l JOIN warehouses w"
                    " ON w.id = l.warehouse_id WHERE w.connector_id = :c AND l.sku IN :skus"
                ).bindparams(bindparam("skus", expanding=True)),
                {"c": CONNECTOR_ID, "skus": list(SKUS.values())},
            )
            return {r[0]: int(r[1]) for r in rows}

    def truth(self) -> dict[str, int]:
        return {SKUS[sku]: cell.on_hand for (sku, _loc), cell in self.wms.cells.items()}

    async def compare(self) -> None:
        """The projection holds the WMS's state, but for a case-pack SKU in odd eaches."""
        projection, truth = await self.projection(), self.truth()
        case = SKUS[CASE_SKU]
        if truth[case] % 12:
            projection.pop(case)
            truth.pop(case)
        assert projection == truth


@pytest.fixture(params=HARNESSES, ids=[h.name for h in HARNESSES])
async def wired(
    request: pytest.FixtureRequest, demo_database: str, tmp_path: Path
) -> AsyncIterator[Wired]:
    harness: Harness = request.param
    copy = tmp_path / "stockgraph.db"
    shutil.copy(Path(demo_database.removeprefix("sqlite+aiosqlite:///")), copy)
    # Reads of every SKU across the demo's 24 warehouses cost more than a storefront may.
    settings = make_settings(
        f"sqlite+aiosqlite:///{copy}", max_query_cost=100_000, cost_bucket_size=100_000
    )
    runtime = Runtime.build(settings)
    app = create_app(settings, runtime=runtime)
    to_stockgraph = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://stockgraph"
    )
    stock = {(sku, "MAIN"): (i * 7) % 50 + 1 for i, sku in enumerate(SKUS)}
    stock[(CASE_SKU, "MAIN")] = 36
    wms = SimulatedWms(name=harness.name, locations=["MAIN"], stock=stock, seed=7)
    simulator = harness.simulator(wms, to_stockgraph)
    spec = WarehouseSpec(
        tenant_id=TenantId("acme"),
        code="WH-00",
        connector_id=CONNECTOR_ID,
        name="Berlin DC",
        region="eu-central",
        location=None,
        dialect=harness.name,
        settings={
            **harness.settings,
            "mapping": {"skus": SKUS, "sku_units": {CASE_SKU: {"CS": 12}}},
        },
    )
    await runtime.connect_instances(
        [spec], transports={CONNECTOR_ID: httpx.ASGITransport(app=simulator)}
    )
    try:
        yield Wired(runtime, wms, simulator, harness)
    finally:
        await to_stockgraph.aclose()
        await runtime.close()


async def test_a_full_sync_brings_the_wms_state_into_the_projection(wired: Wired) -> None:
    report = await wired.runtime.sync.full_sync(wired.instance)
    assert report.exceptions == 0
    assert await wired.projection() == wired.truth()


async def test_a_batch_lookup_is_one_call_for_up_to_max_batch_skus(wired: Wired) -> None:
    calls: list[str] = []
    original = wired.instance.connector._runtime._client.request

    async def counting(method: str, url: str, **kwargs: Any) -> Any:
        calls.append(f"{method} {url}")
        return await original(method, url, **kwargs)

    wired.instance.connector._runtime._client.request = counting
    levels = await wired.instance.connector.fetch_levels(list(SKUS))
    assert len(calls) == 1, calls
    assert {lv.wms_sku for lv in levels} == set(SKUS)


async def test_warehouse_activity_reaches_the_projection(wired: Wired) -> None:
    await wired.runtime.sync.full_sync(wired.instance)
    for _ in range(40):
        await wired.wms.activity()
    await wired.deliver()
    await wired.compare()


async def test_duplicated_and_reordered_deliveries_converge(wired: Wired) -> None:
    await wired.runtime.sync.full_sync(wired.instance)
    wired.wms.faults.update({"duplicate_rate": 0.5, "reorder_rate": 0.3})
    for _ in range(60):
        await wired.wms.activity()
    wired.wms.faults.update({"duplicate_rate": 0, "reorder_rate": 0})
    await wired.wms.receive("W-0001", "MAIN", 12)  # flushes anything held back
    await wired.deliver()
    await wired.compare()


async def test_a_case_pack_in_odd_eaches_is_an_exception_not_a_guess(wired: Wired) -> None:
    if not wired.harness.case_packs:
        pytest.skip(f"the {wired.harness.name} WMS reports every SKU in eaches")
    await wired.runtime.sync.full_sync(wired.instance)
    await wired.wms.receive(CASE_SKU, "MAIN", 24)
    await wired.deliver()
    assert (await wired.projection())[SKUS[CASE_SKU]] == 60
    await wired.wms.adjust(CASE_SKU, "MAIN", -1)
    await wired.deliver()
    assert (await wired.projection())[SKUS[CASE_SKU]] == 60
    async with wired.runtime.engine.connect() as conn:
        rows = (await conn.execute(text("SELECT code, reason, raw FROM sync_exceptions"))).all()
    assert [r.code for r in rows] == ["NOT_WHOLE_BASE_UNITS"]
    assert CASE_SKU in rows[0].reason and CASE_SKU in rows[0].raw


async def test_garbled_messages_become_exceptions_and_lose_nothing_else(wired: Wired) -> None:
    await wired.runtime.sync.full_sync(wired.instance)
    wired.wms.faults.update({"malformed_rate": 1.0})
    await wired.wms.receive("W-0002", "MAIN", 5)
    if not wired.harness.push:
        await wired.deliver()  # a polled WMS garbles what it serves, not what it writes
    wired.wms.faults.update({"malformed_rate": 0})
    await wired.wms.receive("W-0004", "MAIN", 7)
    await wired.deliver()
    async with wired.runtime.engine.connect() as conn:
        codes = [r[0] for r in await conn.execute(text("SELECT code FROM sync_exceptions"))]
    assert codes == ["MALFORMED"]
    projection = await wired.projection()
    assert projection["SKU-00004"] == wired.truth()["SKU-00004"]


async def _graphql(wired: Wired, query: str) -> dict[str, Any]:
    from stockgraph.auth.principal import Principal
    from stockgraph.auth.scopes import Scope

    token = wired.runtime.tokens.issue(
        Principal(TenantId("acme"), "live-test", frozenset(Scope))
    ).access_token
    app = create_app(wired.runtime.settings, runtime=wired.runtime)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://stockgraph"
    ) as client:
        response = await client.post(
            "/graphql", json={"query": query}, headers={"Authorization": f"Bearer {token}"}
        )
    body: dict[str, Any] = response.json()
    return body


def _upstream_calls(wired: Wired) -> int:
    return int(wired.instance.connector._runtime.stats().calls)


async def test_max_age_reads_the_wms_live_in_one_call_and_writes_it_back(wired: Wired) -> None:
    await wired.runtime.sync.full_sync(wired.instance)
    for (sku, location), cell in list(wired.wms.cells.items())[:10]:
        if sku != CASE_SKU:
            wired.wms.drift(sku, location, -1 if cell.on_hand else 3)  # no event at all
    skus = ", ".join(f'"{s}"' for s in SKUS.values())
    before = _upstream_calls(wired)
    body = await _graphql(
        wired,
        f"{{ a: inventoryLevels(skus: [{skus}], maxAge: 0) {{ sku onHand source stale }}"
        f"   b: inventoryLevels(skus: [{skus}], maxAge: 0) {{ sku }} }}",
    )
    assert "errors" not in body
    assert _upstream_calls(wired) - before == 1
    [upstream] = body["extensions"]["cost"]["upstreams"]
    assert upstream["connectorId"] == CONNECTOR_ID
    assert (upstream["calls"], upstream["servedFromCache"], upstream["retryAfterMs"]) == (
        1,
        False,
        None,
    )
    assert isinstance(upstream["budgetRemaining"], float)
    mine = {lv["sku"]: lv for lv in body["data"]["a"] if lv["source"] == "LIVE"}
    assert len(mine) == len(SKUS)
    truth = wired.truth()
    assert {sku: lv["onHand"] for sku, lv in mine.items()} == truth | {
        SKUS[CASE_SKU]: mine[SKUS[CASE_SKU]]["onHand"]
    }
    assert not any(lv["stale"] for lv in mine.values())
    # Answered before it is written back: a projection read right after waits for the
    # write-back, and never shows what was held before the live answer.
    plain = await _graphql(
        wired, f"{{ inventoryLevels(skus: [{skus}]) {{ sku onHand source warehouse {{ code }} }} }}"
    )
    held = {
        lv["sku"]: lv["onHand"]
        for lv in plain["data"]["inventoryLevels"]
        if lv["warehouse"]["code"] == "WH-00"
    }
    without_case = {k: v for k, v in truth.items() if k != SKUS[CASE_SKU]}
    assert {k: v for k, v in held.items() if k != SKUS[CASE_SKU]} == without_case
    projection = await wired.projection()
    assert {k: v for k, v in projection.items() if k != SKUS[CASE_SKU]} == without_case


async def test_a_live_answer_confirming_what_is_held_outranks_events_still_on_their_way(
    wired: Wired,
) -> None:
    """A live answer with the physical counts held, at a newer sequence, moves nothing but
    the level's sequence: an event from before it, arriving after, does not take the level
    back to what that event said."""
    await wired.runtime.sync.full_sync(wired.instance)
    sku = "W-0005"
    held = (await wired.projection())[SKUS[sku]]
    await wired.wms.adjust(sku, "MAIN", -2)  # an event, not delivered yet
    wired.wms.drift(sku, "MAIN", 2)  # and back, without one
    body = await _graphql(
        wired,
        f'{{ inventoryLevels(skus: ["{SKUS[sku]}"], maxAge: 0)'
        " { onHand source warehouse { code } } }",
    )
    [live] = [lv for lv in body["data"]["inventoryLevels"] if lv["warehouse"]["code"] == "WH-00"]
    assert (live["onHand"], live["source"]) == (held, "LIVE")
    await wired.runtime.live.settle()
    await wired.deliver()
    assert (await wired.projection())[SKUS[sku]] == held == wired.truth()[SKUS[sku]]


async def test_max_age_zero_named_by_aliases_is_still_one_call(wired: Wired) -> None:
    """The WMS is asked before the projection is read: aliases are resolved first, and a
    SKU named by its alias is not asked for a second time."""
    await wired.runtime.sync.full_sync(wired.instance)
    ours = list(SKUS.values())[:5]
    aliases = [f"AC{int(sku.removeprefix('SKU-')):06d}" for sku in ours]  # the demo's aliases
    before = _upstream_calls(wired)
    for _ in range(2):  # the second time, the SKUs are known without the catalogue
        named = ", ".join(f'"{code}"' for code in [*aliases, ours[0], "NO-SUCH-CODE"])
        body = await _graphql(
            wired, f"{{ inventoryLevels(skus: [{named}], maxAge: 0) {{ sku source stale }} }}"
        )
        assert "errors" not in body
        mine = [lv for lv in body["data"]["inventoryLevels"] if lv["source"] == "LIVE"]
        assert sorted({lv["sku"] for lv in mine}) == sorted(ours)
        assert not any(lv["stale"] for lv in mine)
    assert _upstream_calls(wired) - before == 2


async def test_a_wms_that_cannot_answer_leaves_levels_stale_not_an_error(wired: Wired) -> None:
    await wired.runtime.sync.full_sync(wired.instance)
    wired.wms.faults.update({"error_rate": 1.0})
    skus = ", ".join(f'"{s}"' for s in list(SKUS.values())[:5])
    body = await _graphql(
        wired, f"{{ inventoryLevels(skus: [{skus}], maxAge: 0) {{ sku source stale }} }}"
    )
    assert "errors" not in body
    mine = [lv for lv in body["data"]["inventoryLevels"] if lv["source"] != "LIVE"]
    assert mine and all(lv["stale"] for lv in mine)
    [upstream] = body["extensions"]["cost"]["upstreams"]
    assert upstream["servedFromCache"] is True


async def test_an_operation_over_the_maximum_cost_touches_no_wms(wired: Wired) -> None:
    before = _upstream_calls(wired)
    skus = list(SKUS.values())
    result = await run(
        wired.runtime,
        "query($s: [String!]!){ inventoryLevels(skus: $s, maxAge: 0) { sku onHand } }",
        {"s": skus},
        limits=Limits(max_cost=len(skus)),
    )
    assert result.codes == ["MAX_COST_EXCEEDED"]
    assert result.data is None
    assert result.context.cost.actual is None
    assert _upstream_calls(wired) == before


async def test_a_full_sync_and_a_live_read_at_once_do_not_collide(wired: Wired) -> None:
    held = await wired.runtime.stock_store.levels(
        TenantId("acme"), list(SKUS.values()), [wired.instance.warehouse_id]
    )
    report, live = await asyncio.gather(
        wired.runtime.sync.full_sync(wired.instance),
        wired.runtime.live.read(TenantId("acme"), held),
    )
    await wired.runtime.live.settle()
    assert report.exceptions == 0
    assert len(live) == len(held) == len(SKUS)
    await wired.compare()


async def test_sync_health_shows_each_instance_and_what_goes_wrong(wired: Wired) -> None:
    from stockgraph.connectors.errors import ConnectorError

    await wired.runtime.sync.full_sync(wired.instance)
    query = (
        "{ syncHealth { connectorId dialect circuitState budgetRemaining lastEventAt lagMs"
        " errorRate riskScore lastError warehouse { code } } }"
    )
    healthy = (await _graphql(wired, query))["data"]["syncHealth"]
    assert [h["connectorId"] for h in healthy] == [CONNECTOR_ID]
    assert healthy[0]["dialect"] == wired.harness.name
    assert healthy[0]["circuitState"] == "CLOSED"
    assert healthy[0]["errorRate"] == 0 and healthy[0]["riskScore"] < 0.5
    assert healthy[0]["lastEventAt"] is not None and healthy[0]["warehouse"] == {"code": "WH-00"}
    wired.wms.faults.update({"error_rate": 1.0})
    with pytest.raises(ConnectorError):
        await wired.instance.connector.fetch_levels(["W-0001"])
    failing = (await _graphql(wired, query))["data"]["syncHealth"][0]
    assert failing["errorRate"] > 0 and failing["riskScore"] > healthy[0]["riskScore"]
    assert failing["lastError"]


async def test_a_live_read_does_not_wait_out_a_spent_budget(wired: Wired) -> None:
    import time

    await wired.runtime.sync.full_sync(wired.instance)
    # As after a Retry-After: 30 on what a live read spends (an x12 mailbox's inquiries).
    wired.instance.connector._runtime.inquiry_budget.pause(30)
    started = time.monotonic()
    body = await _graphql(
        wired, '{ inventoryLevels(skus: ["SKU-00001"], maxAge: 0) { source stale } }'
    )
    assert time.monotonic() - started < 1.0
    levels = body["data"]["inventoryLevels"]
    assert levels and all(lv == {"source": "PROJECTION", "stale": True} for lv in levels)


X12_BETWEEN_POLLS = Harness(
    "x12",
    _x12,
    {
        **HARNESSES[2].settings,
        "poll_interval_seconds": 60,
        "inquiry_limit": {"rate": 0.001, "burst": 3},
    },
    push=False,
)


@pytest.mark.parametrize("wired", [X12_BETWEEN_POLLS], ids=["x12"], indirect=True)
async def test_a_live_read_reports_what_is_left_of_the_budget_it_spent(wired: Wired) -> None:
    query = '{ inventoryLevels(skus: ["SKU-00001"], maxAge: 0) { source } }'
    await wired.runtime.sync.full_sync(wired.instance)  # an 846 inquiry: 1 of 3
    await _graphql(wired, query)  # 2 of 3
    body = await _graphql(wired, query)  # 3 of 3; the poll interval is untouched
    [use] = [
        u
        for u in body["extensions"]["cost"]["upstreams"]
        if u["connectorId"] == wired.instance.connector_id
    ]
    assert use["calls"] == 1
    assert use["budgetRemaining"] < 0.5  # the inquiry limit, not the poll's 1 left


@pytest.mark.parametrize("wired", [X12_BETWEEN_POLLS], ids=["x12"], indirect=True)
async def test_an_x12_live_read_goes_out_between_polls_within_its_inquiry_limit(
    wired: Wired,
) -> None:
    query = (
        '{ inventoryLevels(skus: ["SKU-00001"], maxAge: 0) { warehouse { code } source stale } }'
    )

    async def ours() -> dict[str, Any]:
        body = await _graphql(wired, query)
        [level] = [
            lv for lv in body["data"]["inventoryLevels"] if lv["warehouse"]["code"] == "WH-00"
        ]
        return {"source": level["source"], "stale": level["stale"]}

    await wired.runtime.sync.full_sync(wired.instance)  # an 846 inquiry: 1 of 3
    await wired.runtime.sync.poll(wired.instance)  # the poll, and its 997: 2 of 3
    mailbox = wired.simulator.state.mailbox
    assert len(mailbox.received) == 2

    assert await ours() == {"source": "LIVE", "stale": False}  # 3 of 3, 60 s before a poll
    assert await ours() == {"source": "PROJECTION", "stale": True}  # beyond the limit
    assert len(mailbox.received) == 3
    with deadline(0.1), pytest.raises(RateLimited):
        await wired.runtime.sync.poll(wired.instance)  # polls keep to their interval

"""A live read answers from the WMSs' answers laid over what is held, then writes back.

The answer follows the write-back's own rules (mapping, newer-sequence-wins, physical
counts over Stockgraph's commitments); the write-back runs after the answer, a bounded
number at a time, and projection readers can wait for it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from stockgraph.connectors.base import WmsLevel
from stockgraph.domain.errors import ConcurrentChange
from stockgraph.domain.ids import Sku, TenantId, WarehouseId
from stockgraph.domain.mapping import InstanceMapping
from stockgraph.domain.model import LevelSource, StockLevel
from stockgraph.domain.quantities import StockQuantities
from stockgraph.services.live import LiveReads
from stockgraph.services.wms_reports import ApplyReport, Batch, Confirmation, ConnectorInstance

TENANT = TenantId("acme")
WAREHOUSE = WarehouseId("wh-1")
EARLIER = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass
class _Spec:
    max_batch: int = 50


@dataclass
class FakeConnector:
    """Answers ``fetch_levels`` with the scripted levels of the codes asked."""

    levels: dict[str, WmsLevel]
    spec: _Spec = field(default_factory=_Spec)
    asked: list[list[str]] = field(default_factory=list)

    async def fetch_levels(self, codes: Sequence[str]) -> list[WmsLevel]:
        self.asked.append(list(codes))
        return [self.levels[c] for c in codes if c in self.levels]


@dataclass
class FakeIngestion:
    """Records each write-back; holds them until ``release`` is set."""

    release: asyncio.Event = field(default_factory=asyncio.Event)
    applied: list[Sequence[Batch]] = field(default_factory=list)
    confirmed: list[Sequence[Confirmation]] = field(default_factory=list)
    confirm_meets: Exception | None = None
    """Raised by every confirmation (``ConcurrentChange``: as when a level moved on)."""
    running: int = 0
    most_running: int = 0

    @contextlib.asynccontextmanager
    async def locks(self, _connector_ids: Any) -> AsyncIterator[None]:
        yield

    async def apply_batches(
        self, _uow: Any, batches: Sequence[Batch], *, report: ApplyReport, **_: Any
    ) -> None:
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            await self.release.wait()
            self.applied.append(batches)
            for instance, events in batches:  # as if every level reported had moved
                skus = {Sku(instance.mapping.skus[lv.wms_sku]) for e in events for lv in e.levels}
                report.applied += len(skus)
                report.touched.setdefault(instance.tenant_id, set()).update(skus)
        finally:
            self.running -= 1

    async def confirm_batches(
        self, _uow: Any, confirmations: Sequence[Confirmation], *, report: ApplyReport
    ) -> None:
        await self.release.wait()
        if self.confirm_meets is not None:
            raise self.confirm_meets
        self.confirmed.append(confirmations)
        for instance, _answer, levels in confirmations:
            report.unchanged += len(levels)
            report.touched.setdefault(instance.tenant_id, set()).update(lv.sku for lv in levels)


class FakeUnitOfWork:
    async def __aenter__(self) -> FakeUnitOfWork:
        return self

    async def __aexit__(self, *_: object) -> None:
        return None

    async def commit(self) -> None:
        return None


def wms_level(code: str, on_hand: int, sequence: int) -> WmsLevel:
    return WmsLevel(
        wms_sku=code, location="MAIN", unit="EA", on_hand=Decimal(on_hand), sequence=sequence
    )


def held(sku: str, on_hand: int, *, committed: int = 0, sequence: int = 5) -> StockLevel:
    return StockLevel(
        tenant_id=TENANT,
        warehouse_id=WAREHOUSE,
        sku=Sku(sku),
        quantities=StockQuantities.from_physical(on_hand=on_hand, committed=committed),
        as_of=EARLIER,
        source_sequence=sequence,
    )


def _instance(connector: FakeConnector, number: int) -> ConnectorInstance:
    code = f"WH-0{number}"
    return ConnectorInstance(
        connector_id=f"rest-{number}",
        tenant_id=TENANT,
        warehouse_id=WarehouseId(f"wh-{number}"),
        warehouse_code=code,
        connector=connector,  # type: ignore[arg-type]
        mapping=InstanceMapping(skus={"W-A": "SKU-A", "W-B": "SKU-B"}, default_location=code),
    )


def reads(
    connector: FakeConnector,
    ingestion: FakeIngestion,
    *,
    second: FakeConnector | None = None,
    **options: Any,
) -> LiveReads:
    """Live reads of one instance (warehouse ``wh-1``), and of ``second`` at ``wh-2``."""
    instances = [_instance(connector, 1)]
    if second is not None:
        instances.append(_instance(second, 2))
    return LiveReads(
        instances=lambda: instances,
        ingestion=ingestion,  # type: ignore[arg-type]
        unit_of_work=FakeUnitOfWork,  # type: ignore[arg-type]
        **options,
    )


async def test_the_answer_follows_the_write_backs_rules_and_comes_before_it() -> None:
    connector = FakeConnector(
        {
            "W-A": wms_level("W-A", 7, sequence=9),  # newer than held: taken
            "W-B": wms_level("W-B", 1, sequence=3),  # older than held: held stays
        }
    )
    ingestion = FakeIngestion()
    changed: list[set[Sku]] = []
    live = reads(connector, ingestion, on_change=lambda _t, skus: changed.append(set(skus)))
    a, b = held("SKU-A", 10, committed=4), held("SKU-B", 2)
    found = await live.read(TENANT, [a, b])
    assert connector.asked == [["W-A", "W-B"]]
    got_a = found[(WAREHOUSE, Sku("SKU-A"))]
    assert (got_a.quantities.on_hand, got_a.quantities.committed) == (7, 4)
    assert got_a.quantities.available == 3
    assert (got_a.source_sequence, got_a.source) == (9, LevelSource.LIVE)
    assert got_a.as_of > EARLIER
    got_b = found[(WAREHOUSE, Sku("SKU-B"))]
    assert (got_b.quantities, got_b.source_sequence) == (b.quantities, 5)
    assert got_b.source is LevelSource.LIVE
    # Answered before the write-back has run; cached answers were told at once.
    assert ingestion.applied == []
    await asyncio.sleep(0)
    assert ingestion.running == 1
    assert changed == [{Sku("SKU-A"), Sku("SKU-B")}]
    ingestion.release.set()
    await live.settle()
    [[(instance, [snapshot])]] = ingestion.applied
    assert instance.connector_id == "rest-1"
    assert {lv.wms_sku for lv in snapshot.levels} == {"W-A", "W-B"}


async def test_a_level_the_wms_did_not_report_is_answered_as_held() -> None:
    live = reads(FakeConnector({"W-A": wms_level("W-A", 3, sequence=9)}), FakeIngestion())
    b = held("SKU-B", 2)
    found = await live.read(TenantId("acme"), [held("SKU-A", 1), b])
    assert found[(WAREHOUSE, Sku("SKU-B"))].quantities == b.quantities
    assert found[(WAREHOUSE, Sku("SKU-B"))].source is LevelSource.LIVE


async def test_readers_of_the_tenant_wait_for_its_write_backs() -> None:
    ingestion = FakeIngestion()
    live = reads(FakeConnector({"W-A": wms_level("W-A", 3, sequence=9)}), ingestion)
    await live.read(TENANT, [held("SKU-A", 1)])
    waiting = asyncio.create_task(live.written_back(TENANT))
    other = asyncio.create_task(live.written_back(TenantId("other")))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert other.done() and not waiting.done()
    ingestion.release.set()
    await asyncio.wait_for(waiting, 1)
    assert len(ingestion.applied) == 1


async def test_no_more_than_max_pending_write_backs_wait_at_once() -> None:
    ingestion = FakeIngestion()
    live = reads(FakeConnector({"W-A": wms_level("W-A", 3, sequence=9)}), ingestion, max_pending=2)
    first = [await live.read(TENANT, [held("SKU-A", 1)]) for _ in range(2)]
    await asyncio.sleep(0)
    assert len(first) == 2 and ingestion.running == 2
    third = asyncio.create_task(live.read(TENANT, [held("SKU-A", 1)]))
    await asyncio.sleep(0.01)
    assert not third.done()  # held back until a write-back finishes
    ingestion.release.set()
    await asyncio.wait_for(third, 1)
    await live.settle()
    assert len(ingestion.applied) == 3
    assert ingestion.most_running == 2


async def test_an_instance_that_answered_nothing_writes_nothing_back() -> None:
    ingestion = FakeIngestion()
    live = reads(FakeConnector({}), ingestion)
    a = held("SKU-A", 1)
    found = await live.read(TENANT, [a])
    assert found[(WAREHOUSE, Sku("SKU-A"))].quantities == a.quantities
    assert ingestion.running == 0 and ingestion.applied == []


def recent(sku: str, on_hand: int, *, sequence: int) -> StockLevel:
    level = held(sku, on_hand, sequence=sequence)
    return replace(level, as_of=datetime.now(UTC) - timedelta(milliseconds=100))


async def test_an_answer_with_nothing_new_is_not_written_back() -> None:
    """Same quantities and sequence as held, held brought up to date under a second ago:
    the answer is live, the projection is not rewritten for its ``as_of`` alone."""
    ingestion = FakeIngestion()
    live = reads(FakeConnector({"W-A": wms_level("W-A", 4, sequence=5)}), ingestion)
    a = recent("SKU-A", 4, sequence=5)
    found = await live.read(TENANT, [a])
    got = found[(WAREHOUSE, Sku("SKU-A"))]
    assert (got.source, got.quantities) == (LevelSource.LIVE, a.quantities)
    assert got.as_of > a.as_of
    await asyncio.sleep(0)
    assert ingestion.running == 0 and ingestion.applied == []


@pytest.mark.parametrize(
    ("reported", "why"),
    [
        (wms_level("W-A", 5, sequence=5), "changed quantities"),
        (wms_level("W-A", 5, sequence=6), "changed quantities at a newer sequence"),
        (wms_level("W-Z", 4, sequence=6), "a code that maps to nothing, to be recorded"),
    ],
)
async def test_an_answer_with_news_is_written_back_in_full(reported: WmsLevel, why: str) -> None:
    ingestion = FakeIngestion()
    ingestion.release.set()
    live = reads(FakeConnector({"W-A": reported, "W-Z": reported}), ingestion)
    await live.read(TENANT, [recent("SKU-A", 4, sequence=5)])
    await live.settle()
    assert (len(ingestion.applied), ingestion.confirmed) == (1, []), why


async def test_an_answer_confirming_levels_at_a_newer_sequence_is_written_back_as_such() -> None:
    """Same physical counts, newer sequence (an x12 reply, say): the levels held are
    confirmed, with nothing read or mapped again; the answer is not applied in full."""
    ingestion = FakeIngestion()
    ingestion.release.set()
    live = reads(
        FakeConnector({"W-A": wms_level("W-A", 4, sequence=6), "W-B": wms_level("W-B", 2, 5)}),
        ingestion,
    )
    a = recent("SKU-A", 4, sequence=5)
    b = recent("SKU-B", 2, sequence=5)  # confirmed at its sequence, recently: nothing new
    found = await live.read(TENANT, [a, b])
    await live.settle()
    assert ingestion.applied == []
    [[(instance, _answer, [confirmed])]] = ingestion.confirmed
    assert instance.warehouse_id == WAREHOUSE
    assert confirmed == found[(WAREHOUSE, Sku("SKU-A"))]
    assert (confirmed.source_sequence, confirmed.quantities) == (6, a.quantities)


async def test_a_confirmation_of_a_level_held_for_a_second_or_more_is_written_back() -> None:
    ingestion = FakeIngestion()
    ingestion.release.set()
    live = reads(
        FakeConnector({"W-A": wms_level("W-A", 4, sequence=5)}), ingestion, refresh_seconds=0.05
    )
    a = recent("SKU-A", 4, sequence=5)  # held 100 ms ago
    await live.read(TENANT, [a])
    await live.settle()
    [[(_instance, _answer, [confirmed])]] = ingestion.confirmed
    assert confirmed.as_of > a.as_of and (confirmed.sku, confirmed.source_sequence) == (a.sku, 5)


@pytest.mark.parametrize(
    "reported",
    [wms_level("W-A", 4, sequence=6), wms_level("W-A", 9, sequence=6)],
    ids=["confirmed", "changed"],
)
async def test_cached_answers_are_dropped_before_and_after_a_write_back(
    reported: WmsLevel,
) -> None:
    """Before: the answer about to be written makes cached ones old. After: the commit
    may have changed the levels, or only brought them up to date, and answers cached in
    between are old too. (What the commit wrote to the outbox is told by the unit of
    work itself, to the relay and the webhook dispatcher.)"""
    ingestion = FakeIngestion()
    ingestion.release.set()
    told: list[set[Sku]] = []
    live = reads(
        FakeConnector({"W-A": reported}),
        ingestion,
        on_change=lambda _t, skus: told.append(set(skus)),
    )
    await live.read(TENANT, [recent("SKU-A", 4, sequence=5)])
    await live.settle()
    assert told == [{Sku("SKU-A")}, {Sku("SKU-A")}]


async def test_a_confirmation_that_fails_does_not_keep_news_from_the_projection() -> None:
    ingestion = FakeIngestion(confirm_meets=RuntimeError("the database went away"))
    ingestion.release.set()
    live = reads(
        FakeConnector({"W-A": wms_level("W-A", 9, sequence=6)}),  # news at wh-1
        ingestion,
        second=FakeConnector({"W-B": wms_level("W-B", 4, sequence=6)}),  # confirms wh-2
    )
    there = replace(recent("SKU-B", 4, sequence=5), warehouse_id=WarehouseId("wh-2"))
    await live.read(TENANT, [recent("SKU-A", 4, sequence=5), there])
    await live.settle()
    assert [[instance.connector_id for instance, _ in batch] for batch in ingestion.applied] == [
        ["rest-1"]
    ]


async def test_a_confirmation_meeting_a_level_that_moved_on_is_written_back_in_full() -> None:
    ingestion = FakeIngestion(confirm_meets=ConcurrentChange("a level changed"))
    ingestion.release.set()
    live = reads(FakeConnector({"W-A": wms_level("W-A", 4, sequence=6)}), ingestion)
    await live.read(TENANT, [recent("SKU-A", 4, sequence=5)])
    await live.settle()
    [[(instance, [answer])]] = ingestion.applied
    assert instance.warehouse_id == WAREHOUSE
    assert [(level.wms_sku, level.sequence) for level in answer.levels] == [("W-A", 6)]


async def test_asked_early_the_call_runs_while_the_projection_is_read() -> None:
    connector = FakeConnector({"W-A": wms_level("W-A", 7, sequence=9)})
    ingestion = FakeIngestion()
    ingestion.release.set()
    loader = reads(connector, ingestion).loader(TENANT)
    loader.ask_early([Sku("SKU-A"), Sku("SKU-B")], None)
    for _ in range(10):
        await asyncio.sleep(0)
    assert connector.asked == [["W-A", "W-B"]]  # before any level held is known
    loader.ask_early([Sku("SKU-A"), Sku("SKU-B")], None)  # a second field: nothing more
    got = await loader.load_many([held("SKU-A", 1), held("SKU-B", 2)])
    await loader.finish()
    assert connector.asked == [["W-A", "W-B"]]
    assert [lv.quantities.on_hand if lv else None for lv in got] == [7, 2]


async def test_a_level_held_that_was_not_asked_early_is_asked_for_alone() -> None:
    connector = FakeConnector({"W-A": wms_level("W-A", 7, sequence=9)})
    loader = reads(connector, FakeIngestion()).loader(TENANT)
    loader.ask_early([Sku("SKU-B")], None)
    got = await loader.load_many([held("SKU-A", 1), held("SKU-B", 2)])
    await loader.finish()
    assert connector.asked == [["W-B"], ["W-A"]]
    assert got[0] is not None and got[0].quantities.on_hand == 7


async def test_an_early_answer_no_level_held_needed_is_written_back() -> None:
    """The projection held none of these SKUs at the warehouse: what the WMS said is news."""
    ingestion = FakeIngestion()
    ingestion.release.set()
    live = reads(FakeConnector({"W-A": wms_level("W-A", 7, sequence=9)}), ingestion)
    loader = live.loader(TENANT)
    loader.ask_early([Sku("SKU-A")], None)
    assert await loader.load_many([]) == []
    await loader.finish()
    await live.settle()
    [[(_instance, [snapshot])]] = ingestion.applied
    assert [lv.wms_sku for lv in snapshot.levels] == ["W-A"]


async def test_early_asks_name_only_the_warehouses_asked() -> None:
    connector = FakeConnector({})
    live = reads(connector, FakeIngestion())
    assert live.ask(TENANT, [Sku("SKU-A")], [WarehouseId("elsewhere")]) == {}
    assert live.ask(TenantId("other"), [Sku("SKU-A")], None) == {}
    assert live.ask(TENANT, [], None) == {}  # codes that name no SKU: nobody is asked
    await asyncio.sleep(0)
    assert connector.asked == []


async def test_only_the_skus_of_answers_with_news_drop_cached_answers_at_once() -> None:
    ingestion = FakeIngestion()
    ingestion.release.set()
    changed: list[set[Sku]] = []
    live = reads(
        FakeConnector({"W-A": wms_level("W-A", 9, sequence=5)}),  # changed at wh-1
        ingestion,
        second=FakeConnector({"W-B": wms_level("W-B", 4, sequence=5)}),  # as held at wh-2
        on_change=lambda _t, skus: changed.append(set(skus)),
    )
    there = replace(recent("SKU-B", 4, sequence=5), warehouse_id=WarehouseId("wh-2"))
    found = await live.read(TENANT, [recent("SKU-A", 4, sequence=5), there])
    assert len(found) == 2
    assert changed == [{Sku("SKU-A")}]  # the answer; the commit's own report follows
    await live.settle()
    assert [[instance.connector_id for instance, _ in batch] for batch in ingestion.applied] == [
        ["rest-1"]
    ]

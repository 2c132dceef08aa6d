"""The first full sync of an instance, and polling dialects."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal

from stockgraph.connectors.base import EventKind, WmsEvent, WmsLevel
from stockgraph.persistence.unit_of_work import SqlUnitOfWork
from stockgraph.services.sync import ConnectorStates, SyncService
from tests.ingestion.conftest import World


def _level(sku: str, qty: int, seq: int) -> WmsLevel:
    return WmsLevel(wms_sku=sku, location="MAIN", unit="EA", on_hand=Decimal(qty), sequence=seq)


async def _marked_synced(world: World) -> bool:
    """Whether the instance's state says its full sync is done (none is due again)."""
    _cursor, synced_at = await world.sync._states.get(world.instance.connector_id)
    return synced_at is not None


async def test_a_new_instance_is_fully_synced_once_across_every_page(world: World) -> None:
    world.connector.pages = [[_level("W1", 11, 5), _level("W2", 12, 5)], [_level("W3", 13, 5)]]
    assert not await _marked_synced(world)
    report = await world.sync.full_sync(world.instance)
    assert report.applied == 3
    assert [await world.on_hand(f"SKU-0000{i}") for i in (1, 2, 3)] == [11, 12, 13]
    assert await _marked_synced(world)
    assert (
        await world.scalar("SELECT count(*) FROM stock_movements WHERE cause = 'RECONCILIATION'")
        == 3
    )


async def test_a_full_sync_never_rolls_back_newer_webhook_state(world: World) -> None:
    await world.deliver("e9", 9, [{"sku": "W1", "qty": 99}])
    await world.service.apply_pending()
    world.connector.pages = [[_level("W1", 1, 4)]]
    report = await world.sync.full_sync(world.instance)
    assert report.stale == 1
    assert await world.on_hand("SKU-00001") == 99


async def test_polling_applies_new_events_and_moves_the_cursor(world: World) -> None:
    def event(seq: int, qty: int) -> WmsEvent:
        return WmsEvent(
            event_id=f"p{seq}",
            sequence=seq,
            kind=EventKind.ADJUSTMENT,
            occurred_at=datetime.now(UTC),
            levels=(_level("W4", qty, seq),),
        )

    world.connector.mailbox = [event(1, 10), event(3, 30), event(2, 20)]
    first = await world.sync.poll(world.instance)
    assert (first.applied, first.stale) == (3, 0)
    assert await world.on_hand("SKU-00004") == 30
    again = await world.sync.poll(world.instance)
    assert again.applied == again.stale == 0
    world.connector.mailbox += [event(2, 25), event(4, 40)]
    late = await world.sync.poll(world.instance)
    assert (late.applied, late.stale) == (1, 1)
    assert await world.on_hand("SKU-00004") == 40
    assert await world.scalar("SELECT count(*) FROM stock_movements WHERE cause = 'POLL'") == 4


async def test_a_snapshot_at_the_held_sequence_still_corrects_silent_drift(world: World) -> None:
    await world.deliver("e7", 7, [{"sku": "W5", "qty": 70}])
    await world.deliver("e7-again", 7, [{"sku": "W5", "qty": 71}])
    await world.service.apply_pending()
    assert await world.on_hand("SKU-00005") == 70  # an event at the same sequence loses
    world.connector.pages = [[_level("W5", 66, 7)]]
    report = await world.sync.full_sync(world.instance)
    assert report.applied == 1
    assert await world.on_hand("SKU-00005") == 66  # the WMS's state at that sequence wins


def _counted_reads(states: ConnectorStates) -> list[str]:
    """The connector ids whose state ``states`` is asked for from now on."""
    read = states.get
    reads: list[str] = []

    async def counted(connector_id: str) -> tuple[str | None, datetime | None]:
        reads.append(connector_id)
        return await read(connector_id)

    states.get = counted  # type: ignore[method-assign]
    return reads


async def test_a_sync_round_reads_the_instance_state_once(world: World) -> None:
    world.connector.pages = [[_level("W1", 11, 5)]]
    first = await world.sync.sync_once(world.instance)  # the full sync
    assert first is not None and first.applied == 1
    reads = _counted_reads(world.sync._states)
    world.connector.spec = replace(world.connector.spec, poll=True)
    await world.sync.sync_once(world.instance)
    assert reads == [world.instance.connector_id]


async def test_a_synced_instance_that_pushes_is_not_asked_about_every_round(
    world: World,
) -> None:
    world.connector.pages = [[_level("W1", 11, 5)]]
    assert not world.connector.spec.poll
    await world.sync.sync_once(world.instance)  # the full sync
    reads = _counted_reads(world.sync._states)
    for _ in range(3):
        report = await world.sync.sync_once(world.instance)
        assert report is not None and report.applied == 0
    assert reads == []
    # Synced by another process: this one reads the state once, then no more.
    fresh = SyncService(
        ingestion=world.service,
        states=world.sync._states,
        unit_of_work=lambda: SqlUnitOfWork(engine=world.runtime.engine),
    )
    for _ in range(3):
        await fresh.sync_once(world.instance)
    assert reads == [world.instance.connector_id]

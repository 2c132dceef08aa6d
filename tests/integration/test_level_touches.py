"""Levels a WMS confirms unchanged are touched in bulk, each row against its version read."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine

from stockgraph.domain.errors import ConcurrentChange
from stockgraph.domain.model import StockLevel
from stockgraph.domain.quantities import StockQuantities
from stockgraph.persistence.database import create_engine
from stockgraph.persistence.migrate import upgrade
from stockgraph.persistence.unit_of_work import SqlUnitOfWork
from tests.graphql.helpers import counted_statements
from tests.integration.test_outbox import Site, _site, add_warehouse

LATER = datetime(2026, 3, 1, tzinfo=UTC)


def _level(site: Site, index: int, on_hand: int, as_of: datetime, sequence: int) -> StockLevel:
    return StockLevel(
        tenant_id=site.tenant_id,
        warehouse_id=site.warehouse_id,
        sku=site.skus[index],
        quantities=StockQuantities(on_hand=on_hand, available=on_hand),
        as_of=as_of,
        source_sequence=sequence,
    )


async def _held(engine: AsyncEngine, site: Site) -> dict[str, tuple[StockLevel, int]]:
    async with SqlUnitOfWork(engine=engine) as uow:
        found = await uow.levels_for_update(site.tenant_id, {site.warehouse_id: site.skus})
    return {sku: held for (_w, sku), held in found.items()}


async def _seed(engine: AsyncEngine) -> Site:
    site = await _site(engine)
    start = LATER - timedelta(days=1)
    async with SqlUnitOfWork(engine=engine) as uow:
        await uow.save_levels(
            [(_level(site, 0, 5, start, 1), None), (_level(site, 1, 9, start, 1), None)]
        )
        await uow.commit()
    return site


async def test_touches_of_several_sequences_bring_each_row_up_to_date(
    engine: AsyncEngine,
) -> None:
    site = await _seed(engine)
    held = await _held(engine, site)
    touches = [
        (_level(site, 0, 5, LATER, 7), held[site.skus[0]][1]),
        (_level(site, 1, 9, LATER, 8), held[site.skus[1]][1]),
    ]
    async with SqlUnitOfWork(engine=engine) as uow:
        with counted_statements(engine) as statements:
            await uow.touch_levels(touches)
        await uow.commit()
    assert len(statements) == 2  # one per sequence, not one per level
    after = await _held(engine, site)
    for index, sequence in ((0, 7), (1, 8)):
        level, version = after[site.skus[index]]
        assert (level.as_of, level.source_sequence) == (LATER, sequence)
        assert level.quantities == held[site.skus[index]][0].quantities
        assert version == held[site.skus[index]][1] + 1


async def test_levels_of_one_warehouse_and_sequence_are_touched_by_one_statement(
    engine: AsyncEngine,
) -> None:
    site = await _seed(engine)
    held = await _held(engine, site)
    touches = [(_level(site, i, on, LATER, 7), held[site.skus[i]][1]) for i, on in ((0, 5), (1, 9))]
    async with SqlUnitOfWork(engine=engine) as uow:
        with counted_statements(engine) as statements:
            await uow.touch_levels(touches)
        await uow.commit()
    assert len(statements) == 1
    after = await _held(engine, site)
    assert {level.source_sequence for level, _version in after.values()} == {7}


async def test_a_row_that_moved_on_since_it_was_read_fails_the_whole_touch(
    engine: AsyncEngine,
) -> None:
    site = await _seed(engine)
    held = await _held(engine, site)
    async with SqlUnitOfWork(engine=engine) as uow:
        await uow.touch_levels([(_level(site, 1, 9, LATER, 2), held[site.skus[1]][1])])
        await uow.commit()
    stale = [
        (_level(site, 0, 5, LATER, 3), held[site.skus[0]][1]),
        (_level(site, 1, 9, LATER, 3), held[site.skus[1]][1]),  # version read before
    ]
    with pytest.raises(ConcurrentChange):
        async with SqlUnitOfWork(engine=engine) as uow:
            await uow.touch_levels(stale)
            await uow.commit()
    after = await _held(engine, site)
    assert after[site.skus[0]] == held[site.skus[0]]  # rolled back with the rest
    assert after[site.skus[1]][0].source_sequence == 2


async def test_levels_read_for_update_are_the_pairs_asked_and_only_those_are_locked(
    engine: AsyncEngine,
) -> None:
    # Both warehouses hold both SKUs; each is asked for a different one, as a round of
    # webhooks from two instances asks.
    site = await _seed(engine)
    async with engine.begin() as conn:
        other = await add_warehouse(
            conn, site.tenant_id, f"{site.code}-2", f"{site.connector_id}-2"
        )
    async with SqlUnitOfWork(engine=engine) as uow:
        await uow.save_levels(
            [(replace(_level(site, i, 3, LATER, 1), warehouse_id=other), None) for i in range(2)]
        )
        await uow.commit()
    first, second = site.skus
    async with SqlUnitOfWork(engine=engine) as uow:
        found = await uow.levels_for_update(
            site.tenant_id, {site.warehouse_id: [first], other: [second]}
        )
        assert set(found) == {(site.warehouse_id, first), (other, second)}
        if engine.dialect.name != "postgresql":
            return
        # The pairs not asked are not locked: another writer takes one without waiting.
        async with engine.connect() as conn, conn.begin():
            await conn.execute(text("SET LOCAL lock_timeout = '2s'"))
            await conn.execute(
                text(
                    "SELECT 1 FROM stock_levels WHERE warehouse_id = :w AND sku = :s"
                    " FOR UPDATE NOWAIT"
                ),
                {"w": site.warehouse_id, "s": second},
            )


async def test_levels_confirmed_as_held_are_brought_up_to_date_without_a_read(
    engine: AsyncEngine,
) -> None:
    site = await _seed(engine)
    held = await _held(engine, site)
    # Since the answer was laid over what was held: an order committed two of the first
    # (Stockgraph's own quantity, which a WMS confirming its physical counts leaves as it
    # is), and an event moved the second to a newer sequence, older than the answer's.
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "UPDATE stock_levels SET committed = 2, available = available - 2"
                " WHERE warehouse_id = :w AND sku = :s"
            ),
            {"w": site.warehouse_id, "s": site.skus[0]},
        )
        await conn.execute(
            text(
                "UPDATE stock_levels SET source_sequence = 5 WHERE warehouse_id = :w AND sku = :s"
            ),
            {"w": site.warehouse_id, "s": site.skus[1]},
        )
    confirmed = [replace(held[sku][0], as_of=LATER, source_sequence=7) for sku in site.skus]
    async with SqlUnitOfWork(engine=engine) as uow:
        with counted_statements(engine) as statements:
            await uow.confirm_levels(confirmed)
        await uow.commit()
    assert len(statements) == 1 and statements[0].lstrip().upper().startswith("UPDATE")
    after = await _held(engine, site)
    for sku in site.skus:
        level, version = after[sku]
        assert (level.as_of, level.source_sequence) == (LATER, 7)
        assert version == held[sku][1] + 1
    assert after[site.skus[0]][0].quantities.committed == 2
    assert after[site.skus[1]][0].quantities == held[site.skus[1]][0].quantities


@pytest.mark.parametrize("moved", ["other physical counts", "a newer sequence"])
async def test_a_confirmation_of_a_row_that_moved_on_fails_the_whole_transaction(
    engine: AsyncEngine, moved: str
) -> None:
    site = await _seed(engine)
    held = await _held(engine, site)
    level, version = held[site.skus[1]]
    if moved == "other physical counts":
        changed = replace(level, quantities=StockQuantities(on_hand=8, available=8))
    else:
        changed = replace(level, source_sequence=9)  # newer than the answer's 7
    async with SqlUnitOfWork(engine=engine) as uow:
        await uow.save_levels([(changed, version)])
        await uow.commit()
    confirmed = [replace(held[sku][0], as_of=LATER, source_sequence=7) for sku in site.skus]
    with pytest.raises(ConcurrentChange):
        async with SqlUnitOfWork(engine=engine) as uow:
            await uow.confirm_levels(confirmed)
            await uow.commit()
    after = await _held(engine, site)
    assert after[site.skus[0]] == held[site.skus[0]]  # rolled back with the rest
    assert after[site.skus[1]][0] == changed


@pytest.mark.parametrize("confirmed", [True, False], ids=["confirmation", "touch"])
async def test_on_sqlite_rows_brought_up_to_date_are_found_by_key(
    sqlite_url: str, confirmed: bool
) -> None:
    """Not by scanning every level of the warehouse: matched on row values alone, SQLite
    reads the warehouse's every row for each statement (a large catalogue, every live read);
    PostgreSQL turns the same row values into key lookups by itself."""
    await upgrade(sqlite_url)
    engine = create_engine(sqlite_url)
    try:
        site = await _seed(engine)
        held = await _held(engine, site)
        executed: list[tuple[str, Any]] = []

        def keep(_c: object, _k: object, statement: str, parameters: Any, *_: object) -> None:
            executed.append((statement, parameters))

        event.listen(engine.sync_engine, "before_cursor_execute", keep)
        async with SqlUnitOfWork(engine=engine) as uow:
            if confirmed:
                await uow.confirm_levels(
                    [replace(level, as_of=LATER, source_sequence=7) for level, _ in held.values()]
                )
            else:
                await uow.touch_levels(
                    [(replace(lv, as_of=LATER, source_sequence=7), v) for lv, v in held.values()]
                )
            await uow.commit()
        event.remove(engine.sync_engine, "before_cursor_execute", keep)
        [(statement, parameters)] = [e for e in executed if e[0].lstrip().startswith("UPDATE")]
        async with engine.connect() as conn:
            plan = (await conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)).all()
        searches = [row[-1] for row in plan if "stock_levels" in row[-1]]
        assert searches and all("sku=?" in s for s in searches), plan
    finally:
        await engine.dispose()

"""Hot writers to one SQLite database take turns in the process, not in SQLite's busy handler."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import create_async_engine

from stockgraph.domain.ids import TenantId
from stockgraph.persistence.database import write_gate
from stockgraph.persistence.inbox_store import SqlInbox
from stockgraph.persistence.unit_of_work import SqlUnitOfWork
from tests.ingestion.conftest import World


async def test_a_receipt_waits_for_a_writing_unit_of_work_before_it_reaches_sqlite(
    world: World,
) -> None:
    engine = world.runtime.engine
    order: list[str] = []

    def statement(_c: Any, _cur: Any, sql: str, *_rest: Any) -> None:
        if sql.lstrip().upper().startswith("INSERT INTO INBOX_EVENTS"):
            order.append("receipt")

    def commit(_conn: Any) -> None:
        order.append("commit")

    event.listen(engine.sync_engine, "before_cursor_execute", statement)
    event.listen(engine.sync_engine, "commit", commit)
    inbox = SqlInbox(engine=engine)
    async with SqlUnitOfWork(engine=engine) as uow:
        # A write: from here on this transaction holds SQLite's write lock.
        await uow.finish_inbox([0], status="APPLIED")
        receipt = asyncio.create_task(
            inbox.add(tenant_id=TenantId("acme"), connector_id="acme-wh-00", event_id="e", body=b"")
        )
        for _ in range(20):  # room for the receipt to get as far as it can
            await asyncio.sleep(0.005)
        assert order == []  # without the gate, its INSERT would now wait inside SQLite
        await uow.commit()
    assert await receipt is True
    assert order == ["commit", "receipt", "commit"]


async def test_a_unit_of_work_that_only_reads_leaves_the_gate_open(world: World) -> None:
    engine = world.runtime.engine
    async with SqlUnitOfWork(engine=engine) as uow:
        await uow.known_skus(TenantId("acme"), [])
        async with asyncio.timeout(5), write_gate(engine).turn():
            pass


async def test_on_postgresql_writers_do_not_queue_in_the_process() -> None:
    engine = create_async_engine("postgresql+asyncpg://nobody@127.0.0.1:1/none")
    try:
        gate = write_gate(engine)
        async with asyncio.timeout(5), gate.turn(), gate.turn():
            assert not gate.exclusive
    finally:
        await engine.dispose()

"""Hot writers to one SQLite database take turns in the process, not in SQLite's busy handler."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from stockgraph.domain.ids import TenantId
from stockgraph.persistence.database import write_gate
from stockgraph.persistence.inbox_store import SqlInbox
from stockgraph.persistence.unit_of_work import SqlUnitOfWork
from tests.ingestion.conftest import World


class _Writes:
    """The inbox inserts and commits the engine's connections make, in order."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.order: list[str] = []
        event.listen(engine.sync_engine, "before_cursor_execute", self._statement)
        event.listen(engine.sync_engine, "commit", self._commit)
        event.listen(engine.sync_engine, "rollback", self._rollback)

    def _statement(self, _c: Any, _cur: Any, sql: str, *_rest: Any) -> None:
        if sql.lstrip().upper().startswith("INSERT INTO INBOX_EVENTS"):
            self.order.append("receipt")

    def _commit(self, _conn: Any) -> None:
        self.order.append("commit")

    def _rollback(self, _conn: Any) -> None:
        if self.order and self.order[-1] != "rollback":
            self.order.append("rollback")


class _FailingCommit:
    """A transaction whose commit fails; rolling back works."""

    def __init__(self, tx: Any) -> None:
        self._tx = tx
        self.is_active = tx.is_active

    async def commit(self) -> None:
        raise RuntimeError("disk gone")

    async def rollback(self) -> None:
        await self._tx.rollback()


def _receive(inbox: SqlInbox, event_id: str, tenant: str = "acme") -> asyncio.Task[bool]:
    return asyncio.create_task(
        inbox.add(
            tenant_id=TenantId(tenant), connector_id="acme-wh-00", event_id=event_id, body=b""
        )
    )


def _watched(world: World) -> tuple[AsyncEngine, _Writes, SqlInbox]:
    engine = world.runtime.engine
    return engine, _Writes(engine), SqlInbox(engine=engine)


async def _take_the_write_turn(uow: SqlUnitOfWork) -> None:
    """A write: from here on the unit of work holds the gate and SQLite's write lock."""
    await uow.finish_inbox([0], status="APPLIED")


async def _let_run() -> None:
    for _ in range(20):  # room for other tasks to get as far as they can
        await asyncio.sleep(0.005)


async def test_a_receipt_waits_for_a_writing_unit_of_work_and_commits_with_it(
    world: World,
) -> None:
    engine, writes, inbox = _watched(world)
    async with SqlUnitOfWork(engine=engine) as uow:
        await _take_the_write_turn(uow)
        receipt = _receive(inbox, "e")
        await _let_run()
        # Without the gate, the receipt's INSERT would now be waiting inside SQLite.
        assert writes.order == []
        assert not receipt.done()
        await uow.commit()
    assert await asyncio.wait_for(receipt, 5) is True
    assert writes.order == ["receipt", "commit"]  # one transaction for both
    assert await world.scalar("SELECT status FROM inbox_events WHERE event_id = 'e'") == "PENDING"


async def test_receipts_that_rode_with_a_failed_commit_are_kept_by_the_inbox_itself(
    world: World,
) -> None:
    engine, writes, inbox = _watched(world)
    uow = SqlUnitOfWork(engine=engine)
    async with uow:
        await _take_the_write_turn(uow)
        receipt = _receive(inbox, "e")
        await _let_run()
        # The unit of work commits, but its database commit fails after the receipt rode.
        uow._tx = _FailingCommit(uow._tx)  # type: ignore[assignment]
        with pytest.raises(RuntimeError, match="disk gone"):
            await uow.commit()
    assert await asyncio.wait_for(receipt, 5) is True
    # It rode (inserted in the failed transaction), then was kept by the inbox's own commit.
    assert writes.order == ["receipt", "rollback", "receipt", "commit"]
    assert await world.scalar("SELECT count(*) FROM inbox_events WHERE event_id = 'e'") == 1


async def test_a_refused_receipt_fails_alone_and_the_unit_of_work_it_rode_with_commits(
    world: World,
) -> None:
    engine, writes, inbox = _watched(world)
    async with SqlUnitOfWork(engine=engine) as uow:
        await _take_the_write_turn(uow)
        good = _receive(inbox, "good")
        refused = _receive(inbox, "refused", tenant="no-such-tenant")
        await _let_run()
        await uow.commit()
    assert await asyncio.wait_for(good, 5) is True
    with pytest.raises(IntegrityError):
        await asyncio.wait_for(refused, 5)
    # Both rode and were refused together, the unit of work committed all the same, and the
    # inbox's own flush settled them: the batch refused, then one row at a time.
    assert writes.order == [
        "receipt",
        "commit",
        "receipt",
        "rollback",
        "receipt",
        "commit",
        "receipt",
        "rollback",
    ]
    assert await world.scalar("SELECT count(*) FROM inbox_events WHERE event_id = 'good'") == 1


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

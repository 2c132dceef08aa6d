"""Engines and sessions for SQLite (aiosqlite) and PostgreSQL (asyncpg)."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)


def normalise_url(url: str) -> str:
    """Pick the async driver for a plain ``sqlite://`` or ``postgresql://`` URL."""
    parsed = make_url(url)
    driver = parsed.drivername
    if driver in ("sqlite", "sqlite+pysqlite"):
        parsed = parsed.set(drivername="sqlite+aiosqlite")
    elif driver in ("postgresql", "postgres", "postgresql+psycopg2", "postgresql+psycopg"):
        parsed = parsed.set(drivername="postgresql+asyncpg")
    return parsed.render_as_string(hide_password=False)


def create_engine(url: str, *, pool_size: int = 10, echo: bool = False) -> AsyncEngine:
    """An async engine with the pragmas and pool settings Stockgraph relies on.

    On SQLite: foreign keys on, WAL journal (readers do not block the writer), a busy
    timeout so concurrent writers wait instead of failing.
    """
    url = normalise_url(url)
    kwargs: dict[str, Any] = {"echo": echo}
    if url.startswith("sqlite"):
        kwargs["connect_args"] = {"timeout": 30}
    else:
        kwargs.update(pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)
    engine = create_async_engine(url, **kwargs)
    if url.startswith("sqlite"):
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # First, so that switching to WAL also waits for a writer that holds the database (a
    # replica migrating a new file, say) rather than giving up after sqlite3's 5 s default.
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


class WriteGate:
    """Where this process's hot writers to one SQLite database take turns.

    SQLite lets one transaction write at a time. A connection that finds the database
    locked sleeps in SQLite's busy handler and tries again after 1, 2, 5, 10, 15 ms and so
    on, so a receipt queued behind a transaction holding the lock for 8 ms starts up to
    10 ms late, and under load such steps add up in the acknowledgement tail. Writers that
    wait here instead start as soon as the one before them leaves. Webhook receipts and
    units of work take the gate (from their first write to their commit or end); other writers,
    and other processes, still wait in SQLite's busy handler. On PostgreSQL, where rows
    rather than the database are locked, the gate lets everyone through.

    Small writes need not wait at all: a :data:`Rider` (the inbox, with the receipts that
    arrived meanwhile) joins the transaction of whoever holds the gate, just before it
    commits, and is committed with it.
    """

    def __init__(self, *, exclusive: bool) -> None:
        self.exclusive = exclusive
        self._lock: asyncio.Lock | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._riders: list[Rider] = []

    def take_riders(self, rider: Rider) -> None:
        """``rider`` joins every transaction that commits through this gate from now on."""
        self._riders.append(rider)

    async def board(self, conn: AsyncConnection) -> Callable[[bool], None]:
        """Run the riders inside the transaction on ``conn``, whose holder is about to
        commit; call what is returned with whether the commit happened."""
        if not self.exclusive:
            return no_finish
        finishers = [await ride(conn) for ride in self._riders]

        def finish(committed: bool) -> None:
            for done in finishers:
                done(committed)

        return finish

    async def acquire(self) -> Callable[[], None]:
        """Wait for the turn; call what is returned to give it up."""
        if not self.exclusive:
            return _nothing
        loop = asyncio.get_running_loop()
        if self._lock is None or self._loop is not loop:
            self._lock, self._loop = asyncio.Lock(), loop
        lock = self._lock
        await lock.acquire()
        return lock.release

    @asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        release = await self.acquire()
        try:
            yield
        finally:
            release()


def _nothing() -> None:
    return None


def no_finish(_committed: bool) -> None:
    """What a :data:`Rider` with nothing aboard returns."""
    return None


Rider = Callable[[AsyncConnection], Awaitable[Callable[[bool], None]]]
"""Writes that join another writer's transaction on SQLite (:meth:`WriteGate.board`): run
inside it just before its commit, they return what to call with whether it committed. A
rider handles its own errors: whatever fails, it keeps for its own next write."""


_gates: weakref.WeakKeyDictionary[Engine, WriteGate] = weakref.WeakKeyDictionary()


def write_gate(engine: AsyncEngine) -> WriteGate:
    """The engine's :class:`WriteGate`, shared by everyone in this process using it."""
    gate = _gates.get(engine.sync_engine)
    if gate is None:
        gate = _gates[engine.sync_engine] = WriteGate(exclusive=engine.dialect.name == "sqlite")
    return gate

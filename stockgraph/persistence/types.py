"""Column types that behave the same on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import BigInteger, DateTime, Integer
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

BigIntId = BigInteger().with_variant(Integer(), "sqlite")
"""A 64-bit surrogate key that still autoincrements on SQLite (which needs INTEGER)."""


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes in, timezone-aware UTC datetimes out.

    SQLite keeps no zone, so values are normalised to UTC before they are stored and
    marked UTC when they are read back. There they are written and read as text by the
    standard library's ``isoformat`` and ``fromisoformat`` (C code), in the format
    SQLAlchemy's SQLite ``DATETIME`` uses (``2026-01-02 03:04:05.000006``), instead of its
    pure-Python formatting and regular expression: every level and ledger row read or
    written carries one or two of these.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        # PostgreSQL, and literal SQL on either (rows go through ``bind_processor``).
        if value is None:
            return None
        value = _utc(value)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else _marked_utc(value)

    def bind_processor(self, dialect: Dialect) -> Callable[[Any], Any] | None:
        if dialect.name != "sqlite":
            return super().bind_processor(dialect)
        return _sqlite_text

    def result_processor(self, dialect: Dialect, coltype: object) -> Callable[[Any], Any] | None:
        if dialect.name != "sqlite":
            return super().result_processor(dialect, coltype)
        return _sqlite_datetime


def _utc(value: datetime) -> datetime:
    """An aware datetime in UTC; a naive one is refused."""
    if value.tzinfo is None:
        raise ValueError("naive datetimes are ambiguous; pass an aware UTC datetime")
    return value.astimezone(UTC)


def _marked_utc(value: datetime) -> datetime:
    """A stored datetime as aware UTC: one without a zone was stored as UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _sqlite_text(value: datetime | None) -> str | None:
    if value is None:
        return None
    return _utc(value).replace(tzinfo=None).isoformat(" ", "microseconds")


def _sqlite_datetime(value: str | datetime | None) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return _marked_utc(value)
    # Stored as naive UTC text (see _sqlite_text): read with the offset spelled out, a
    # third of the work of reading it naive and marking it after, for every row read.
    try:
        moment = datetime.fromisoformat(value + "+00:00")
    except ValueError:  # text that carries its own offset
        moment = datetime.fromisoformat(value)
    return moment if moment.tzinfo is UTC else _marked_utc(moment)

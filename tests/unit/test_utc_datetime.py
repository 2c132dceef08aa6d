"""UTC datetimes on SQLite: stored as SQLAlchemy's own DATETIME text, read back aware."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import Column, DateTime, MetaData, Table, create_engine, insert, select, text

from stockgraph.persistence.types import UtcDateTime

PARIS = timezone(timedelta(hours=1))


@pytest.fixture
def tables() -> tuple[Table, Table]:
    meta = MetaData()
    ours = Table("ours", meta, Column("at", UtcDateTime()))
    plain = Table("plain", meta, Column("at", DateTime()))
    return ours, plain


@pytest.mark.parametrize(
    "moment",
    [
        datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC),
        datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),  # no microseconds: still six digits
        datetime(2026, 1, 2, 4, 4, 5, 123456, tzinfo=PARIS),  # another zone: stored as UTC
        datetime(999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    ],
)
def test_the_text_is_sqlalchemys_and_reads_back_the_same_instant(
    tables: tuple[Table, Table], moment: datetime
) -> None:
    ours, plain = tables
    engine = create_engine("sqlite://")
    with engine.begin() as conn:
        ours.metadata.create_all(conn)
        conn.execute(insert(ours).values(at=moment))
        naive = moment.astimezone(UTC).replace(tzinfo=None)
        conn.execute(insert(plain).values(at=naive))  # SQLAlchemy's own DATETIME format
        [(stored,)] = conn.execute(text("SELECT at FROM ours")).all()
        [(theirs,)] = conn.execute(text("SELECT at FROM plain")).all()
        assert stored == theirs
        # Old rows (written by SQLAlchemy's formatting) and new ones read back alike.
        conn.execute(text("INSERT INTO ours (at) SELECT at FROM plain"))
        read = conn.execute(select(ours.c.at)).scalars().all()
    assert read == [moment, moment]
    assert all(r.tzinfo is UTC for r in read)


def test_a_date_only_text_one_with_its_own_offset_and_null_read_back(
    tables: tuple[Table, Table],
) -> None:
    ours, _plain = tables
    engine = create_engine("sqlite://")
    with engine.begin() as conn:
        ours.metadata.create_all(conn)
        conn.execute(
            text(
                "INSERT INTO ours (at) VALUES "
                "('2026-01-02'), ('2026-01-02 04:04:05+01:00'), ('2026-01-02T03:04:05Z'), (NULL)"
            )
        )
        read = conn.execute(select(ours.c.at)).scalars().all()
    moment = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert read == [datetime(2026, 1, 2, tzinfo=UTC), moment, moment, None]
    assert all(r.tzinfo is UTC for r in read if r is not None)


def test_a_naive_datetime_is_refused(tables: tuple[Table, Table]) -> None:
    ours, _plain = tables
    engine = create_engine("sqlite://")
    with engine.begin() as conn:
        ours.metadata.create_all(conn)
        with pytest.raises(Exception, match="naive datetimes are ambiguous"):
            conn.execute(insert(ours).values(at=datetime(2026, 1, 2)))

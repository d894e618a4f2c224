"""Every moment in time is stored and read back as aware UTC on both databases (SQLite keeps no offset), so every
reply carries RFC 3339 timestamps with an offset."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import Column, DateTime, Integer, Table, insert, select

from services.kernel import migrations
from services.kernel.db import Database, Timestamp, ensure_schema, new_metadata
from services.kernel.runtime import available_services
from services.kernel.settings import Settings

SHANGHAI = timezone(timedelta(hours=8))


@pytest.fixture(params=["sqlite", "postgresql"])
def settings(request: pytest.FixtureRequest) -> Settings:
    return request.getfixturevalue("sqlite_settings" if request.param == "sqlite" else "pg_settings")


def test_a_timestamp_reads_back_aware_utc_and_the_same_instant(settings: Settings) -> None:
    db = Database(settings.db_url("tscheck"), schema=settings.db_schema("tscheck"))
    md = new_metadata()
    t = Table("ts", md, Column("id", Integer, primary_key=True), Column("at", Timestamp(), nullable=True))
    try:
        ensure_schema(db.engine, db.schema)
        md.create_all(db.engine)
        written = {
            1: datetime(2026, 11, 10, 9, 30, 15, 123456, tzinfo=SHANGHAI),
            2: datetime(2026, 11, 10, 1, 30, 15, 123456, tzinfo=UTC),
            3: datetime(2026, 11, 10, 1, 30, 15, 123456),  # noqa: DTZ001 - a naive value is taken as UTC
            4: None,
        }
        with db.session() as s, s.begin():
            s.execute(insert(t), [{"id": k, "at": v} for k, v in written.items()])
        with db.session(readonly=True) as s:
            got = dict(s.execute(select(t.c.id, t.c.at)).tuples().all())
            # the same instant compares equal in SQL too, whatever offset the bound value has
            later = s.execute(select(t.c.id).where(t.c.at > datetime(2026, 11, 10, 9, 0, tzinfo=SHANGHAI)))
            assert sorted(later.scalars()) == [1, 2, 3]
        instant = datetime(2026, 11, 10, 1, 30, 15, 123456, tzinfo=UTC)
        assert got == {1: instant, 2: instant, 3: instant, 4: None}
        for v in (got[1], got[2], got[3]):
            assert v.utcoffset() == timedelta(0) and v.isoformat() == "2026-11-10T01:30:15.123456+00:00"
    finally:
        md.drop_all(db.engine)
        db.dispose()


def test_every_moment_column_of_every_service_is_a_timestamp() -> None:
    """A bare DateTime would come back naive on SQLite (and be written as a wall clock in any offset)."""
    bare = [
        f"{table.name}.{col.name}"
        for md in {id(m): m for s in available_services() for m in migrations.target_metadata(s)}.values()
        for table in md.tables.values()
        for col in table.columns
        if isinstance(col.type, DateTime)
    ]
    assert bare == []


def test_migrations_write_a_timestamp_as_the_type_it_stands_for() -> None:
    assert migrations._render_item("type", Timestamp(), None) == "sa.DateTime(timezone=True)"
    assert migrations._render_item("type", Integer(), None) is False

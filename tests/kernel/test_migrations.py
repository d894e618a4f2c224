"""Every service's migrations, on SQLite and PostgreSQL: the schema at head is exactly its model (the kernel's
outbox and inbox, created by `create_outbox_and_inbox()`, included), and downgrading to base removes it all."""

from __future__ import annotations

from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from services.kernel import migrations
from services.kernel.db import Database
from services.kernel.outbox import kernel_metadata
from services.kernel.runtime import available_services
from services.kernel.settings import Settings

SERVICES = available_services()


def _database(settings: Settings, name: str) -> Database:
    return Database(settings.db_url(name), schema=settings.db_schema(name))


def _shape(db: Database, table: str) -> dict[str, Any]:
    """What a reflected table is made of: columns (type, nullability), primary key, unique constraints, indexes."""
    insp = inspect(db.engine)
    schema = db.schema
    return {
        "columns": [
            (c["name"], str(c["type"]), c["nullable"]) for c in insp.get_columns(table, schema=schema)
        ],
        "pk": insp.get_pk_constraint(table, schema=schema),
        "unique": sorted(
            (u["name"], tuple(u["column_names"])) for u in insp.get_unique_constraints(table, schema=schema)
        ),
        "indexes": sorted(
            (i["name"], tuple(i["column_names"]), bool(i["unique"]))
            for i in insp.get_indexes(table, schema=schema)
        ),
    }


@pytest.fixture(params=["sqlite", "postgresql"])
def settings(request: pytest.FixtureRequest) -> Settings:
    return request.getfixturevalue("sqlite_settings" if request.param == "sqlite" else "pg_settings")


@pytest.mark.parametrize("service", SERVICES)
def test_the_schema_at_head_is_the_model(settings: Settings, service: str) -> None:
    db = _database(settings, service)
    try:
        migrations.upgrade(service, db)
        with db.engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            diff = compare_metadata(ctx, migrations.target_metadata(service))
        assert diff == []
    finally:
        db.dispose()


@pytest.mark.parametrize("service", SERVICES)
def test_the_outbox_and_inbox_are_the_kernels_tables(settings: Settings, service: str) -> None:
    """Column types, keys, constraint and index names as the kernel's own model creates them."""
    db, reference = _database(settings, service), _database(settings, "kernelref")
    try:
        migrations.upgrade(service, db)
        from services.kernel.db import ensure_schema

        ensure_schema(reference.engine, reference.schema)
        kernel_metadata.create_all(reference.engine)
        for table in sorted(migrations.KERNEL_TABLES):
            assert _shape(db, table) == _shape(reference, table), table
    finally:
        db.dispose()
        reference.dispose()


@pytest.mark.parametrize("service", SERVICES)
def test_downgrading_to_base_removes_every_table(settings: Settings, service: str) -> None:
    db = _database(settings, service)
    try:
        migrations.upgrade(service, db)
        command.downgrade(migrations.alembic_config(service, db), "base")
        assert set(inspect(db.engine).get_table_names(schema=db.schema)) <= {"alembic_version"}
    finally:
        db.dispose()


@pytest.mark.parametrize("service", SERVICES)
def test_the_first_migration_takes_the_outbox_and_inbox_from_the_kernel(service: str) -> None:
    """One definition of the two tables for every service: its first migration calls the helpers and declares
    neither table itself."""
    versions = migrations.service_dir(service) / "migrations" / "versions"
    (first,) = [p for p in versions.glob("*.py") if "down_revision = None" in p.read_text(encoding="utf-8")]
    source = first.read_text(encoding="utf-8")
    assert "create_outbox_and_inbox()" in source and "drop_outbox_and_inbox()" in source
    assert '"outbox",' not in source and '"inbox",' not in source


def test_migrations_in_two_threads_at_once_each_reach_their_own_head(sqlite_settings: Settings) -> None:
    """Alembic keeps the running migration in module globals: two at once in one process (the Celery worker's
    thread pool building its platform for two tasks fired at the same beat tick) crossed their contexts and failed
    with KeyError('config'/'script') or created one service's tables in the other's database."""
    import threading

    pairs = [("trading", "booking"), ("listings", "payments")]
    errors: list[BaseException] = []
    for pair in pairs:
        dbs = {name: _database(sqlite_settings, name) for name in pair}
        start = threading.Barrier(len(pair))

        def migrate(name: str, dbs: dict[str, Database] = dbs, start: threading.Barrier = start) -> None:
            start.wait()
            try:
                migrations.upgrade(name, dbs[name])
            except BaseException as exc:  # noqa: BLE001 - collected and asserted below
                errors.append(exc)

        threads = [threading.Thread(target=migrate, args=(name,)) for name in pair]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        try:
            assert errors == []
            for name, db in dbs.items():
                with db.engine.connect() as conn:
                    ctx = MigrationContext.configure(conn, opts={"compare_type": True})
                    assert compare_metadata(ctx, migrations.target_metadata(name)) == [], name
        finally:
            for db in dbs.values():
                db.dispose()

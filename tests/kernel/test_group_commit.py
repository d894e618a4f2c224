"""The group-commit writer (services.kernel.group_commit), on SQLite and on PostgreSQL: every caller gets its own
outcome, a failing job never takes the others of its batch down, nothing of a failed job is written, and the
events of committed jobs (only those) reach the outbox."""

from __future__ import annotations

import asyncio
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from sqlalchemy import Column, Integer, MetaData, String, Table, func, select
from sqlalchemy.exc import IntegrityError

from services.kernel.events import current_trace_id
from services.kernel.group_commit import GroupCommitWriter
from services.kernel.outbox import outbox_t
from tests.bus.support import open_service_db, registered_parcel_event

md = MetaData()
parcels = Table(
    "gc_parcels", md, Column("id", String(40), primary_key=True), Column("weight_g", Integer, nullable=False)
)


class Refused(Exception):
    pass


@pytest.fixture(params=["sqlite", "postgres"])
def db(request):
    settings = request.getfixturevalue("sqlite_settings" if request.param == "sqlite" else "pg_settings")
    database = open_service_db(settings, "gc")
    md.create_all(database.engine)
    yield database
    database.dispose()


@pytest.fixture
def Parcel():  # noqa: N802 - a class
    with registered_parcel_event("gc_") as cls:
        yield cls


def write_parcel(Parcel, pid: str, fail: bool = False, deferred: bool = False):  # noqa: N803, ANN201
    def job(uow):  # noqa: ANN001, ANN202
        if deferred:
            uow.insert(parcels, {"id": pid, "weight_g": 1})
        else:
            uow.conn.execute(parcels.insert().values(id=pid, weight_g=1))
        uow.emit(Parcel(parcel_id=pid, weight_g=1))
        if fail:
            raise Refused(pid)
        return pid

    return job


def stored(db) -> tuple[set[str], set[str]]:  # noqa: ANN001
    with db.engine.connect() as c:
        rows = set(c.execute(select(parcels.c.id)).scalars())
        keys = set(c.execute(select(outbox_t.c.key)).scalars())
    return rows, keys


def hold_writer(writer: GroupCommitWriter) -> threading.Event:
    """Occupy every writer thread until the returned event is set, so the next jobs queue up into one batch."""
    release = threading.Event()
    started = threading.Barrier(writer.threads + 1)

    def blocker(uow):  # noqa: ANN001, ANN202
        started.wait(10)
        release.wait(10)

    for _ in range(writer.threads):
        writer.submit(blocker)
    started.wait(10)
    return release


def test_concurrent_callers_each_commit_once_in_fewer_transactions(db, Parcel):  # noqa: N803
    writer = db.writer
    ids = [f"p{i}" for i in range(200)]
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda pid: writer.run(write_parcel(Parcel, pid)), ids))
    assert [r for r, _ in results] == ids
    assert all(len(events) == 1 and events[0].subject == pid for (pid, events) in results)
    rows, keys = stored(db)
    assert rows == set(ids) and keys == set(ids)
    assert writer.jobs == 200 and writer.batches < 200  # jobs shared transactions


def test_a_failing_job_fails_alone(db, Parcel):  # noqa: N803
    writer = GroupCommitWriter(db, threads=1)
    release = hold_writer(writer)
    futures = {pid: writer.submit(write_parcel(Parcel, pid, fail=pid == "bad")) for pid in ("a", "bad", "c")}
    release.set()
    assert futures["a"].result(10)[0] == "a" and futures["c"].result(10)[0] == "c"
    with pytest.raises(Refused):
        futures["bad"].result(10)
    assert stored(db) == ({"a", "c"}, {"a", "c"})  # nothing of the failed job: neither its row nor its event
    writer.close()


def test_a_database_error_at_commit_fails_only_its_job(db, Parcel):  # noqa: N803
    """Deferred inserts run once for the batch; a duplicate key there fails the batch, and the rerun one by one
    gives the error to the job that caused it."""
    writer = GroupCommitWriter(db, threads=1)
    writer.run(write_parcel(Parcel, "dup"))
    release = hold_writer(writer)
    futures = {pid: writer.submit(write_parcel(Parcel, pid, deferred=True)) for pid in ("x", "dup", "y")}
    release.set()
    assert futures["x"].result(10)[0] == "x" and futures["y"].result(10)[0] == "y"
    with pytest.raises(IntegrityError):
        futures["dup"].result(10)
    rows, keys = stored(db)
    assert rows == {"dup", "x", "y"}
    with db.engine.connect() as c:  # one event for "dup": the first, committed write's
        assert (
            c.execute(select(func.count()).select_from(outbox_t).where(outbox_t.c.key == "dup")).scalar() == 1
        )
    writer.close()


def test_async_callers_and_trace_ids(db, Parcel):  # noqa: N803
    async def book(pid: str) -> tuple[str, str | None]:
        current_trace_id.set("tr_" + pid)
        _, events = await asyncio.wrap_future(db.writer.submit(write_parcel(Parcel, pid)))
        return pid, events[0].traceid

    async def main() -> list:
        return await asyncio.gather(*[book(f"a{i}") for i in range(20)])

    assert all(trace == "tr_" + pid for pid, trace in asyncio.run(main()))


@hsettings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plan=st.lists(st.tuples(st.booleans(), st.booleans()), min_size=1, max_size=12))
def test_whatever_the_batch_only_the_good_jobs_are_written(sqlite_settings, plan):
    """A batch of any mix of good and failing jobs, direct and deferred inserts: exactly the good ones commit."""
    db = open_service_db(sqlite_settings, f"gcp{uuid.uuid4().hex[:10]}")
    md.create_all(db.engine)
    with registered_parcel_event("gcp_") as Parcel:  # noqa: N806
        writer = GroupCommitWriter(db, threads=1)
        release = hold_writer(writer)
        futures = [
            writer.submit(write_parcel(Parcel, f"j{i}", fail=fail, deferred=deferred))
            for i, (fail, deferred) in enumerate(plan)
        ]
        release.set()
        for (fail, _), fut in zip(plan, futures):
            if fail:
                with pytest.raises(Refused):
                    fut.result(10)
            else:
                fut.result(10)
        good = {f"j{i}" for i, (fail, _) in enumerate(plan) if not fail}
        assert stored(db) == (good, good)
        writer.close()
    db.dispose()


def test_a_connection_killed_between_batches_is_replaced(pg_settings):
    """The writer keeps its connection between batches; when the server drops it, the next job still commits."""
    from sqlalchemy import text

    db = open_service_db(pg_settings, "gck")
    md.create_all(db.engine)
    with registered_parcel_event("gck_") as Parcel:  # noqa: N806
        writer = GroupCommitWriter(db, threads=1)
        pid = writer.run(lambda uow: uow.conn.execute(text("SELECT pg_backend_pid()")).scalar())[0]
        with db.engine.connect() as c:
            assert c.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid}).scalar()
        assert writer.run(write_parcel(Parcel, "after"))[0] == "after"
        assert stored(db)[0] == {"after"}
        writer.close()
    db.dispose()


def test_a_batch_runs_its_jobs_in_lock_key_order(sqlite_settings):
    """Two batches on two PostgreSQL writers lock rows in the same order when their jobs run in key order."""
    db = open_service_db(sqlite_settings, "gco")
    writer = GroupCommitWriter(db, threads=1)
    ran: list[str] = []
    release = hold_writer(writer)
    futures = [
        writer.submit(lambda uow, k=k: ran.append(k), lock_key=k) for k in ("slot:c", "slot:a", "pickup:b")
    ]
    release.set()
    for f in futures:
        f.result(10)
    assert ran == ["pickup:b", "slot:a", "slot:c"]
    writer.close()
    db.dispose()


def test_a_commit_whose_outcome_is_unknown_is_not_an_error_for_work_that_exists(db, Parcel):  # noqa: N803
    """Fix 8: the COMMIT went through but its reply was lost with the connection. The writer finds the batch's
    outbox rows and answers its callers; before, the jobs ran again and failed on their own committed rows."""
    writer = GroupCommitWriter(db, threads=1)
    dialect = db.engine.dialect
    real = dialect.do_commit
    lost = []

    def commit_then_lose_the_reply(dbapi_conn):  # noqa: ANN001, ANN202 - fault injection at the driver
        real(dbapi_conn)
        if not lost:
            lost.append(True)
            raise dialect.loaded_dbapi.OperationalError("server closed the connection unexpectedly")

    dialect.do_commit = commit_then_lose_the_reply  # type: ignore[method-assign]
    try:
        value, events = writer.run(write_parcel(Parcel, "p-unknown"))
    finally:
        dialect.do_commit = real  # type: ignore[method-assign]
        writer.close()
    assert lost and value == "p-unknown" and [e.subject for e in events] == ["p-unknown"]
    assert stored(db) == ({"p-unknown"}, {"p-unknown"})  # once

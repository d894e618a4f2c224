"""Group commit: several write units of work of this process in one transaction, on one writer thread.

Under load most of the cost of a small write transaction is not its statements but what surrounds them: BEGIN and
COMMIT (on SQLite the commit appends every touched page of every index to the WAL; on PostgreSQL it waits for the
WAL flush), and the hand-offs between request threads queueing for the write lock. The writer takes whatever jobs
are waiting (up to `max_batch`), runs them one after the other in one transaction, writes their events to the
outbox in one statement and commits once; each caller gets its own result once that commit is durable.

A job is a function of a unit of work (`uow.conn` for Core statements, `uow.emit` for events). Jobs must not
swallow database errors and must leave nothing outside the database behind (they may run twice, see below), and
must not open another unit of work on the same database (on SQLite it would wait for the batch's own lock).

If the connection is lost during COMMIT the outcome is unknown: the writer asks the database (on a fresh connection)
whether the batch's outbox rows are there; if they are, the batch committed and its callers get their results.

If a job raises, or the batch's transaction fails (a deadlock between two writers on PostgreSQL, a failed commit),
the batch is rolled back and every job of it runs again alone, in its own transaction: the failing one raises to
its caller from that run, the others commit. Failures are the exception on the hot paths that use the writer (a
slot that has just filled up), so the happy path pays for no savepoints.

A job submitted while a request with an Idempotency-Key is handled writes that key in its transaction
(services/kernel/idempotency.py): alone, before the job runs (a key already taken fails the job with `KeyTaken`);
in a batch, with the batch's other inserts (a key taken fails the batch, and each job runs again alone). A job
runs as its keyed request (`idempotency.current`), so what it records with `idempotency.made` commits with the key.

SQLite has one writer at a time, so it gets one writer thread. PostgreSQL runs transactions side by side, and a
single thread would leave it waiting on round trips: it gets several, taking batches from the same queue.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from sqlalchemy.exc import DBAPIError

from . import idempotency
from .db import retry_on_conflict
from .events import Envelope, current_trace_id
from .idempotency import KeyedRequest, KeyTaken, unwritten, write_key
from .outbox import idempotency_keys_t as keys_t

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from .db import Database

log = logging.getLogger(__name__)

T = TypeVar("T")


class BatchedUnitOfWork:
    """What a job sees: the batch's connection; `emit` for its events and `insert` for rows nobody in the batch
    reads back, both written once for the whole batch just before it commits."""

    def __init__(self, conn: Connection, inserts: dict[Any, list[dict]]):
        self.conn = conn
        self.session = conn  # Core statements run the same way on a Connection as on a Session
        self.events: list[Envelope] = []
        self._inserts = inserts

    def emit(self, event: Any) -> None:
        self.events.append(event if isinstance(event, Envelope) else Envelope.wrap(event))

    def insert(self, table: Any, rows: dict | list[dict]) -> None:
        """Insert `rows` into `table` when the batch commits, in one statement with the batch's other rows for
        that table. A constraint violation then fails the batch, and each job runs again alone."""
        self._inserts.setdefault(table, []).extend(rows if isinstance(rows, list) else [rows])


@dataclass
class _Job(Generic[T]):
    fn: Callable[[BatchedUnitOfWork], T]
    trace_id: str | None
    lock_key: str = ""
    future: Future = field(default_factory=Future)
    keyed: KeyedRequest | None = (
        None  # the Idempotency-Key its transaction writes (services/kernel/idempotency.py)
    )


class GroupCommitWriter:
    """One per database and process; started on first use, stopped by `close()`."""

    def __init__(self, db: Database, max_batch: int = 32, threads: int | None = None):
        self.db = db
        self.max_batch = max_batch
        self.threads = threads or (1 if db.write_lock is not None else 4)
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._workers: list[threading.Thread] = []
        self._local = threading.local()
        self._start_lock = threading.Lock()
        self.batches = 0  # statistics for tests and benchmarks
        self.jobs = 0

    def submit(self, fn: Callable[[BatchedUnitOfWork], T], lock_key: str = "") -> Future:
        """Queue `fn` for the next batch. The future resolves, once that batch has committed, to fn's result and
        the events it emitted (or to fn's exception). Async callers await `asyncio.wrap_future(...)`.

        `lock_key` names the row the job locks first (e.g. "slot:<area>:<start>"): a batch runs its jobs in key
        order, so two batches on two PostgreSQL writer threads take their locks in the same order and do not
        deadlock (a deadlock would still be resolved by the database and the jobs run again, a second later)."""
        job: _Job[T] = _Job(fn, current_trace_id.get(), lock_key, keyed=unwritten(self.db))
        self._ensure_started()
        self._queue.put(job)
        return job.future

    def run(self, fn: Callable[[BatchedUnitOfWork], T], lock_key: str = "") -> tuple[T, list[Envelope]]:
        """`submit` and wait."""
        return self.submit(fn, lock_key).result()

    def close(self) -> None:
        with self._start_lock:
            workers, self._workers = self._workers, []
            for _ in workers:
                self._queue.put(None)
            for t in workers:
                t.join(10)

    # --- the writer threads ---------------------------------------------------------------------------
    def _ensure_started(self) -> None:
        if not self._workers:
            with self._start_lock:
                if not self._workers:
                    for i in range(self.threads):
                        t = threading.Thread(target=self._loop, name=f"group-commit-{i}", daemon=True)
                        t.start()
                        self._workers.append(t)

    def _loop(self) -> None:
        try:
            self._serve()
        finally:
            self._drop_connection()

    def _serve(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self.max_batch:
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    self._queue.put(None)  # finish this batch, then stop
                    break
                batch.append(job)
            batch.sort(key=lambda j: j.lock_key)
            try:
                self._run_batch(batch)
            except BaseException as exc:  # noqa: BLE001 - the callers must hear of it, whatever it is
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(exc)

    def _run_batch(self, batch: list[_Job]) -> None:
        self.batches += 1
        self.jobs += len(batch)
        if len(batch) > 1:
            try:
                results = self._transaction(batch)
            except Exception as exc:  # noqa: BLE001 - run them one by one below: each caller gets its own outcome
                if not isinstance(exc, _JobFailed):
                    log.info(
                        "group commit: a batch of %d failed (%s); running its jobs one by one",
                        len(batch),
                        type(exc).__name__,
                    )
                results = None
            if results is not None:
                for job, result in zip(batch, results):
                    job.future.set_result(result)
                return
        for job in batch:
            try:
                (result,) = retry_on_conflict(partial(self._alone, job))
            except _JobFailed as failed:
                job.future.set_exception(failed.error)
            except BaseException as exc:  # noqa: BLE001
                job.future.set_exception(exc)
            else:
                job.future.set_result(result)

    def _transaction(self, jobs: list[_Job]) -> list[tuple[Any, list[Envelope]]]:
        from .outbox import write_outbox

        lock = self.db.write_lock
        if lock is not None:
            lock.acquire()
        conn = self._connection()
        event_ids: list[str] = []
        committing = False
        keyed = [j.keyed for j in jobs if j.keyed is not None and not j.keyed.committed]
        try:
            with conn.begin():
                alone = keyed[0] if len(jobs) == 1 and keyed else None
                made_before = alone.made if alone is not None else None
                if alone is not None:
                    try:  # first: a second request with the key stops here, before any work (KeyTaken)
                        write_key(conn, alone)
                    except KeyTaken as exc:
                        raise _JobFailed(exc) from exc
                results = []
                inserts: dict[Any, list[dict]] = {}
                for job in jobs:
                    uow = BatchedUnitOfWork(conn, inserts)
                    token = current_trace_id.set(job.trace_id)
                    as_keyed = idempotency.current.set(job.keyed)
                    try:
                        value = job.fn(uow)
                    except DBAPIError:
                        raise  # the database's own failure (a deadlock may be retried), not the job's answer
                    except BaseException as exc:  # noqa: BLE001 - rolls the batch back (leaving the with)
                        raise _JobFailed(exc) from exc
                    finally:
                        idempotency.current.reset(as_keyed)
                        current_trace_id.reset(token)
                    results.append((value, uow.events))
                if alone is not None and alone.made != made_before:  # the job recorded what it made
                    conn.execute(
                        keys_t.update()
                        .where(keys_t.c.scope == alone.scope, keys_t.c.key == alone.key)
                        .values(made=alone.made)
                    )
                for table, rows in inserts.items():
                    conn.execute(_insert_into(table), rows)
                if len(jobs) > 1 and keyed:  # a key taken fails the batch: each job then runs alone (above)
                    conn.execute(_insert_into(keys_t), [k.row() for k in keyed])
                events = [e for _, evs in results for e in evs]
                if events:
                    event_ids = write_outbox(conn, events)
                committing = True  # leaving the block commits
            _committed_keys(keyed)
            return results
        except DBAPIError:
            self._drop_connection()  # it may be broken; the next batch checks out a fresh one
            if committing and event_ids and self._committed(event_ids):
                # The connection went during COMMIT, but the commit happened: the callers get their results
                # (running the jobs again would do the work twice, or fail on the work that exists).
                log.warning("group commit: a batch of %d committed although its COMMIT failed", len(jobs))
                _committed_keys(keyed)
                return results
            raise
        finally:
            if lock is not None:
                lock.release()

    def _committed(self, event_ids: list[str]) -> bool:
        """Whether a batch whose COMMIT failed was committed after all: its outbox rows are there (all or none:
        they were written in its transaction). Asked on a fresh connection; False if that fails too."""
        from sqlalchemy import func, select

        from .outbox import outbox_t

        try:
            with self.db.engine.connect() as c:
                found = c.execute(
                    select(func.count()).select_from(outbox_t).where(outbox_t.c.event_id.in_(event_ids))
                ).scalar_one()
        except Exception:  # noqa: BLE001 - still unreachable: the jobs run again alone (their own checks hold)
            log.warning("group commit: cannot tell whether a failed COMMIT happened", exc_info=True)
            return False
        return found == len(event_ids)

    def _alone(self, job: _Job) -> list[tuple[Any, list[Envelope]]]:
        """One job in its own transaction; once more on a fresh connection if the kept one had gone stale (the
        database restarted since the last batch)."""
        try:
            return self._transaction([job])
        except DBAPIError as exc:
            if not exc.connection_invalidated:
                raise
            return self._transaction([job])

    def _connection(self) -> Connection:
        """Each writer thread keeps its connection between batches: no pool check-out (and, on PostgreSQL, no
        pre-ping round trip) per batch. A database error drops it."""
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.closed or conn.invalidated:
            conn = self._local.conn = self.db.engine.connect()
        return conn

    def _drop_connection(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - closing a broken connection may fail too
                log.debug("closing a writer connection failed", exc_info=True)


def _committed_keys(keyed: list[KeyedRequest]) -> None:
    for k in keyed:
        k.committed = True


_INSERTS: dict[Any, Any] = {}


def _insert_into(table: Any) -> Any:
    """One INSERT statement object per table: SQLAlchemy then finds its compiled form in the cache at once."""
    stmt = _INSERTS.get(table)
    if stmt is None:
        stmt = _INSERTS[table] = table.insert()
    return stmt


class _JobFailed(Exception):
    def __init__(self, error: BaseException):
        super().__init__(str(error))
        self.error = error

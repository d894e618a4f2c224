"""Group commit: several write units of work of this process in one transaction, on one writer thread.

Under load most of the cost of a small write transaction is not its statements but what surrounds them: BEGIN and
COMMIT (on SQLite the commit appends every touched page of every index to the WAL; on PostgreSQL it waits for the
WAL flush), and the hand-offs between request threads queueing for the write lock. The writer takes whatever jobs
are waiting (up to `max_batch`), runs them one after the other in one transaction, writes their events to the
outbox in one statement and commits once; each caller gets its own result once that commit is durable.

A job is a function of a unit of work (`uow.conn` for Core statements, `uow.emit` for events). Jobs must not
swallow database errors and must leave nothing outside the database behind (they may run twice, see below).

If a job raises, the batch is rolled back and every job of it runs again alone, in its own transaction: the
failing one raises to its caller from that run, the others commit. Failures are the exception on the hot paths
that use the writer (a slot that has just filled up), so the happy path pays for no savepoints.
"""
from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from .events import Envelope, current_trace_id

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from .db import Database

log = logging.getLogger(__name__)

T = TypeVar("T")


class BatchedUnitOfWork:
    """What a job sees: the batch's connection, and `emit` for its events (written when the batch commits)."""

    def __init__(self, conn: "Connection"):
        self.conn = conn
        self.session = conn  # Core statements run the same way on a Connection as on a Session
        self.events: list[Envelope] = []

    def emit(self, event: Any) -> None:
        self.events.append(event if isinstance(event, Envelope) else Envelope.wrap(event))


@dataclass
class _Job(Generic[T]):
    fn: Callable[[BatchedUnitOfWork], T]
    trace_id: str | None
    future: Future = field(default_factory=Future)


class GroupCommitWriter:
    """One per database and process; started on first use, stopped by `close()`."""

    def __init__(self, db: "Database", max_batch: int = 32):
        self.db = db
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self.batches = 0  # statistics for tests and benchmarks
        self.jobs = 0

    def submit(self, fn: Callable[[BatchedUnitOfWork], T]) -> Future:
        """Queue `fn` for the next batch. The future resolves, once that batch has committed, to fn's result and
        the events it emitted (or to fn's exception). Async callers await `asyncio.wrap_future(...)`."""
        job: _Job[T] = _Job(fn, current_trace_id.get())
        self._ensure_started()
        self._queue.put(job)
        return job.future

    def run(self, fn: Callable[[BatchedUnitOfWork], T]) -> tuple[T, list[Envelope]]:
        """`submit` and wait."""
        return self.submit(fn).result()

    def close(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(10)
            self._thread = None

    # --- the writer thread ----------------------------------------------------------------------------
    def _ensure_started(self) -> None:
        if self._thread is None:
            with self._start_lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._loop, name=f"group-commit-{id(self):x}",
                                                    daemon=True)
                    self._thread.start()

    def _loop(self) -> None:
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
            except _JobFailed:
                results = None  # run them one by one below, so each caller gets its own outcome
            if results is not None:
                for job, result in zip(batch, results):
                    job.future.set_result(result)
                return
        for job in batch:
            try:
                (result,) = self._transaction([job])
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
        try:
            with self.db.engine.connect() as conn, conn.begin():
                results = []
                for job in jobs:
                    uow = BatchedUnitOfWork(conn)
                    token = current_trace_id.set(job.trace_id)
                    try:
                        value = job.fn(uow)
                    except BaseException as exc:  # noqa: BLE001 - rolls the batch back (leaving the with)
                        raise _JobFailed(exc) from exc
                    finally:
                        current_trace_id.reset(token)
                    results.append((value, uow.events))
                events = [e for _, evs in results for e in evs]
                if events:
                    write_outbox(conn, events)
            return results
        finally:
            if lock is not None:
                lock.release()


class _JobFailed(Exception):
    def __init__(self, error: BaseException):
        super().__init__(str(error))
        self.error = error

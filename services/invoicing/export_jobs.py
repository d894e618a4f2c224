"""Export jobs: a row per requested report with its status and progress, run by Celery or a background thread.

Life: queued → running → done | failed. `run_export` is idempotent: a job already done is left alone, and a job
redelivered after a worker died mid-way (acks_late) starts again from the top into a fresh temporary file. A
running job writes a heartbeat on its row; a second copy of its message finds it alive and leaves it alone.

Who runs it (`INVOICING_EXPORT_RUNNER`):
- `celery`: the task `invoicing.export_tax_report` (tasks.py) on the platform's worker;
- `thread`: a daemon thread in the API process — the embedded/test run without a worker;
- `auto` (default): a thread when ENV=test, Celery otherwise; if the Celery broker cannot be reached, a thread.
A Celery job is published through the project's app in every process (services.kernel.tasks), and one still
`queued` past `INVOICING_EXPORT_QUEUED_DEADLINE_S` after it was sent is sent again (`requeue_stale`, on beat):
a lost message delays an export, it never leaves it queued forever. One still `running` whose heartbeat stopped
`INVOICING_EXPORT_STALLED_S` ago is sent again too: its worker died mid-task, and the embedded broker (kombu's
SQLAlchemy transport) deleted the message when the worker fetched it, so acks_late redelivers nothing there.
A thread job has no message at all: its row names the process that runs it (`worker`, host:pid). One whose
process is gone (a dead pid on this host, seen when a process of the service starts), still `queued` past the
queued deadline (its thread never claimed it) or `running` with its heartbeat stalled is run again in a thread
of the process that finds it (`recover_threads`: at start-up, and on beat with the Celery jobs).
Progress is written to the job row every `INVOICING_EXPORT_PROGRESS_EVERY` invoices in its own short transaction,
so `GET /v1/tax/exports/{id}` shows it while the export's read snapshot is still open.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import and_, func, or_, select, true, update

from services.kernel import idempotency
from services.kernel.db import Database, UnitOfWork
from services.kernel.errors import NotFound
from services.kernel.ids import new_id
from services.kernel.runtime import ServiceRuntime

from .exports import ReportSpec, write_report
from .settings import export_dir, settings_of
from .store import exports

log = logging.getLogger(__name__)


def this_process() -> str:
    """How a thread job's row names the process running it."""
    return f"{socket.gethostname()}:{os.getpid()}"


def create_export(db: Database, spec: ReportSpec, requested_by: str, runner: str) -> dict[str, Any]:
    export_id = new_id("ex")
    with UnitOfWork(db) as uow:
        idempotency.made(export_id)
        uow.session.execute(
            exports.insert().values(
                id=export_id,
                firm_id=spec.firm_id,
                requested_by=requested_by,
                kind=spec.kind,
                period=spec.period,
                format=spec.fmt,
                pii=spec.pii,
                status="queued",
                runner=runner,
                # a thread job belongs to this process from the start: if it dies before the thread claims the
                # job, the row says whose it was (recover_threads)
                worker=this_process() if runner == "thread" else None,
                rows_done=0,
                progress=0.0,
                created_at=datetime.now(UTC),
            )
        )
    return load_export(db, export_id)


def load_export(db: Database, export_id: str) -> dict[str, Any]:
    with UnitOfWork(db, readonly=True) as uow:
        row = uow.session.execute(select(exports).where(exports.c.id == export_id)).one_or_none()
    if row is None:
        raise NotFound(f"no export with id {export_id}")
    return dict(row._mapping)


def export_path(rt: ServiceRuntime, job: dict[str, Any]) -> Path:
    return export_dir(rt) / f"{job['id']}.{job['format']}"


def set_export(db: Database, export_id: str, **values: Any) -> None:
    with UnitOfWork(db) as uow:
        uow.session.execute(update(exports).where(exports.c.id == export_id).values(**values))


def _claim_run(db: Database, export_id: str, stalled_s: float) -> bool:
    """Mark the job running for this delivery unless it is done or another delivery's run is alive (its
    heartbeat is fresh): two copies of one message (a redelivery, a resend) never write the file at once."""
    now = datetime.now(UTC)
    with UnitOfWork(db) as uow:
        return bool(
            uow.session.execute(
                update(exports)
                .where(
                    and_(
                        exports.c.id == export_id,
                        or_(
                            exports.c.status.in_(("queued", "failed")),
                            and_(
                                exports.c.status == "running",
                                or_(
                                    exports.c.heartbeat_at.is_(None),
                                    exports.c.heartbeat_at < now - timedelta(seconds=stalled_s),
                                ),
                            ),
                        ),
                    )
                )
                .values(
                    status="running",
                    started_at=now,
                    heartbeat_at=now,
                    error=None,
                    rows_done=0,
                    progress=0.0,
                )
            ).rowcount
        )


def _heartbeat(db: Database, export_id: str, every_s: float, stop: threading.Event) -> None:
    while not stop.wait(every_s):
        try:
            set_export(db, export_id, heartbeat_at=datetime.now(UTC))
        except Exception:  # noqa: BLE001 - a missed beat only makes the job look stalled sooner
            log.warning("export %s: could not write its heartbeat", export_id, exc_info=True)


def run_export(rt: ServiceRuntime, export_id: str) -> dict[str, Any]:
    """Generate the file of a queued (or interrupted) export job; record progress, then done or failed."""
    job = load_export(rt.db, export_id)
    if job["status"] == "done":
        return job
    spec = ReportSpec(job["firm_id"], job["kind"], job["period"], job["format"], job["pii"])
    cfg = settings_of(rt)
    if not _claim_run(rt.db, export_id, cfg.export_stalled_s):
        return load_export(rt.db, export_id)  # done meanwhile, or running elsewhere
    stop = threading.Event()
    beat = threading.Thread(
        target=_heartbeat,
        args=(rt.db, export_id, min(30.0, cfg.export_stalled_s / 4), stop),
        name=f"export-heartbeat-{export_id}",
        daemon=True,
    )
    beat.start()
    try:
        return _write(rt, export_id, job, spec)
    finally:
        stop.set()
        beat.join()


def _write(rt: ServiceRuntime, export_id: str, job: dict[str, Any], spec: ReportSpec) -> dict[str, Any]:
    cfg = settings_of(rt)

    def progress(done: int, total: int) -> None:
        set_export(
            rt.db,
            export_id,
            rows_done=done,
            rows_total=total,
            progress=round(done / total, 4) if total else 1.0,
        )

    path = export_path(rt, job)
    try:
        n = write_report(
            rt.db,
            spec,
            path,
            progress=progress,
            progress_every=cfg.export_progress_every,
            fetch_rows=cfg.export_fetch_rows,
            settings=rt.settings,
        )
    except Exception as exc:
        log.exception("export %s failed", export_id)
        set_export(
            rt.db,
            export_id,
            status="failed",
            error=f"{type(exc).__name__}: {exc}"[:2000],
            finished_at=datetime.now(UTC),
        )
        raise
    set_export(
        rt.db,
        export_id,
        status="done",
        progress=1.0,
        rows_done=n,
        rows_total=n,
        file_name=spec.file_name,
        size_bytes=path.stat().st_size,
        finished_at=datetime.now(UTC),
    )
    return load_export(rt.db, export_id)


def choose_runner(rt: ServiceRuntime) -> str:
    runner = settings_of(rt).export_runner
    if runner == "auto":
        return "thread" if rt.settings.env == "test" else "celery"
    return runner


def dispatch(rt: ServiceRuntime, export_id: str, runner: str) -> str:
    """Start the job; returns the runner that took it."""
    if runner == "celery":
        try:
            from .tasks import export_tax_report

            export_tax_report.publish(rt.settings, export_id)
            set_export(rt.db, export_id, dispatched_at=datetime.now(UTC))
            return "celery"
        except Exception:  # noqa: BLE001 - the broker is down: do not lose the request
            log.warning(
                "could not queue export %s on Celery; running it in a thread", export_id, exc_info=True
            )
            set_export(rt.db, export_id, runner="thread")
    set_export(rt.db, export_id, worker=this_process())
    _start_thread(rt, export_id)
    return "thread"


# the export threads this process started, by job: one that ended without finishing its job (its claim failed, a
# database error) is recovered like a dead process's
_threads: dict[str, threading.Thread] = {}
_threads_lock = threading.Lock()


def _start_thread(rt: ServiceRuntime, export_id: str) -> None:
    t = threading.Thread(target=_run_quietly, args=(rt, export_id), name=f"export-{export_id}", daemon=True)
    with _threads_lock:
        for done in [k for k, v in _threads.items() if not v.is_alive()]:
            del _threads[done]
        _threads[export_id] = t
    t.start()


def _thread_alive(export_id: str) -> bool:
    with _threads_lock:
        t = _threads.get(export_id)
    return t is not None and t.is_alive()


def requeue_stale(rt: ServiceRuntime, now: datetime | None = None) -> list[str]:
    """Send again the Celery jobs still queued `export_queued_deadline_s` after they were last sent, and those
    running whose heartbeat stopped `export_stalled_s` ago (their worker died mid-task); run again here the thread
    jobs that will never finish where they were started (`recover_threads`)."""
    now = now or datetime.now(UTC)
    return _requeue_queued(rt, now) + _requeue_stalled(rt, now) + recover_threads(rt, now)


def recover_threads(rt: ServiceRuntime, now: datetime | None = None, *, starting: bool = False) -> list[str]:
    """Run again, in a thread of this process, every thread job that will never finish where it was started: its
    process is gone (a dead pid on this host), or it is still `queued` `export_queued_deadline_s` after it was
    created or last sent (its thread never claimed it: the process died first, or the claim failed), or it is
    `running` and its heartbeat stopped `export_stalled_s` ago (a process on another host died). A job of this
    process is left alone while its thread lives. `starting`: this process has run no export yet, so a row naming
    its own pid is a predecessor's that had the same pid. Each job is claimed with a conditional UPDATE on the
    worker it named, so processes recovering at once run it once. Returns the jobs run again."""
    now = now or datetime.now(UTC)
    cfg = settings_of(rt)
    queued_cutoff = now - timedelta(seconds=cfg.export_queued_deadline_s)
    stalled_cutoff = now - timedelta(seconds=cfg.export_stalled_s)
    last_sent = func.coalesce(exports.c.dispatched_at, exports.c.created_at)
    last_sign = func.coalesce(exports.c.heartbeat_at, exports.c.started_at, exports.c.created_at)
    lost = or_(
        and_(exports.c.status == "queued", last_sent < queued_cutoff),
        and_(exports.c.status == "running", last_sign < stalled_cutoff),
    )
    thread_jobs = and_(exports.c.runner == "thread", exports.c.status.in_(("queued", "running")))
    with UnitOfWork(rt.db, readonly=True) as uow:
        rows = uow.session.execute(
            select(exports.c.id, exports.c.worker, lost.label("lost")).where(thread_jobs)
        )
        found = [(r.id, r.worker, bool(r.lost)) for r in rows]
    me = this_process()
    recovered = []
    for export_id, worker, late in found:
        if worker == me and not starting:
            gone = not _thread_alive(export_id)  # alive: only slow, whatever its row says
        else:
            gone = _process_gone(worker, starting) or late
        if not gone:
            continue
        named = exports.c.worker.is_(None) if worker is None else exports.c.worker == worker
        # a process that is gone writes nothing more: the worker it named suffices; else it must still be late
        still = lost if late and worker != me else true()
        with UnitOfWork(rt.db) as uow:  # claim it: the worker it named, still gone or late
            claimed = uow.session.execute(
                update(exports)
                .where(exports.c.id == export_id, thread_jobs, named, still)
                .values(status="queued", worker=me, dispatched_at=now, heartbeat_at=None)
            ).rowcount
        if claimed:
            log.warning(
                "thread export %s of %s will not finish there (its process is gone or silent); running it again "
                "here",
                export_id,
                worker or "no process",
            )
            _start_thread(rt, export_id)
            recovered.append(export_id)
    return recovered


def _process_gone(worker: str | None, starting: bool) -> bool:
    """Whether `worker` (host:pid) names a process of this host that no longer exists (with `starting`, this pid
    too: a predecessor's)."""
    host, _, pid = (worker or "").rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False  # another host's (or none): only its heartbeat or its deadline tells
    if int(pid) == os.getpid():
        return starting
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, another user's
    return False


def _requeue_stalled(rt: ServiceRuntime, now: datetime) -> list[str]:
    cutoff = now - timedelta(seconds=settings_of(rt).export_stalled_s)
    last_sign = func.coalesce(exports.c.heartbeat_at, exports.c.started_at, exports.c.created_at)
    stalled = and_(exports.c.status == "running", exports.c.runner == "celery", last_sign < cutoff)
    with UnitOfWork(rt.db, readonly=True) as uow:
        found = list(uow.session.execute(select(exports.c.id).where(stalled)).scalars())
    for export_id in found:
        with UnitOfWork(rt.db) as uow:  # claim it: two beats at once send it once
            claimed = uow.session.execute(
                update(exports)
                .where(and_(exports.c.id == export_id, stalled))
                .values(status="queued", dispatched_at=now, heartbeat_at=None)
            ).rowcount
        if claimed:
            log.warning(
                "export %s running with no heartbeat for %.0fs (its worker died); sending it again",
                export_id,
                settings_of(rt).export_stalled_s,
            )
            dispatch(rt, export_id, "celery")
    return found


def _requeue_queued(rt: ServiceRuntime, now: datetime) -> list[str]:
    cutoff = now - timedelta(seconds=settings_of(rt).export_queued_deadline_s)
    with UnitOfWork(rt.db, readonly=True) as uow:
        stale = list(
            uow.session.execute(
                select(exports.c.id).where(
                    and_(
                        exports.c.status == "queued",
                        exports.c.runner == "celery",
                        func.coalesce(exports.c.dispatched_at, exports.c.created_at) < cutoff,
                    )
                )
            ).scalars()
        )
    for export_id in stale:
        with UnitOfWork(rt.db) as uow:  # claim it: two beats at once send it once
            claimed = uow.session.execute(
                update(exports)
                .where(
                    and_(
                        exports.c.id == export_id,
                        exports.c.status == "queued",
                        or_(exports.c.dispatched_at.is_(None), exports.c.dispatched_at < cutoff),
                    )
                )
                .values(dispatched_at=now)
            ).rowcount
        if claimed:
            log.warning(
                "export %s still queued after %.0fs; sending it again",
                export_id,
                settings_of(rt).export_queued_deadline_s,
            )
            dispatch(rt, export_id, "celery")
    return stale


def _run_quietly(rt: ServiceRuntime, export_id: str) -> None:
    try:
        run_export(rt, export_id)
    except Exception:  # noqa: BLE001 - recorded on the job as failed
        pass

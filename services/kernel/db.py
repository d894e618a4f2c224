"""Engines, sessions and the unit of work.

SQLite (embedded): WAL, busy timeout, and write transactions that start with BEGIN IMMEDIATE so two writers
queue on the lock instead of failing on a read-to-write upgrade. PostgreSQL (distributed): one schema per
service, selected with the connection's search_path, so the same table definitions serve both.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import (
    Connection,
    DateTime,
    Dialect,
    Engine,
    MetaData,
    TypeDecorator,
    create_engine,
    event,
    text,
)
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from .settings import ConfigError

if TYPE_CHECKING:
    from .group_commit import GroupCommitWriter

T = TypeVar("T")

# One naming convention everywhere so Alembic can name and drop constraints on both databases.
NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def new_metadata() -> MetaData:
    return MetaData(naming_convention=NAMING)


class Timestamp(TypeDecorator[datetime]):
    """The column type of every moment in time: stored as UTC, read back aware (in UTC) on both databases, so
    replies carry an offset and comparisons never mix naive and aware values. SQLite has no offset: it would
    store the wall clock it is given and read it back naive. A naive value written is taken to be UTC."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def make_engine(url: str, schema: str | None = None, pool_size: int = 10, max_overflow: int = 20) -> Engine:
    """An engine for one service's database. `schema` applies to PostgreSQL only."""
    if is_sqlite(url):
        path = url.split("///", 1)[1] if "///" in url else ""
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_size=pool_size,
            max_overflow=max_overflow,
        )
        _sqlite_pragmas(engine)
        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    connect_args: dict[str, Any] = {"connect_timeout": 5}
    if schema:
        _check_ident(schema)
        connect_args["options"] = f"-csearch_path={schema}"
    return create_engine(
        url, connect_args=connect_args, pool_size=pool_size, max_overflow=max_overflow, pool_pre_ping=True
    )


def _check_ident(name: str) -> None:
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
        raise ConfigError(f"bad schema name {name!r}")


def _sqlite_pragmas(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy's `begin` event below decide how a transaction starts.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        readonly = conn.get_execution_options().get("readonly", False)
        conn.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")


def ensure_schema(engine: Engine, schema: str | None) -> None:
    if schema and engine.dialect.name == "postgresql":
        _check_ident(schema)
        with engine.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))


def check_reachable(engine: Engine, what: str) -> None:
    """Fail fast, saying what to fix, when a configured database cannot be reached."""
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except OperationalError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise ConfigError(
            f"cannot reach the {what} database at {engine.url.render_as_string(hide_password=True)}: "
            f"{reason}. Check DATABASE_URL / EVENT_LOG_URL and that the server is running."
        ) from exc


class Database:
    """A service's engine and session factory."""

    def __init__(self, url: str, schema: str | None = None, pool_size: int = 10, max_overflow: int = 20):
        self.url = url
        self.schema = schema if not is_sqlite(url) else None
        self.engine = make_engine(url, self.schema, pool_size=pool_size, max_overflow=max_overflow)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._readonly_engine = self.engine.execution_options(readonly=True)
        # SQLite has one writer at a time. Queue this process's writers on a lock rather than letting them race
        # for the file lock: the loser of that race sleeps in SQLite's busy handler (1, 2, 5, 10 ms...), which
        # wastes most of the time a small transaction needs. Other processes still meet the busy timeout.
        self.write_lock = threading.RLock() if is_sqlite(url) else None
        self._writer: Any = None
        self._writer_lock = threading.Lock()

    @property
    def writer(self) -> GroupCommitWriter:
        """This process's group-commit writer for the database (services.kernel.group_commit)."""
        if self._writer is None:
            with self._writer_lock:
                if self._writer is None:
                    from .group_commit import GroupCommitWriter

                    self._writer = GroupCommitWriter(self)
        return self._writer

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def session(self, readonly: bool = False) -> Session:
        return Session(self._readonly_engine if readonly else self.engine, expire_on_commit=False)

    def dispose(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self.engine.dispose()


class UnitOfWork:
    """One transaction over one service's database. Events raised here go to the outbox in the same commit."""

    def __init__(self, db: Database, readonly: bool = False):
        self.db = db
        self.readonly = readonly
        self.session: Session
        self._events: list[Any] = []

    def __enter__(self) -> UnitOfWork:
        self._lock = None if self.readonly else self.db.write_lock
        if self._lock is not None:
            self._lock.acquire()
        try:
            self.session = self.db.session(self.readonly)
            self.session.begin()
        except BaseException:
            if self._lock is not None:
                self._lock.release()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        try:
            if exc_type is None and not self.readonly:
                from .idempotency import unwritten, write_key

                keyed = unwritten(self.db)  # the request's Idempotency-Key commits with its work, or neither
                if keyed is not None:
                    write_key(self.session, keyed)
                self._flush_events()
                self.session.commit()
                if keyed is not None:
                    keyed.committed = True
            else:
                self.session.rollback()
        finally:
            self.session.close()
            if self._lock is not None:
                self._lock.release()

    def emit(self, event: Any) -> None:
        """Record an integration event; it is written to the outbox when this unit of work commits."""
        self._events.append(event)

    def emit_again(self, envelope: Any) -> str:
        """Announce an event again under its own id (`outbox.publish_again`); "waiting" if this unit of work is
        about to publish it already."""
        from .outbox import publish_again

        if any(getattr(e, "id", None) == envelope.id for e in self._events):
            return "waiting"
        return publish_again(self.session, envelope)

    def _flush_events(self) -> None:
        if self._events:
            from .outbox import write_outbox

            write_outbox(self.session, self._events)
            self._events.clear()


def changed_values(row: Any, wanted: Mapping[str, Any]) -> dict[str, Any]:
    """What an update (PATCH, PUT) has to write: the fields of `wanted` whose value `row` does not hold already.

    Empty when the request changes nothing; the handler then writes nothing (no new version, no event) and answers
    the resource as it is, so the same update sent twice without an Idempotency-Key is applied once. Every update
    handler goes through here (tests/gateway/test_idempotency_after_commit.py sends each one twice)."""
    return {k: v for k, v in wanted.items() if getattr(row, k) != v}


def retry_on_conflict(fn: Callable[[], T], attempts: int = 5) -> T:
    """Re-run a whole unit of work after a serialization failure or deadlock (PostgreSQL 40001/40P01)."""
    from sqlalchemy.exc import DBAPIError

    for i in range(attempts):
        try:
            return fn()
        except DBAPIError as exc:
            code = getattr(getattr(exc, "orig", None), "sqlstate", None)
            if code not in ("40001", "40P01") or i == attempts - 1:
                raise
            time.sleep(0.01 * (2**i))
    raise AssertionError("unreachable")


@contextmanager
def connection(db: Database) -> Iterator[Any]:
    with db.engine.connect() as conn:
        yield conn

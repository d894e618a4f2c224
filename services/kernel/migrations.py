"""Alembic, one migration history per service (its own version table, in its own database or schema).

Each service has `services/<name>/migrations/` with an `env.py` that calls `run_env`, and versions written by
`recycle makemigrations <service> -m "..."` (autogenerate against a scratch SQLite at head). A service's first
migration creates the kernel's tables with `create_outbox_and_inbox()`, `create_idempotency_keys()` and
`add_idempotency_made()` (the template writes the calls; autogenerate leaves those tables to them).
"""

from __future__ import annotations

import importlib
import threading
from pathlib import Path
from typing import Any, Literal

from alembic import command, context
from alembic.config import Config
from sqlalchemy import MetaData

from .db import Database, Timestamp, ensure_schema


def service_dir(service: str) -> Path:
    return Path(str(importlib.import_module(f"services.{service}").__file__)).parent


def alembic_config(service: str, db: Database) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(service_dir(service) / "migrations"))
    cfg.set_main_option("sqlalchemy.url", db.url.replace("%", "%%"))
    cfg.attributes["database"] = db
    cfg.attributes["service"] = service
    return cfg


# Alembic keeps the running migration's context in module globals (`alembic.context`, `alembic.op`), one per
# process: two migrations at once in two threads (the Celery worker's thread pool building its platform for two
# tasks at the same tick) read each other's context and fail on exit (`KeyError('config')`). One at a time.
_ALEMBIC = threading.RLock()


def upgrade(service: str, db: Database) -> None:
    ensure_schema(db.engine, db.schema)
    with _ALEMBIC:
        command.upgrade(alembic_config(service, db), "head")


def target_metadata(service: str) -> list[MetaData]:
    from .outbox import kernel_metadata

    mod = importlib.import_module(f"services.{service}.store")
    return [mod.metadata, kernel_metadata]


# The kernel's tables, created in every service's migrations through the helpers below (a new service's first
# migration calls them all: the template writes the calls).
KERNEL_TABLES = frozenset({"outbox", "inbox", "idempotency_keys"})


def create_outbox_and_inbox() -> None:
    """The outbox and inbox tables, as every service's first migration creates them.

    Frozen, like any migration: the model (kernel/outbox.py) may change only with a new migration in every
    service (autogenerate finds the difference), never by editing this."""
    import sqlalchemy as sa
    from alembic import op

    op.create_table(
        "inbox",
        sa.Column("group_id", sa.String(length=200), nullable=False),
        sa.Column("event_id", sa.String(length=64), nullable=False),
        sa.Column("handled_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("group_id", "event_id", name=op.f("pk_inbox")),
    )
    op.create_table(
        "outbox",
        sa.Column(
            "seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("event_id", sa.String(length=64), nullable=False),
        sa.Column("topic", sa.String(length=200), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("type", sa.String(length=200), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_outbox")),
        sa.UniqueConstraint("event_id", name=op.f("uq_outbox_event_id")),
    )
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_outbox_sent_at"), ["sent_at"], unique=False)


def drop_outbox_and_inbox() -> None:
    """The first migration's downgrade: the reverse of `create_outbox_and_inbox`."""
    from alembic import op

    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_outbox_sent_at"))
    op.drop_table("outbox")
    op.drop_table("inbox")


def create_idempotency_keys() -> None:
    """The table of committed Idempotency-Keys (services/kernel/idempotency.py). Frozen, like any migration."""
    import sqlalchemy as sa
    from alembic import op

    op.create_table(
        "idempotency_keys",
        sa.Column("scope", sa.String(length=200), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=10), nullable=False),
        sa.Column("status", sa.Integer(), nullable=True),
        sa.Column("headers", sa.Text(), nullable=True),
        sa.Column("body", sa.LargeBinary(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("scope", "key", name=op.f("pk_idempotency_keys")),
    )
    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_idempotency_keys_created_at"), ["created_at"], unique=False)


def drop_idempotency_keys() -> None:
    from alembic import op

    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_idempotency_keys_created_at"))
    op.drop_table("idempotency_keys")


def add_idempotency_made() -> None:
    """`idempotency_keys.made`: what a keyed request made, its lost reply rebuilt from it. Frozen."""
    import sqlalchemy as sa
    from alembic import op

    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.add_column(sa.Column("made", sa.String(length=200), nullable=True))


def drop_idempotency_made() -> None:
    from alembic import op

    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.drop_column("made")


def _leave_kernel_tables_to_the_helper(context: Any, revision: Any, directives: list[Any]) -> None:
    """Autogenerating a service's first migration: the kernel's tables come from the helpers above (written by
    the template), so their operations are dropped from what autogenerate found."""
    if not directives or context.get_current_revision() is not None:
        return
    for ops in (directives[0].upgrade_ops, directives[0].downgrade_ops):
        ops.ops[:] = [op for op in ops.ops if getattr(op, "table_name", None) not in KERNEL_TABLES]


def _render_item(type_: str, obj: Any, autogen_context: Any) -> str | Literal[False]:
    """Migrations write the kernel's `Timestamp` as the column type it stands for (the same DDL)."""
    if type_ == "type" and isinstance(obj, Timestamp):
        return "sa.DateTime(timezone=True)"
    return False


def run_env() -> None:
    """Body of every service's migrations/env.py."""
    cfg = context.config
    db: Database | None = cfg.attributes.get("database")
    service = cfg.attributes["service"]
    if db is None:
        raise RuntimeError("run migrations through services.kernel.migrations.upgrade")
    with db.engine.connect() as conn:
        context.configure(
            connection=conn,
            target_metadata=target_metadata(service),
            render_as_batch=db.dialect == "sqlite",  # SQLite can only ALTER through table copies
            version_table="alembic_version",
            compare_type=True,
            render_item=_render_item,
            process_revision_directives=_leave_kernel_tables_to_the_helper,
        )
        with context.begin_transaction():
            context.run_migrations()
        conn.commit()

"""Alembic, one migration history per service (its own version table, in its own database or schema).

Each service has `services/<name>/migrations/` with an `env.py` that calls `run_env`, and versions written by
`recycle makemigrations <service> -m "..."` (autogenerate against a scratch SQLite at head).
"""

from __future__ import annotations

import importlib
from pathlib import Path

from alembic import command, context
from alembic.config import Config
from sqlalchemy import MetaData

from .db import Database, ensure_schema


def service_dir(service: str) -> Path:
    return Path(importlib.import_module(f"services.{service}").__file__).parent


def alembic_config(service: str, db: Database) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(service_dir(service) / "migrations"))
    cfg.set_main_option("sqlalchemy.url", db.url.replace("%", "%%"))
    cfg.attributes["database"] = db
    cfg.attributes["service"] = service
    return cfg


def upgrade(service: str, db: Database) -> None:
    ensure_schema(db.engine, db.schema)
    command.upgrade(alembic_config(service, db), "head")


def target_metadata(service: str) -> list[MetaData]:
    from .outbox import kernel_metadata

    mod = importlib.import_module(f"services.{service}.store")
    return [mod.metadata, kernel_metadata]


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
        )
        with context.begin_transaction():
            context.run_migrations()
        conn.commit()

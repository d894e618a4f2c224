"""`recycle`: the operator's command line (run, migrations, dead letters, event catalogue, ...)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="Recycling marketplace: operator commands.", no_args_is_help=True)
dlq = typer.Typer(help="Inspect and replay dead letters.")
app.add_typer(dlq, name="dead-letters")
console = Console()


def _settings():  # noqa: ANN202
    from services.kernel.settings import get_settings

    return get_settings()


@app.command()
def run() -> None:
    """Start the whole platform on the embedded default (gateway + every service + Celery worker)."""
    from .supervisor import run_embedded

    raise SystemExit(run_embedded(_settings()))


@app.command("run-dist")
def run_dist(ready_file: str = typer.Option(None, help="write the addresses here once ready")) -> None:
    """Start the distributed topology on this host: broker, one process per service, gateway, worker."""
    from .supervisor import run_distributed

    raise SystemExit(run_distributed(_settings(), ready_file))


@app.command()
def serve(
    background: bool = typer.Option(
        True, help="also run the relays and consumers here (--no-background: `recycle background` runs them)"
    ),
) -> None:
    """Run the gateway (embedded: every service in this process)."""
    from .serve import serve_gateway

    serve_gateway(_settings(), background=background)


@app.command()
def background() -> None:
    """Run the hosted services' outbox relays and event consumers, without HTTP (the embedded run's second
    process: request handling and event processing then each have a core)."""
    from .serve import run_background

    run_background(_settings())


@app.command("serve-service")
def serve_service(
    name: str, port: int = typer.Option(..., help="port of this service's own HTTP app")
) -> None:
    """Run one service in its own process (distributed run)."""
    from .serve import serve_one_service

    serve_one_service(_settings(), name, port)


@app.command()
def migrate(service: list[str] = typer.Argument(None)) -> None:
    """Apply every service's migrations (or only the named ones)."""
    from services.bootstrap import Platform

    platform = Platform(_settings(), services=service or None)
    for name, rt in platform.runtimes.items():
        from services.kernel import migrations

        migrations.upgrade(name, rt.db)
        console.print(f"[green]migrated[/] {name}")


@app.command()
def makemigrations(service: str, message: str = typer.Option(..., "-m")) -> None:
    """Autogenerate a migration for a service from its tables (against a scratch SQLite at head)."""
    from alembic import command

    from services.kernel import migrations
    from services.kernel.db import Database

    mdir = migrations.service_dir(service) / "migrations"
    tpl = Path(migrations.__file__).parent / "migration_template"
    (mdir / "versions").mkdir(parents=True, exist_ok=True)
    if not (mdir / "env.py").exists():
        shutil.copy(tpl / "env.py", mdir / "env.py")
    shutil.copy(tpl / "script.py.mako", mdir / "script.py.mako")  # always the kernel's current template
    with tempfile.TemporaryDirectory() as d:
        db = Database(f"sqlite:///{d}/scratch.db")
        cfg = migrations.alembic_config(service, db)
        command.upgrade(cfg, "head")
        script = command.revision(cfg, message=message, autogenerate=True)
    # the generated file passes `make lint` as written
    ruff = Path(sys.executable).parent / "ruff"
    paths = [s.path for s in (script if isinstance(script, list) else [script]) if s is not None]
    if ruff.exists() and paths:
        subprocess.run([str(ruff), "format", "--quiet", *paths], check=False)
        subprocess.run([str(ruff), "check", "--fix", "--quiet", *paths], check=False)


@app.command("events-catalogue")
def events_catalogue(out: Path = Path("docs/events.md")) -> None:
    """Write the event catalogue generated from the event models."""
    from services.kernel.events import catalogue_markdown, load_event_modules

    load_event_modules()
    out.write_text(catalogue_markdown() + "\n")
    console.print(f"wrote {out}")


@app.command("settings-reference")
def settings_reference(out: Path = Path("docs/configuration.md")) -> None:
    """Write the configuration reference generated from the settings classes."""
    from .settings_reference import reference_markdown

    out.write_text(reference_markdown() + "\n")
    console.print(f"wrote {out}")


@dlq.command("list")
def dlq_list(group: str) -> None:
    """List the records parked in `dlq.<group>`."""
    from services.kernel.bus.factory import make_bus
    from services.kernel.consumer import list_dead_letters, replayed_dead_letters

    bus = make_bus(_settings())
    replayed = replayed_dead_letters(bus, group)
    t = Table("partition@offset", "original", "attempts", "replayed", "error")
    for r in list_dead_letters(bus, group):
        t.add_row(
            f"{r.partition}@{r.offset}",
            f"{r.headers.get('dlq.original_topic')}/{r.headers.get('dlq.original_partition')}"
            f"@{r.headers.get('dlq.original_offset')}",
            r.headers.get("dlq.attempts", ""),
            "yes" if (r.partition, r.offset) in replayed else "",
            r.headers.get("dlq.error", "")[:120],
        )
    console.print(t)


@dlq.command("replay")
def dlq_replay(
    group: str,
    only: list[str] = typer.Option(None, help="partition@offset, repeatable"),
    again: bool = typer.Option(False, help="also those replayed before"),
) -> None:
    """Send parked records back to their original topic (handled once thanks to the inbox); each one sent is
    recorded, and a later replay leaves it alone unless --again."""
    from services.kernel.bus.factory import make_bus
    from services.kernel.consumer import replay_dead_letters

    offsets = None
    if only:
        offsets = {(int(p), int(o)) for p, o in (x.split("@") for x in only)}
    n = replay_dead_letters(make_bus(_settings()), group, offsets, again=again)
    console.print(f"replayed {n} record(s) from dlq.{group}")


def _mount_service_clis() -> None:
    """Each service may bring its own commands (services/<name>/cli.py exposing a typer app)."""
    import importlib

    for name, command in (
        ("payments", "payments"),
        ("pricing", "pricing"),
        ("invoicing", "tax"),
        ("stats", "stats"),
        ("listings", "listings"),
    ):
        try:
            mod = importlib.import_module(f"services.{name}.cli")
        except ModuleNotFoundError as exc:
            if exc.name == f"services.{name}.cli":
                continue
            raise
        sub = getattr(mod, "app", None) or getattr(mod, "cli", None)
        if sub is not None:
            app.add_typer(sub, name=command)


_mount_service_clis()


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())

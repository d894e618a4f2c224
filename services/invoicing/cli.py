"""`recycle tax ...`: tax reports from the command line, with a progress bar.

    recycle tax export --period 2026-11 --format csv --firm fm_123            # 代办税费明细报告表
    recycle tax export --period 2026-11 --format xlsx --firm fm_123 --kind summary --out report.xlsx
    recycle tax export --period 2026 --format csv --firm fm_123 --kind annual  # annual seller statements

It reads the invoicing database named by the platform's settings (DATABASE_URL / DATA_DIR), records the export
like the API does (runner "cli"), and writes the file where --out says (default: the current directory).
Mounted in workers/cli.py as the `tax` group; also runnable as `python -m services.invoicing.cli`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import typer

cli = typer.Typer(
    help="Reverse-invoicing tax reports (代办税费报告表, 明细报告表, annual statements).",
    no_args_is_help=True,
)


@cli.callback()
def _group() -> None:
    """Reverse-invoicing tax reports."""


@cli.command("export")
def export(
    period: str = typer.Option(..., help="YYYY-MM (annual: YYYY)"),
    firm: str = typer.Option(..., help="the issuing firm's id"),
    format: str = typer.Option("csv", "--format", help="csv or xlsx"),  # noqa: A002 - the user-facing name
    kind: str = typer.Option("detail", help="detail | summary | annual"),
    pii: str = typer.Option("masked", help="masked, or full (decrypts names and ID numbers for the filing)"),
    out: Path = typer.Option(None, help="output file (default: ./<kind>-<firm>-<period>.<format>)"),
    quiet: bool = typer.Option(False, help="no progress bar"),
) -> None:
    """Write a tax report of one issuing firm, streamed (constant memory), with a progress bar."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from services.kernel import migrations
    from services.kernel.db import Database
    from services.kernel.errors import DomainError
    from services.kernel.settings import Settings

    from .export_jobs import create_export, set_export
    from .exports import ReportSpec, write_report

    console = Console(stderr=True)
    settings = Settings()
    try:
        spec = ReportSpec(firm, kind, period, format, pii)
    except DomainError as exc:
        console.print(
            f"[red]{exc.detail}[/]: " + "; ".join(f"{e['field']}: {e['message']}" for e in exc.errors)
        )
        raise typer.Exit(2) from None
    db = Database(settings.db_url("invoicing"), schema=settings.db_schema("invoicing"))
    migrations.upgrade("invoicing", db)
    target = out or Path(spec.file_name)

    job = create_export(db, spec, requested_by="cli", runner="cli")

    def mark(**values: object) -> None:
        set_export(db, job["id"], **values)

    mark(status="running", started_at=datetime.now(UTC))
    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, console=console, disable=quiet) as bar:
        task = bar.add_task(f"{spec.kind} {spec.period} {spec.firm_id}", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)
            mark(rows_done=done, rows_total=total, progress=round(done / total, 4) if total else 1.0)

        try:
            n = write_report(db, spec, target, progress=progress, progress_every=5000, settings=settings)
        except Exception as exc:
            mark(status="failed", error=f"{type(exc).__name__}: {exc}"[:2000], finished_at=datetime.now(UTC))
            raise
    mark(
        status="done",
        progress=1.0,
        rows_done=n,
        rows_total=n,
        file_name=str(target.name),
        size_bytes=target.stat().st_size,
        finished_at=datetime.now(UTC),
    )
    db.dispose()
    console.print(f"wrote {target} ({n} invoices, {target.stat().st_size:,} bytes)")


if __name__ == "__main__":
    cli()

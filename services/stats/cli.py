"""`recycle stats ...`: rebuild the statistics from the event log, write the monthly report.

    recycle stats rebuild                       # clear and replay booking.pickup and trading.trade from offset 0
    recycle stats report --period 2026-11 --region 320200 --by county --format xlsx

They use the platform's settings (DATABASE_URL / DATA_DIR, BUS, ...). Mounted in workers/cli.py as `stats`.
"""

from __future__ import annotations

from pathlib import Path

import typer

cli = typer.Typer(help="Material-flow statistics and carbon savings (回收量, 减碳量).", no_args_is_help=True)


@cli.callback()
def _group() -> None:
    """Material-flow statistics."""


def _runtime():  # noqa: ANN202
    from services.kernel.platform import Platform
    from services.kernel.settings import Settings

    platform = Platform(Settings(), services=["stats"]).prepare()
    return platform, platform["stats"]


@cli.command("rebuild")
def rebuild_cmd(
    allow_truncated: bool = typer.Option(
        False, help="rebuild even if retention removed the log's first records"
    ),
    quiet: bool = typer.Option(False, help="no progress bar"),
) -> None:
    """Clear every stats table and replay the settled pickups and trades from offset 0 (progress bar)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from services.kernel.errors import DomainError

    from .rebuild import rebuild
    from .settings import settings_of

    console = Console(stderr=True)
    platform, rt = _runtime()
    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    ]
    try:
        with Progress(*columns, console=console, disable=quiet) as bar:
            task = bar.add_task("replaying", total=None)
            result = rebuild(
                rt.db,
                platform.bus,
                [r.spec for r in rt.runners],
                batch=settings_of(rt).rebuild_batch,
                allow_truncated=allow_truncated,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
    except DomainError as exc:
        console.print(f"[red]{exc.detail}[/]")
        raise typer.Exit(2) from None
    finally:
        platform.stop()
    console.print(
        f"[green]rebuilt[/]: {result.records} records read, {result.handled} counted, "
        f"{result.skipped} of other types, {result.undecodable} undecodable"
    )


@cli.command("report")
def report_cmd(
    period: str = typer.Option(..., help="YYYY-MM"),
    region: str = typer.Option("000000", help="GB/T 2260 code (000000: all of China)"),
    by: str = typer.Option("city", help="province | city | county"),
    format: str = typer.Option("xlsx", "--format", help="csv or xlsx"),  # noqa: A002 - the user-facing name
    out: Path = typer.Option(None, help="output file (default: ./stats-<period>-<region>-<by>.<format>)"),
) -> None:
    """Write the monthly report for regulators."""
    from rich.console import Console

    from services.kernel.errors import DomainError
    from services.kernel.regions import validate_city_code

    from .report import ReportSpec, render, report_rows
    from .settings import factors_of

    console = Console(stderr=True)
    try:
        validate_city_code(region, "region", allow_national=True)
        if by not in ("province", "city", "county") or format not in ("csv", "xlsx"):
            raise typer.BadParameter("--by province|city|county, --format csv|xlsx")
        spec = ReportSpec(period, region, by, format)  # type: ignore[arg-type]
        spec.check()
    except DomainError as exc:
        console.print(
            f"[red]{exc.detail}[/]: " + "; ".join(f"{e['field']}: {e['message']}" for e in exc.errors)
        )
        raise typer.Exit(2) from None
    platform, rt = _runtime()
    try:
        table = factors_of(rt)
        with rt.db.session(readonly=True) as s:
            rows = report_rows(s, spec, table)
        target = out or Path(spec.file_name)
        target.write_bytes(render(rows, spec, table))
    finally:
        platform.stop()
    console.print(f"wrote {target} ({len(rows)} rows)")


if __name__ == "__main__":
    cli()

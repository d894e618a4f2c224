"""`recycle pricing ...`: compute (and backfill) the daily indices, write the methodology document.

Mounted in workers/cli.py. Imports stay inside the commands so `recycle --help` stays fast.
"""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import typer
from rich.console import Console

app = typer.Typer(
    help="Price indices: daily computation, backfills, the methodology document.", no_args_is_help=True
)
console = Console()


def _day(value: str, name: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a date (YYYY-MM-DD)", param_hint=name) from None


@app.command("compute-index")
def compute_index(
    day: str = typer.Option(..., "--date", help="the day to compute (YYYY-MM-DD)"),
    to: str = typer.Option(None, "--to", help="backfill every day from --date to this one (inclusive)"),
    reason: str = typer.Option(
        None, "--reason", help="stated on the correction notice of any restated value"
    ),
) -> None:
    """Run the daily computation for a day or a range of days (a restatement where inputs changed)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from services.kernel.errors import DomainError
    from services.kernel.platform import Platform
    from services.kernel.settings import get_settings

    from .handlers import compute

    first = _day(day, "--date")
    last = _day(to, "--to") if to else first
    if last < first:
        raise typer.BadParameter("--to is before --date", param_hint="--to")
    days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
    platform = Platform(get_settings(), services=["pricing"]).prepare()
    rt = platform["pricing"]
    totals = {"series": 0, "new": 0, "restated": 0, "observations": 0}
    failed = 0
    try:
        with Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        ) as progress:
            task = progress.add_task("computing", total=len(days))
            for d in days:
                progress.update(task, description=f"computing {d.isoformat()}")
                try:
                    o = compute(rt, d, trigger="cli", reason=reason)
                except DomainError as exc:
                    failed += 1
                    progress.console.print(f"[red]{d}: {exc.detail}[/]")
                else:
                    totals["series"] += len(o.series)
                    totals["new"] += o.n_new_versions
                    totals["restated"] += o.n_restated
                    totals["observations"] += o.n_observations
                    progress.console.print(
                        f"{d}: {o.n_observations:,} observations, {len(o.series):,} series, "
                        f"{o.n_new_versions:,} new versions, {o.n_restated:,} restated"
                    )
                progress.advance(task)
    finally:
        platform.stop()
    console.print(
        f"[green]done[/]: {len(days) - failed} day(s), {totals['series']:,} series, "
        f"{totals['new']:,} new versions ({totals['restated']:,} restatements), "
        f"{totals['observations']:,} observations"
    )
    if failed:
        raise typer.Exit(1)


@app.command("methodology")
def methodology(
    out: Path = typer.Option(None, "--out", help="write the Markdown here (e.g. docs/methodology.md)"),
    as_json: bool = typer.Option(False, "--json", help="the configuration as JSON instead"),
) -> None:
    """Print (or write) the methodology document generated from methodology.toml."""
    import json

    from .domain.methodology import load_methodology, render_methodology_markdown
    from .methodology_json import methodology_json

    m = load_methodology()
    text = (
        json.dumps(methodology_json(m), ensure_ascii=False, indent=2)
        if as_json
        else render_methodology_markdown(m)
    )
    if out is None:
        print(text)
    else:
        out.write_text(text if text.endswith("\n") else text + "\n", encoding="utf-8")
        console.print(f"wrote {out} (methodology {m.version})")

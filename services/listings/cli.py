"""Operator commands of listings: `recycle listings reindex` (rebuild the search index from the listings table)."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

app = typer.Typer(help="Listings (二手): the search index.", no_args_is_help=True)
console = Console()


@app.command()
def reindex() -> None:
    """Rebuild the search index from the listings on sale (searches keep answering from the old index until the
    new one is complete)."""
    from services.kernel.platform import Platform
    from services.kernel.settings import Settings

    from .search import search_of
    from .search.indexer import count_published
    from .search.indexer import reindex as run

    platform = Platform(Settings(), services=["listings"]).prepare()
    rt = platform["listings"]
    try:
        total = count_published(rt.db)
        with Progress(
            TextColumn("reindexing"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=console,
        ) as bar:
            task = bar.add_task("reindex", total=total)
            n = run(rt.db, search_of(rt), lambda k: bar.advance(task, k))
    finally:
        platform.stop()
    console.print(f"indexed {n} listing(s) into the {search_of(rt).name} index")


@app.command()
def timers() -> None:
    """Run the order timers once (expire unpaid orders, auto-confirm shipped ones)."""
    from services.kernel.platform import Platform
    from services.kernel.settings import Settings

    from .timers import run_due

    platform = Platform(Settings(), services=["listings"]).prepare()
    try:
        console.print(run_due(platform["listings"]))
    finally:
        platform.stop()

"""Operator commands of payments: `python -m services.payments.cli reconcile` (and trial-balance, pull-events).

`app` is a Typer app, ready to mount under the platform CLI (`recycle payments ...`) with
`app.add_typer(payments_cli.app, name="payments")` in workers/cli.py.
"""

from __future__ import annotations

import json
import sys

import typer
from rich.console import Console
from rich.table import Table

from services.kernel.money import fen_to_yuan_str

app = typer.Typer(help="Payments: reconciliation and the ledger.", no_args_is_help=True)
console = Console()


def _payments():  # noqa: ANN202
    from services.kernel.platform import Platform
    from services.kernel.settings import get_settings

    from .handlers import payments_of

    platform = Platform(get_settings(), services=["payments"]).prepare()
    return platform, payments_of(platform["payments"])


@app.command()
def reconcile(
    as_json: bool = typer.Option(False, "--json", help="print the report as JSON"),
    no_catch_up: bool = typer.Option(False, help="do not pull events or send pending withdrawals"),
) -> None:
    """Compare the ledger with the provider's objects; exit 1 when anything differs."""
    from .reconcile import reconcile as run

    platform, payments = _payments()
    try:
        report = run(payments, catch_up=not no_catch_up)
    finally:
        platform.stop()
    if as_json:
        console.print_json(json.dumps(report.to_dict()))
    else:
        console.print(
            f"provider [bold]{report.provider}[/]: checked {report.checked}; "
            f"{report.events_applied} event(s) applied, {report.withdrawals_sent} withdrawal(s) sent"
        )
        if report.discrepancies:
            t = Table("kind", "object", "provider ref", "ours", "provider", "detail")
            for d in report.discrepancies:
                t.add_row(d.kind, d.object_id, d.provider_ref or "", str(d.ours), str(d.provider), d.detail)
            console.print(t)
        for problem in report.ledger_problems:
            console.print(f"[red]ledger:[/] {problem}")
        console.print("[green]reconciled[/]" if report.ok else "[red]differences found[/]")
    raise typer.Exit(0 if report.ok else 1)


@app.command("trial-balance")
def trial_balance() -> None:
    """Every ledger account's balance on its normal side (yuan); the raw total is always 0."""
    from .reconcile import trial_balance_rows

    platform, payments = _payments()
    try:
        rows = trial_balance_rows(payments)
        total = sum(payments.trial_balance().values())
    finally:
        platform.stop()
    t = Table("account", "balance (yuan)")
    for account, fen in rows:
        t.add_row(account, fen_to_yuan_str(fen))
    console.print(t)
    console.print(f"raw total: {total} fen")


@app.command("pull-events")
def pull_events() -> None:
    """Apply provider events not yet received (the sandbox; Stripe pushes webhooks)."""
    platform, payments = _payments()
    try:
        n = payments.pull_provider_events()
    finally:
        platform.stop()
    console.print(f"applied {n} event(s)")


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())

"""Tasks of the trading service (run by the platform's worker) and their beat schedule.

The closing job keeps its state in the lots table (closing.py), the deadline job in the trades table (defaults.py):
beat only says "scan now", so a worker restart, a missed tick or two workers scanning at once change nothing.
"""

from __future__ import annotations

from services.kernel.runtime import ServiceRuntime
from services.kernel.tasks import task

from .settings import TradingSettings

_settings = TradingSettings()
_every_s = _settings.close_interval_s
_deadlines_every_s = _settings.deadline_interval_s
SCHEDULE = {
    # a tick not run within its period is dropped: the next one scans the same rows
    "trading-close-lots": {
        "task": "trading.close_due_lots",
        "schedule": _every_s,
        "options": {"expires": _every_s},
    },
    "trading-deadlines": {
        "task": "trading.run_deadlines",
        "schedule": _deadlines_every_s,
        "options": {"expires": _deadlines_every_s},
    },
}


@task("trading.close_due_lots", service="trading", acks_late=True)
def close_due_lots(rt: ServiceRuntime) -> dict[str, int]:
    """Close every lot whose end time has passed (award or unsold)."""
    from .closing import run_due

    return run_due(rt)


@task("trading.run_deadlines", service="trading", acks_late=True)
def run_deadlines(rt: ServiceRuntime) -> dict[str, int]:
    """Default the buyers past their payment deadline; lapse the second-chance offers past theirs."""
    from .defaults import run_deadlines as scan

    return scan(rt)

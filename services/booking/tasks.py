"""Tasks of the booking service (run by the platform's worker) and their beat schedule.

The timers keep their state in the database (see timers.py): beat only says "scan now", so a worker restart, a
missed tick or two workers scanning at once change nothing.
"""

from __future__ import annotations

from services.kernel.runtime import ServiceRuntime
from services.kernel.tasks import task

from .settings import BookingSettings

_every_s = BookingSettings().timer_interval_s
SCHEDULE = {
    # a tick not run within its period is dropped: the next one scans the same rows
    "booking-timers": {"task": "booking.run_timers", "schedule": _every_s, "options": {"expires": _every_s}},
}


@task("booking.run_timers", service="booking", acks_late=True)
def run_timers(rt: ServiceRuntime) -> dict[str, int]:
    """Escalate and expire unaccepted pickups, record collector no-shows, time out the invoice step."""
    from .timers import run_due

    return run_due(rt)

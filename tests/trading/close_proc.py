"""A trading job in a process of its own, for the crash tests: `python -m tests.trading.close_proc <now ISO>
[close|deadlines]`: the closing job (the default) or the deadline job (buyer defaults, lapsed offers).

Settings come from the environment (the test passes its PostgreSQL database and schema prefix). It runs the job once
at `now` and exits 0, unless the test kills it first.
"""

from __future__ import annotations

import sys
from datetime import datetime

from services.bootstrap import Platform
from services.kernel.settings import Settings
from services.trading.closing import run_due
from services.trading.defaults import run_deadlines


def main(argv: list[str]) -> int:
    platform = Platform(Settings(), services=["trading"])
    rt = platform["trading"]
    job = run_deadlines if argv[1:] == ["deadlines"] else run_due
    print(job(rt, datetime.fromisoformat(argv[0])), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

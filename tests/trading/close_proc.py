"""The closing job in a process of its own, for the crash test: `python -m tests.trading.close_proc <now ISO>`.

Settings come from the environment (the test passes its PostgreSQL database and schema prefix). It closes every
due lot and exits 0, unless the test kills it first.
"""

from __future__ import annotations

import sys
from datetime import datetime

from services.bootstrap import Platform
from services.kernel.settings import Settings
from services.trading.closing import run_due


def main(argv: list[str]) -> int:
    platform = Platform(Settings(), services=["trading"])
    rt = platform["trading"]
    print(run_due(rt, datetime.fromisoformat(argv[0])), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""A producing service's process, for the crash tests: run as `python -m tests.bus.outbox_proc MODE PREFIX [N]`.

Settings come from the environment (see support.settings_env). Modes:
  write-and-die  commit one unit of work with N `parcel weighed` events, then SIGKILL itself before any relay
                 ran (the process dies between commit and publish);
  relay          ship the outbox until it is empty, then exit 0. With RELAY_FAULT=kill_after_publish the relay
                 SIGKILLs the process after its first publish, before marking the rows sent.
"""

from __future__ import annotations

import os
import signal
import sys

from services.kernel.bus.factory import make_bus
from services.kernel.db import UnitOfWork
from services.kernel.outbox import Relay
from services.kernel.settings import Settings

from .support import open_service_db, parcel_event

SERVICE = "scale"


def main(argv: list[str]) -> int:
    mode, prefix = argv[0], argv[1]
    settings = Settings()
    db = open_service_db(settings, SERVICE)
    if mode == "write-and-die":
        n = int(argv[2])
        event = parcel_event(prefix)
        with UnitOfWork(db) as uow:
            for i in range(n):
                uow.emit(event(parcel_id=f"parcel-{i % 7}", weight_g=1000 + i))
        os.kill(os.getpid(), signal.SIGKILL)
    if mode == "relay":
        bus = make_bus(settings)
        relay = Relay(db, bus, SERVICE, batch_size=settings.relay_batch_size)
        while relay.relay_once():
            pass
        bus.close()
        return 0
    print(f"unknown mode {mode!r}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""The composition root's entry for processes above the services (workers, gateway, tests, benchmarks):
`Platform` builds the bus and the runtimes of the services a process hosts (`services/kernel/platform.py`).

A service's own entry points (its CLI) use `services.kernel.platform` directly: services import only the kernel
and the contracts.
"""

from .kernel.platform import Platform

__all__ = ["Platform"]

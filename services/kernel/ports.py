"""Typed ports: the adapters and per-runtime objects a service keeps on its runtime (`rt.ports`).

A service declares each port once, next to the type it holds, and reads it back with that type::

    SMS: Port[SmsProvider] = Port("accounts.sms")
    rt.ports[SMS] = make_sms_provider(cfg)
    rt.ports[SMS].last_code(phone)          # an SmsProvider, for the type checker too

Keys are `Port` objects, never strings: a misspelt or another service's port is an import error, not a KeyError at
run time, and the kernel needs to know none of the types.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Port(Generic[T]):
    """The key of one port; `name` only names it in errors and reprs."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"Port({self.name!r})"


class Ports:
    """A runtime's ports, each read with the type its `Port` declares."""

    def __init__(self) -> None:
        self._values: dict[Port[Any], Any] = {}

    def __getitem__(self, port: Port[T]) -> T:
        if isinstance(
            port, str
        ):  # transitional, for services/payments/tasks.py only: remove with that lookup
            port = next((p for p in self._values if p.name == port), Port(port))
        try:
            return self._values[port]
        except KeyError:
            raise KeyError(f"port {port.name} is not set on this runtime (is its service set up?)") from None

    def __setitem__(self, port: Port[T], value: T) -> None:
        if not isinstance(port, Port):
            raise TypeError(f"ports are keyed by Port objects, not {type(port).__name__}")
        self._values[port] = value

    def __contains__(self, port: object) -> bool:
        return port in self._values

    def get(self, port: Port[T]) -> T | None:
        return self._values.get(port)

    def get_or_set(self, port: Port[T], make: Callable[[], T]) -> T:
        """The port's value, made when it is not set yet. Threads racing here all get the first one stored."""
        if port in self._values:
            return self[port]
        return self._values.setdefault(port, make())

    def pop(self, port: Port[T]) -> T | None:
        return self._values.pop(port, None)

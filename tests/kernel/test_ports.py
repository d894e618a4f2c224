"""Typed ports: keyed by Port objects, read back as what was stored, made once under races."""

from __future__ import annotations

import threading

import pytest

from services.kernel.ports import Port, Ports

GREETING: Port[str] = Port("test.greeting")
COUNTER: Port[list[int]] = Port("test.counter")


def test_a_port_reads_back_what_was_stored_and_names_itself_when_missing() -> None:
    ports = Ports()
    ports[GREETING] = "你好"
    assert ports[GREETING] == "你好" and GREETING in ports and ports.get(COUNTER) is None
    with pytest.raises(KeyError, match="test.counter"):
        ports[COUNTER]
    assert ports.pop(GREETING) == "你好" and ports.get(GREETING) is None


def test_a_string_is_not_a_port() -> None:
    ports = Ports()
    with pytest.raises(TypeError, match="Port"):
        ports["test.greeting"] = "hi"  # type: ignore[index]
    assert ports.get("test.greeting") is None  # type: ignore[arg-type]


def test_two_ports_with_one_name_are_two_ports() -> None:
    ports, other = Ports(), Port[str]("test.greeting")
    ports[GREETING] = "a"
    ports[other] = "b"
    assert (ports[GREETING], ports[other]) == ("a", "b")


def test_racing_threads_all_get_the_first_value_stored() -> None:
    ports, made, got = Ports(), [], []
    start = threading.Barrier(8)

    def make() -> list[int]:
        value = [len(made)]
        made.append(value)
        return value

    def run() -> None:
        start.wait()
        got.append(ports.get_or_set(COUNTER, make))

    threads = [threading.Thread(target=run) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 8 and all(g is ports[COUNTER] for g in got)

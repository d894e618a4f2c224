"""The configuration reference (docs/configuration.md), generated from the settings classes: every environment
variable a settings object reads, with its default and the comment written beside the field, then the few
variables read directly (process plumbing, fault injection, the test suite), listed by hand in `DIRECT`."""

from __future__ import annotations

import ast
import importlib
import inspect
import json
from collections.abc import Iterator
from datetime import time
from decimal import Decimal
from enum import Enum
from pathlib import Path
from typing import Any

from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from services.kernel.runtime import SERVICE_NAMES
from services.kernel.settings import StrictSettings

# variables read with os.environ rather than through a settings class: (name, default, what it does)
DIRECT: dict[str, list[tuple[str, str, str]]] = {
    "Processes (`workers/`)": [
        (
            "SUPERVISOR_BACKOFF_S",
            "1",
            "first back-off before a crashed process is started again (doubling, at most 30 s)",
        ),
        (
            "SUPERVISOR_CRASH_LIMIT",
            "5",
            "exits within `SUPERVISOR_CRASH_WINDOW_S` that count as a crash loop",
        ),
        ("SUPERVISOR_CRASH_WINDOW_S", "60", "the crash-loop window"),
        (
            "SUPERVISOR_STATE_FILE",
            "set by the supervisor",
            "where the gateway reads the supervised processes' state for `/readyz`",
        ),
        ("SERVICE_BASE_PORT", "(unset: free ports)", "`run-dist`: service *i* listens on this port + *i*"),
        (
            "BROKER_PORT",
            "(unset: a free port)",
            "`python -m workers.broker`: the port of the broker it starts",
        ),
    ],
    "Fault injection (the fault tests set these; never in production)": [
        (
            "IDEMPOTENCY_FAULT",
            "(unset)",
            "`kill_after_commit`: the process kills itself after a keyed request's commit",
        ),
        (
            "RELAY_FAULT",
            "(unset)",
            "`kill_after_publish`: the relay kills its process after publishing, before marking rows sent",
        ),
    ],
    "The test suite (`make test`, `make soak`)": [
        (
            "TEST_POSTGRES_URL",
            "postgresql+psycopg://postgres@127.0.0.1:5432/test",
            "the PostgreSQL server; each run creates and drops its own database",
        ),
        (
            "TEST_REDIS_URL",
            "(unset: a free database 1-15 of the local Redis is leased)",
            "the Redis database",
        ),
        (
            "TEST_KAFKA_BOOTSTRAP",
            "(unset: tansu is started)",
            "an existing Kafka-protocol broker for the bus tests",
        ),
        (
            "TEST_ALLOW_MISSING_SERVICES",
            "(unset)",
            "`1`: skip the tests whose server is missing instead of failing them",
        ),
        ("TEST_WORKERS", "2", "pytest-xdist workers of `make test` (0: one process)"),
        (
            "ELASTICSEARCH_URL",
            "(unset: the fake)",
            "also run the search contract suite against this Elasticsearch node",
        ),
        (
            "PG_BINDIR",
            "(the newest /usr/lib/postgresql/*/bin)",
            "PostgreSQL's server binaries for the tests that start their own cluster",
        ),
        ("FAULT_KILLS", "10 embedded, 6 run-dist", "SIGKILLs of the kill tests (`make soak`: 100)"),
        ("FAULT_RATE", "5", "settled pickups a second the embedded kill test starts"),
        ("FAULT_DIST_RATE", "2", "pickups a second the run-dist kill test starts"),
        ("FAULT_OUTAGE_S", "6", "length of each PostgreSQL and broker outage (`make soak`: 45)"),
        ("FAULT_BROKER_RESTARTS", "1", "broker kill-and-restart rounds of the outage test (`make soak`: 5)"),
        ("FAULT_S3_START_S", "300", "how long the outage test waits for its S3 store to start"),
        ("SOAK_SECONDS", "60", "length of the soak (`make soak`: 600)"),
        ("SOAK_RATE", "5", "pickups a second during the soak"),
        (
            "SOAK_SAMPLE_S",
            "a quarter of the soak, at most 60",
            "how often the soak prints each process's memory",
        ),
        ("SCHEMATHESIS_MAX_EXAMPLES", "6", "examples per operation of the API fuzz test"),
        ("CONSOLE_ARTEFACTS", "build/console", "where the console's browser tests write screenshots"),
    ],
}


def settings_classes() -> Iterator[tuple[str, type[StrictSettings]]]:
    """(where, class): the platform's, the gateway's and each service's settings."""
    from gateway.settings import GatewaySettings
    from services.kernel.settings import Settings

    yield "the platform (`services/kernel/settings.py`)", Settings
    yield "the gateway (`gateway/settings.py`)", GatewaySettings
    for name in SERVICE_NAMES:
        try:
            module = importlib.import_module(f"services.{name}.settings")
        except ModuleNotFoundError:
            continue
        for obj in vars(module).values():
            if (
                isinstance(obj, type)
                and issubclass(obj, StrictSettings)
                and obj.__module__ == module.__name__
            ):
                yield f"{name} (`services/{name}/settings.py`)", obj


def env_name(cls: type[StrictSettings], field: str) -> str:
    return (str(cls.model_config.get("env_prefix", "")) + field).upper()


def _is_heading(text: str) -> bool:
    """A comment that names the fields below it rather than explaining one: a ruler (`# --- lists ---`) or a short
    label (`# security`)."""
    return text.startswith("---") or (len(text.split()) <= 6 and not any(c in text for c in ':.,="`'))


def _comments(cls: type) -> dict[str, tuple[str, str]]:
    """Each field's (heading, comment): a heading above the field's comment, then the comment lines right above it
    and the one beside it."""
    lines = inspect.getsource(inspect.getmodule(cls)).splitlines()  # type: ignore[arg-type]
    tree = ast.parse("\n".join(lines))
    node = next(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == cls.__name__)
    found: dict[str, tuple[str, str]] = {}
    for stmt in node.body:
        if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
            continue
        above: list[str] = []
        i = stmt.lineno - 2
        while i >= 0 and lines[i].strip().startswith("#"):
            above.insert(0, lines[i].strip().lstrip("#").strip())
            i -= 1
        heading = ""
        if above and _is_heading(above[0]) and (len(above) > 1 or i < 0 or not lines[i].strip()):
            heading = above.pop(0).strip("- ")
        # beside the field, on any of its lines (a formatter may have wrapped a long one)
        beside = next(
            (
                c
                for line in lines[stmt.lineno - 1 : stmt.end_lineno or stmt.lineno]
                if "  # " in line
                and not (c := line.split("  # ", 1)[1].strip()).startswith(("noqa", "type:"))
            ),
            "",
        )
        found[stmt.target.id] = (heading, " ".join(filter(None, [*above, beside])))
    return found


def _default(f: FieldInfo) -> str:
    value: Any = f.default
    if value is PydanticUndefined:
        value = f.default_factory() if f.default_factory else None  # type: ignore[call-arg]
    if value is None or value == "":
        return "(unset)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, str | int | float | Decimal | Path | time):
        return str(value)
    if isinstance(value, set | frozenset):
        value = sorted(value)
    return json.dumps(value, ensure_ascii=False, default=str)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def reference_markdown() -> str:
    lines = [
        "# Configuration",
        "",
        "Generated by `recycle settings-reference` from the settings classes; do not edit by hand (a test checks",
        "it is current). Every setting is read from the environment when its process starts (names are not",
        "case-sensitive); a name a settings class does not hold is refused, never ignored. `{data_dir}` in a default",
        "is `DATA_DIR`. What the switches mean for a deployment: README.md (Configuration) and the area's page.",
        "",
    ]
    for where, cls in settings_classes():
        lines += [f"## {where}", "", "| variable | default | what |", "|---|---|---|"]
        comments = _comments(cls)
        for name, f in cls.model_fields.items():
            heading, what = comments.get(name, ("", ""))
            if heading:
                lines.append(f"| **{_cell(heading)}** | | |")
            what = what or f.description or ""
            lines.append(f"| `{env_name(cls, name)}` | `{_cell(_default(f))}` | {_cell(what)} |")
        lines.append("")
    lines += ["## Read directly", ""]
    for group, rows in DIRECT.items():
        lines += [f"{group}:", "", "| variable | default | what |", "|---|---|---|"]
        lines += [f"| `{n}` | {_cell(d)} | {_cell(w)} |" for n, d, w in rows]
        lines.append("")
    return "\n".join(lines)

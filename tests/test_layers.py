"""The import layers and the event dialect, read from the source (no imports run), for every service there is.

- a service (`services/<name>/`) imports only itself, the kernel and the published contracts: never another
  service, the composition root, `workers` or `gateway`;
- the kernel imports no service and no contract, nor `workers` or `gateway`;
- a contract imports only the kernel and other contracts;
- a service builds its consumer groups with `group()` (no `ConsumerSpec(...)`, no `Envelope.event()`) and reads
  its ports by `Port`, never by a string key.

`services/bootstrap.py` is the composition root: it may import every service. New services are covered as soon as
their directory exists.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SERVICES = ROOT / "services"
SHARED = {"kernel", "contracts"}
# The composition root and the worker's task runtime are above the services; nothing else is.
OUTSIDE = {"workers", "gateway"}


@dataclass(frozen=True)
class Import:
    file: Path
    line: int
    module: str  # absolute, dotted

    def __str__(self) -> str:
        return f"{self.file.as_posix()}:{self.line} imports {self.module}"


def _module_of(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, root: Path = ROOT) -> list[Import]:
    """Every import of a file as an absolute module name (relative imports resolved), with the file relative to
    `root`."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    module = _module_of(path, root)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    path = path.relative_to(root)
    out: list[Import] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [Import(path, node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # `from services import booking` names a module too
            out.append(Import(path, node.lineno, target))
            if target in ("services", "services.contracts"):
                out += [Import(path, node.lineno, f"{target}.{a.name}") for a in node.names]
    return out


def python_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*.py") if "__pycache__" not in p.parts)


def service_names() -> list[str]:
    return sorted(
        p.name
        for p in SERVICES.iterdir()
        if p.is_dir() and (p / "__init__.py").exists() and p.name not in SHARED
    )


def _top(module: str) -> str:
    return module.split(".")[0]


def _service_part(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "services" and len(parts) > 1 else None


def violations_of_service(name: str, root: Path = ROOT) -> list[str]:
    bad = []
    for f in python_files(root / "services" / name):
        for imp in imports_of(f, root):
            part = _service_part(imp.module)
            if (
                _top(imp.module) in OUTSIDE
                or imp.module == "services"
                or (part is not None and part not in SHARED | {name})
            ):
                bad.append(str(imp))
    return bad


def test_the_services_are_found() -> None:
    # the layer rules below are only as good as this list
    assert {"accounts", "booking", "invoicing", "payments", "pricing"} <= set(service_names())


@pytest.mark.parametrize("name", service_names())
def test_a_service_imports_only_itself_the_kernel_and_contracts(name: str) -> None:
    assert violations_of_service(name) == []


def test_the_kernel_imports_no_service_no_contract_and_nothing_above_it() -> None:
    bad = [
        str(imp)
        for f in python_files(SERVICES / "kernel")
        for imp in imports_of(f)
        if _top(imp.module) in OUTSIDE
        or imp.module == "services"
        or (_service_part(imp.module) not in (None, "kernel"))
    ]
    assert bad == []


def test_contracts_import_only_the_kernel_and_each_other() -> None:
    bad = [
        str(imp)
        for f in python_files(SERVICES / "contracts")
        for imp in imports_of(f)
        if _top(imp.module) in OUTSIDE
        or imp.module == "services"
        or (_service_part(imp.module) not in (None, "kernel", "contracts"))
    ]
    assert bad == []


def _calls(tree: ast.AST) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            fn = node.func
            name = fn.id if isinstance(fn, ast.Name) else fn.attr if isinstance(fn, ast.Attribute) else ""
            out.append((node.lineno, name))
    return out


def _string_port_lookups(tree: ast.AST) -> list[int]:
    """`….ports["x"]`, `….ports.get("x")` and the like."""
    lines = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Subscript)
            and isinstance(node.value, ast.Attribute)
            and node.value.attr == "ports"
            and isinstance(node.slice, ast.Constant)
        ):
            lines.append(node.lineno)
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Attribute)
            and node.func.value.attr == "ports"
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            lines.append(node.lineno)
    return lines


@pytest.mark.parametrize("name", service_names())
def test_a_service_speaks_the_one_dialect(name: str) -> None:
    bad = []
    for f in python_files(SERVICES / name):
        tree = ast.parse(f.read_text(encoding="utf-8"))
        rel = f.relative_to(ROOT)
        for line, called in _calls(tree):
            if called == "ConsumerSpec":
                bad.append(f"{rel}:{line} builds a ConsumerSpec by hand (use kernel.consumer.group)")
            if called == "event":
                bad.append(f"{rel}:{line} decodes with Envelope.event() (handlers take the typed event)")
        bad += [f"{rel}:{line} looks a port up by a string" for line in _string_port_lookups(tree)]
    assert bad == []


def test_the_checker_sees_a_crossing(tmp_path: Path) -> None:
    """The rules above fail for the imports they forbid (a relative import climbing out of a service too) and
    let the allowed ones through."""
    pkg = tmp_path / "services" / "accounts"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "probe.py").write_text(
        "from ..booking import service\n"
        "from workers import cli\n"
        "import services.pricing.api\n"
        "from services import contracts, invoicing\n"
        "from services.kernel.db import UnitOfWork\n"
        "from services.contracts.booking import PickupSettled\n"
        "from .store import metadata\n"
    )
    found = [v.split(" imports ")[1] for v in violations_of_service("accounts", tmp_path)]
    assert found == ["services.booking", "workers", "services.pricing.api", "services", "services.invoicing"]

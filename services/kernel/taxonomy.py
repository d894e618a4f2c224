"""The category taxonomy: reference data every service reads from one file (taxonomy.toml)."""

from __future__ import annotations

import functools
import tomllib
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from .errors import ValidationFailed

UNIT_LABELS = {"kg": "千克", "piece": "件"}


@dataclass(frozen=True)
class Category:
    code: str
    name: str
    unit: str  # kg | piece
    parent: str | None
    min_qty: Decimal
    reference_price_fen: int
    pays: bool
    resident_pays_fen: int
    tax_code: str
    # 低值可回收物: recyclable but worth less than collecting it costs (subsidised in many cities); the national
    # default here, cities may list others (stats keeps per-region lists).
    low_value: bool = False

    @property
    def is_leaf(self) -> bool:
        return self.parent is not None


@functools.lru_cache(maxsize=1)
def categories() -> dict[str, Category]:
    cfg = tomllib.loads((Path(__file__).parent / "taxonomy.toml").read_text())
    out: dict[str, Category] = {}
    for code, name in cfg["families"].items():
        out[code] = Category(code, name, "", None, Decimal(0), 0, False, 0, "")
    for code, leaf in cfg["leaves"].items():
        family = code.split(".", 1)[0]
        if family not in out:
            raise ValueError(f"taxonomy: leaf {code} has no family {family}")
        if leaf["unit"] not in UNIT_LABELS:
            raise ValueError(f"taxonomy: leaf {code} has unit {leaf['unit']}")
        out[code] = Category(
            code,
            leaf["name"],
            leaf["unit"],
            family,
            Decimal(leaf["min_qty"]),
            int(leaf["reference_price_fen"]),
            bool(leaf.get("pays", True)),
            int(leaf.get("resident_pays_fen", 0)),
            leaf["tax_code"],
            bool(leaf.get("low_value", False)),
        )
    return out


def leaves() -> list[Category]:
    return [c for c in categories().values() if c.is_leaf]


def leaf(code: str, field: str = "category") -> Category:
    cat = categories().get(code)
    if cat is None or not cat.is_leaf:
        raise ValidationFailed.field(field, f"unknown category {code!r}; see GET /v1/categories")
    return cat

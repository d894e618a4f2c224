"""The methodology as JSON: the same `Methodology` object the computation and the Markdown document use."""

from __future__ import annotations

from dataclasses import asdict
from decimal import Decimal
from typing import Any

from .domain.methodology import Methodology


def _s(d: Decimal) -> str:
    return format(d.normalize(), "f") if d != 0 else "0"


def methodology_json(m: Methodology) -> dict[str, Any]:
    o = m.outliers
    return {
        "version": m.version,
        "effective_from": m.effective_from.isoformat(),
        "title": m.title,
        "administrator": m.administrator,
        "specification": asdict(m.specification),
        "inputs": {"tiers": list(m.tiers), "tier_descriptions": dict(m.tier_descriptions)},
        "outliers": {
            "method": "median ± k·MAD",
            "k": _s(o.k),
            "mad_scale": _s(o.mad_scale),
            "min_band_pct": _s(o.min_band_pct),
        },
        "quorum": {
            "min_observations": m.min_observations,
            "min_counterparties": m.min_counterparties,
            "min_volume": {c.code: _s(c.min_volume) for c in m.categories.values()},
        },
        "fallback": {"chain": list(m.fallback_chain)},
        "composite": {
            "base_date": m.base_date.isoformat(),
            "base_value": m.base_value,
            "index_places": m.index_places,
            "max_carry_days": m.max_carry_days,
            "base_prices": "the national reference prices published for the base date",
        },
        "restatement": {"late_data_days": m.late_data_days, "notice_fields": list(m.notice_fields)},
        "governance": asdict(m.governance),
        "confidentiality": m.confidentiality,
        "categories": {
            c.code: {"name": c.name, "unit": c.unit, "grade": c.grade, "min_volume": _s(c.min_volume)}
            for c in m.categories.values()
        },
        "families": {
            f.code: {
                "name": f.name,
                "components": list(f.components),
                "baskets": [
                    {
                        "effective": b.effective.isoformat(),
                        "quantities": {k: _s(v) for k, v in b.quantities.items()},
                    }
                    for b in f.baskets
                ],
            }
            for f in m.families.values()
        },
    }

"""Invoice taxes (`domain.tax.InvoiceTaxes`) to table rows and back, exactly.

An issued invoice keeps everything it was computed with (the applied rates, each line's taxes, income-tax slices
and year-to-date position), so a red-letter invoice or a month settlement rebuilds the very same `InvoiceTaxes`
and never re-reads configuration.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from .domain.tax import (
    AppliedRates,
    IitSlice,
    InvoiceLine,
    InvoiceTaxes,
    LineTaxes,
    month_settlement,
)
from .domain.tax_config import IitTier, SurchargeRate

# the surcharges with a column of their own (reports); every code is also in surcharges_json
CITY_MAINTENANCE, EDUCATION, LOCAL_EDUCATION = "city_maintenance", "education", "local_education"
# a threshold no month reaches: settles a month exempt (see `other_status`)
_NEVER = 10**18


def applied_to_json(a: AppliedRates) -> str:
    return json.dumps(
        {
            "vat_exemption_threshold_fen": a.vat_exemption_threshold_fen,
            "taxable_vat_rate": str(a.taxable_vat_rate),
            "waiver_reason": a.waiver_reason,
            "issuer_location_class": a.issuer_location_class,
            "surcharge_rates": [
                {
                    "code": r.code,
                    "name": r.name,
                    "base_rate": str(r.base_rate),
                    "relief_factor": str(r.relief_factor),
                    "rate": str(r.rate),
                }
                for r in a.surcharge_rates
            ],
            "iit_schedule": [
                {"up_to_year_sales_excl_fen": t.up_to_year_sales_excl_fen, "rate": str(t.rate)}
                for t in a.iit_schedule
            ],
            "three_flows": a.three_flows,
        },
        ensure_ascii=False,
        sort_keys=True,
    )


def applied_from_json(text: str) -> AppliedRates:
    d = json.loads(text)
    return AppliedRates(
        vat_exemption_threshold_fen=d["vat_exemption_threshold_fen"],
        taxable_vat_rate=Decimal(d["taxable_vat_rate"]),
        waiver_reason=d["waiver_reason"],
        issuer_location_class=d["issuer_location_class"],
        surcharge_rates=tuple(
            SurchargeRate(
                r["code"], r["name"], Decimal(r["base_rate"]), Decimal(r["relief_factor"]), Decimal(r["rate"])
            )
            for r in d["surcharge_rates"]
        ),
        iit_schedule=tuple(
            IitTier(t["up_to_year_sales_excl_fen"], Decimal(t["rate"])) for t in d["iit_schedule"]
        ),
        three_flows=d["three_flows"],
    )


def other_status(t: InvoiceTaxes) -> InvoiceTaxes:
    """The invoice as the month settlement would make it if its month's VAT status were the other one
    (exempt ⇄ taxable). A red letter of an earlier month's blue invoice stays as issued (tax.month_settlement)."""
    return month_settlement([t], threshold_fen=None if t.exempt else _NEVER).invoices[0].settled


def _surcharge_cols(prefix: str, surcharges: dict[str, int]) -> dict[str, int]:
    return {
        f"{prefix}city_maintenance_fen": surcharges.get(CITY_MAINTENANCE, 0),
        f"{prefix}education_fen": surcharges.get(EDUCATION, 0),
        f"{prefix}local_education_fen": surcharges.get(LOCAL_EDUCATION, 0),
    }


def event_amounts(t: InvoiceTaxes, *, withholding: bool) -> dict[str, int]:
    """The amounts an InvoiceIssued event carries."""
    return {
        "total_fen": t.total_fen,
        "vat_fen": t.vat_fen,
        "surcharges_fen": t.surcharges_fen,
        "iit_fen": t.iit_fen,
        "withheld_fen": t.withheld_fen if withholding else 0,
    }


def amount_columns(t: InvoiceTaxes, *, withholding: bool) -> dict[str, Any]:
    """The invoice row's amount columns: as issued, and under the other VAT status (`alt_*`)."""
    alt = other_status(t)
    return {
        "total_fen": t.total_fen,
        "sales_excl_fen": t.sales_excl_fen,
        "exempt": t.exempt,
        "vat_rate": t.vat_rate_str,
        "vat_fen": t.vat_fen,
        **_surcharge_cols("", t.surcharges),
        "surcharges_fen": t.surcharges_fen,
        "surcharges_json": json.dumps(t.surcharges, sort_keys=True),
        "iit_fen": t.iit_fen,
        "withholding": withholding,
        "withheld_fen": t.withheld_fen if withholding else 0,
        "three_flows": t.applied.three_flows,
        "location_class": t.applied.issuer_location_class,
        "vat_threshold_fen": t.applied.vat_exemption_threshold_fen,
        "alt_sales_excl_fen": alt.sales_excl_fen,
        "alt_vat_fen": alt.vat_fen,
        **_surcharge_cols("alt_", alt.surcharges),
        "alt_surcharges_fen": alt.surcharges_fen,
        "applied_json": applied_to_json(t.applied),
    }


def line_rows(
    invoice_id: str,
    t: InvoiceTaxes,
    *,
    names: dict[str, str] | None = None,
    blue_line_nos: Sequence[int] | None = None,
) -> list[dict[str, Any]]:
    rows = []
    for k, lt in enumerate(t.lines):
        ln = lt.line
        rows.append(
            {
                "invoice_id": invoice_id,
                "line_no": k,
                "category": ln.category,
                "category_name": (names or {}).get(ln.category),
                "tax_code": ln.tax_code,
                "qty": format(ln.qty, "f"),
                "unit": ln.unit,
                "unit_price_fen": ln.unit_price_fen,
                "amount_fen": ln.amount_fen,
                "sales_excl_fen": lt.sales_excl_fen,
                "vat_fen": lt.vat_fen,
                "surcharges_json": json.dumps([[c, f] for c, f in lt.surcharges]),
                "iit_fen": lt.iit_fen,
                "iit_slices_json": json.dumps([[s.base_fen, str(s.rate)] for s in lt.iit_slices]),
                "ytd_before_fen": lt.year_to_date_before_fen,
                "offsets_amount_fen": lt.offsets_amount_fen,
                "blue_line_no": None if blue_line_nos is None else blue_line_nos[k],
            }
        )
    return rows


def taxes_from_rows(inv: Any, lines: Sequence[Any]) -> InvoiceTaxes:
    """Rebuild the `InvoiceTaxes` of an issued invoice from its row and its line rows. A red letter's
    `red_letter_of_date` is its `cap_date` (the blue invoice's date)."""
    applied = applied_from_json(inv.applied_json)
    out = []
    for r in sorted(lines, key=lambda r: r.line_no):
        line = InvoiceLine(
            r.category, r.tax_code, Decimal(r.qty), r.unit, int(r.unit_price_fen), int(r.amount_fen)
        )
        out.append(
            LineTaxes(
                line=line,
                sales_excl_fen=int(r.sales_excl_fen),
                vat_fen=int(r.vat_fen),
                surcharges=tuple((c, int(f)) for c, f in json.loads(r.surcharges_json)),
                iit_fen=int(r.iit_fen),
                iit_slices=tuple(
                    IitSlice(int(b), Decimal(rate)) for b, rate in json.loads(r.iit_slices_json)
                ),
                year_to_date_before_fen=int(r.ytd_before_fen),
                offsets_amount_fen=None if r.offsets_amount_fen is None else int(r.offsets_amount_fen),
            )
        )
    return InvoiceTaxes(
        kind=inv.kind,
        invoice_date=inv.invoice_date,
        exempt=bool(inv.exempt),
        applied=applied,
        lines=tuple(out),
        red_letter_of_date=inv.cap_date if inv.kind == "red" else None,
    )

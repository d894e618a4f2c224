"""Taxes on a reverse invoice (反向开票): 增值税 (VAT), 附加税费 (surcharges), 个人所得税 (经营所得 prepayment).

Pure functions over plain values: no clock, no database, no configuration file. The rates come from the
`TaxRules` in force on the invoice date (`tax_config.TaxRuleBook.rules_for`); the seller's running totals
(month-to-date, year-to-date, trailing 12 months — across all issuers) come from the caller.

Money is integer fen (分). Each tax is rounded half-up to the fen once per invoice line; invoice totals are the
sums of the lines, so lines always add up exactly.

Entry points:
- `compute_invoice_taxes(...)` → `InvoiceTaxes` for a blue (蓝字) invoice; raises `CapExceeded` when the rolling cap
  would be exceeded.
- `red_letter(blue, on, lines=None)` → the red-letter (红字) invoice, full or partial.
- `month_settlement(invoices)` → the month's VAT status and the adjustments due for invoices issued otherwise.
"""

from __future__ import annotations

import calendar
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from services.kernel.errors import RuleViolated, ValidationFailed
from services.kernel.money import to_fen

from .tax_config import IitTier, SurchargeRate, TaxRuleBook, TaxRules

VAT_EXEMPT: Literal["免税"] = "免税"
"""The invoice's rate column for an exempt invoice (免税): shown instead of a rate, tax 0."""

InvoiceKind = Literal["blue", "red"]


# ---------------------------------------------------------------------------------------------------- errors


def yuan(fen: int) -> str:
    """Fen as yuan with thousands separators, for messages: 499000000 → "4,990,000.00"."""
    sign = "-" if fen < 0 else ""
    whole, cents = divmod(abs(fen), 100)
    return f"{sign}{whole:,}.{cents:02d}"


class CapExceeded(RuleViolated):
    """连续12个自然月“反向开票”累计销售额超过500万元: the seller must register a business (reason `cap_exceeded`)."""

    def __init__(self, *, cap_fen: int, months: int, current_total_fen: int, invoice_sales_excl_fen: int):
        detail = (
            f"reverse-invoicing cap exceeded: the seller's reverse-invoiced sales excl. VAT over {months} consecutive "
            f"natural months are {yuan(current_total_fen)} yuan across all issuers; this invoice adds "
            f"{yuan(invoice_sales_excl_fen)} yuan, above the cap of {yuan(cap_fen)} yuan. "
            f"The seller must register a business to keep selling with invoices."
        )
        super().__init__(
            detail,
            reason="cap_exceeded",
            cap_fen=cap_fen,
            cap_months=months,
            current_total_fen=current_total_fen,
            invoice_sales_excl_fen=invoice_sales_excl_fen,
        )
        self.cap_fen = cap_fen
        self.months = months
        self.current_total_fen = current_total_fen
        self.invoice_sales_excl_fen = invoice_sales_excl_fen


# ---------------------------------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class InvoiceLine:
    """One invoice line: a category of scrap (报废产品) with its 商品和服务税收分类编码.

    `amount_fen` is the line's price paid, VAT included (价税合计 of the line). Red-letter lines carry negative
    `qty` and `amount_fen`. `qty` may be given as a decimal string ("12.345"); it is kept as a Decimal.
    """

    category: str
    tax_code: str
    qty: Decimal
    unit: str
    unit_price_fen: int
    amount_fen: int

    def __post_init__(self) -> None:
        if not isinstance(self.qty, Decimal):
            try:
                object.__setattr__(self, "qty", Decimal(str(self.qty)))
            except (InvalidOperation, ValueError):
                raise ValidationFailed.field("qty", f"not a decimal number: {self.qty!r}") from None
        if not self.qty.is_finite():
            raise ValidationFailed.field("qty", "must be a finite number")
        for name in ("category", "tax_code", "unit"):
            v = getattr(self, name)
            if not isinstance(v, str) or not v.strip():
                raise ValidationFailed.field(name, "must be a non-empty string")
        for name in ("unit_price_fen", "amount_fen"):
            if type(getattr(self, name)) is not int:
                raise ValidationFailed.field(name, "must be an integer amount in fen")
        if self.unit_price_fen < 0:
            raise ValidationFailed.field("unit_price_fen", "must not be negative")


@dataclass(frozen=True)
class SellerPosition:
    """The seller's reverse-invoiced sales excl. VAT BEFORE this invoice, summed across all issuers on the
    platform (red-letter invoices already netted):

    - `month_to_date_sales_excl_fen`: the invoice's calendar month (增值税 monthly exemption);
    - `year_to_date_sales_excl_fen`: the invoice's calendar year (个人所得税 tiers);
    - `trailing_12m_sales_excl_fen`: the 12 natural months ending with the invoice's month (`rolling_cap_window`).
    """

    month_to_date_sales_excl_fen: int = 0
    year_to_date_sales_excl_fen: int = 0
    trailing_12m_sales_excl_fen: int = 0

    def __post_init__(self) -> None:
        for name in (
            "month_to_date_sales_excl_fen",
            "year_to_date_sales_excl_fen",
            "trailing_12m_sales_excl_fen",
        ):
            v = getattr(self, name)
            if type(v) is not int or v < 0:
                raise ValidationFailed.field(name, "must be a non-negative integer amount in fen")


# ---------------------------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class AppliedRates:
    """What an invoice was computed with, kept with it so that the month settlement and red-letter invoices
    never re-read configuration (a red-letter invoice uses its blue invoice's rates, whatever its own date)."""

    vat_exemption_threshold_fen: int | None
    taxable_vat_rate: (
        Decimal  # the 征收率 when taxable (also for an exempt invoice, should its month turn taxable)
    )
    waiver_reason: str | None
    issuer_location_class: str
    surcharge_rates: tuple[SurchargeRate, ...]
    iit_schedule: tuple[IitTier, ...]
    three_flows: bool


@dataclass(frozen=True)
class IitSlice:
    """Part of a line's income-tax base taxed at one rate (a line straddling a tier boundary has two)."""

    base_fen: int
    rate: Decimal


@dataclass(frozen=True)
class LineTaxes:
    """Taxes of one invoice line, each rounded half-up to the fen once."""

    line: InvoiceLine
    sales_excl_fen: int  # 金额 (不含税)
    vat_fen: int  # 税额
    surcharges: tuple[tuple[str, int], ...]  # (surcharge code, fen), in configuration order
    iit_fen: int
    iit_slices: tuple[IitSlice, ...]
    year_to_date_before_fen: (
        int  # the seller's calendar-year sales before this line: its position in the tiers
    )
    offsets_amount_fen: int | None = None  # red-letter lines: the amount of the blue line they offset

    @property
    def surcharges_fen(self) -> int:
        return sum(f for _, f in self.surcharges)

    @property
    def withheld_fen(self) -> int:
        return self.vat_fen + self.surcharges_fen + self.iit_fen


@dataclass(frozen=True)
class InvoiceTaxes:
    """The taxes of one reverse invoice. Totals are sums of the lines (`lines` are the per-line split).

    `withheld_fen` = VAT + surcharges + income tax: what the firm would withhold and file for the seller (代扣代缴);
    whether it does is decided by the invoicing service. Red-letter invoices have negative amounts throughout.
    """

    kind: InvoiceKind
    invoice_date: date
    exempt: bool
    applied: AppliedRates
    lines: tuple[LineTaxes, ...]
    red_letter_of_date: date | None = None  # red-letter invoices: the date of the blue invoice they offset

    @property
    def vat_rate(self) -> Decimal | str:
        """The rate column: VAT_EXEMPT ("免税") or the 征收率 as a Decimal (e.g. Decimal("0.01"))."""
        return VAT_EXEMPT if self.exempt else self.applied.taxable_vat_rate

    @property
    def vat_rate_str(self) -> str:
        """ "免税", or the rate as a decimal string ("0.01") for APIs and exports."""
        return VAT_EXEMPT if self.exempt else format(self.applied.taxable_vat_rate, "f")

    @property
    def total_fen(self) -> int:
        """价税合计."""
        return sum(t.line.amount_fen for t in self.lines)

    @property
    def sales_excl_fen(self) -> int:
        return sum(t.sales_excl_fen for t in self.lines)

    @property
    def vat_fen(self) -> int:
        return sum(t.vat_fen for t in self.lines)

    @property
    def surcharges(self) -> dict[str, int]:
        """Fen per surcharge code (city_maintenance 城市维护建设税, education 教育费附加, local_education 地方教育附加)."""
        out = {r.code: 0 for r in self.applied.surcharge_rates}
        for t in self.lines:
            for code, fen in t.surcharges:
                out[code] = out.get(code, 0) + fen
        return out

    @property
    def surcharges_fen(self) -> int:
        return sum(t.surcharges_fen for t in self.lines)

    @property
    def city_maintenance_fen(self) -> int:
        return self.surcharges.get("city_maintenance", 0)

    @property
    def education_surcharge_fen(self) -> int:
        return self.surcharges.get("education", 0)

    @property
    def local_education_surcharge_fen(self) -> int:
        return self.surcharges.get("local_education", 0)

    @property
    def iit_fen(self) -> int:
        return sum(t.iit_fen for t in self.lines)

    @property
    def withheld_fen(self) -> int:
        return self.vat_fen + self.surcharges_fen + self.iit_fen

    @property
    def net_fen(self) -> int:
        """What the seller receives if everything is withheld: gross − taxes."""
        return self.total_fen - self.withheld_fen

    def summary(self) -> dict[str, Any]:
        """The invoice-level figures under the API's field names."""
        return {
            "kind": self.kind,
            "exempt": self.exempt,
            "total_fen": self.total_fen,
            "sales_excl_fen": self.sales_excl_fen,
            "vat_rate": self.vat_rate_str,
            "vat_fen": self.vat_fen,
            "surcharges": self.surcharges,
            "surcharges_fen": self.surcharges_fen,
            "iit_fen": self.iit_fen,
            "withheld_fen": self.withheld_fen,
        }


# ---------------------------------------------------------------------------------------------------- rules


@dataclass(frozen=True)
class MonthlySalesWithinExemptionThreshold:
    """小规模纳税人月销售额未超过10万元（含本数）免征增值税, per seller and calendar month across all issuers.

    Tested when the invoice is issued: the invoice is exempt if the month-to-date sales excl. VAT plus this invoice
    counted as exempt (its sales = its total) stay within the threshold. The month settlement re-tests the month.
    No threshold in force (None) ⇒ never exempt.
    """

    threshold_fen: int | None

    def is_satisfied_by(self, month_to_date_sales_excl_fen: int, invoice_total_fen: int) -> bool:
        if self.threshold_fen is None:
            return False
        return month_to_date_sales_excl_fen + invoice_total_fen <= self.threshold_fen


@dataclass(frozen=True)
class SellerSalesWithinRollingCap:
    """出售者连续12个自然月“反向开票”累计销售额（不含增值税）不超过500万元, across all issuers.

    An invoice that would take the total over the cap is refused (`CapExceeded`); reaching the cap exactly is allowed.
    """

    cap_fen: int
    months: int

    def is_satisfied_by(self, trailing_sales_excl_fen: int, invoice_sales_excl_fen: int) -> bool:
        return trailing_sales_excl_fen + invoice_sales_excl_fen <= self.cap_fen

    def check(self, trailing_sales_excl_fen: int, invoice_sales_excl_fen: int) -> None:
        if not self.is_satisfied_by(trailing_sales_excl_fen, invoice_sales_excl_fen):
            raise CapExceeded(
                cap_fen=self.cap_fen,
                months=self.months,
                current_total_fen=trailing_sales_excl_fen,
                invoice_sales_excl_fen=invoice_sales_excl_fen,
            )


@dataclass(frozen=True)
class WaiverReasonIsCoded:
    """放弃减税: the seller may be invoiced at the full levy rate only with one of the coded reasons in force."""

    codes: frozenset[str]

    def check(self, waiver_reason: str | None) -> None:
        if waiver_reason is not None and waiver_reason not in self.codes:
            allowed = ", ".join(sorted(self.codes)) or "none in force"
            raise ValidationFailed.field(
                "waiver_reason", f"unknown waiver reason {waiver_reason!r} (allowed: {allowed})"
            )


def rolling_cap_window(on: date, months: int = 12) -> tuple[date, date]:
    """The `months` natural months ending with `on`'s month, as (first day, last day) inclusive: the window the
    caller sums the seller's sales over for `SellerPosition.trailing_12m_sales_excl_fen`."""
    index = on.year * 12 + (on.month - 1) - (months - 1)
    first = date(index // 12, index % 12 + 1, 1)
    last = date(on.year, on.month, calendar.monthrange(on.year, on.month)[1])
    return first, last


# ---------------------------------------------------------------------------------------------------- arithmetic


def vat_split(amount_fen: int, rate: Decimal | None) -> tuple[int, int]:
    """(sales excl. VAT, VAT) of a VAT-inclusive amount: excl = amount / (1 + rate) half-up, VAT = amount − excl.
    `rate` None means exempt: excl = amount, VAT 0. Symmetric for negative amounts."""
    if rate is None:
        return amount_fen, 0
    excl = to_fen(Decimal(amount_fen) / (1 + rate))
    return excl, amount_fen - excl


def iit_slices(
    base_fen: int, year_to_date_before_fen: int, schedule: Sequence[IitTier]
) -> tuple[IitSlice, ...]:
    """Split a non-negative income-tax base over the tiers, starting at the seller's year-to-date position."""
    slices: list[IitSlice] = []
    position, remaining = year_to_date_before_fen, base_fen
    for tier in schedule:
        if remaining <= 0:
            break
        room = (
            remaining
            if tier.up_to_year_sales_excl_fen is None
            else max(0, min(remaining, tier.up_to_year_sales_excl_fen - position))
        )
        if room:
            slices.append(IitSlice(room, tier.rate))
            position += room
            remaining -= room
    return tuple(slices)


def iit_prepayment_fen(base_fen: int, year_to_date_before_fen: int, schedule: Sequence[IitTier]) -> int:
    """个人所得税 (经营所得) prepaid on `base_fen` of sales excl. VAT, rounded half-up once."""
    return to_fen(
        sum(
            (s.base_fen * s.rate for s in iit_slices(base_fen, year_to_date_before_fen, schedule)), Decimal(0)
        )
    )


@dataclass(frozen=True)
class _VatParts:
    sales_excl_fen: int
    vat_fen: int
    surcharges: tuple[tuple[str, int], ...]

    def __sub__(self, other: _VatParts) -> _VatParts:
        theirs = dict(other.surcharges)
        return _VatParts(
            self.sales_excl_fen - other.sales_excl_fen,
            self.vat_fen - other.vat_fen,
            tuple((c, f - theirs.get(c, 0)) for c, f in self.surcharges),
        )


def _vat_parts(amount_fen: int, exempt: bool, applied: AppliedRates) -> _VatParts:
    excl, vat = vat_split(amount_fen, None if exempt else applied.taxable_vat_rate)
    return _VatParts(excl, vat, tuple((r.code, to_fen(vat * r.rate)) for r in applied.surcharge_rates))


def _blue_line(line: InvoiceLine, exempt: bool, applied: AppliedRates, ytd_before: int) -> LineTaxes:
    parts = _vat_parts(line.amount_fen, exempt, applied)
    return LineTaxes(
        line=line,
        sales_excl_fen=parts.sales_excl_fen,
        vat_fen=parts.vat_fen,
        surcharges=parts.surcharges,
        iit_fen=iit_prepayment_fen(parts.sales_excl_fen, ytd_before, applied.iit_schedule),
        iit_slices=iit_slices(parts.sales_excl_fen, ytd_before, applied.iit_schedule),
        year_to_date_before_fen=ytd_before,
    )


# ---------------------------------------------------------------------------------------------------- blue invoice


def compute_invoice_taxes(
    invoice_date: date,
    lines: Sequence[InvoiceLine],
    position: SellerPosition,
    *,
    three_flows: bool,
    issuer_location_class: str,
    rule_book: TaxRuleBook,
    waiver_reason: str | None = None,
) -> InvoiceTaxes:
    """The taxes of a blue (蓝字) reverse invoice dated `invoice_date`, under the rules in force that day.

    - 增值税: exempt (免税) if `MonthlySalesWithinExemptionThreshold` holds, else at the reduced levy rate (1%) or,
      with a coded `waiver_reason`, the full levy rate (3%).
    - 附加税费 on the VAT, by the issuer's location class (urban / county_town / other), halved while relief lasts.
    - 个人所得税 (经营所得) prepaid on sales excl. VAT: the flat rate, or — when `three_flows` (三流合一) holds and
      tiers are in force — tiered on the seller's calendar-year cumulative sales, straddling lines split.

    Raises ValidationFailed for malformed input, NoTaxRulesInForce outside the regime, CapExceeded when the
    seller's rolling 12-month sales would exceed the cap.
    """
    rules = rule_book.rules_for(invoice_date)
    return _compute(
        rules,
        lines,
        position,
        three_flows=three_flows,
        issuer_location_class=issuer_location_class,
        waiver_reason=waiver_reason,
    )


def _compute(
    rules: TaxRules,
    lines: Sequence[InvoiceLine],
    position: SellerPosition,
    *,
    three_flows: bool,
    issuer_location_class: str,
    waiver_reason: str | None,
) -> InvoiceTaxes:
    if not lines:
        raise ValidationFailed.field("lines", "an invoice needs at least one line")
    for i, line in enumerate(lines):
        if not isinstance(line, InvoiceLine):
            raise ValidationFailed.field(f"lines[{i}]", "must be an InvoiceLine")
        if line.amount_fen <= 0:
            raise ValidationFailed.field(f"lines[{i}].amount_fen", "must be positive on a blue invoice")
        if line.qty <= 0:
            raise ValidationFailed.field(f"lines[{i}].qty", "must be positive on a blue invoice")
    WaiverReasonIsCoded(frozenset(w.code for w in rules.waiver_reasons)).check(waiver_reason)
    classes = rules.location_classes
    if not isinstance(issuer_location_class, str) or (classes and issuer_location_class not in classes):
        raise ValidationFailed.field(
            "issuer_location_class",
            f"unknown location class {issuer_location_class!r} (allowed: {', '.join(sorted(classes))})",
        )

    applied = AppliedRates(
        vat_exemption_threshold_fen=rules.vat_exemption_threshold_fen,
        taxable_vat_rate=rules.vat_rate(waiver_reason),
        waiver_reason=waiver_reason,
        issuer_location_class=issuer_location_class,
        surcharge_rates=rules.surcharge_rates(issuer_location_class),
        iit_schedule=rules.iit_prepayment.schedule(three_flows),
        three_flows=three_flows,
    )
    total = sum(line.amount_fen for line in lines)
    exempt = MonthlySalesWithinExemptionThreshold(rules.vat_exemption_threshold_fen).is_satisfied_by(
        position.month_to_date_sales_excl_fen, total
    )

    taxed: list[LineTaxes] = []
    ytd = position.year_to_date_sales_excl_fen
    for line in lines:
        t = _blue_line(line, exempt, applied, ytd)
        taxed.append(t)
        ytd += t.sales_excl_fen
    invoice = InvoiceTaxes(
        kind="blue", invoice_date=rules.on, exempt=exempt, applied=applied, lines=tuple(taxed)
    )

    SellerSalesWithinRollingCap(rules.rolling_cap.sales_excl_fen, rules.rolling_cap.months).check(
        position.trailing_12m_sales_excl_fen, invoice.sales_excl_fen
    )
    return invoice


# ---------------------------------------------------------------------------------------------------- red letter


@dataclass(frozen=True)
class RedLetterLine:
    """A partial red-letter (部分红冲) of blue line `line_index`: `amount_fen` (> 0, at most the blue line's amount)
    and `qty` (0 ≤ qty ≤ the blue line's qty; 0 for a price allowance 销售折让) are taken back."""

    line_index: int
    amount_fen: int
    qty: Decimal

    def __post_init__(self) -> None:
        if not isinstance(self.qty, Decimal):
            try:
                object.__setattr__(self, "qty", Decimal(str(self.qty)))
            except (InvalidOperation, ValueError):
                raise ValidationFailed.field("qty", f"not a decimal number: {self.qty!r}") from None


def red_letter(blue: InvoiceTaxes, on: date, lines: Sequence[RedLetterLine] | None = None) -> InvoiceTaxes:
    """The red-letter (红字) invoice dated `on` offsetting `blue`: fully when `lines` is None, else the given lines.

    It uses the blue invoice's rates and VAT status (not those in force on `on`). Each red line is computed so that
    blue + red equals a fresh computation of what is kept: a full red-letter nets the blue to exactly zero in every
    tax; a partial one leaves exactly the taxes of the remaining amount (income tax taken back from the top tier).

    Pass the blue invoice as last settled (`month_settlement`) if its month has been settled.
    """
    if blue.kind != "blue":
        raise ValidationFailed.field("blue", "only a blue invoice can be offset by a red-letter invoice")
    if on < blue.invoice_date:
        raise ValidationFailed.field("on", "a red-letter invoice cannot predate the blue invoice it offsets")
    if lines is None:
        lines = [RedLetterLine(i, t.line.amount_fen, t.line.qty) for i, t in enumerate(blue.lines)]
    if not lines:
        raise ValidationFailed.field("lines", "a red-letter invoice needs at least one line")
    seen: set[int] = set()
    red: list[LineTaxes] = []
    for k, r in enumerate(lines):
        where = f"lines[{k}]"
        if type(r.line_index) is not int or not 0 <= r.line_index < len(blue.lines):
            raise ValidationFailed.field(
                f"{where}.line_index", f"no such line on the blue invoice: {r.line_index!r}"
            )
        if r.line_index in seen:
            raise ValidationFailed.field(f"{where}.line_index", "each blue line may be offset once")
        seen.add(r.line_index)
        b = blue.lines[r.line_index]
        if type(r.amount_fen) is not int or not 0 < r.amount_fen <= b.line.amount_fen:
            raise ValidationFailed.field(
                f"{where}.amount_fen", f"must be between 1 and the blue line's {b.line.amount_fen} fen"
            )
        if not (r.qty.is_finite() and 0 <= r.qty <= b.line.qty):
            raise ValidationFailed.field(
                f"{where}.qty", f"must be between 0 and the blue line's {b.line.qty}"
            )
        red.append(_red_line(b, r, blue))
    return InvoiceTaxes(
        kind="red",
        invoice_date=on,
        exempt=blue.exempt,
        applied=blue.applied,
        lines=tuple(red),
        red_letter_of_date=blue.invoice_date,
    )


def _red_line(b: LineTaxes, r: RedLetterLine, blue: InvoiceTaxes) -> LineTaxes:
    kept_amount = b.line.amount_fen - r.amount_fen
    kept = _blue_line(
        _with_amount(b.line, kept_amount, b.line.qty - r.qty),
        blue.exempt,
        blue.applied,
        b.year_to_date_before_fen,
    )
    theirs = dict(b.surcharges)
    removed: dict[Decimal, int] = {}
    for s in b.iit_slices:
        removed[s.rate] = removed.get(s.rate, 0) - s.base_fen
    for s in kept.iit_slices:
        removed[s.rate] = removed.get(s.rate, 0) + s.base_fen
    return LineTaxes(
        line=_with_amount(b.line, -r.amount_fen, -r.qty),
        sales_excl_fen=kept.sales_excl_fen - b.sales_excl_fen,
        vat_fen=kept.vat_fen - b.vat_fen,
        surcharges=tuple((c, f - theirs.get(c, 0)) for c, f in kept.surcharges),
        iit_fen=kept.iit_fen - b.iit_fen,
        iit_slices=tuple(IitSlice(base, rate) for rate, base in removed.items() if base),
        year_to_date_before_fen=b.year_to_date_before_fen,
        offsets_amount_fen=b.line.amount_fen,
    )


def _with_amount(line: InvoiceLine, amount_fen: int, qty: Decimal) -> InvoiceLine:
    return InvoiceLine(line.category, line.tax_code, qty, line.unit, line.unit_price_fen, amount_fen)


# ---------------------------------------------------------------------------------------------------- month


@dataclass(frozen=True)
class SettledInvoice:
    """One invoice of the month: as issued and as settled; the difference is the adjustment the report shows."""

    issued: InvoiceTaxes
    settled: InvoiceTaxes

    @property
    def vat_adjustment_fen(self) -> int:
        return self.settled.vat_fen - self.issued.vat_fen

    @property
    def surcharge_adjustments(self) -> dict[str, int]:
        before = self.issued.surcharges
        return {c: f - before.get(c, 0) for c, f in self.settled.surcharges.items()}

    @property
    def surcharges_adjustment_fen(self) -> int:
        return self.settled.surcharges_fen - self.issued.surcharges_fen

    @property
    def sales_excl_adjustment_fen(self) -> int:
        return self.settled.sales_excl_fen - self.issued.sales_excl_fen

    @property
    def changed(self) -> bool:
        return self.settled != self.issued


@dataclass(frozen=True)
class MonthSettlement:
    """A seller's calendar month settled for the monthly report (代办税费报告表).

    `month_sales_fen` is the month's sales on the exemption basis (every invoice counted as exempt: its total,
    red-letter invoices negative) — the same measure the per-invoice test uses. Over the threshold, the whole
    month is taxable; otherwise the whole month is exempt.
    """

    year: int
    month: int
    threshold_fen: int | None
    month_sales_fen: int
    taxable: bool
    invoices: tuple[SettledInvoice, ...] = field(default=())

    @property
    def vat_adjustment_fen(self) -> int:
        """VAT still due (positive) or overpaid (negative) for the month's invoices as issued."""
        return sum(i.vat_adjustment_fen for i in self.invoices)

    @property
    def surcharges_adjustment_fen(self) -> int:
        return sum(i.surcharges_adjustment_fen for i in self.invoices)

    @property
    def adjustments(self) -> tuple[tuple[int, SettledInvoice], ...]:
        """(position in the input, invoice) for every invoice whose taxes changed."""
        return tuple((k, i) for k, i in enumerate(self.invoices) if i.changed)

    @property
    def vat_fen(self) -> int:
        return sum(i.settled.vat_fen for i in self.invoices)

    @property
    def sales_excl_fen(self) -> int:
        return sum(i.settled.sales_excl_fen for i in self.invoices)

    @property
    def surcharges_fen(self) -> int:
        return sum(i.settled.surcharges_fen for i in self.invoices)


def month_settlement(
    invoices: Sequence[InvoiceTaxes], *, threshold_fen: int | None | Literal["auto"] = "auto"
) -> MonthSettlement:
    """Settle one seller's calendar month: every invoice issued in it (blue and red, any issuer), in any order.

    If the month's sales (exemption basis) exceed the threshold, the whole month is taxable: invoices issued exempt
    are re-taxed at the rate they would have had (worked example 2: 792.08 VAT due on the first invoice). If it ends
    within the threshold (e.g. after red-letter corrections), invoices issued taxable are settled exempt and the
    adjustment is negative. Surcharges follow the VAT. The income-tax prepayment is NOT re-computed: it stays as
    prepaid and is reconciled in the seller's annual 汇算清缴.

    A red-letter invoice offsetting a blue invoice of an earlier month keeps the taxes it was issued with (they
    mirror that blue invoice, settled in its own month); it still reduces this month's sales.

    `threshold_fen` defaults to the threshold recorded on the latest-dated invoice.
    Returns the settled invoices in input order.
    """
    if not invoices:
        raise ValueError("month_settlement needs the month's invoices (at least one)")
    months = {(i.invoice_date.year, i.invoice_date.month) for i in invoices}
    if len(months) != 1:
        raise ValueError(f"invoices span several months: {sorted(months)}")
    ((year, month),) = months
    if threshold_fen == "auto":
        threshold_fen = max(invoices, key=lambda i: i.invoice_date).applied.vat_exemption_threshold_fen
    basis = sum(i.total_fen for i in invoices)
    taxable = threshold_fen is None or basis > threshold_fen
    settled = tuple(
        SettledInvoice(i, _settle(i, exempt=not taxable, year=year, month=month)) for i in invoices
    )
    return MonthSettlement(year, month, threshold_fen, basis, taxable, settled)


def _settle(invoice: InvoiceTaxes, *, exempt: bool, year: int, month: int) -> InvoiceTaxes:
    if invoice.exempt == exempt:
        return invoice
    if invoice.kind == "red":
        blue_date = invoice.red_letter_of_date
        if blue_date is not None and (blue_date.year, blue_date.month) != (year, month):
            return invoice
    lines = []
    for t in invoice.lines:
        if t.offsets_amount_fen is None:
            parts = _vat_parts(t.line.amount_fen, exempt, invoice.applied)
        else:  # a red line: what is kept minus the blue line, both at the month's status
            kept = t.offsets_amount_fen + t.line.amount_fen
            parts = _vat_parts(kept, exempt, invoice.applied) - _vat_parts(
                t.offsets_amount_fen, exempt, invoice.applied
            )
        lines.append(
            LineTaxes(
                line=t.line,
                sales_excl_fen=parts.sales_excl_fen,
                vat_fen=parts.vat_fen,
                surcharges=parts.surcharges,
                iit_fen=t.iit_fen,
                iit_slices=t.iit_slices,
                year_to_date_before_fen=t.year_to_date_before_fen,
                offsets_amount_fen=t.offsets_amount_fen,
            )
        )
    return InvoiceTaxes(
        kind=invoice.kind,
        invoice_date=invoice.invoice_date,
        exempt=exempt,
        applied=invoice.applied,
        lines=tuple(lines),
        red_letter_of_date=invoice.red_letter_of_date,
    )

"""Invoice numbers (发票号码) of reverse invoices: formatting, parsing and gap checks. Pure — the allocation of
the next sequence number, concurrency-safe and gap-free per issuer and year, belongs to the database layer.

Format: 20 digits, shaped like a 全电发票 (数电票) number, which is 20 digits starting with the year:

    YY  IIIIIIII  SSSSSSSSSS
    │   │         └ seq: 10 digits, 1, 2, 3 … per issuer and year, no gaps (blue and red-letter share it)
    │   └ issuer code: 8 digits, the platform's numeric short code of the issuing firm (资源回收企业)
    └ year: the last two digits of the invoice's calendar year (2026 → "26"); the sequence restarts each year

Example: 2026, issuer 1234, seq 57 → "26000012340000000057".

These are the platform's numbers for its own records and the resident's receipt. When the invoice is also
lodged with the tax authority's 电子发票服务平台, the number it assigns is kept alongside, never instead.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from services.kernel.errors import ValidationFailed

NUMBER_LENGTH = 20
YEAR_DIGITS = 2
ISSUER_DIGITS = 8
SEQ_DIGITS = 10
FIRST_YEAR = 2000
LAST_YEAR = 2099
MAX_ISSUER_CODE = 10**ISSUER_DIGITS - 1
MAX_SEQ = 10**SEQ_DIGITS - 1


@dataclass(frozen=True, order=True)
class InvoiceNumber:
    """A reverse invoice's number: (year, issuer code, sequence). Orders by year, issuer, sequence."""

    year: int
    issuer_code: int
    seq: int

    def __post_init__(self) -> None:
        if type(self.year) is not int or not FIRST_YEAR <= self.year <= LAST_YEAR:
            raise ValidationFailed.field("year", f"must be between {FIRST_YEAR} and {LAST_YEAR}")
        if type(self.issuer_code) is not int or not 1 <= self.issuer_code <= MAX_ISSUER_CODE:
            raise ValidationFailed.field("issuer_code", f"must be between 1 and {MAX_ISSUER_CODE}")
        if type(self.seq) is not int or not 1 <= self.seq <= MAX_SEQ:
            raise ValidationFailed.field("seq", f"must be between 1 and {MAX_SEQ}")

    def __str__(self) -> str:
        return (
            f"{self.year % 100:0{YEAR_DIGITS}d}{self.issuer_code:0{ISSUER_DIGITS}d}{self.seq:0{SEQ_DIGITS}d}"
        )

    def next(self) -> InvoiceNumber:
        """The following number in the same issuer-year series."""
        if self.seq == MAX_SEQ:
            raise ValidationFailed.field(
                "seq", f"invoice sequence exhausted for issuer {self.issuer_code} in {self.year}"
            )
        return InvoiceNumber(self.year, self.issuer_code, self.seq + 1)


def format_invoice_number(year: int, issuer_code: int, seq: int) -> str:
    """The 20-digit number of invoice `seq` of issuer `issuer_code` in calendar year `year`."""
    return str(InvoiceNumber(year, issuer_code, seq))


def parse_invoice_number(text: str, field: str = "number") -> InvoiceNumber:
    """Parse a 20-digit invoice number. Raises ValidationFailed naming `field` when malformed."""
    if not isinstance(text, str) or len(text) != NUMBER_LENGTH or not text.isascii() or not text.isdigit():
        raise ValidationFailed.field(field, f"an invoice number is {NUMBER_LENGTH} digits")
    yy, issuer, seq = text[:YEAR_DIGITS], text[YEAR_DIGITS : YEAR_DIGITS + ISSUER_DIGITS], text[-SEQ_DIGITS:]
    try:
        return InvoiceNumber(FIRST_YEAR + int(yy), int(issuer), int(seq))
    except ValidationFailed as exc:
        raise ValidationFailed.field(field, f"not a valid invoice number: {exc.detail}") from None


def next_invoice_number(previous_seq: int | None, *, year: int, issuer_code: int) -> InvoiceNumber:
    """The number after `previous_seq` (the highest issued by this issuer in `year`; None when none yet)."""
    return InvoiceNumber(year, issuer_code, 1 if previous_seq is None else previous_seq + 1)


def missing_sequence_numbers(seqs: Iterable[int]) -> list[int]:
    """Gaps in an issuer-year series (audit check): the numbers between 1 and the highest one that are absent.
    Duplicates are not gaps; `duplicate_sequence_numbers` reports them."""
    present = set(seqs)
    return [n for n in range(1, max(present, default=0) + 1) if n not in present]


def duplicate_sequence_numbers(seqs: Iterable[int]) -> list[int]:
    """Sequence numbers that occur more than once (must never happen)."""
    seen: set[int] = set()
    dup: set[int] = set()
    for n in seqs:
        (dup if n in seen else seen).add(n)
    return sorted(dup)

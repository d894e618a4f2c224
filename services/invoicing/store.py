"""Invoicing's tables.

- `invoices` + `invoice_lines`: reverse invoices, blue (蓝字) and red-letter (红字). An issued invoice is never
  updated or deleted (database triggers refuse it, see the migration); a blocked one becomes issued once, on retry.
- `evidence`: append-only, per pickup: the weighing lines, the seller's consent, the payout record, ...
- `attempts`: append-only history of every issue attempt (issued / blocked, with the reason).
- copies of other services' facts (from their events): `issuers`, `qualifications`, `sellers`, `consents`,
  `accountants`; never read from their tables.
- `counters`: issuer codes and gap-free invoice sequences (UPDATE ... RETURNING in the issuing transaction).
- `seller_locks`: one row per seller, locked FOR UPDATE while that seller's totals are read and an invoice added.
- `tax_unpaid`: months whose tax an issuer has not paid (suspension after the filing deadline).
- `exports`: tax report jobs with their progress.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    Float,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

from services.kernel.db import Timestamp, new_metadata

metadata = new_metadata()

TS = Timestamp()
FEN = BigInteger
AUTO_ID = BigInteger().with_variant(Integer, "sqlite")

invoices = Table(
    "invoices",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("kind", String(8), nullable=False),  # blue | red
    Column("status", String(8), nullable=False),  # issued | blocked
    Column("pickup_id", String(64), nullable=False),
    Column("issuer_firm_id", String(64), nullable=False),
    Column("seller_id", String(64), nullable=False),
    Column("collector_id", String(64), nullable=True),
    # 发票号码: YY + 8-digit issuer code + 10-digit sequence; NULL while blocked
    Column("number", String(20), nullable=True, unique=True),
    Column("issuer_code", Integer, nullable=True),
    Column("year", Integer, nullable=True),
    Column("seq", BigInteger, nullable=True),
    Column(
        "invoice_date", Date, nullable=False
    ),  # 开票日期 (China time); for a blocked one: when it was blocked
    Column("cap_date", Date, nullable=True),  # the blue invoice's date: where it counts in the rolling cap
    Column("issued_at", TS, nullable=True),
    Column("created_at", TS, nullable=False),
    Column("settled_at", TS, nullable=True),
    Column("weighed_at", TS, nullable=True),
    Column("blocked_reason", String(40), nullable=True),
    Column("blocked_detail", Text, nullable=True),
    Column("retried", Boolean, nullable=False, default=False),  # issued by a retry after being blocked
    Column("red_letter_of", String(40), nullable=True, unique=True),  # 1:1 with the blue invoice
    Column("red_reason", Text, nullable=True),
    # amounts (fen); taxes NULL while blocked
    Column("total_fen", FEN, nullable=False),  # 价税合计
    Column("sales_excl_fen", FEN, nullable=True),
    Column("exempt", Boolean, nullable=True),
    Column("vat_rate", String(12), nullable=True),  # "免税" or the 征收率 ("0.01")
    Column("vat_fen", FEN, nullable=True),
    Column("city_maintenance_fen", FEN, nullable=True),
    Column("education_fen", FEN, nullable=True),
    Column("local_education_fen", FEN, nullable=True),
    Column("surcharges_fen", FEN, nullable=True),
    Column("surcharges_json", Text, nullable=True),  # every configured surcharge code → fen
    Column("iit_fen", FEN, nullable=True),
    Column("withholding", Boolean, nullable=True),
    Column("withheld_fen", FEN, nullable=True),
    Column("three_flows", Boolean, nullable=True),
    Column("location_class", String(16), nullable=True),
    Column("vat_threshold_fen", FEN, nullable=True),
    # the same invoice under the other VAT status, for the month settlement (exempt ⇄ taxable)
    Column("alt_sales_excl_fen", FEN, nullable=True),
    Column("alt_vat_fen", FEN, nullable=True),
    Column("alt_city_maintenance_fen", FEN, nullable=True),
    Column("alt_education_fen", FEN, nullable=True),
    Column("alt_local_education_fen", FEN, nullable=True),
    Column("alt_surcharges_fen", FEN, nullable=True),
    Column("applied_json", Text, nullable=True),  # the rates it was computed with (AppliedRates)
    # the seller (出售方: a natural person) as on the invoice: ciphertexts as received, masks for display
    Column("seller_name_enc", Text, nullable=True),
    Column("seller_id_number_enc", Text, nullable=True),
    Column("seller_name_masked", String(64), nullable=True),
    Column("seller_id_number_masked", String(32), nullable=True),
    Column("sale_type", String(40), nullable=True),  # 报废产品销售类型
    Column("consent_id", String(64), nullable=True),
    # the buyer (购买方: the issuing firm) as on the invoice
    Column("issuer_name", String(200), nullable=True),
    Column("issuer_uscc", String(18), nullable=True),
    Column("issuer_address", Text, nullable=True),
    Column("issuer_city_code", String(6), nullable=True),
    UniqueConstraint("issuer_code", "year", "seq"),
    Index("ix_invoices_seller_id_invoice_date", "seller_id", "invoice_date"),
    Index("ix_invoices_seller_id_cap_date", "seller_id", "cap_date"),
    Index("ix_invoices_issuer_firm_id_invoice_date", "issuer_firm_id", "invoice_date"),
    Index("ix_invoices_invoice_date_seller_id", "invoice_date", "seller_id"),
    Index("ix_invoices_pickup_id", "pickup_id"),
    # one blue invoice per settled pickup, however often its event arrives
    Index(
        "uq_invoices_blue_pickup_id",
        "pickup_id",
        unique=True,
        sqlite_where=text("kind = 'blue'"),
        postgresql_where=text("kind = 'blue'"),
    ),
)

invoice_lines = Table(
    "invoice_lines",
    metadata,
    Column("invoice_id", String(40), primary_key=True),
    Column("line_no", Integer, primary_key=True),
    Column("category", String(64), nullable=False),
    Column("category_name", String(64), nullable=True),
    Column("tax_code", String(32), nullable=False),  # 商品和服务税收分类编码
    Column("qty", String(24), nullable=False),
    Column("unit", String(8), nullable=False),
    Column("unit_price_fen", FEN, nullable=False),
    Column("amount_fen", FEN, nullable=False),
    Column("sales_excl_fen", FEN, nullable=False),
    Column("vat_fen", FEN, nullable=False),
    Column("surcharges_json", Text, nullable=False),
    Column("iit_fen", FEN, nullable=False),
    Column("iit_slices_json", Text, nullable=False),
    Column("ytd_before_fen", FEN, nullable=False),
    Column("offsets_amount_fen", FEN, nullable=True),  # red lines: the amount of the blue line they offset
    Column("blue_line_no", Integer, nullable=True),  # red lines: which blue line
)

evidence = Table(
    "evidence",
    metadata,
    Column("id", AUTO_ID, primary_key=True, autoincrement=True),
    Column("pickup_id", String(64), nullable=False),
    Column("invoice_id", String(40), nullable=True),
    Column("kind", String(24), nullable=False),
    Column("ref_id", String(100), nullable=False),
    Column("payload", Text, nullable=False),  # JSON
    Column("recorded_at", TS, nullable=False),
    UniqueConstraint("pickup_id", "kind", "ref_id"),
)

attempts = Table(
    "attempts",
    metadata,
    Column("id", AUTO_ID, primary_key=True, autoincrement=True),
    Column("invoice_id", String(40), nullable=False, index=True),
    Column("at", TS, nullable=False),
    Column("outcome", String(8), nullable=False),  # issued | blocked
    Column("reason", String(40), nullable=True),
    Column("detail", Text, nullable=True),
    Column("by", String(64), nullable=False),  # "event" or the user who retried
)

issuers = Table(
    "issuers",
    metadata,
    Column("firm_id", String(64), primary_key=True),
    Column("issuer_code", Integer, nullable=False, unique=True),
    Column("owner_user_id", String(64), nullable=True),
    Column("name", String(200), nullable=False),
    Column("uscc", String(18), nullable=False),
    Column("address", Text, nullable=False),
    Column("city_code", String(6), nullable=False),
    Column("verified_at", TS, nullable=False),
    Column("updated_at", TS, nullable=False),
)

qualifications = Table(
    "qualifications",
    metadata,
    Column("qualification_id", String(64), primary_key=True),
    Column("firm_id", String(64), nullable=False, index=True),
    Column("kind", String(32), nullable=False),
    Column("number", String(100), nullable=False),
    Column("valid_until", Date, nullable=False),
    Column("approved_at", TS, nullable=False),
)

sellers = Table(
    "sellers",
    metadata,
    Column("user_id", String(64), primary_key=True),
    Column("real_name_enc", Text, nullable=False),
    Column("id_number_enc", Text, nullable=False),
    Column("name_masked", String(64), nullable=False),
    Column("id_number_masked", String(32), nullable=False),
    Column("verified_at", TS, nullable=False),
    Column("updated_at", TS, nullable=False),
)

consents = Table(
    "consents",
    metadata,
    Column("consent_id", String(64), primary_key=True),
    Column("user_id", String(64), nullable=False, index=True),
    Column("kind", String(40), nullable=False),
    Column("recorded_at", TS, nullable=False),
)

accountants = Table(
    "accountants",
    metadata,
    Column("firm_id", String(64), primary_key=True),
    Column("user_id", String(64), primary_key=True),
    Column("added_at", TS, nullable=False),
)

counters = Table(
    "counters",
    metadata,
    Column("name", String(120), primary_key=True),  # issuer_code | invoice_seq/<firm>/<year>
    Column("value", BigInteger, nullable=False),
)

seller_locks = Table(
    "seller_locks",
    metadata,
    Column("seller_id", String(64), primary_key=True),
    Column("created_at", TS, nullable=False),
)

tax_unpaid = Table(
    "tax_unpaid",
    metadata,
    Column("firm_id", String(64), primary_key=True),
    Column("period", String(7), primary_key=True),  # YYYY-MM
    Column("amount_fen", FEN, nullable=True),
    Column("note", Text, nullable=True),
    Column("recorded_at", TS, nullable=False),
    Column("recorded_by", String(64), nullable=False),
    Column("paid_at", TS, nullable=True),
    Column("paid_by", String(64), nullable=True),
)

exports = Table(
    "exports",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("firm_id", String(64), nullable=False, index=True),
    Column("requested_by", String(64), nullable=False),
    Column("kind", String(16), nullable=False),  # detail | summary | annual
    Column("period", String(7), nullable=False),  # YYYY-MM (annual: YYYY)
    Column("format", String(8), nullable=False),  # csv | xlsx
    Column("pii", String(8), nullable=False),  # masked | full
    Column("status", String(12), nullable=False),  # queued | running | done | failed
    Column("runner", String(12), nullable=False),  # celery | thread | cli
    Column("worker", String(100), nullable=True),  # thread: "<host>:<pid>" of the process running it
    Column("rows_total", BigInteger, nullable=True),
    Column("rows_done", BigInteger, nullable=False, default=0),
    Column("progress", Float, nullable=False, default=0.0),
    Column("file_name", String(200), nullable=True),
    Column("size_bytes", BigInteger, nullable=True),
    Column("error", Text, nullable=True),
    Column("created_at", TS, nullable=False),
    Column(
        "dispatched_at", TS, nullable=True
    ),  # last time it was sent to Celery (a stale queued job is resent)
    Column("started_at", TS, nullable=True),
    Column("finished_at", TS, nullable=True),
    # written while a run is alive: a `running` Celery job whose heartbeat stopped is sent again
    Column("heartbeat_at", TS, nullable=True),
)

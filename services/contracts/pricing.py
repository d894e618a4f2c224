"""Events the pricing service publishes that other services consume. They carry no contributor's identity
(methodology §10)."""

from __future__ import annotations

from datetime import date, datetime

from services.kernel.events import Event


class IndexPublished(Event):
    """A price series value (fen per unit) or an index level was published (or restated, with a higher version)."""

    type = "cn.recycle.pricing.index.published.v1"
    topic = "pricing.index"
    key_field = "series_key"
    source = "/pricing"
    doc = (
        "Booking keeps its own copy of prices from these; analysts' feeds too. A restatement is the same event "
        "with a higher version and the correction notice's fields (restates_version, previous_value, "
        "correction_reason)."
    )

    series_key: str  # "<code>@<region>", e.g. "metal.steel@110000"
    code: str  # category code (price series) or family code (index)
    kind: str  # "price" (fen per unit) | "index" (points, base = 100)
    region: str
    date: date
    value: str | None  # fen per unit for prices, decimal points for indices; None = insufficient data
    unit_price_fen: int | None = None
    version: int = 1
    stale: bool = False
    source_region: str | None = None
    n_obs: int = 0
    methodology_version: str
    reference: bool = False  # a seeded reference price, not computed from observations
    published_at: datetime
    # added with the daily computation (optional: older events lack them)
    status: str = "published"  # published | insufficient_data
    n_excluded: int = 0
    restates_version: int | None = None  # the version this one corrects
    previous_value: str | None = None
    correction_reason: str | None = None

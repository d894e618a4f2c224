"""The service's own date-effective rules (service_rules.toml): loading, validation, look-ups."""

from __future__ import annotations

from datetime import date
from importlib import resources

import pytest

from services.bootstrap import Platform
from services.invoicing.domain.service_rules import default_service_rules, parse_service_rules
from services.invoicing.domain.tax_config import NoTaxRulesInForce, TaxConfigError
from services.invoicing.settings import configure
from services.kernel.settings import ConfigError

SHIPPED = resources.files("services.invoicing").joinpath("service_rules.toml").read_text(encoding="utf-8")
BOOK = default_service_rules()


def test_shipped_rules():
    r = BOOK.rules_for(date(2026, 11, 10))
    assert r.qualification_kinds == {"recycler_filing", "hazardous_waste", "elv"}
    assert r.withholding is True and r.filing_day_of_next_month == 15
    assert r.location_classes.class_for("110105") == "urban" and r.location_classes.class_for(None) == "urban"
    assert all(s for s in r.sources)
    with pytest.raises(NoTaxRulesInForce):
        BOOK.rules_for(date(2024, 4, 28))


def test_filing_deadline_and_suspension_start():
    assert BOOK.deadline_for(2026, 10) == date(2026, 11, 15)
    assert BOOK.deadline_for(2026, 12) == date(2027, 1, 15)
    assert BOOK.suspended_from(2026, 10) == date(2026, 11, 16)
    late = parse_service_rules(SHIPPED.replace("day_of_next_month = 15", "day_of_next_month = 31"))
    assert late.deadline_for(2027, 1) == date(2027, 2, 28)  # clamped to the month


def test_location_class_by_exact_code_then_prefecture_then_province_then_default():
    book = parse_service_rules(
        SHIPPED.replace(
            "by_city = {}", 'by_city = { "130102" = "urban", "130100" = "other", "130000" = "county_town" }'
        )
    )
    classes = book.rules_for(date(2026, 11, 1)).location_classes
    assert [classes.class_for(c) for c in ("130102", "130104", "130203", "440305", "bad")] == [
        "urban",
        "other",
        "county_town",
        "urban",
        "urban",
    ]


@pytest.mark.parametrize(
    "mutate, message",
    [
        (
            lambda s: s.replace(
                "effective_from = 2024-04-29\nenabled", "effective_from = 2024-05-01\nenabled"
            ),
            "no entry in force",
        ),
        (lambda s: s.replace("enabled = true", 'enabled = "yes"'), "true or false"),
        (lambda s: s.replace("day_of_next_month = 15", "day_of_next_month = 40"), "between 1 and 31"),
        (lambda s: s.replace("by_city = {}", 'by_city = { "1301" = "other" }'), "6-digit"),
        (lambda s: s + "\n[[withholdng]]\n", "unknown keys"),
        (
            lambda s: s.replace('kinds = ["recycler_filing", "hazardous_waste", "elv"]', "kinds = []"),
            "non-empty",
        ),
        (
            lambda s: s + '\n[[withholding]]\neffective_from = 2026-01-01\nenabled = false\nsource = "x"\n',
            "overlap",
        ),
    ],
)
def test_malformed_service_rules_are_refused(mutate, message):
    with pytest.raises(TaxConfigError, match=message):
        parse_service_rules(mutate(SHIPPED))


def test_start_up_refuses_a_location_class_without_a_rate(sqlite_settings, tmp_path):
    from services.invoicing.service import setup

    path = tmp_path / "rules.toml"
    path.write_text(SHIPPED.replace('default = "urban"', 'default = "metropolis"'), encoding="utf-8")
    platform = Platform(sqlite_settings, services=["invoicing"]).prepare()
    configure(platform["invoicing"], service_rules_file=str(path))
    with pytest.raises(ConfigError, match="metropolis"):
        setup(platform["invoicing"])
    platform.stop()

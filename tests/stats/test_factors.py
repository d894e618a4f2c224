"""The emission-factor table: every category has a factor with a named source, a bad file is refused naming the
entry, and docs/stats.md lists every factor with its value and source (it must not drift from the file)."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.kernel.taxonomy import leaves
from services.stats.domain.factors import FactorTableError, parse_factor_table, parse_low_value
from services.stats.settings import HERE, StatsSettings, load_factors

DOC = Path(__file__).resolve().parents[2] / "docs" / "stats.md"
SHIPPED = (HERE / "carbon_factors.toml").read_text(encoding="utf-8")


def test_every_category_has_a_factor_with_a_source_and_docs_list_them_all():
    table = load_factors(StatsSettings())
    doc = DOC.read_text(encoding="utf-8")
    for leaf in leaves():
        f = table.factor(leaf.code)
        assert f is not None and f.source.title and f.basis
        row = next(line for line in doc.splitlines() if line.startswith(f"| `{leaf.code}` |"))
        assert f"| {f.t_co2e_per_t} | {f.status} | `{f.source.key}` |" in row, row
    for source in table.sources.values():
        assert f"| `{source.key}` | {source.title} |" in doc
    assert all(f.status != "none" or f.t_co2e_per_t == 0 for f in table.factors.values())


@pytest.mark.parametrize(
    ("edit", "named"),
    [
        (
            lambda t: t.replace('source = "camu_steel"\nbasis = "1.6', 'source = "nobody"\nbasis = "1.6'),
            "factors.metal.steel",
        ),
        (lambda t: t.replace('"appliance.tv" = "15"\n', ""), "piece_mass_kg.appliance.tv"),
        (lambda t: t.replace('t_co2e_per_t = "1.6"', 't_co2e_per_t = "-1.6"'), "factors.metal.steel"),
        (
            lambda t: t.replace(
                'status = "none"\nsource = "platform"\nbasis = "no factor adopted: the mix',
                'status = "sure"\nsource = "platform"\nbasis = "no factor adopted: the mix',
            ),
            "factors.lowvalue.mixed",
        ),
        (lambda t: t.replace('[factors."glass.mixed"]', '[factors."glass.ignored"]'), "factors.glass.mixed"),
    ],
)
def test_a_bad_table_is_refused_naming_the_entry(edit, named):
    with pytest.raises(FactorTableError, match=named.replace(".", r"\.")):
        parse_factor_table(edit(SHIPPED), leaves())


def test_a_city_list_of_low_value_categories_overrides_the_national_flags():
    lists = parse_low_value('[regions]\n"320200" = ["plastic.pet"]\n', leaves())
    assert lists.is_low_value("plastic.pet", "320211") and not lists.is_low_value("glass.mixed", "320211")
    assert lists.is_low_value("glass.mixed", "320508") and not lists.is_low_value("plastic.pet", "110105")
    with pytest.raises(FactorTableError, match="unknown categories"):
        parse_low_value('[regions]\n"320200" = ["plastic.gold"]\n', leaves())

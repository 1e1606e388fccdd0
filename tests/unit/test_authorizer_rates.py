"""The exchange-rate file: exact decimals in, clear errors for anything else."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import pytest

from schemas.money import Money
from services.authorizer.rates import RatesFileInvalid, load_rate_table, parse_rate_table


def test_rates_are_exact_and_convert_against_the_agent() -> None:
    """1.0852 from a string or a JSON number is exactly 10852/10000; €10.00 costs $10.86, rounded up."""
    table = parse_rate_table('{"EUR/USD": "1.0852", "GBP/USD": 1.27, "USD/JPY": "151"}')
    assert (
        table.rates[("EUR", "USD")],
        table.rates[("GBP", "USD")],
        table.convert_up(Money.of(1_000, "EUR"), "USD"),
        table.convert_up(Money.of(1, "USD"), "JPY"),
        table.convert_up(Money.of(1_000, "USD"), "EUR"),
    ) == (Fraction(10852, 10000), Fraction(127, 100), 1_086, 2, None)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("{not json", "not JSON"),
        ('["EUR/USD"]', "expected an object"),
        ('{"EUR-USD": "1.08"}', "not a pair of known currencies"),
        ('{"EUR/XYZ": "1.08"}', "not a pair of known currencies"),
        ('{"EUR/USD": "-1"}', "expected a positive decimal"),
        ('{"EUR/USD": "0"}', "expected a positive decimal"),
        ('{"EUR/USD": "abc"}', "expected a positive decimal"),
        ('{"EUR/USD": "NaN"}', "expected a positive decimal"),
        ('{"EUR/USD": null}', "expected a positive decimal"),
    ],
)
def test_a_bad_rates_file_is_refused_with_the_reason(text: str, says: str) -> None:
    """Every bad entry refuses the whole file (a service must not start with half a table)."""
    with pytest.raises(RatesFileInvalid, match=says):
        parse_rate_table(text)


def test_a_missing_rates_file_says_so(tmp_path: Path) -> None:
    """A path that cannot be read is named in the error."""
    with pytest.raises(RatesFileInvalid, match="cannot be read"):
        load_rate_table(tmp_path / "absent.json")

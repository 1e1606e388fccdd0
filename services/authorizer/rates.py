"""The authorizer's exchange rates, read once at start from the JSON file named by
PURSESTRINGS_FX_RATES_FILE: `{"EUR/USD": "1.0852", "GBP/USD": "1.27"}`, one unit of the first
currency buys that many of the second (major units). Rates are exact decimals (strings or JSON
numbers, never rounded through a float); a pair is used only in the direction written.
"""

from __future__ import annotations

import json
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from pathlib import Path

from schemas.money import CURRENCY_EXPONENTS
from services.authorizer.state import RateTable


class RatesFileInvalid(ValueError):
    """The rates file cannot be used; the message says which entry and why."""


def parse_rate_table(text: str, source: str = "rates") -> RateTable:
    """A rate table from the file's text; any bad entry refuses the whole file."""
    try:
        entries = json.loads(text, parse_float=Decimal, parse_int=Decimal)
    except ValueError as error:
        raise RatesFileInvalid(f"{source}: not JSON ({error})") from error
    if not isinstance(entries, dict):
        raise RatesFileInvalid(f'{source}: expected an object such as {{"EUR/USD": "1.0852"}}')
    rates: dict[tuple[str, str], Fraction] = {}
    for pair, value in entries.items():
        currencies = pair.split("/")
        if len(currencies) != 2 or any(code not in CURRENCY_EXPONENTS for code in currencies):  # noqa: PLR2004 - a pair
            raise RatesFileInvalid(f"{source}: {pair!r} is not a pair of known currencies such as 'EUR/USD'")
        try:
            rate = Decimal(value) if isinstance(value, str | Decimal) else None
        except InvalidOperation:
            rate = None
        if rate is None or not rate.is_finite() or rate <= 0:
            raise RatesFileInvalid(f'{source}: {pair} has rate {value!r}; expected a positive decimal such as "1.0852"')
        rates[(currencies[0], currencies[1])] = Fraction(rate)
    return RateTable(rates)


def load_rate_table(path: Path) -> RateTable:
    """The rate table in `path`."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise RatesFileInvalid(f"{path}: cannot be read ({error.strerror})") from error
    return parse_rate_table(text, str(path))

"""Money: integer minor units in a known currency; every bad amount is refused with a clear error."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from schemas.money import CURRENCY_EXPONENTS, MAX_AMOUNT_MINOR, CurrencyMismatch, Money, NegativeAmount

amounts = st.integers(min_value=0, max_value=MAX_AMOUNT_MINOR)


def test_money_carries_its_currency_exponent() -> None:
    """The exponent is filled in from ISO 4217 and travels with the amount."""
    assert Money.of(150, "USD").model_dump() == {"amount_minor": 150, "currency": "USD", "exponent": 2}
    assert Money.of(150, "JPY").exponent == 0
    assert Money.of(150, "KWD").exponent == 3


def test_money_round_trips_through_json() -> None:
    """What is written is what is read."""
    money = Money.of(123_456, "EUR")
    assert Money.model_validate_json(money.model_dump_json()) == money


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"amount_minor": 1.5, "currency": "USD"}, "never a float"),
        ({"amount_minor": 1.0, "currency": "USD"}, "never a float"),
        ({"amount_minor": -1, "currency": "USD"}, "greater than or equal to 0"),
        ({"amount_minor": MAX_AMOUNT_MINOR + 1, "currency": "USD"}, "less than or equal to 100000000000"),
        ({"amount_minor": 100, "currency": "XXX"}, "unknown currency 'XXX'"),
        ({"amount_minor": 100, "currency": "usd"}, "should match pattern"),
        ({"amount_minor": "100", "currency": "USD"}, "valid integer"),
        ({"amount_minor": True, "currency": "USD"}, "valid integer"),
        ({"amount_minor": 100, "currency": "USD", "exponent": 0}, "USD has exponent 2, not 0"),
        ({"amount_minor": 100}, "Field required"),
        ({"amount_minor": 100, "currency": "USD", "extra": 1}, "Extra inputs are not permitted"),
    ],
)
def test_bad_money_is_rejected_with_a_clear_error(payload: dict[str, object], message: str) -> None:
    """Floats, negatives, unknown currencies, absurd amounts and strings never become Money."""
    with pytest.raises(ValidationError, match=message):
        Money.model_validate(payload)


def test_float_in_json_is_rejected() -> None:
    """A float arriving over the wire is refused, not truncated."""
    with pytest.raises(ValidationError, match="never a float"):
        Money.model_validate_json('{"amount_minor": 12.0, "currency": "USD"}')


def test_arithmetic_stays_in_one_currency() -> None:
    """Adding or comparing two currencies is an error, not a silent mix."""
    with pytest.raises(CurrencyMismatch):
        _ = Money.of(1, "USD") + Money.of(1, "EUR")
    with pytest.raises(CurrencyMismatch):
        _ = Money.of(1, "USD") < Money.of(1, "EUR")


def test_subtraction_never_goes_negative() -> None:
    """Plain subtraction refuses to go below zero; saturating subtraction stops at zero."""
    with pytest.raises(NegativeAmount):
        _ = Money.of(1, "USD") - Money.of(2, "USD")
    assert Money.of(1, "USD").saturating_sub(Money.of(2, "USD")) == Money.zero("USD")


def test_str_shows_major_units() -> None:
    """A human reads $1.50 as `1.50 USD`, yen without decimals, dinars with three."""
    assert [str(Money.of(150, "USD")), str(Money.of(150, "JPY")), str(Money.of(1_005, "KWD"))] == [
        "1.50 USD",
        "150 JPY",
        "1.005 KWD",
    ]


@given(a=amounts, b=amounts, currency=st.sampled_from(sorted(CURRENCY_EXPONENTS)))
def test_addition_then_subtraction_is_identity(a: int, b: int, currency: str) -> None:
    """For any two amounts, (a + b) - b == a, when the sum stays within bounds."""
    if a + b > MAX_AMOUNT_MINOR:
        with pytest.raises(ValidationError):
            _ = Money.of(a, currency) + Money.of(b, currency)
        return
    assert (Money.of(a, currency) + Money.of(b, currency)) - Money.of(b, currency) == Money.of(a, currency)


@pytest.mark.parametrize(("amount", "currency"), [(0, "USD"), (150, "USD"), (MAX_AMOUNT_MINOR, "JPY"), (7, "BHD")])
def test_the_fast_constructor_builds_what_the_validator_builds(amount: int, currency: str) -> None:
    """Money.of's shortcut (no validator, shared instances) equals, hashes and serializes alike."""
    fast, checked = Money.of(amount, currency), Money(amount_minor=amount, currency=currency)
    assert (fast, hash(fast), fast.model_dump_json(), Money.of(amount, currency) is fast) == (
        checked,
        hash(checked),
        checked.model_dump_json(),
        True,
    )


@pytest.mark.parametrize(
    ("amount", "currency"), [(-1, "USD"), (MAX_AMOUNT_MINOR + 1, "USD"), (1.0, "USD"), (True, "USD"), (1, "XXX")]
)
def test_the_fast_constructor_still_refuses_what_the_validator_refuses(amount: object, currency: str) -> None:
    """Out of range, a float, a bool or an unknown currency fail even when a good twin is cached."""
    Money.of(1, "USD")  # (1, "USD") is cached; 1.0 and True hash like it
    with pytest.raises(ValidationError):
        Money.of(amount, currency)  # type: ignore[arg-type]

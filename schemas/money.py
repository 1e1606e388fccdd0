"""Money: an integer of minor units and an ISO 4217 currency with its exponent. Never a float.

Owns the currency table and the arithmetic that keeps amounts in one currency; never converts
between currencies (that needs a rate table, which belongs to the authorizer).
"""

from __future__ import annotations

from typing import Annotated, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictInt, field_validator, model_validator

from schemas.trusted import trusted

# ISO 4217 minor-unit exponents for the currencies a card program meets. A currency missing here
# is rejected rather than guessed: a wrong exponent is a 100x error.
CURRENCY_EXPONENTS: dict[str, int] = {
    "AED": 2, "ARS": 2, "AUD": 2, "BGN": 2, "BHD": 3, "BRL": 2, "CAD": 2, "CHF": 2, "CLP": 0,
    "CNY": 2, "COP": 2, "CZK": 2, "DKK": 2, "EGP": 2, "EUR": 2, "GBP": 2, "HKD": 2, "HUF": 2,
    "IDR": 2, "ILS": 2, "INR": 2, "ISK": 0, "JOD": 3, "JPY": 0, "KES": 2, "KRW": 0, "KWD": 3,
    "MXN": 2, "MYR": 2, "NGN": 2, "NOK": 2, "NZD": 2, "OMR": 3, "PHP": 2, "PKR": 2, "PLN": 2,
    "RON": 2, "SAR": 2, "SEK": 2, "SGD": 2, "THB": 2, "TND": 3, "TRY": 2, "TWD": 2, "UAH": 2,
    "UGX": 0, "USD": 2, "VND": 0, "ZAR": 2,
}  # fmt: skip

# The largest amount any message may carry: 10^11 minor units (a billion dollars in cents). Far
# above any agent's card, far below int64, so sums of many amounts cannot overflow in Postgres.
MAX_AMOUNT_MINOR = 100_000_000_000


class CurrencyMismatch(ValueError):
    """Two amounts in different currencies were combined."""


class NegativeAmount(ValueError):
    """A subtraction would leave less than zero where no negative amount is meaningful."""


def _known_currency(code: str) -> str:
    if code not in CURRENCY_EXPONENTS:
        raise ValueError(f"unknown currency {code!r}: expected an ISO 4217 code such as 'USD'")
    return code


CurrencyCode = Annotated[
    str,
    Field(pattern=r"^[A-Z]{3}$", description="ISO 4217 alphabetic code, upper case", examples=["USD"]),
    AfterValidator(_known_currency),
]
AmountMinor = Annotated[
    StrictInt,
    Field(ge=0, le=MAX_AMOUNT_MINOR, description="integer minor units (cents for USD); never a float"),
]


# Recently built amounts, shared: a Money is immutable, and a decision repeats most of its amounts
# (limits, zero, what was spent) from the one before. Cleared whole when full.
_KNOWN: dict[tuple[int, str], Money] = {}
_KNOWN_MAX = 65_536


class Money(BaseModel):
    """A non-negative amount in minor units of one currency; `exponent` is the currency's."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    amount_minor: AmountMinor
    currency: CurrencyCode
    exponent: int | None = Field(
        default=None, description="ISO 4217 minor-unit exponent; filled in from the currency, checked if given"
    )

    @field_validator("amount_minor", mode="before")
    @classmethod
    def _reject_floats_early(cls, value: object) -> object:
        # A float amount must fail with a message about money, not a generic type error. On the
        # field, not the model: a model's "before" validator made pydantic build a dict of every
        # amount read from JSON to hand it over (a third of a request's parse, issue 20).
        if isinstance(value, float):
            # ValueError, not TypeError: pydantic turns only ValueError into a ValidationError.
            raise ValueError("amount_minor must be an integer of minor units, never a float")  # noqa: TRY004
        return value

    @model_validator(mode="after")
    def _exponent_matches_currency(self) -> Self:
        expected = CURRENCY_EXPONENTS[self.currency]
        if self.exponent is None:
            object.__setattr__(self, "exponent", expected)
        elif self.exponent != expected:
            raise ValueError(f"{self.currency} has exponent {expected}, not {self.exponent}")
        return self

    @classmethod
    def of(cls, amount_minor: int, currency: str) -> Money:
        """Shorthand constructor: `Money.of(150, "USD")` is $1.50.

        Values that plainly pass every rule are built without the validator, and recent ones are
        shared (a decision builds a couple of dozen amounts, mostly repeats); anything else goes
        through the validator and fails the same way.
        """
        known = _KNOWN.get((amount_minor, currency))
        if known is not None and type(amount_minor) is int:
            return known
        exponent = CURRENCY_EXPONENTS.get(currency)
        if type(amount_minor) is int and 0 <= amount_minor <= MAX_AMOUNT_MINOR and exponent is not None:
            money = trusted(cls, {"amount_minor": amount_minor, "currency": currency, "exponent": exponent})
            if len(_KNOWN) >= _KNOWN_MAX:
                _KNOWN.clear()
            _KNOWN[(amount_minor, currency)] = money
            return money
        return cls(amount_minor=amount_minor, currency=currency)

    @classmethod
    def zero(cls, currency: str) -> Money:
        """Nothing, in `currency`."""
        return cls(amount_minor=0, currency=currency)

    def __add__(self, other: Money) -> Money:
        self._same_currency(other)
        return Money.of(self.amount_minor + other.amount_minor, self.currency)

    def __sub__(self, other: Money) -> Money:
        self._same_currency(other)
        if other.amount_minor > self.amount_minor:
            raise NegativeAmount(f"{self} - {other} would be negative")
        return Money.of(self.amount_minor - other.amount_minor, self.currency)

    def __lt__(self, other: Money) -> bool:
        self._same_currency(other)
        return self.amount_minor < other.amount_minor

    def __le__(self, other: Money) -> bool:
        self._same_currency(other)
        return self.amount_minor <= other.amount_minor

    def saturating_sub(self, other: Money) -> Money:
        """`self - other`, or zero when `other` is larger (what remains of a cap that was pushed over)."""
        self._same_currency(other)
        return Money.of(max(0, self.amount_minor - other.amount_minor), self.currency)

    def _same_currency(self, other: Money) -> None:
        if other.currency != self.currency:
            raise CurrencyMismatch(f"cannot combine {self.currency} with {other.currency}")

    def __str__(self) -> str:
        exponent = CURRENCY_EXPONENTS[self.currency]
        if exponent == 0:
            return f"{self.amount_minor} {self.currency}"
        units, minor = divmod(self.amount_minor, 10**exponent)
        return f"{units}.{minor:0{exponent}d} {self.currency}"

"""Named policy templates: the starter caps a wallet gets when it is created from a template.

Pure data. Amounts are minor units of the wallet's currency (the defaults read as dollars for USD).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Self

from pydantic import Field, model_validator

from schemas.common import Contract
from schemas.money import Money

# The intervals added in version 2 of the contracts that carry caps (decision 0011): a message of
# version 1 carrying any of them is refused.
INTERVALS_OF_VERSION_2 = ("weekly", "yearly", "all_time")


class _Caps(Contract):
    """Limits over intervals, all in one currency; None means "no such cap"."""

    per_authorization: Money | None = Field(default=None, description="a limit per call, not a budget")
    rolling_24h: Money | None = Field(default=None, description="sliding 24 h window, not a calendar day")
    weekly: Money | None = Field(default=None, description="calendar week (from Monday) in the wallet's time zone")
    monthly: Money | None = Field(default=None, description="calendar month in the wallet's time zone")
    yearly: Money | None = Field(default=None, description="calendar year in the wallet's time zone")
    all_time: Money | None = Field(default=None, description="everything ever spent, never reset")

    def amounts(self) -> list[Money | None]:
        """Every limit, set or not."""
        return [getattr(self, name) for name in type(self).model_fields]

    def needs_version_2(self) -> bool:
        """True when an interval added in version 2 is set."""
        return any(getattr(self, name) is not None for name in INTERVALS_OF_VERSION_2)

    @model_validator(mode="after")
    def _one_currency(self) -> Self:
        _require_one_currency(*self.amounts())
        return self


class WalletCaps(_Caps):
    """A wallet's limits: every card's spend counts in them."""

    per_trace: Money | None = Field(default=None, description="default cap of each bound trace (e.g. per PR)")


class CardCaps(_Caps):
    """A card's own limits, checked before the wallet's."""


def _require_one_currency(*amounts: Money | None) -> None:
    currencies = {amount.currency for amount in amounts if amount is not None}
    if len(currencies) > 1:
        raise ValueError(f"caps must share one currency, got {sorted(currencies)}")


class PolicyTemplate(StrEnum):
    """Starting points named after the seeds' agents."""

    STARTER = "starter"
    RESEARCH_AGENT = "research_agent"
    CI_AGENT = "ci_agent"
    SUPPORT_AGENT = "support_agent"


# (rolling 24 h, monthly, per trace, per authorization, approval raise step) in minor units.
_TEMPLATE_MINOR: dict[PolicyTemplate, tuple[int | None, int | None, int | None, int | None, int]] = {
    PolicyTemplate.STARTER: (50_00, 500_00, 20_00, 10_00, 10_00),
    PolicyTemplate.RESEARCH_AGENT: (1_50, 30_00, None, 1_50, 1_00),
    PolicyTemplate.CI_AGENT: (100_00, 1_000_00, 20_00, 20_00, 10_00),
    PolicyTemplate.SUPPORT_AGENT: (15_00, 300_00, None, 5_00, 5_00),
}


def template_caps(template: PolicyTemplate, currency: str) -> WalletCaps:
    """The caps a wallet created from `template` starts with, in `currency`."""
    rolling, monthly, per_trace, per_authorization, _ = _TEMPLATE_MINOR[template]

    def money(amount_minor: int | None) -> Money | None:
        return None if amount_minor is None else Money.of(amount_minor, currency)

    return WalletCaps(
        rolling_24h=money(rolling),
        monthly=money(monthly),
        per_trace=money(per_trace),
        per_authorization=money(per_authorization),
    )


def template_raise_step(template: PolicyTemplate, currency: str) -> Money:
    """How much one Slack approval raises a cap by, unless the wallet says otherwise."""
    return Money.of(_TEMPLATE_MINOR[template][4], currency)

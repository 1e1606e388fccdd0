"""Named policy templates: the starter caps a wallet gets when it is created from a template.

Pure data. Amounts are minor units of the wallet's currency (the defaults read as dollars for USD).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Self

from pydantic import Field, model_validator

from schemas.common import Contract
from schemas.money import Money


class WalletCaps(Contract):
    """A wallet's limits, all in one currency; None means "no such cap"."""

    rolling_24h: Money | None = Field(default=None, description="sliding 24 h window, not a calendar day")
    monthly: Money | None = Field(default=None, description="calendar month in the wallet's time zone")
    per_trace: Money | None = Field(default=None, description="default cap of each bound trace (e.g. per PR)")
    per_authorization: Money | None = None

    @model_validator(mode="after")
    def _one_currency(self) -> Self:
        _require_one_currency(self.rolling_24h, self.monthly, self.per_trace, self.per_authorization)
        return self


class CardCaps(Contract):
    """A card's own limits, checked before the wallet's."""

    per_authorization: Money | None = None
    rolling_24h: Money | None = None
    monthly: Money | None = None

    @model_validator(mode="after")
    def _one_currency(self) -> Self:
        _require_one_currency(self.per_authorization, self.rolling_24h, self.monthly)
        return self


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

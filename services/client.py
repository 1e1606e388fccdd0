"""A small client of the management API, for the CLI and the MCP server (and scripts).

It speaks HTTP to the gateway (PURSESTRINGS_API_URL, default http://127.0.0.1:8080) with an API key
(PURSESTRINGS_API_KEY). Errors come back as `ApiError` carrying the API's own message.
"""

from __future__ import annotations

import os
from decimal import Decimal, InvalidOperation
from typing import Any

import httpx

from schemas.money import CURRENCY_EXPONENTS, MAX_AMOUNT_MINOR

DEFAULT_API_URL = "http://127.0.0.1:8080"
_SYMBOLS = {"USD": "$", "EUR": "€", "GBP": "£", "JPY": "¥"}


class ApiError(RuntimeError):
    """The API refused or could not be reached; the message says why."""


def minor_units(amount: str, currency: str = "USD") -> int:
    """Minor units of "10" or "8.47" (major units, as people type them); refuses what is not exact."""
    exponent = CURRENCY_EXPONENTS.get(currency.upper())
    if exponent is None:
        raise ValueError(f"unknown currency {currency!r}")
    try:
        value = Decimal(amount)
    except InvalidOperation:
        raise ValueError(f"{amount!r} is not an amount (expected e.g. 10 or 8.47)") from None
    minor = value.scaleb(exponent)
    if not value.is_finite() or minor != minor.to_integral_value():
        raise ValueError(f"{amount!r} has more than {exponent} decimals for {currency.upper()}")
    if not 0 <= minor <= MAX_AMOUNT_MINOR:
        raise ValueError(f"{amount!r} is out of range")
    return int(minor)


def money_text(money: dict[str, Any]) -> str:
    """{"amount_minor": 847, "currency": "USD"} → "$8.47"."""
    currency = money["currency"]
    exponent = CURRENCY_EXPONENTS[currency]
    units, minor = divmod(money["amount_minor"], 10**exponent)
    number = f"{units:,}" if exponent == 0 else f"{units:,}.{minor:0{exponent}d}"
    symbol = _SYMBOLS.get(currency)
    return f"{symbol}{number}" if symbol else f"{number} {currency}"


def spendable_headline(card: dict[str, Any]) -> str:
    """What the next authorization on a card can get, as `pursestrings balance` headlines it, from
    the API's card (`spendable`): "Remaining: $0.00 of $50.00  (wallet_rolling_24h)".
    """
    can = card["spendable"]
    if can["blocked"]:
        return f"Remaining: {money_text(can['amount'])}  ({can['blocked']}: every authorization is declined)"
    if can["amount"] is None:
        return "Remaining: no cumulative cap"
    return f"Remaining: {money_text(can['amount'])} of {money_text(can['limit'])}  ({can['cap']})"


def per_call_line(card: dict[str, Any]) -> str | None:
    """The per-authorization limit, said as what it is: a limit per call, not a budget."""
    limit = card["spendable"]["per_authorization"]
    return None if limit is None else f"at most {money_text(limit)} per authorization"


class ApiClient:
    """Calls to /v1 with one key."""

    def __init__(self, url: str | None = None, key: str | None = None, timeout_s: float = 30.0) -> None:
        self.url = (url or os.environ.get("PURSESTRINGS_API_URL") or DEFAULT_API_URL).rstrip("/")
        key = key or os.environ.get("PURSESTRINGS_API_KEY")
        if not key:
            raise ApiError("no API key: set PURSESTRINGS_API_KEY (create one with `pursestrings keys create`)")
        self._http = httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {key}"}, timeout=timeout_s)

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def call(self, method: str, path: str, body: dict[str, Any] | None = None, **params: Any) -> Any:  # noqa: ANN401 - JSON
        """One request; the decoded JSON answer, or ApiError with the API's message."""
        try:
            response = self._http.request(method, path, json=body, params=params or None)
        except httpx.HTTPError as error:
            raise ApiError(f"cannot reach the API at {self.url}: {error}") from None
        if response.is_success:
            return response.json()
        try:
            problem = response.json()
        except ValueError:
            problem = {"detail": response.text[:500]}
        raise ApiError(f"{response.status_code} {_describe(problem)}")

    def create_wallet(self, **fields: Any) -> dict[str, Any]:  # noqa: ANN401 - JSON fields
        """POST /v1/wallets."""
        return self.call("POST", "/v1/wallets", {k: v for k, v in fields.items() if v is not None})  # type: ignore[no-any-return]

    def create_card(self, wallet_id: str, **fields: Any) -> dict[str, Any]:  # noqa: ANN401 - JSON fields
        """POST /v1/wallets/{wallet_id}/cards."""
        body = {k: v for k, v in fields.items() if v is not None}
        return self.call("POST", f"/v1/wallets/{wallet_id}/cards", body)  # type: ignore[no-any-return]

    def card(self, card_id: str) -> dict[str, Any]:
        """GET /v1/cards/{card_id}: the card and its caps."""
        return self.call("GET", f"/v1/cards/{card_id}")  # type: ignore[no-any-return]

    def dry_run(self, card_id: str, amount: dict[str, Any], merchant: dict[str, Any]) -> dict[str, Any]:
        """POST /v1/cards/{card_id}/authorize:dry-run: the decision it would get now, nothing held."""
        body = {"amount": amount, "merchant": merchant}
        return self.call("POST", f"/v1/cards/{card_id}/authorize:dry-run", body)  # type: ignore[no-any-return]

    def wallet(self, wallet_id: str) -> dict[str, Any]:
        """GET /v1/wallets/{wallet_id}."""
        return self.call("GET", f"/v1/wallets/{wallet_id}")  # type: ignore[no-any-return]

    def card_status(self, card_id: str, action: str, reason: str) -> dict[str, Any]:
        """POST /v1/cards/{card_id}/freeze|unfreeze|close."""
        return self.call("POST", f"/v1/cards/{card_id}/{action}", {"reason": reason})  # type: ignore[no-any-return]

    def bind_trace(self, wallet_id: str, trace_id: str, card_id: str | None, cap: dict[str, Any] | None) -> Any:  # noqa: ANN401
        """POST /v1/wallets/{wallet_id}/traces."""
        body = {"trace_id": trace_id, "card_id": card_id, "cap": cap}
        return self.call("POST", f"/v1/wallets/{wallet_id}/traces", {k: v for k, v in body.items() if v is not None})

    def set_velocity(self, wallet_id: str, card_id: str | None, max_authorizations: int | None, per: str) -> Any:  # noqa: ANN401
        """PUT /v1/wallets/{wallet_id}/velocity."""
        body = {"card_id": card_id, "max_authorizations": max_authorizations, "per": per}
        return self.call("PUT", f"/v1/wallets/{wallet_id}/velocity", body)

    def set_caps(self, wallet_id: str, caps: dict[str, Any]) -> dict[str, Any]:
        """PUT /v1/wallets/{wallet_id}/caps (every cap: one left out is removed)."""
        return self.call("PUT", f"/v1/wallets/{wallet_id}/caps", {"caps": caps})  # type: ignore[no-any-return]

    def set_card_caps(self, card_id: str, caps: dict[str, Any]) -> dict[str, Any]:
        """PUT /v1/cards/{card_id}/caps (every cap of the card's own)."""
        return self.call("PUT", f"/v1/cards/{card_id}/caps", {"caps": caps})  # type: ignore[no-any-return]

    def set_merchant_countries(
        self, wallet_id: str, card_id: str | None, allow: list[str], block: list[str]
    ) -> dict[str, Any]:
        """PUT /v1/wallets/{wallet_id}/merchant-countries."""
        body = {"card_id": card_id, "allow": allow, "block": block}
        return self.call("PUT", f"/v1/wallets/{wallet_id}/merchant-countries", body)  # type: ignore[no-any-return]

    def set_decline_streak(self, wallet_id: str, card_id: str | None, max_declines: int | None) -> Any:  # noqa: ANN401
        """PUT /v1/wallets/{wallet_id}/decline-streak."""
        body = {"card_id": card_id, "max_declines": max_declines}
        return self.call("PUT", f"/v1/wallets/{wallet_id}/decline-streak", body)

    def transactions(self, *, card_id: str | None = None, trace_id: str | None = None, limit: int = 50) -> list[Any]:
        """The card's or the trace's authorizations, newest first."""
        if (card_id is None) == (trace_id is None):
            raise ValueError("give a card or a trace")
        path = f"/v1/cards/{card_id}/transactions" if card_id else f"/v1/traces/{trace_id}/transactions"
        return self.call("GET", path, limit=limit)  # type: ignore[no-any-return]


def _describe(problem: object) -> str:
    if isinstance(problem, dict) and isinstance(problem.get("detail"), list):  # FastAPI's validation errors
        return "; ".join(
            f"{'.'.join(str(p) for p in item.get('loc', [])[1:])}: {item.get('msg')}" for item in problem["detail"]
        )
    if isinstance(problem, dict):
        return f"{problem.get('error', 'error')}: {problem.get('detail', '')}".strip()
    return str(problem)

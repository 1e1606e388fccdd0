"""Issue 21's report, on the real services: a $500.00 card under the starter template's $50.00
rolling day. Through Stripe-signed webhooks $50.00 is spent; the API's card, `pursestrings balance`
and MCP's `check_balance` all say what the next authorization can get, and name the wallet's day.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import asyncpg
import pytest
from mcp import Client

from services.cli import main
from services.gateway.keys import Scope, create_key
from services.gateway.simulator import sign_for_stripe, stripe_authorization_request
from services.mcp_server import build_server
from services.platform.settings import Settings
from tests.support.services import STRIPE_SECRET, gateway_settings, running_authorizer, running_gateway

LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \[")


def _tool_result(result: Any) -> Any:
    assert not result.is_error, result.content
    return json.loads(str(getattr(result.content[0], "text", "")))


async def test_the_api_the_cli_and_mcp_say_what_the_next_authorization_can_get(
    kafka_topics: Settings, pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: $50.00 of $50.00 (wallet_rolling_24h), not $500.00 of $500.00 (card_funded). After
    five $10.00 purchases: $0.00 everywhere, and the next cent is declined by that cap.
    """
    settings = gateway_settings(kafka_topics)
    admin = await create_key(pool, Scope.ADMIN, label="spendable test")
    agent = await create_key(pool, Scope.AGENT, wallet_id="wal_spend")
    bearer = {"Authorization": f"Bearer {admin}"}
    monkeypatch.setenv("PURSESTRINGS_API_URL", f"http://127.0.0.1:{settings.gateway_port}")
    monkeypatch.setenv("PURSESTRINGS_API_KEY", admin)

    async def balance_headline() -> str:
        code = await asyncio.to_thread(main, ["balance", "card_spend"])
        captured = capsys.readouterr()
        assert code == 0, captured.err
        return next(line for line in captured.out.splitlines() if not LOG_LINE.match(line))

    async with running_authorizer(kafka_topics, pool), running_gateway(settings) as api:
        wallet = await api.post("/v1/wallets", headers=bearer, json={"wallet_id": "wal_spend", "template": "starter"})
        card = await api.post(
            "/v1/wallets/wal_spend/cards",
            headers=bearer,
            json={"card_id": "card_spend", "issuer_card_token": "ic_spend", "last4": "4242",
                  "funded_amount": {"amount_minor": 500_00, "currency": "USD"}},
        )  # fmt: skip
        assert (wallet.status_code, card.status_code) == (201, 201), (wallet.text, card.text)
        before = (await api.get("/v1/cards/card_spend", headers=bearer)).json()["spendable"]
        headline_before = await balance_headline()
        answers = []
        for number in range(6):  # five at the $10.00 per-authorization cap, then one cent more
            amount = 1 if number == 5 else 10_00
            signed = sign_for_stripe(
                stripe_authorization_request(f"iauth_spend{number}", "ic_spend", amount), STRIPE_SECRET
            )
            answer = await api.post(signed.path, content=signed.body, headers=signed.headers)
            answers.append(answer.json()["approved"])
        after = (await api.get("/v1/cards/card_spend", headers=bearer)).json()["spendable"]
        headline_after = await balance_headline()
        async with Client(build_server(str(api.base_url), agent)) as client:
            checked = _tool_result(await client.call_tool("check_balance", {"card_id": "card_spend"}))
        declined = await pool.fetchval(
            "SELECT reason FROM authorizer.decisions WHERE issuer_authorization_id = 'iauth_spend5'"
        )
    assert (before["amount"]["amount_minor"], before["cap"], before["limit"]["amount_minor"]) == (
        50_00,
        "wallet_rolling_24h",
        50_00,
    )
    assert (before["per_authorization"]["amount_minor"], before["blocked"]) == (10_00, None)
    assert headline_before == "Remaining: $50.00 of $50.00  (wallet_rolling_24h)"
    assert (answers, declined) == ([True] * 5 + [False], "wallet_rolling_24h_cap")
    assert (after["amount"]["amount_minor"], after["cap"]) == (0, "wallet_rolling_24h")
    assert headline_after == "Remaining: $0.00 of $50.00  (wallet_rolling_24h)"
    assert {
        key: checked[key] for key in ("remaining", "remaining_minor", "binding_cap", "per_authorization_limit")
    } == {
        "remaining": "$0.00",
        "remaining_minor": 0,
        "binding_cap": "wallet_rolling_24h",
        "per_authorization_limit": "at most $10.00 per authorization",
    }


async def test_a_dry_run_holds_nothing_records_nothing_and_checks_its_input(
    kafka_topics: Settings, pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`POST /v1/cards/{id}/authorize:dry-run` and `pursestrings simulate --dry-run`: the decision an
    amount and merchant would get, with every cap; nothing held and no decision recorded; an agent
    key only on its own wallet; a bad body a 422 saying what is wrong.
    """
    settings = gateway_settings(kafka_topics)
    admin = await create_key(pool, Scope.ADMIN, label="dry run test")
    other_agent = await create_key(pool, Scope.AGENT, wallet_id="wal_elsewhere")
    bearer = {"Authorization": f"Bearer {admin}"}
    monkeypatch.setenv("PURSESTRINGS_API_URL", f"http://127.0.0.1:{settings.gateway_port}")
    monkeypatch.setenv("PURSESTRINGS_API_KEY", admin)
    merchant = {"name": "Anthropic", "mcc": "5734", "network_id": "anthropic-1"}
    async with running_authorizer(kafka_topics, pool), running_gateway(settings) as api:
        await api.post("/v1/wallets", headers=bearer, json={"wallet_id": "wal_dry", "template": "starter"})
        card = await api.post(
            "/v1/wallets/wal_dry/cards",
            headers=bearer,
            json={"card_id": "card_dry", "issuer_card_token": "ic_dry", "last4": "4242",
                  "funded_amount": {"amount_minor": 20_00, "currency": "USD"}},
        )  # fmt: skip
        assert card.status_code == 201, card.text
        path = "/v1/cards/card_dry/authorize:dry-run"
        fits = await api.post(path, headers=bearer, json={"amount": {"amount_minor": 9_99, "currency": "USD"},
                                                          "merchant": merchant})  # fmt: skip
        above = await api.post(path, headers=bearer, json={"amount": {"amount_minor": 10_01, "currency": "USD"},
                                                           "merchant": merchant})  # fmt: skip
        floated = await api.post(path, headers=bearer, json={"amount": {"amount_minor": 9.5, "currency": "USD"},
                                                             "merchant": merchant})  # fmt: skip
        foreign = await api.post(
            path, headers={"Authorization": f"Bearer {other_agent}"},
            json={"amount": {"amount_minor": 1, "currency": "USD"}, "merchant": merchant},
        )  # fmt: skip
        code = await asyncio.to_thread(main, ["simulate", "--card", "card_dry", "--amount", "12.50", "--dry-run"])
        printed = [line for line in capsys.readouterr().out.splitlines() if not LOG_LINE.match(line)]
        after = (await api.get("/v1/cards/card_dry", headers=bearer)).json()
        recorded = await pool.fetchval("SELECT count(*) FROM authorizer.decisions WHERE card_id = 'card_dry'")
    assert (fits.status_code, fits.json()["approved"], fits.json()["dry_run"]) == (200, True, True)
    assert (above.json()["approved"], above.json()["reason"], above.json()["failed_cap"]) == (
        False,
        "per_authorization_cap",
        "per_authorization",
    )
    assert (floated.status_code, "never a float" in floated.text, foreign.status_code) == (422, True, 403)
    assert (code, printed[0]) == (
        0,
        "dry run  $12.50 at OpenAI API  → would be declined: per_authorization_cap  (nothing held)",
    )
    assert printed[1] == "  Remaining: $20.00 of $20.00  (card_funded)"
    assert (after["spendable"]["amount"]["amount_minor"], recorded) == (20_00, 0)

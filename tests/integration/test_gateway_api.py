"""The /v1 management API over real HTTP, with the authorizer applying every change on the real Kafka
and Postgres: each call returns once the change is applied, with the state as it now stands.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest

from services.gateway.keys import Scope, create_key
from services.gateway.simulator import sign_for_stripe, stripe_authorization_request
from services.platform.settings import Settings
from tests.support.services import STRIPE_SECRET, gateway_settings, running_authorizer, running_gateway


@pytest.fixture
async def api(kafka_topics: Settings, pool: asyncpg.Pool) -> AsyncIterator[httpx.AsyncClient]:
    """The gateway with the authorizer running behind it."""
    async with running_authorizer(kafka_topics, pool), running_gateway(gateway_settings(kafka_topics)) as client:
        yield client


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _caps(body: dict[str, object]) -> dict[str, tuple[int, ...]]:
    """Cap → (limit, used, remaining) in minor units."""
    caps: list[dict[str, dict[str, int]]] = body["caps"]  # type: ignore[assignment]
    return {
        f"{c['cap']}:{c['scope_id']}": tuple(c[part]["amount_minor"] for part in ("limit", "used", "remaining"))
        for c in caps
    }


async def test_an_admin_creates_a_wallet_and_a_card_and_sees_the_balance_move(
    api: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    """Create (applied before the call returns) → authorize $1.00 through Stripe → balance shows it."""
    admin = _bearer(await create_key(pool, Scope.ADMIN, label="ops"))
    wallet = await api.post(
        "/v1/wallets",
        headers=admin,
        json={"wallet_id": "wal_api", "template": "research_agent", "label": "research", "approvers": ["U1"]},
    )
    card = await api.post(
        "/v1/wallets/wal_api/cards",
        headers=admin,
        json={
            "card_id": "card_api",
            "issuer_card_token": "ic_api",
            "last4": "4242",
            "funded_amount": {"amount_minor": 1_000, "currency": "USD"},
        },
    )
    assert (wallet.status_code, card.status_code) == (201, 201), (wallet.text, card.text)
    event = stripe_authorization_request("iauth_api", "ic_api", 100)
    signed = sign_for_stripe(event, STRIPE_SECRET)
    answer = await api.post(signed.path, content=signed.body, headers=signed.headers)
    balance = await api.get("/v1/cards/card_api", headers=admin)
    transactions = await api.get("/v1/cards/card_api/transactions", headers=admin)
    assert (answer.json()["approved"], _caps(balance.json())["card_funded:card_api"]) == (True, (1_000, 100, 900))
    assert [(t["issuer_authorization_id"], t["approved"]) for t in transactions.json()] == [("iauth_api", True)]
    assert (wallet.json()["label"], wallet.json()["template"], card.json()["status"]) == (
        "research",
        "research_agent",
        "active",
    )


async def test_a_traces_transactions_are_listed_across_wallets_for_an_admin_and_in_its_own_for_an_agent(
    api: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    """PR-9 bound on two wallets, one authorization on each: an admin's key lists both, newest first;
    an agent's key lists its own wallet's only (the rows are found by the trace's index, migration 0013).
    """
    admin = _bearer(await create_key(pool, Scope.ADMIN))
    for wallet, card, token in (("wal_t1", "card_t1", "ic_t1"), ("wal_t2", "card_t2", "ic_t2")):
        await api.post("/v1/wallets", headers=admin, json={"wallet_id": wallet})
        await api.post(f"/v1/wallets/{wallet}/cards", headers=admin,
                       json={"card_id": card, "issuer_card_token": token, "last4": "4242"})  # fmt: skip
        bound = await api.post(f"/v1/wallets/{wallet}/traces", headers=admin, json={"trace_id": "PR-9"})
        assert bound.status_code == 200, bound.text
        signed = sign_for_stripe(stripe_authorization_request(f"iauth_{wallet}", token, 100), STRIPE_SECRET)
        assert (await api.post(signed.path, content=signed.body, headers=signed.headers)).json()["approved"] is True
    agent = _bearer(await create_key(pool, Scope.AGENT, wallet_id="wal_t1"))
    listed = [
        [(t["card_id"], t["issuer_authorization_id"]) for t in (await api.get("/v1/traces/PR-9/transactions",
                                                                              headers=key)).json()]
        for key in (admin, agent)
    ]  # fmt: skip
    assert listed == [
        [("card_t2", "iauth_wal_t2"), ("card_t1", "iauth_wal_t1")],
        [("card_t1", "iauth_wal_t1")],
    ]


async def test_freeze_and_unfreeze_are_applied_before_the_call_returns(
    api: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    """The answer to a freeze already shows the card frozen; a closed card cannot be unfrozen (409)."""
    admin = _bearer(await create_key(pool, Scope.ADMIN))
    await api.post("/v1/wallets", headers=admin, json={"wallet_id": "wal_f"})
    await api.post(
        "/v1/wallets/wal_f/cards",
        headers=admin,
        json={"card_id": "card_f", "issuer_card_token": "t_f", "last4": "1234"},
    )
    frozen = await api.post("/v1/cards/card_f/freeze", headers=admin, json={"reason": "runaway loop"})
    thawed = await api.post("/v1/cards/card_f/unfreeze", headers=admin, json={"reason": "fixed"})
    closed = await api.post("/v1/cards/card_f/close", headers=admin, json={"reason": "done"})
    refused = await api.post("/v1/cards/card_f/unfreeze", headers=admin, json={"reason": "oops"})
    assert [frozen.json()["status"], thawed.json()["status"], closed.json()["status"]] == ["frozen", "active", "closed"]
    assert (refused.status_code, refused.json()["error"]) == (409, "rejected")


async def test_keys_are_checked_and_scopes_enforced(api: httpx.AsyncClient, pool: asyncpg.Pool) -> None:
    """No key or a forged one → 401; a read key cannot change; an agent sees only its own wallet."""
    admin = _bearer(await create_key(pool, Scope.ADMIN))
    await api.post("/v1/wallets", headers=admin, json={"wallet_id": "wal_a"})
    await api.post("/v1/wallets", headers=admin, json={"wallet_id": "wal_b"})
    read = _bearer(await create_key(pool, Scope.READ))
    agent = _bearer(await create_key(pool, Scope.AGENT, wallet_id="wal_a"))
    forged = _bearer((await create_key(pool, Scope.ADMIN))[:-4] + "AAAA")
    statuses = [
        (await api.get("/v1/wallets/wal_a")).status_code,
        (await api.get("/v1/wallets/wal_a", headers=forged)).status_code,
        (await api.get("/v1/wallets/wal_a", headers=read)).status_code,
        (await api.post("/v1/wallets/wal_a/freeze", headers=read, json={"reason": "x"})).status_code,
        (await api.get("/v1/wallets/wal_a", headers=agent)).status_code,
        (await api.get("/v1/wallets/wal_b", headers=agent)).status_code,
        (await api.post("/v1/wallets/wal_a/traces", headers=agent, json={"trace_id": "PR-1"})).status_code,
        (await api.get("/v1/wallets/nope", headers=admin)).status_code,
    ]
    assert statuses == [401, 401, 200, 403, 200, 403, 200, 404]


async def test_bad_input_gets_a_clear_error_and_changes_nothing(api: httpx.AsyncClient, pool: asyncpg.Pool) -> None:
    """A float amount, an unknown currency, an unknown time zone, extra fields → 422 naming the field."""
    admin = _bearer(await create_key(pool, Scope.ADMIN))
    bodies = [
        {"wallet_id": "w1", "caps": {"rolling_24h": {"amount_minor": 1.5, "currency": "USD"}}},
        {"wallet_id": "w2", "caps": {"rolling_24h": {"amount_minor": 100, "currency": "XYZ"}}},
        {"wallet_id": "w3", "time_zone": "Mars/Olympus"},
        {"wallet_id": "w4", "colour": "blue"},
    ]
    responses = [await api.post("/v1/wallets", headers=admin, json=body) for body in bodies]
    wallets = await pool.fetchval("SELECT count(*) FROM authorizer.wallets")
    messages = [json.dumps(r.json()) for r in responses]
    assert ([r.status_code for r in responses], wallets) == ([422] * 4, 0)
    assert ["float" in messages[0], "XYZ" in messages[1], "Mars/Olympus" in messages[2], "colour" in messages[3]] == [
        True
    ] * 4


async def test_the_openapi_document_lists_the_management_routes(api: httpx.AsyncClient) -> None:
    """GET /openapi.json describes /v1 (and the webhooks)."""
    paths = (await api.get("/openapi.json")).json()["paths"]
    assert {"/v1/wallets", "/v1/cards/{card_id}", "/v1/wallets/{wallet_id}/traces", "/webhooks/stripe"} <= set(paths)

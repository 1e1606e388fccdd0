"""The MCP server, driven by the official MCP client in-process, acting through the real API with an
agent key while the authorizer runs on the real Kafka and Postgres.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import asyncpg
from mcp import Client, StdioServerParameters

from services.gateway.keys import Scope, create_key
from services.mcp_server import build_server
from services.platform.settings import Settings
from tests.support.services import gateway_settings, running_authorizer, running_gateway

ROOT = Path(__file__).resolve().parents[2]


def _text(result: Any) -> str:
    return str(getattr(result.content[0], "text", ""))


def _result(result: Any) -> Any:
    assert not result.is_error, result.content
    return json.loads(_text(result))


async def test_an_agent_checks_its_balance_requests_a_card_and_lists_transactions(
    kafka_topics: Settings, pool: asyncpg.Pool
) -> None:
    """request_card within the wallet's $50 day → check_balance shows it; above what is left → refused."""
    settings = gateway_settings(kafka_topics)
    admin = await create_key(pool, Scope.ADMIN)
    agent = await create_key(pool, Scope.AGENT, wallet_id="wal_mcp")
    async with running_authorizer(kafka_topics, pool), running_gateway(settings) as api:
        created = await api.post(
            "/v1/wallets", headers={"Authorization": f"Bearer {admin}"}, json={"wallet_id": "wal_mcp"}
        )
        assert created.status_code == 201, created.text
        server = build_server(str(api.base_url), agent)
        async with Client(server) as client:
            tools = sorted(tool.name for tool in (await client.list_tools()).tools)
            card = _result(
                await client.call_tool("request_card", {"wallet_id": "wal_mcp", "amount": "5", "label": "run 7"})
            )
            balance = _result(await client.call_tool("check_balance", {"card_id": card["card_id"]}))
            too_much = await client.call_tool("request_card", {"wallet_id": "wal_mcp", "amount": "50.01"})
            other = await client.call_tool("request_card", {"wallet_id": "wal_other", "amount": "1"})
            listed = await client.call_tool("list_transactions", {"card_id": card["card_id"]})
    assert tools == ["check_balance", "list_transactions", "request_card"]
    assert (card["funded"], card["status"], balance["remaining"], balance["status"]) == (
        "$5.00",
        "active",
        "$5.00",
        "active",
    )
    assert (too_much.is_error, "50.01 USD asked, the wallet's caps leave 50.00 USD" in _text(too_much)) == (True, True)
    assert (other.is_error, "403" in _text(other), listed.is_error) == (True, True, False)


async def test_the_server_speaks_stdio_as_a_separate_process() -> None:
    """`python -m services.mcp_server` over stdio lists its three tools to the official client."""
    parameters = StdioServerParameters(
        command=sys.executable,
        args=["-m", "services.mcp_server"],
        env={**os.environ, "PURSESTRINGS_API_KEY": "ps_unused_key", "PURSESTRINGS_API_URL": "http://127.0.0.1:9"},
        cwd=str(ROOT),
    )
    async with Client(parameters) as client:
        tools = sorted(tool.name for tool in (await client.list_tools()).tools)
        unreachable = await client.call_tool("check_balance", {"card_id": "card_x"})
    assert (tools, unreachable.is_error, "cannot be reached" in _text(unreachable)) == (
        ["check_balance", "list_transactions", "request_card"],
        True,
        True,
    )

"""An MCP server for agents (the official `mcp` SDK, 2.x `MCPServer`): an agent checks what it may
still spend, lists its transactions, and requests a card within its wallet's caps.

It acts through the management API with one key (PURSESTRINGS_API_URL, PURSESTRINGS_API_KEY; an
`agent` key sees only its own wallet). Run it over stdio (for a local agent) or streamable HTTP:

    python -m services.mcp_server                       # stdio
    python -m services.mcp_server --http --port 8090    # streamable HTTP at /mcp
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import httpx
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

from services.client import DEFAULT_API_URL, minor_units, money_text, per_call_line, spendable_headline

INSTRUCTIONS = (
    "pursestrings puts hard spending caps on this agent's virtual cards. Call check_balance before a "
    "purchase to see what remains on a card; list_transactions to see what was approved or declined "
    "and why; request_card to get a new card funded within the wallet's caps."
)


class _Api:
    """The few management API calls the tools make, with the server's key."""

    def __init__(self, url: str, key: str) -> None:
        self._url = url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {key}"}

    async def call(self, method: str, path: str, body: dict[str, Any] | None = None, **params: Any) -> Any:  # noqa: ANN401 - JSON
        async with httpx.AsyncClient(base_url=self._url, headers=self._headers, timeout=30) as http:
            try:
                response = await http.request(method, path, json=body, params=params or None)
            except httpx.HTTPError as error:
                raise ToolError(f"the pursestrings API at {self._url} cannot be reached: {error}") from None
        if not response.is_success:
            try:
                problem = response.json()
            except ValueError:
                problem = {"detail": response.text[:300]}
            detail = problem.get("detail") if isinstance(problem, dict) else problem
            raise ToolError(f"{response.status_code}: {detail}")
        return response.json()


def _caps(card: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "cap": cap["cap"],
            "scope": cap["scope_id"],
            "remaining": money_text(cap["remaining"]),
            "limit": money_text(cap["limit"]),
            "remaining_minor": cap["remaining"]["amount_minor"],
            "currency": cap["remaining"]["currency"],
        }
        for cap in card["caps"]
    ]


def build_server(api_url: str, api_key: str) -> MCPServer:
    """The MCP server, its tools acting through the API with `api_key`."""
    api = _Api(api_url, api_key)
    server = MCPServer("pursestrings", instructions=INSTRUCTIONS)

    @server.tool()
    async def check_balance(card_id: str) -> dict[str, Any]:
        """What the card's next authorization can be approved for (`remaining`, set by `binding_cap`,
        the cap that leaves the least; `per_authorization_limit` caps each call on top), its status,
        and every cap that applies (card, trace, wallet).
        """
        card = await api.call("GET", f"/v1/cards/{card_id}")
        can = card["spendable"]
        return {
            "card_id": card_id,
            "status": card["status"],
            "summary": spendable_headline(card),
            "remaining": None if can["amount"] is None else money_text(can["amount"]),
            "remaining_minor": None if can["amount"] is None else can["amount"]["amount_minor"],
            "binding_cap": can["cap"],
            "per_authorization_limit": per_call_line(card),
            "blocked": can["blocked"],
            "trace_id": card["trace_id"],
            "caps": _caps(card),
        }

    @server.tool()
    async def list_transactions(
        card_id: str | None = None, trace_id: str | None = None, limit: int = 20
    ) -> list[dict[str, Any]]:
        """A card's or a trace's authorizations, newest first: amount, merchant, approved or the reason why not."""
        if (card_id is None) == (trace_id is None):
            raise ToolError("give either card_id or trace_id")
        path = f"/v1/cards/{card_id}/transactions" if card_id else f"/v1/traces/{trace_id}/transactions"
        rows = await api.call("GET", path, limit=max(1, min(limit, 200)))
        return [
            {
                "authorization_id": row["issuer_authorization_id"],
                "amount": money_text(row["amount"]),
                "merchant": row["merchant"]["name"],
                "approved": row["approved"],
                "reason": row["reason"],
                "trace_id": row["trace_id"],
                "at": row["decided_at"],
            }
            for row in rows
        ]

    @server.tool()
    async def request_card(wallet_id: str, amount: str, label: str = "", currency: str = "USD") -> dict[str, Any]:
        """A new card on the wallet funded with `amount` (major units, e.g. "5" or "2.50"), refused above
        what the wallet's caps leave.
        """
        try:
            funded = {"amount_minor": minor_units(amount, currency), "currency": currency.upper()}
        except ValueError as error:
            raise ToolError(str(error)) from None
        card = await api.call(
            "POST",
            f"/v1/wallets/{wallet_id}/cards",
            {
                "issuer": "generic",
                "issuer_card_token": f"agent_{os.urandom(8).hex()}",
                "last4": "0000",
                "label": label,
                "funded_amount": funded,
            },
        )
        return {"card_id": card["card_id"], "funded": money_text(card["funded_amount"]), "status": card["status"]}

    return server


def main() -> None:
    """`python -m services.mcp_server [--http --host H --port P]`."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--http", action="store_true", help="serve streamable HTTP instead of stdio")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    arguments = parser.parse_args()
    key = os.environ.get("PURSESTRINGS_API_KEY")
    if not key:
        parser.error("set PURSESTRINGS_API_KEY (an agent key: `pursestrings keys create --scope agent --wallet W`)")
    server = build_server(os.environ.get("PURSESTRINGS_API_URL", DEFAULT_API_URL), key)
    if arguments.http:
        server.run("streamable-http", host=arguments.host, port=arguments.port)
    else:
        server.run("stdio")


if __name__ == "__main__":
    main()

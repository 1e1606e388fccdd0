"""The `make run` demo: the seeds' scenarios set up through the management API and driven through the
real webhook path (Stripe-signed authorizations), with a live terminal view of every answer.

- a research agent on a $1.50 load-based card,
- a CI agent whose pull requests each have a $20 trace cap,
- a customer-support agent on a $15 rolling daily cap,
- a runaway retry loop that hits its cap and produces one Slack approval request (in the local
  stand-in when no Slack credentials are set), whose Approve raises the cap for the day.

`python -m services.demo [--once]`: --once plays the scenarios and exits (tests use it); without it
traffic keeps flowing, a purchase every few seconds, until Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
from rich.console import Console
from rich.live import Live
from rich.table import Table

from services.client import ApiClient, money_text
from services.gateway.keys import Scope, create_key_once
from services.gateway.simulator import MerchantData, simulated_authorization
from services.platform.settings import Settings, load_settings

RUNAWAY_APPROVER = "U0APPROVER"  # the stand-in page's default user
MERCHANTS = {
    "openai": MerchantData(name="OpenAI API", mcc="5734", network_id="openai"),
    "anthropic": MerchantData(name="Anthropic", mcc="5734", network_id="anthropic"),
    "modal": MerchantData(name="Modal Labs", mcc="7372", network_id="modal"),
    "github": MerchantData(name="GitHub Actions", mcc="7372", network_id="github"),
    "zendesk": MerchantData(name="Zendesk", mcc="7372", network_id="zendesk"),
}


def usd(cents: int) -> dict[str, Any]:
    """An amount for the API."""
    return {"amount_minor": cents, "currency": "USD"}


@dataclass
class Agent:
    """One scenario: its wallet, card, trace and the purchases it tries."""

    name: str
    wallet_id: str
    card_id: str
    token: str
    purchases: list[tuple[str, int]]
    trace_id: str | None = None


@dataclass
class Row:
    """One answer, for the live view."""

    at: datetime
    agent: str
    trace: str
    amount: int
    merchant: str
    approved: bool
    reason: str
    remaining: str


@dataclass
class Demo:
    """The scenarios against a running stack."""

    api: ApiClient
    settings: Settings
    rows: list[Row] = field(default_factory=list)
    agents: list[Agent] = field(default_factory=list)

    def setup(self, run_id: str) -> None:
        """Wallets, cards and traces of the four scenarios (fresh ids per run)."""
        specs: list[tuple[str, dict[str, Any], dict[str, Any], str | None, list[tuple[str, int]]]] = [
            ("research agent", {"caps": {"per_authorization": usd(100)}}, {"funded_amount": usd(150)}, None,
             [("openai", 40)] * 5),
            ("CI agent", {"caps": {"per_trace": usd(2_000), "rolling_24h": usd(20_000)}}, {}, f"PR-{run_id[:4]}",
             [("github", 600), ("anthropic", 700), ("modal", 500), ("github", 600)]),
            ("support agent", {"caps": {"rolling_24h": usd(1_500)}}, {}, None,
             [("zendesk", 400), ("openai", 500), ("anthropic", 400), ("openai", 450)]),
            ("runaway retry loop", {"caps": {"rolling_24h": usd(500)}, "slack_channel": "#agents",
                                    "approvers": [RUNAWAY_APPROVER], "raise_step": usd(500)}, {}, None,
             [("openai", 200)] * 6),
        ]  # fmt: skip
        for index, (name, wallet_fields, card_fields, trace, purchases) in enumerate(specs):
            wallet_id = f"wal_demo_{index}_{run_id}"
            self.api.create_wallet(wallet_id=wallet_id, label=name, **wallet_fields)
            token = f"tok_demo_{index}_{run_id}"
            card = self.api.create_card(wallet_id, issuer_card_token=token, last4=f"{4240 + index}", label=name,
                                        **card_fields)  # fmt: skip
            if trace is not None:
                self.api.bind_trace(wallet_id, trace, card["card_id"], None)
            self.agents.append(Agent(name, wallet_id, card["card_id"], token, purchases, trace))

    def purchase(self, agent: Agent, merchant_key: str, cents: int) -> Row:
        """One authorization through the webhook path, signed as Stripe signs it."""
        signed = simulated_authorization(self.settings, "stripe", agent.token, amount_minor=cents,
                                         merchant=MERCHANTS[merchant_key])  # fmt: skip
        answer = httpx.post(f"{self.api.url}{signed.path}", content=signed.body, headers=signed.headers, timeout=10)
        body = answer.json()
        card = self.api.card(agent.card_id)
        caps = sorted(card["caps"], key=lambda c: c["remaining"]["amount_minor"])
        remaining = f"{money_text(caps[0]['remaining'])} {caps[0]['cap']}" if caps else "-"
        reason = body.get("metadata", {}).get("pursestrings_reason", "?")
        row = Row(datetime.now().astimezone(), agent.name, agent.trace_id or "", cents, MERCHANTS[merchant_key].name,
                  bool(body.get("approved")), reason, remaining)  # fmt: skip
        self.rows.append(row)
        return row

    def play(self, on_row: Any = None) -> None:  # noqa: ANN401 - a callback
        """Every scenario's purchases, interleaved."""
        longest = max(len(agent.purchases) for agent in self.agents)
        for step in range(longest):
            for agent in self.agents:
                if step < len(agent.purchases):
                    self.purchase(agent, *agent.purchases[step])
                    if on_row is not None:
                        on_row()
        ci = next(agent for agent in self.agents if agent.trace_id)
        ci.trace_id = f"PR-{uuid.uuid4().hex[:4]}"  # the next pull request: a fresh $20
        self.api.bind_trace(ci.wallet_id, ci.trace_id, ci.card_id, None)
        self.purchase(ci, "github", 600)

    def table(self) -> Table:
        """The last answers, newest last."""
        table = Table(title="pursestrings: live authorizations", expand=True)
        for column in ("time", "agent", "trace", "amount", "merchant", "answer", "reason", "tightest cap left"):
            table.add_column(column)
        for row in self.rows[-18:]:
            answer = "[green]approved[/]" if row.approved else "[red]declined[/]"
            table.add_row(f"{row.at:%H:%M:%S}", row.agent, row.trace, money_text(usd(row.amount)), row.merchant,
                          answer, row.reason, row.remaining)  # fmt: skip
        return table


def main() -> int:
    """Set up, play the scenarios, then keep traffic flowing until Ctrl-C (unless --once)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--once", action="store_true", help="play the scenarios once and exit")
    options = parser.parse_args()
    settings = load_settings("pursestrings-demo")
    api = ApiClient(key=asyncio.run(create_key_once(settings, Scope.ADMIN, label="demo")))
    demo = Demo(api, settings)
    demo.setup(uuid.uuid4().hex[:6])
    console = Console()
    if options.once:
        demo.play()
        console.print(demo.table())
        return 0
    rng = random.Random()
    with Live(demo.table(), console=console, refresh_per_second=2) as live:
        demo.play(lambda: live.update(demo.table()))
        console.print("Slack approval: open http://127.0.0.1:8084/ (the stand-in) and click Approve.")
        try:
            while True:
                time.sleep(3)
                agent = rng.choice(demo.agents)
                demo.purchase(agent, rng.choice(list(MERCHANTS)), rng.randrange(50, 400))
                live.update(demo.table())
        except KeyboardInterrupt:
            return 0


if __name__ == "__main__":
    sys.exit(main())

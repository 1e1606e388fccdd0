"""`pursestrings` command line (typer): operator tasks (migrate, topics, health, API keys, ledger
reconcile and export).

The wallet, card and transaction commands talk to the management API (PURSESTRINGS_API_URL with
PURSESTRINGS_API_KEY); the operator tasks here need the database or Kafka directly. This module
never holds business rules.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

import asyncpg
import httpx
import typer
from pydantic import ValidationError

from services.client import ApiClient, ApiError, minor_units, money_text, per_call_line, spendable_headline
from services.gateway.keys import Scope, create_key
from services.gateway.simulator import MerchantData, simulated_authorization
from services.ledger.store import Mismatch, export_csv, reconcile
from services.platform.health import wait_until_healthy
from services.platform.kafka import ensure_topics, project_topics
from services.platform.migrations import MigrationError, apply_migrations
from services.platform.migrations import main as migrate_main
from services.platform.postgres import create_pool
from services.platform.settings import load_settings

app = typer.Typer(
    name="pursestrings",
    help="Hard spending caps for AI agents' cards: operator tasks and API keys.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
keys = typer.Typer(help="management API keys (run where the database is reachable)", no_args_is_help=True)
app.add_typer(keys, name="keys")
wallets = typer.Typer(
    help="wallets (through the API: PURSESTRINGS_API_URL, PURSESTRINGS_API_KEY)", no_args_is_help=True
)
app.add_typer(wallets, name="wallets")
cards = typer.Typer(help="cards (through the API)", no_args_is_help=True)
app.add_typer(cards, name="cards")
trace = typer.Typer(help="traces: tasks, PRs, runs whose spend is capped and counted together", no_args_is_help=True)
app.add_typer(trace, name="trace")
ledger = typer.Typer(
    help="the journal: reconcile and export (run where the database is reachable)", no_args_is_help=True
)
app.add_typer(ledger, name="ledger")


class ExportGrouping(StrEnum):
    """How `ledger export` groups spend."""

    TRACE = "trace"
    WALLET = "wallet"
    DAY = "day"


def _client() -> ApiClient:
    return ApiClient()


def _money_in(amount: str, currency: str) -> dict[str, Any]:
    try:
        return {"amount_minor": minor_units(amount, currency), "currency": currency.upper()}
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None


def _cap_line(cap: dict[str, Any]) -> str:
    return (
        f"{cap['cap']} ({cap['scope_id']}): {money_text(cap['remaining'])} of {money_text(cap['limit'])} remaining"
        f" (spent {money_text(cap['spent'])}, held {money_text(cap['held'])})"
    )


@wallets.command("create")
def wallets_create(  # noqa: PLR0917 - one option per field a wallet has
    wallet_id: Annotated[str | None, typer.Option("--id", help="your id for it (default: one is made up)")] = None,
    template: Annotated[str, typer.Option(help="starter, research_agent, ci_agent, support_agent")] = "starter",
    label: Annotated[str, typer.Option(help="what it is for")] = "",
    currency: Annotated[str, typer.Option(help="the caps' currency")] = "USD",
    time_zone: Annotated[str, typer.Option(help="for calendar months, e.g. Europe/Paris")] = "UTC",
    slack_channel: Annotated[str | None, typer.Option(help="where approval requests go")] = None,
    approver: Annotated[list[str] | None, typer.Option(help="a Slack user who may approve (repeat)")] = None,
) -> None:
    """Create a wallet from a policy template; print its id and caps."""
    created = _client().create_wallet(
        wallet_id=wallet_id, template=template, label=label, currency=currency.upper(), time_zone=time_zone,
        slack_channel=slack_channel, approvers=approver or None,
    )  # fmt: skip
    typer.echo(f"wallet {created['wallet_id']}  {created['template']}  {created['status']}")
    for cap in created["caps"]:
        typer.echo(f"  {_cap_line(cap)}")


@cards.command("create")
def cards_create(  # noqa: PLR0917 - one option per field a card has
    wallet: Annotated[str, typer.Option(help="the wallet it belongs to")],
    amount: Annotated[str | None, typer.Option(help="funded amount in major units, e.g. 10 or 8.47")] = None,
    currency: Annotated[str, typer.Option(help="of --amount")] = "USD",
    label: Annotated[str, typer.Option(help="what it is for")] = "",
    mcc: Annotated[list[str] | None, typer.Option(help="an allowed MCC (repeat); none: all not blocked")] = None,
    merchant_lock: Annotated[str | None, typer.Option(help="only this merchant network id")] = None,
    issuer: Annotated[str, typer.Option(help="stripe, lithic or generic")] = "stripe",
    issuer_card_id: Annotated[
        str | None, typer.Option(help="the issuer's card token (default: a simulated one)")
    ] = None,
    last4: Annotated[str, typer.Option(help="the card's last 4 digits")] = "4242",
    card_id: Annotated[str | None, typer.Option("--id", help="your id for it")] = None,
) -> None:
    """Issue a card to a wallet; print its id, amount and status."""
    funded = None if amount is None else _money_in(amount, currency)
    created = _client().create_card(
        wallet, card_id=card_id, issuer=issuer, issuer_card_token=issuer_card_id or f"sim_{uuid.uuid4().hex[:16]}",
        last4=last4, label=label, funded_amount=funded, mcc_allow=mcc or None, merchant_lock=merchant_lock,
    )  # fmt: skip
    shown = "unfunded" if created["funded_amount"] is None else money_text(created["funded_amount"])
    typer.echo(
        f"card {created['card_id']}  {shown}  {created['status']}  (issuer token {created['issuer_card_token']})"
    )


@app.command()
def balance(card_id: Annotated[str, typer.Argument(help="the card")]) -> None:
    """What the card's next authorization can get (the cap that leaves the least), then every cap."""
    card = _client().card(card_id)
    typer.echo(spendable_headline(card))
    per_call = per_call_line(card)
    if per_call is not None:
        typer.echo(f"  {per_call}")
    for cap in card["caps"]:
        typer.echo(f"  {_cap_line(cap)}")


def _card_status(card_id: str, action: str, reason: str) -> None:
    card = _client().card_status(card_id, action, reason)
    typer.echo(f"card {card['card_id']}  {card['status']}")


@cards.command("freeze")
def cards_freeze(card_id: str, reason: Annotated[str, typer.Option(help="why (kept in the history)")]) -> None:
    """Freeze a card: every authorization after this is declined."""
    _card_status(card_id, "freeze", reason)


@cards.command("unfreeze")
def cards_unfreeze(card_id: str, reason: Annotated[str, typer.Option(help="why")]) -> None:
    """Unfreeze a card."""
    _card_status(card_id, "unfreeze", reason)


@wallets.command("velocity")
def wallets_velocity(
    wallet: Annotated[str, typer.Argument(help="the wallet")],
    max_authorizations: Annotated[
        int | None, typer.Option("--max", help="at most this many authorizations per window (omit to lift)")
    ] = None,
    per: Annotated[str, typer.Option(help="the rolling window: minute or hour")] = "minute",
    card: Annotated[str | None, typer.Option(help="only this card (default: the whole wallet)")] = None,
) -> None:
    """Limit how many authorizations a card or the wallet may ask per rolling minute or hour."""
    if per not in ("minute", "hour"):
        raise typer.BadParameter(f"--per is minute or hour, not {per!r}")
    _client().set_velocity(wallet, card, max_authorizations, per)
    scope = f"card {card}" if card else f"wallet {wallet}"
    said = "no velocity limit" if max_authorizations is None else f"at most {max_authorizations} per {per}"
    typer.echo(f"{scope}: {said}")


# A cap option's value: an amount in major units, or "none" to remove the cap.
CapOption = Annotated[str | None, typer.Option(help='in major units, e.g. 50 or 12.50; "none" removes it')]


def _merged_caps(limits: dict[str, Any], currency: str, given: dict[str, str | None]) -> dict[str, Any]:
    """`limits` (the caps as set) with the caps given on the command line replaced or removed."""
    caps = dict(limits)
    for name, value in given.items():
        if value is not None:
            caps[name] = None if value.strip().lower() == "none" else _money_in(value, currency)
    return caps


@wallets.command("caps")
def wallets_caps(  # noqa: PLR0917 - one option per cap
    wallet: Annotated[str, typer.Argument(help="the wallet")],
    per_authorization: CapOption = None,
    rolling_24h: Annotated[str | None, typer.Option("--rolling-24h", help="sliding 24 h; none removes it")] = None,
    weekly: CapOption = None,
    monthly: CapOption = None,
    yearly: CapOption = None,
    all_time: CapOption = None,
    per_trace: CapOption = None,
) -> None:
    """Set the wallet's caps (weeks, months, years in its time zone); the caps not given stay as they are."""
    client = _client()
    current = client.wallet(wallet)
    given = {
        "per_authorization": per_authorization, "rolling_24h": rolling_24h, "weekly": weekly, "monthly": monthly,
        "yearly": yearly, "all_time": all_time, "per_trace": per_trace,
    }  # fmt: skip
    updated = client.set_caps(wallet, _merged_caps(current["limits"], current["currency"], given))
    typer.echo(f"wallet {updated['wallet_id']}")
    for cap in updated["caps"]:
        typer.echo(f"  {_cap_line(cap)}")


@cards.command("caps")
def cards_caps(  # noqa: PLR0917 - one option per cap
    card_id: Annotated[str, typer.Argument(help="the card")],
    per_authorization: CapOption = None,
    rolling_24h: Annotated[str | None, typer.Option("--rolling-24h", help="sliding 24 h; none removes it")] = None,
    weekly: CapOption = None,
    monthly: CapOption = None,
    yearly: CapOption = None,
    all_time: CapOption = None,
) -> None:
    """Set the card's own caps; the caps not given stay as they are."""
    client = _client()
    current = client.card(card_id)
    currency = client.wallet(current["wallet_id"])["currency"]  # a card's caps are in its wallet's currency
    given = {
        "per_authorization": per_authorization, "rolling_24h": rolling_24h, "weekly": weekly, "monthly": monthly,
        "yearly": yearly, "all_time": all_time,
    }  # fmt: skip
    updated = client.set_card_caps(card_id, _merged_caps(current["limits"], currency, given))
    typer.echo(spendable_headline(updated))
    for cap in updated["caps"]:
        typer.echo(f"  {_cap_line(cap)}")


@wallets.command("countries")
def wallets_countries(
    wallet: Annotated[str, typer.Argument(help="the wallet")],
    allow: Annotated[list[str] | None, typer.Option(help="only merchants in this country (repeat), e.g. US")] = None,
    block: Annotated[list[str] | None, typer.Option(help="never merchants in this country (repeat)")] = None,
    card: Annotated[str | None, typer.Option(help="only this card (default: every card)")] = None,
) -> None:
    """Where a card (or every card) may buy, by the merchant's country; neither option lifts the rules."""
    allowed = sorted({country.upper() for country in allow or ()})
    blocked = sorted({country.upper() for country in block or ()})
    _client().set_merchant_countries(wallet, card, allowed, blocked)
    scope = f"card {card}" if card else f"every card of {wallet}"
    if not allowed and not blocked:
        typer.echo(f"{scope}: any merchant country")
        return
    said = [f"only in {', '.join(allowed)}"] if allowed else []
    said += [f"never in {', '.join(blocked)}"] if blocked else []
    typer.echo(f"{scope}: {'; '.join(said)}")


@wallets.command("decline-streak")
def wallets_decline_streak(
    wallet: Annotated[str, typer.Argument(help="the wallet")],
    max_declines: Annotated[
        int | None, typer.Option("--max", help="freeze a card after this many declines in a row (omit to lift)")
    ] = None,
    card: Annotated[str | None, typer.Option(help="only this card (default: every card)")] = None,
) -> None:
    """Freeze a card automatically after declines in a row (a runaway agent); said in Slack."""
    _client().set_decline_streak(wallet, card, max_declines)
    scope = f"card {card}" if card else f"every card of {wallet}"
    said = "never frozen for declines" if max_declines is None else f"frozen after {max_declines} declines in a row"
    typer.echo(f"{scope}: {said}")


@trace.command("bind")
def trace_bind(
    wallet: Annotated[str, typer.Option(help="the wallet")],
    trace_id: Annotated[str, typer.Argument(help="the trace id (a task, a PR)")],
    card: Annotated[str | None, typer.Option(help="only this card (default: the whole wallet)")] = None,
    cap: Annotated[str | None, typer.Option(help="its own cap in major units (default: the wallet's)")] = None,
    currency: Annotated[str, typer.Option(help="of --cap")] = "USD",
) -> None:
    """Authorizations after this carry the trace id and count against its cap."""
    _client().bind_trace(wallet, trace_id, card, None if cap is None else _money_in(cap, currency))
    typer.echo(f"trace {trace_id} bound to {card or 'wallet ' + wallet}")


@app.command()
def transactions(
    card: Annotated[str | None, typer.Option(help="a card's authorizations")] = None,
    trace_id: Annotated[str | None, typer.Option("--trace", help="a trace's authorizations")] = None,
    limit: Annotated[int, typer.Option(help="how many, newest first")] = 50,
) -> None:
    """A card's or a trace's authorizations, newest first."""
    if (card is None) == (trace_id is None):
        raise typer.BadParameter("give --card or --trace")
    for row in _client().transactions(card_id=card, trace_id=trace_id, limit=limit):
        outcome = "approved" if row["approved"] else f"declined ({row['reason']})"
        typer.echo(
            f"{row['decided_at'][:19]}  {row['issuer_authorization_id']:<24} {money_text(row['amount']):>10}"
            f"  {row['merchant']['name'][:24]:<24}  {outcome}"
        )


@app.command()
def simulate(  # noqa: PLR0917 - one option per part of an authorization
    card: Annotated[str, typer.Option(help="the card to charge")],
    amount: Annotated[str, typer.Option(help="in major units, e.g. 2.50")],
    currency: Annotated[str, typer.Option(help="of --amount")] = "USD",
    merchant: Annotated[str, typer.Option(help="the merchant's name")] = "OpenAI API",
    mcc: Annotated[str, typer.Option(help="the merchant's category code")] = "5734",
    country: Annotated[str, typer.Option(help="the merchant's country (ISO 3166-1 alpha-2)")] = "US",
    count: Annotated[int, typer.Option(help="how many authorizations, one after the other")] = 1,
    dry_run: Annotated[  # noqa: FBT002 - a command-line flag
        bool, typer.Option("--dry-run", help="only say what the decision would be: nothing held, nothing recorded")
    ] = False,
    increment_of: Annotated[
        str | None, typer.Option(help="an approved authorization on the card: ask to add --amount to it (Stripe)")
    ] = None,
) -> None:
    """Send issuer traffic through the real webhook path, signed as the card's issuer signs it; with
    --dry-run, only ask what the decision would be now (nothing held, no decision recorded).
    """
    client = _client()
    minor = _money_in(amount, currency)["amount_minor"]
    shop = MerchantData(
        name=merchant, mcc=mcc, network_id=merchant.lower().replace(" ", "-")[:64], country=country.upper()
    )
    if dry_run:
        _dry_run(client, card, _money_in(amount, currency), shop)
        return
    details = client.card(card)
    settings = load_settings()
    increment = None if increment_of is None else (increment_of, _approved_minor(client, card, increment_of))
    for _ in range(count):
        try:
            signed = simulated_authorization(
                settings,
                details["issuer"],
                details["issuer_card_token"],
                amount_minor=minor,
                currency=currency,
                merchant=shop,
                increment_of=increment,
            )
        except ValueError as error:  # a secret missing, an increment on a card of an issuer without them
            raise typer.BadParameter(str(error)) from None
        response = httpx.post(f"{client.url}{signed.path}", content=signed.body, headers=signed.headers, timeout=10)
        typer.echo(f"{signed.authorization_id}  {money_text({'amount_minor': minor, 'currency': currency.upper()})}"
                   f"  → {response.status_code} {response.text}")  # fmt: skip


def _approved_minor(client: ApiClient, card: str, authorization_id: str) -> int:
    """What the card's authorization `authorization_id` was approved for (an increment's base)."""
    for row in client.transactions(card_id=card, limit=200):
        if row["issuer_authorization_id"] == authorization_id and row["approved"]:
            return int(row["amount"]["amount_minor"])
    raise typer.BadParameter(f"no approved authorization {authorization_id!r} among card {card}'s latest 200")


def _dry_run(client: ApiClient, card: str, amount: dict[str, Any], shop: MerchantData) -> None:
    merchant = {"name": shop.name, "mcc": shop.mcc, "network_id": shop.network_id, "country": shop.country}
    outcome = client.dry_run(card, amount, merchant)
    verdict = "approved" if outcome["approved"] else f"declined: {outcome['reason']}"
    typer.echo(f"dry run  {money_text(outcome['amount'])} at {shop.name}  → would be {verdict}  (nothing held)")
    typer.echo(f"  {spendable_headline(outcome)}")
    for cap in outcome["caps"]:
        typer.echo(f"  {_cap_line(cap)}")


@app.command()
def migrate() -> None:
    """Apply pending SQL migrations."""
    raise typer.Exit(migrate_main([]))


@app.command()
def topics() -> None:
    """Create missing Kafka topics with the configured partitions."""
    settings = load_settings()
    specs = project_topics(settings)
    asyncio.run(ensure_topics(settings.kafka_bootstrap_servers, specs))
    typer.echo(f"{len(specs)} topics present: {', '.join(spec.name for spec in specs)}")


@app.command()
def health(timeout_s: Annotated[float, typer.Option(help="keep trying this long")] = 0.0) -> None:
    """Check Kafka and Postgres."""
    settings = load_settings()
    results = asyncio.run(
        wait_until_healthy(settings.kafka_bootstrap_servers, settings.database_url.get_secret_value(), timeout_s)
    )
    for result in results:
        typer.echo(f"{result.name}: {'ok' if result.healthy else 'unhealthy'} ({result.detail})")
    raise typer.Exit(0 if all(result.healthy for result in results) else 1)


@keys.command("create")
def keys_create(
    scope: Annotated[Scope, typer.Option(help="admin: everything; read: read only; agent: one wallet")],
    wallet: Annotated[str | None, typer.Option(help="the wallet of an agent key")] = None,
    label: Annotated[str, typer.Option(help="who or what holds the key")] = "",
) -> None:
    """Print a new API key (shown once; only its hash is stored)."""
    if (scope == Scope.AGENT) != (wallet is not None):
        typer.echo("error: an agent key needs --wallet; admin and read keys take none", err=True)
        raise typer.Exit(2)

    async def create() -> str:
        pool = await create_pool(load_settings())
        try:
            async with pool.acquire() as connection:
                await apply_migrations(connection)  # a fresh install bootstraps itself with its first key
            return await create_key(pool, scope, wallet, label)
        finally:
            await pool.close()

    typer.echo(asyncio.run(create()))


@ledger.command("reconcile")
def ledger_reconcile() -> None:
    """Compare the ledger's held and spent balances with the authorizer's, per card and wallet.

    Exits 1 when any differ. Run it when traffic is quiet: an event the ledger has not yet consumed
    shows as a difference until it has.
    """

    async def compare() -> tuple[int, list[Mismatch]]:
        connection = await asyncpg.connect(dsn=load_settings().database_url.get_secret_value(), timeout=10)
        try:
            return await reconcile(connection)
        finally:
            await connection.close()

    cards, mismatches = asyncio.run(compare())
    for mismatch in mismatches:
        typer.echo(f"MISMATCH {mismatch}")
    typer.echo(f"{cards} cards compared, {len(mismatches)} mismatches")
    raise typer.Exit(1 if mismatches else 0)


@ledger.command("export")
def ledger_export(
    by: Annotated[ExportGrouping, typer.Option(help="one row per trace, wallet, or wallet and day")],
    since: Annotated[datetime, typer.Option(help="from this time (inclusive; UTC unless it says)")],
    until: Annotated[datetime | None, typer.Option(help="to this time (exclusive); default: now")] = None,
) -> None:
    """Spend as CSV on stdout, for spreadsheets and finance."""
    end = until or datetime.now(UTC)
    start, end = (moment if moment.tzinfo else moment.replace(tzinfo=UTC) for moment in (since, end))
    if end <= start:
        typer.echo("error: --until must be after --since", err=True)
        raise typer.Exit(2)

    async def export() -> str:
        connection = await asyncpg.connect(dsn=load_settings().database_url.get_secret_value(), timeout=10)
        try:
            return await export_csv(connection, by.value, start, end)
        finally:
            await connection.close()

    typer.echo(asyncio.run(export()), nl=False)


def main(argv: list[str] | None = None) -> int:
    """The console script's entry: run the command, return its exit code (2 for a usage error)."""
    try:
        app(args=argv)
    except SystemExit as done:
        return done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    except ValidationError as error:  # settings missing or wrong: say which, in one line each
        for problem in error.errors():
            name = "PURSESTRINGS_" + "_".join(str(part) for part in problem["loc"]).upper()
            print(f"error: {name}: {problem['msg']}", file=sys.stderr)
        return 2
    except ApiError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except (OSError, asyncpg.PostgresError, MigrationError) as error:
        print(f"error: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

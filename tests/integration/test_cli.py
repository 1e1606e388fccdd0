"""The `pursestrings` command line against the real Postgres."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import asyncpg
import pytest

from services.cli import main
from services.gateway.keys import Scope, authenticate, create_key
from services.platform.settings import Settings
from tests.support.services import STRIPE_SECRET, gateway_settings, running_authorizer, running_gateway

LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \[")


@dataclass(frozen=True)
class Shell:
    """The CLI pointed at a gateway that a test runs (`settings`), with an admin `key`."""

    settings: Settings
    key: str
    run: Callable[..., Awaitable[str]]  # the CLI's output, the services' log lines left out


@pytest.fixture
async def shell(
    kafka_topics: Settings,
    database_url: str,
    pool: asyncpg.Pool,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> Shell:
    """The environment the CLI reads, for a gateway on `gateway_settings(kafka_topics)`."""
    settings = gateway_settings(kafka_topics)
    key = await create_key(pool, Scope.ADMIN, label="cli test")
    for name, value in {
        "PURSESTRINGS_API_URL": f"http://127.0.0.1:{settings.gateway_port}",
        "PURSESTRINGS_API_KEY": key,
        "PURSESTRINGS_DATABASE_URL": database_url,
        "PURSESTRINGS_STRIPE_WEBHOOK_SECRET": STRIPE_SECRET,
    }.items():
        monkeypatch.setenv(name, value)

    async def run(*arguments: str) -> str:
        code = await asyncio.to_thread(main, list(arguments))
        captured = capsys.readouterr()
        assert code == 0, captured.err
        # The services run in this process and log to the same stdout: keep the CLI's own lines.
        return "\n".join(line for line in captured.out.splitlines() if not LOG_LINE.match(line))

    return Shell(settings, key, run)


async def test_keys_create_prints_a_key_that_authenticates(
    database_url: str, pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`keys create --scope agent --wallet W` prints a key; only its hash is stored; it is that agent's."""
    monkeypatch.setenv("PURSESTRINGS_DATABASE_URL", database_url)
    code = await asyncio.to_thread(
        main, ["keys", "create", "--scope", "agent", "--wallet", "wal_cli", "--label", "research bot"]
    )
    key = capsys.readouterr().out.strip()
    stored = await pool.fetchval("SELECT count(*) FROM gateway.api_keys WHERE secret_hash LIKE '%' || $1", key[-8:])
    found = await authenticate(pool, key)
    assert (code, found and (found.scope, found.wallet_id, found.label), stored) == (
        0,
        (Scope.AGENT, "wal_cli", "research bot"),
        0,
    )


def test_usage_errors_say_what_is_wrong(
    database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An agent key without a wallet, an unknown scope, no database URL: exit 2 with a message."""
    monkeypatch.setenv("PURSESTRINGS_DATABASE_URL", database_url)
    codes = [main(["keys", "create", "--scope", "agent"]), main(["keys", "create", "--scope", "boss"])]
    monkeypatch.delenv("PURSESTRINGS_DATABASE_URL")
    monkeypatch.delenv("PURSESTRINGS_ENV_FILE", raising=False)
    codes.append(main(["keys", "create", "--scope", "admin"]))
    errors = capsys.readouterr().err
    assert (codes, "needs --wallet" in errors, "boss" in errors, "PURSESTRINGS_DATABASE_URL" in errors) == (
        [2, 2, 2],
        True,
        True,
        True,
    )


async def test_the_card_lifecycle_through_the_cli_and_the_real_api(
    kafka_topics: Settings, pool: asyncpg.Pool, shell: Shell
) -> None:
    """Wallets create → cards create --amount 10 → simulate $1.53 → balance says $8.47 of $10.00 →
    freeze → simulate is declined → transactions lists both.
    """
    settings, cli = shell.settings, shell.run

    async with running_authorizer(kafka_topics, pool), running_gateway(settings):
        created = await cli("wallets", "create", "--id", "wal_cli", "--label", "research")
        card = await cli("cards", "create", "--wallet", "wal_cli", "--amount", "10", "--id", "card_cli")
        approved = await cli("simulate", "--card", "card_cli", "--amount", "1.53")
        remaining = await cli("balance", "card_cli")
        frozen = await cli("cards", "freeze", "card_cli", "--reason", "runaway loop")
        declined = await cli("simulate", "--card", "card_cli", "--amount", "1")
        listed = await cli("transactions", "--card", "card_cli")
    assert (created.split()[:2], card.split()[:4], frozen.strip()) == (
        ["wallet", "wal_cli"],
        ["card", "card_cli", "$10.00", "active"],
        "card card_cli  frozen",
    )
    assert ('"approved":true' in approved, '"pursestrings_reason":"card_frozen"' in declined) == (True, True)
    assert remaining.splitlines()[0] == "Remaining: $8.47 of $10.00  (card_funded)"
    assert [("approved" in line, "card_frozen" in line) for line in listed.splitlines()] == [
        (False, True),
        (True, False),
    ]


async def test_simulate_asks_an_increment_of_an_approved_authorization(
    kafka_topics: Settings, pool: asyncpg.Pool, shell: Shell
) -> None:
    """`simulate --increment-of AUTH` sends Stripe's incremental authorization through the real
    webhook path: on a $10.00 card with $6.00 approved, +$3.00 is approved and +$2.00 more declined.
    """
    settings, cli = shell.settings, shell.run

    async with running_authorizer(kafka_topics, pool), running_gateway(settings):
        await cli("wallets", "create", "--id", "wal_inc")
        await cli("cards", "create", "--wallet", "wal_inc", "--amount", "10", "--id", "card_inc")
        first = await cli("simulate", "--card", "card_inc", "--amount", "6")
        authorization = first.split()[0]
        grown = await cli("simulate", "--card", "card_inc", "--amount", "3", "--increment-of", authorization)
        refused = await cli("simulate", "--card", "card_inc", "--amount", "2", "--increment-of", authorization)
        remaining = await cli("balance", "card_inc")
    assert (grown.split()[0].startswith(f"{authorization}:"), '"approved":true' in grown) == (True, True)
    assert '"pursestrings_reason":"card_funds_insufficient"' in refused
    assert remaining.splitlines()[0] == "Remaining: $1.00 of $10.00  (card_funded)"


async def test_a_velocity_limit_stops_a_tight_retry_loop_at_exactly_n(
    kafka_topics: Settings, pool: asyncpg.Pool, shell: Shell
) -> None:
    """`wallets velocity WAL --max 3 --card C`, then five $1.00 authorizations in a row through the
    real Stripe webhook path: three approved, two declined `velocity_limit`; the API shows the limit.
    """
    settings, cli = shell.settings, shell.run

    async with running_authorizer(kafka_topics, pool), running_gateway(settings) as api:
        await cli("wallets", "create", "--id", "wal_vel")
        await cli("cards", "create", "--wallet", "wal_vel", "--amount", "100", "--id", "card_vel")
        limited = await cli("wallets", "velocity", "wal_vel", "--max", "3", "--card", "card_vel")
        loop = await cli("simulate", "--card", "card_vel", "--amount", "1", "--count", "5")
        shown = (await api.get("/v1/wallets/wal_vel", headers={"Authorization": f"Bearer {shell.key}"})).json()
    answers = ['"approved":true' in line for line in loop.splitlines()]
    declined = ['"pursestrings_reason":"velocity_limit"' in line for line in loop.splitlines()]
    assert (limited, answers, declined) == (
        "card card_vel: at most 3 per minute",
        [True, True, True, False, False],
        [False, False, False, True, True],
    )
    assert shown["velocity"] == [{"card_id": "card_vel", "max_authorizations": 3, "per": "minute"}]


async def test_weekly_all_time_and_yearly_caps_and_country_lists_through_the_cli(
    kafka_topics: Settings, pool: asyncpg.Pool, shell: Shell
) -> None:
    """`wallets caps --weekly 6 --all-time 9` on a starter wallet keeps its other caps; through the
    real Stripe webhook path $4.00 is approved and $3.00 declined `wallet_weekly_cap`; the headline
    names the week, then the card's own yearly cap once set; `--weekly none` removes only that cap;
    `wallets countries --block RU` declines a Russian merchant and lets a US one through.
    """
    settings, cli = shell.settings, shell.run
    bearer = {"Authorization": f"Bearer {shell.key}"}

    async with running_authorizer(kafka_topics, pool), running_gateway(settings) as api:
        await cli("wallets", "create", "--id", "wal_per")
        await cli("cards", "create", "--wallet", "wal_per", "--amount", "100", "--id", "card_per")
        capped = await cli("wallets", "caps", "wal_per", "--weekly", "6", "--all-time", "9")
        approved = await cli("simulate", "--card", "card_per", "--amount", "4")
        declined = await cli("simulate", "--card", "card_per", "--amount", "3")
        weekly = await cli("balance", "card_per")
        yearly = await cli("cards", "caps", "card_per", "--yearly", "5")
        await cli("wallets", "caps", "wal_per", "--weekly", "none")
        limits = (await api.get("/v1/wallets/wal_per", headers=bearer)).json()["limits"]
        countries = await cli("wallets", "countries", "wal_per", "--block", "ru")
        russian = await cli("simulate", "--card", "card_per", "--amount", "0.50", "--country", "RU")
        american = await cli("simulate", "--card", "card_per", "--amount", "0.50", "--country", "US")
        shown = (await api.get("/v1/wallets/wal_per", headers=bearer)).json()["merchant_countries"]
    assert [line.split()[0] for line in capped.splitlines()[1:]] == [
        "per_authorization", "wallet_rolling_24h", "wallet_weekly", "wallet_monthly", "wallet_all_time",
    ]  # fmt: skip
    assert ('"approved":true' in approved, '"pursestrings_reason":"wallet_weekly_cap"' in declined) == (True, True)
    assert weekly.splitlines()[0] == "Remaining: $2.00 of $6.00  (wallet_weekly)"
    assert yearly.splitlines()[0] == "Remaining: $1.00 of $5.00  (card_yearly)"
    assert {name: (value or {}).get("amount_minor") for name, value in limits.items()} == {
        "per_authorization": 10_00, "rolling_24h": 50_00, "weekly": None, "monthly": 500_00, "yearly": None,
        "all_time": 9_00, "per_trace": 20_00,
    }  # fmt: skip
    assert countries == "every card of wal_per: never in RU"
    assert '"pursestrings_reason":"merchant_country_blocked"' in russian
    assert '"approved":true' in american
    assert shown == {"*": {"allow": [], "block": ["RU"]}}

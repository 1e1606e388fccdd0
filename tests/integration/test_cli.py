"""The `pursestrings` command line against the real Postgres."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from services.cli import main
from services.gateway.keys import Scope, authenticate


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

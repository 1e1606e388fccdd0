"""`pursestrings` command line (typer): operator tasks (migrate, topics, health, API keys).

The wallet, card and ledger commands talk to the management API (PURSESTRINGS_API_URL with
PURSESTRINGS_API_KEY); the operator tasks here need the database or Kafka directly. This module
never holds business rules.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Annotated

import asyncpg
import typer
from pydantic import ValidationError

from services.gateway.keys import Scope, create_key
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
    except (OSError, asyncpg.PostgresError, MigrationError) as error:
        print(f"error: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

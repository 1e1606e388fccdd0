"""Creating and dropping the throwaway databases of tests and benchmarks on the real Postgres."""

from __future__ import annotations

import asyncio

import asyncpg


async def admin_execute(database_url: str, *statements: str) -> None:
    """Run `statements` on a connection of their own (none is held between them and a test)."""
    connection = await asyncpg.connect(dsn=database_url, timeout=10)
    try:
        for statement in statements:
            await connection.execute(statement)
    finally:
        await connection.close()


async def drop_database(database_url: str, name: str, attempts: int = 20) -> None:
    """Drop database `name`. An autovacuum worker (the superuser's) may be in it just then, and FORCE
    may not end another role's backend: try again every half second, and raise the last refusal
    once `attempts` are spent.
    """
    for attempt in range(attempts):
        try:
            await admin_execute(database_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        except (asyncpg.InsufficientPrivilegeError, asyncpg.ObjectInUseError):
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(0.5)
        else:
            return

"""Applies the numbered SQL migrations in `schemas/sql/` (`NNNN_name.sql`) in order, once each.

Each file runs in its own transaction under an advisory lock, so services starting together
apply it once; an applied file whose text has changed stops everything (edit by adding a file).
Why our own few lines rather than a tool: docs/decisions/0003-migrations.md.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from services.platform.settings import load_settings

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "schemas" / "sql"
_FILE_NAME = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.sql$")
# An arbitrary constant shared by every pursestrings process: "migrations are being applied".
_ADVISORY_LOCK_KEY = 7_301_955_114


class MigrationError(RuntimeError):
    """The migrations on disk and in the database disagree, or a file is misnamed."""


@dataclass(frozen=True)
class Migration:
    """One numbered SQL file."""

    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        """SHA-256 of the file's text: an applied migration must never change."""
        return hashlib.sha256(self.sql.encode("utf-8")).hexdigest()


def discover(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Every migration file, in version order; gaps and duplicates are errors."""
    migrations = []
    for path in sorted(directory.glob("*.sql")):
        match = _FILE_NAME.match(path.name)
        if match is None:
            raise MigrationError(f"{path.name}: migration files are named NNNN_lower_snake.sql")
        migrations.append(Migration(int(match["version"]), match["name"], path.read_text(encoding="utf-8")))
    versions = [migration.version for migration in migrations]
    if versions != list(range(1, len(versions) + 1)):
        raise MigrationError(f"migration versions must run 1, 2, 3... without gaps; found {versions}")
    return migrations


async def apply_migrations(connection: asyncpg.Connection, migrations: list[Migration] | None = None) -> list[int]:
    """Apply what is missing; return the versions applied now."""
    migrations = discover() if migrations is None else migrations
    await connection.execute("SELECT pg_advisory_lock($1)", _ADVISORY_LOCK_KEY)
    try:
        await connection.execute(
            """CREATE TABLE IF NOT EXISTS public.schema_migrations (
                   version integer PRIMARY KEY,
                   name text NOT NULL,
                   checksum text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        applied = {
            row["version"]: row["checksum"]
            for row in await connection.fetch("SELECT version, checksum FROM public.schema_migrations")
        }
        _check_history(migrations, applied)
        done = []
        for migration in migrations:
            if migration.version in applied:
                continue
            async with connection.transaction():
                await connection.execute(migration.sql)
                await connection.execute(
                    "INSERT INTO public.schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    migration.version,
                    migration.name,
                    migration.checksum,
                )
            done.append(migration.version)
        return done
    finally:
        await connection.execute("SELECT pg_advisory_unlock($1)", _ADVISORY_LOCK_KEY)


def _check_history(migrations: list[Migration], applied: dict[int, str]) -> None:
    known = {migration.version: migration for migration in migrations}
    for version, checksum in sorted(applied.items()):
        if version not in known:
            raise MigrationError(f"database has migration {version}, which this code does not know (older code?)")
        if known[version].checksum != checksum:
            raise MigrationError(f"migration {version}_{known[version].name} was edited after it was applied")


async def _main(database_url: str) -> int:
    connection = await asyncpg.connect(dsn=database_url, timeout=10)
    try:
        done = await apply_migrations(connection)
    finally:
        await connection.close()
    print(f"applied migrations {done}" if done else "database schema is up to date")
    return 0


def main(argv: list[str] | None = None) -> int:
    """CLI entry (`make migrate`): apply every pending migration to PURSESTRINGS_DATABASE_URL."""
    argparse.ArgumentParser(description=__doc__).parse_args(argv)
    settings = load_settings()
    return asyncio.run(_main(settings.database_url.get_secret_value()))


if __name__ == "__main__":
    sys.exit(main())

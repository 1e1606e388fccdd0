"""What every benchmark needs: a fresh database, and systems under test run as processes of their own."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from pydantic import SecretStr

from services.platform.kafka import delete_topics_with_prefix
from services.platform.migrations import apply_migrations
from services.platform.settings import Settings


def service_command(module: str, profile: Path | None = None) -> list[str]:
    """`python -m <module>`; with `profile`, under py-spy (a dev dependency), which writes the
    process's folded stacks there when it ends.
    """
    command = [sys.executable, "-m", module]
    if profile is None:
        return command
    profiler = Path(sys.executable).with_name("py-spy")
    return [str(profiler), "record", "--format", "raw", "--rate", "250", "--output", str(profile), "--", *command]


@contextmanager
def process(command: list[str], settings: Settings, **env: str) -> Iterator[list[str]]:
    """Run `command` with the bench's settings in its environment; yield its log lines at exit."""
    environment = os.environ | {
        "PURSESTRINGS_DATABASE_URL": settings.database_url.get_secret_value(),
        "PURSESTRINGS_TOPIC_PREFIX": settings.topic_prefix,
        "PURSESTRINGS_KAFKA_PARTITIONS": str(settings.kafka_partitions),
        "PURSESTRINGS_LOG_FORMAT": "json",
        "PURSESTRINGS_LOG_LEVEL": "info",
        **env,
    }
    # Output goes to a file, not a pipe: a pipe nobody reads fills up and stalls a chatty process.
    with tempfile.TemporaryFile() as output:
        process = subprocess.Popen(command, env=environment, stdout=output, stderr=subprocess.STDOUT)  # noqa: S603 - our own modules
        lines: list[str] = []
        try:
            yield lines
        finally:
            if command[0].endswith("py-spy"):
                # The profiler writes its output once the profiled process ends: stop that one.
                subprocess.run(["pkill", "-TERM", "-P", str(process.pid)], check=False)  # noqa: S603, S607 - procps, fixed arguments
            else:
                process.send_signal(signal.SIGTERM)
            process.wait(timeout=180)  # an overloaded gateway has expiries to publish before it stops
            output.seek(0)
            lines += output.read().decode(errors="replace").splitlines()


@asynccontextmanager
async def fresh_database(base: Settings, label: str = "bench") -> AsyncIterator[Settings]:
    """A new database for this run (so no earlier run's decisions answer this one's requests).

    At the end the database is dropped and the run's topics (named with its prefix) deleted.
    """
    url = base.database_url.get_secret_value()
    name = f"pursestrings_{label}_{uuid.uuid4().hex[:8]}"
    # A connection per statement, none held across the run: a chaos run restarts Postgres under it.
    await _admin(url, f'CREATE DATABASE "{name}"')
    fresh = urlunsplit(urlsplit(url)._replace(path=f"/{name}"))
    try:
        connection = await asyncpg.connect(dsn=fresh)
        try:
            await apply_migrations(connection)
        finally:
            await connection.close()
        yield base.model_copy(update={"database_url": SecretStr(fresh)})
    finally:
        await _admin(url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await delete_topics_with_prefix(base.kafka_bootstrap_servers, base.topic_prefix)


async def _admin(url: str, statement: str) -> None:
    connection = await asyncpg.connect(dsn=url)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()

"""`pursestrings` command line: operator tasks over the platform plumbing (migrate, topics, health).

Later issues add wallet, card and ledger commands here; this module never holds business rules.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from services.platform.health import wait_until_healthy
from services.platform.kafka import ensure_topics, project_topics
from services.platform.migrations import main as migrate_main
from services.platform.settings import load_settings


def main(argv: list[str] | None = None) -> int:
    """Parse the subcommand and run it; the exit code says whether it worked."""
    parser = argparse.ArgumentParser(prog="pursestrings", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("migrate", help="apply pending SQL migrations")
    commands.add_parser("topics", help="create missing Kafka topics with the configured partitions")
    health = commands.add_parser("health", help="check Kafka and Postgres")
    health.add_argument("--timeout-s", type=float, default=0.0)
    arguments = parser.parse_args(argv)
    if arguments.command == "migrate":
        return migrate_main([])
    settings = load_settings()
    if arguments.command == "topics":
        specs = project_topics(settings)
        asyncio.run(ensure_topics(settings.kafka_bootstrap_servers, specs))
        print(f"{len(specs)} topics present: {', '.join(spec.name for spec in specs)}")
        return 0
    results = asyncio.run(
        wait_until_healthy(
            settings.kafka_bootstrap_servers, settings.database_url.get_secret_value(), arguments.timeout_s
        )
    )
    for result in results:
        print(f"{result.name}: {'ok' if result.healthy else 'unhealthy'} ({result.detail})")
    return 0 if all(result.healthy for result in results) else 1


if __name__ == "__main__":
    sys.exit(main())

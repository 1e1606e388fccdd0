"""asyncpg pool factory with bounded size and timeouts; knows nothing about any table."""

from __future__ import annotations

import asyncpg

from services.platform.settings import Settings


async def create_pool(settings: Settings) -> asyncpg.Pool:
    """A pool whose every connection has a statement timeout, so no query waits forever."""
    timeout_ms = int(settings.postgres_command_timeout_s * 1000)
    pool: asyncpg.Pool = await asyncpg.create_pool(
        dsn=settings.database_url.get_secret_value(),
        min_size=settings.postgres_pool_min_size,
        max_size=settings.postgres_pool_max_size,
        command_timeout=settings.postgres_command_timeout_s,
        server_settings={
            "application_name": settings.service_name,
            "statement_timeout": str(timeout_ms),
            "idle_in_transaction_session_timeout": str(timeout_ms * 6),
        },
    )
    return pool

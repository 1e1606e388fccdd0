"""Wiring for the authorizer: builds the pool and the consumer loop from settings; the one place
it connects. Nothing connects at import.
"""

from __future__ import annotations

import asyncpg

from services.authorizer.rates import load_rate_table
from services.authorizer.runtime import Authorizer
from services.authorizer.state import NO_RATES
from services.platform.postgres import create_pool
from services.platform.service import Service
from services.platform.settings import Settings

DEFAULT_HEALTH_PORT = 8081


def build(settings: Settings, health_port: int = DEFAULT_HEALTH_PORT) -> Service:
    """The authorizer process, ready for `services.platform.service.run`."""
    service = Service(name="authorizer", settings=settings, health_port=health_port)
    parts: dict[str, object] = {}

    async def start() -> None:
        pool: asyncpg.Pool = await create_pool(settings)
        rates = NO_RATES if settings.fx_rates_file is None else load_rate_table(settings.fx_rates_file)
        authorizer = Authorizer(settings, pool, rates=rates)
        await authorizer.start()
        parts.update(pool=pool, authorizer=authorizer)

    async def run() -> None:
        authorizer = parts["authorizer"]
        assert isinstance(authorizer, Authorizer)  # noqa: S101 - set by start(), which runs first
        await authorizer.run()

    async def stop() -> None:
        authorizer, pool = parts.get("authorizer"), parts.get("pool")
        if isinstance(authorizer, Authorizer):
            await authorizer.stop()
        if isinstance(pool, asyncpg.Pool):
            await pool.close()

    service.on_start.append(start)
    service.background.append(run)
    service.on_stop.append(stop)
    return service

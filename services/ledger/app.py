"""Wiring for the ledger service: builds its pool and consumer loop from settings; the one place it
connects. Nothing connects at import.
"""

from __future__ import annotations

import asyncpg

from services.ledger.consumer import Ledger
from services.platform.postgres import create_pool
from services.platform.service import Service
from services.platform.settings import Settings

DEFAULT_HEALTH_PORT = 8082


def build(settings: Settings, health_port: int = DEFAULT_HEALTH_PORT) -> Service:
    """The ledger process, ready for `services.platform.service.run`."""
    service = Service(name="ledger", settings=settings, health_port=health_port)
    parts: dict[str, object] = {}

    async def start() -> None:
        pool: asyncpg.Pool = await create_pool(settings)
        ledger = Ledger(settings, pool)
        await ledger.start()
        parts.update(pool=pool, ledger=ledger)

    async def run() -> None:
        ledger = parts["ledger"]
        assert isinstance(ledger, Ledger)  # noqa: S101 - set by start(), which runs first
        await ledger.run()

    async def stop() -> None:
        ledger, pool = parts.get("ledger"), parts.get("pool")
        if isinstance(ledger, Ledger):
            await ledger.stop()
        if isinstance(pool, asyncpg.Pool):
            await pool.close()

    service.on_start.append(start)
    service.background.append(run)
    service.on_stop.append(stop)
    return service

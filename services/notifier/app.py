"""Wiring for the notifier: its HTTP app (Slack interactivity, /healthz, /metrics) on
PURSESTRINGS_NOTIFIER_PORT, the consumer, the Slack delivery loop and the sweep. Nothing connects
at import.
"""

from __future__ import annotations

import asyncio

import asyncpg
import uvicorn

from services.notifier.core import Notifier
from services.notifier.http import create_app
from services.notifier.slack import delivery_loop, web_client
from services.platform.postgres import create_pool
from services.platform.service import Service
from services.platform.settings import Settings

DEFAULT_HEALTH_PORT = 8083  # the notifier's own HTTP port; see Settings.notifier_port


def build(settings: Settings, _health_port: int = DEFAULT_HEALTH_PORT) -> Service:  # noqa: C901 - its steps, together
    """The notifier process, ready for `services.platform.service.run`."""
    service = Service(name="notifier", settings=settings, health_port=None)
    parts: dict[str, object] = {}

    def running() -> Notifier | None:
        notifier = parts.get("notifier")
        return notifier if isinstance(notifier, Notifier) else None

    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings, running),
            host=settings.notifier_host,
            port=settings.notifier_port,
            lifespan="off",
            log_config=None,
            access_log=False,
        )
    )

    async def start() -> None:
        pool: asyncpg.Pool = await create_pool(settings)
        notifier = Notifier(settings, pool)
        await notifier.start()
        parts.update(pool=pool, notifier=notifier)
        serving = asyncio.create_task(server.serve())
        parts["serving"] = serving
        while not server.started:
            if serving.done():
                serving.result()
                raise RuntimeError("the notifier's HTTP server stopped before it started")
            await asyncio.sleep(0.05)

    def notifier() -> Notifier:
        found = running()
        assert found is not None  # noqa: S101 - set by start(), which runs first
        return found

    async def consume() -> None:
        await notifier().run()

    async def deliver() -> None:
        token = settings.slack_bot_token
        client = None if token is None else web_client(
            token.get_secret_value(), settings.slack_api_url, settings.slack_timeout_s
        )  # fmt: skip
        pool = parts["pool"]
        assert isinstance(pool, asyncpg.Pool)  # noqa: S101 - set by start()
        await delivery_loop(pool, client, notifier().owed)

    async def sweep() -> None:
        await notifier().sweep_loop()

    async def serve() -> None:
        serving = parts["serving"]
        assert isinstance(serving, asyncio.Task)  # noqa: S101 - set by start()
        await serving

    async def stop() -> None:
        server.should_exit = True
        serving = parts.get("serving")
        if isinstance(serving, asyncio.Task) and not serving.done():
            await serving
        found, pool = running(), parts.get("pool")
        if found is not None:
            await found.stop()
        if isinstance(pool, asyncpg.Pool):
            await pool.close()

    service.on_start.append(start)
    service.background.extend([consume, deliver, sweep, serve])
    service.on_stop.append(stop)
    return service

"""Wiring for the gateway service: the ASGI app served by uvicorn on PURSESTRINGS_GATEWAY_PORT
(127.0.0.1:8080 by default), which answers /healthz itself. Nothing connects at import.
"""

from __future__ import annotations

import asyncio

import uvicorn

from services.gateway.http import create_app
from services.platform.service import Service
from services.platform.settings import Settings

DEFAULT_HEALTH_PORT = 8080  # the gateway's own HTTP port; see Settings.gateway_port


def build(settings: Settings, _health_port: int = DEFAULT_HEALTH_PORT) -> Service:
    """The gateway process, ready for `services.platform.service.run`."""
    service = Service(name="gateway", settings=settings, health_port=None)
    config = uvicorn.Config(
        create_app(settings),
        host=settings.gateway_host,
        port=settings.gateway_port,
        lifespan="on",
        http="httptools",
        proxy_headers=False,  # nothing here reads the client's address; one middleware less per request
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=10,  # requests in flight end by their deadline anyway; a stop must end
    )
    server = uvicorn.Server(config)
    serving: dict[str, asyncio.Task[None]] = {}

    async def start() -> None:
        serving["task"] = asyncio.create_task(server.serve())
        while not server.started:
            if serving["task"].done():
                serving["task"].result()  # raises why it could not start (port taken, Kafka down...)
                raise RuntimeError("the gateway's HTTP server stopped before it started")
            await asyncio.sleep(0.05)

    async def run() -> None:
        # Shielded: when the service stops, cancelling this waiter must not cancel the server itself;
        # stop() asks it to exit and lets it finish its graceful shutdown.
        await asyncio.shield(serving["task"])

    async def stop() -> None:
        server.should_exit = True
        task = serving.get("task")
        if task is not None and not task.done():
            await task

    service.on_start.append(start)
    service.background.append(run)
    service.on_stop.append(stop)
    return service

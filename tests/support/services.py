"""Services run inside a test's event loop: the authorizer, and the gateway served by uvicorn."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import httpx
import uvicorn
from pydantic import SecretStr

from services.authorizer.runtime import Authorizer
from services.gateway.http import create_app
from services.platform.settings import Settings
from tests.support.infra import free_port

STRIPE_SECRET = "whsec_stripe_test"  # noqa: S105 - test secrets
LITHIC_SECRET = "whsec_bGl0aGljLXRlc3Qtc2VjcmV0"  # noqa: S105
GENERIC_SECRET = "generic-test-secret"  # noqa: S105


@asynccontextmanager
async def running_authorizer(settings: Settings, pool: asyncpg.Pool) -> AsyncIterator[Authorizer]:
    """An authorizer consuming until the block ends."""
    running = Authorizer(settings, pool)
    await running.start()
    task = asyncio.create_task(running.run())
    try:
        yield running
    finally:
        task.cancel()
        await running.stop()


def gateway_settings(settings: Settings, deadline_ms: int = 1_000) -> Settings:
    """`settings` with webhook secrets, a free port and a short deadline."""
    return settings.model_copy(
        update={
            "stripe_webhook_secret": SecretStr(STRIPE_SECRET),
            "lithic_webhook_secret": SecretStr(LITHIC_SECRET),
            "generic_webhook_secret": SecretStr(GENERIC_SECRET),
            "gateway_port": free_port(),
            "auth_deadline_ms": deadline_ms,
        }
    )


@asynccontextmanager
async def running_gateway(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The gateway app on uvicorn at `settings.gateway_port`; a client for it."""
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings), host="127.0.0.1", port=settings.gateway_port, lifespan="on", log_config=None
        )
    )
    serving = asyncio.create_task(server.serve())
    while not server.started:
        if serving.done():
            raise RuntimeError("the gateway stopped before it started")
        await asyncio.sleep(0.02)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{settings.gateway_port}", timeout=30) as client:
            yield client
    finally:
        server.should_exit = True
        await serving

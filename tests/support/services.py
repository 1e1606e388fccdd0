"""Services run inside a test's event loop: the authorizer, the gateway served by uvicorn, and the
notifier with the Slack stand-in.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import asyncpg
import httpx
import uvicorn
from pydantic import SecretStr

from services.authorizer.runtime import Authorizer
from services.authorizer.state import NO_RATES, RateTable
from services.gateway.http import create_app
from services.notifier.core import Notifier
from services.notifier.http import create_app as create_notifier_app
from services.notifier.slack import delivery_loop, web_client
from services.notifier.standin import Workspace
from services.notifier.standin import create_app as create_standin
from services.platform.settings import Settings
from tests.support.infra import free_port

STRIPE_SECRET = "whsec_stripe_test"  # noqa: S105 - test secrets
LITHIC_SECRET = "whsec_bGl0aGljLXRlc3Qtc2VjcmV0"  # noqa: S105
GENERIC_SECRET = "generic-test-secret"  # noqa: S105


class Consumer(Protocol):
    """What runs in a test's event loop: the authorizer, the ledger, the notifier."""

    async def start(self) -> None: ...  # noqa: D102
    async def run(self) -> None: ...  # noqa: D102
    async def stop(self) -> None: ...  # noqa: D102


@asynccontextmanager
async def consuming(*consumers: Consumer) -> AsyncIterator[None]:
    """Start each, run each in the background until the block ends, then stop each."""
    for consumer in consumers:
        await consumer.start()
    tasks = [asyncio.create_task(consumer.run()) for consumer in consumers]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        for consumer in consumers:
            await consumer.stop()


@asynccontextmanager
async def running_authorizer(
    settings: Settings, pool: asyncpg.Pool, rates: RateTable = NO_RATES
) -> AsyncIterator[Authorizer]:
    """An authorizer (with exchange `rates`) consuming until the block ends."""
    running = Authorizer(settings, pool, rates=rates)
    async with consuming(running):
        yield running


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


SLACK_SIGNING_SECRET = "test-slack-signing-secret"  # noqa: S105 - a test value
SLACK_TOKEN = "xoxb-test-token"  # noqa: S105 - a test value


@asynccontextmanager
async def serving(app: Any, port: int) -> AsyncIterator[None]:
    """`app` on uvicorn at 127.0.0.1:`port` until the block ends."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_config=None))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("the server stopped before it started")
        await asyncio.sleep(0.02)
    try:
        yield
    finally:
        server.should_exit = True
        await task


@dataclass
class SlackLoop:
    """A running notifier with the Slack stand-in: its settings, the stand-in's workspace and URL."""

    settings: Settings
    notifier: Notifier
    workspace: Workspace
    standin_url: str
    notifier_url: str


@asynccontextmanager
async def running_notifier_with_slack(settings: Settings, pool: asyncpg.Pool) -> AsyncIterator[SlackLoop]:
    """The notifier (consumer, interactivity endpoint, Slack delivery) and the stand-in it talks to."""
    standin_port = free_port()
    settings = settings.model_copy(
        update={
            "notifier_port": free_port(),
            "slack_signing_secret": SecretStr(SLACK_SIGNING_SECRET),
            "slack_bot_token": SecretStr(SLACK_TOKEN),
            "slack_api_url": f"http://127.0.0.1:{standin_port}/api/",
        }
    )
    notifier_url = f"http://127.0.0.1:{settings.notifier_port}"
    workspace = Workspace(f"{notifier_url}/slack/interactivity", SLACK_SIGNING_SECRET, SLACK_TOKEN)
    notifier = Notifier(settings, pool)
    client = web_client(SLACK_TOKEN, settings.slack_api_url, 5)
    async with consuming(notifier):
        delivering = asyncio.create_task(delivery_loop(pool, client, notifier.owed))
        try:
            async with (
                serving(create_standin(workspace), standin_port),
                serving(create_notifier_app(settings, lambda: notifier), settings.notifier_port),
            ):
                yield SlackLoop(settings, notifier, workspace, f"http://127.0.0.1:{standin_port}", notifier_url)
        finally:
            delivering.cancel()

"""The gateway's HTTP surface: issuer webhooks, /healthz and /metrics (the management API joins it).

The app's lifespan starts what it needs (FastStream's Kafka broker for publishing, the Postgres
pool, the reader of auth.decisions) and stops it in reverse order. Handlers verify the signature
over the raw body first; nothing is parsed, published or recorded for a request that fails it.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from pydantic import SecretStr, ValidationError

from schemas.common import Issuer
from services.gateway.answering import Answer, Answering, CardUnknown
from services.gateway.directory import CardDirectory
from services.gateway.issuers import (
    Ask,
    Ignored,
    Notice,
    WebhookInvalid,
    lithic_answer,
    read_generic,
    read_lithic,
    read_stripe,
    stripe_answer,
)
from services.gateway.management import Management, management_router
from services.gateway.metrics import LIFECYCLE_EVENTS, SIGNATURE_FAILURES
from services.gateway.replies import command_replies, decision_replies
from services.gateway.signatures import GENERIC_HEADER, STRIPE_HEADER, SignatureInvalid, verify_lithic, verify_stripe
from services.platform.kafka import create_broker
from services.platform.logging import get_logger
from services.platform.postgres import create_pool
from services.platform.settings import Settings
from services.platform.web import health_routes

_log = get_logger("gateway.http")


def _error(status: int, error: str, detail: str) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail}, status_code=status)


def _secret(value: SecretStr | None) -> str | None:
    return None if value is None else value.get_secret_value()


Verify = Callable[[Request, str, bytes], None]
Respond = Callable[[Ask, Answer], Response]
Read = Callable[[bytes], Ask | Notice | Ignored]


class _Webhooks:
    """The three issuer endpoints: verify over the raw body, read, then answer or publish."""

    def __init__(self, app: FastAPI, settings: Settings, clock: Callable[[], float]) -> None:
        self._app = app
        self._settings = settings
        self._clock = clock

    async def handle(
        self, issuer: Issuer, request: Request, *, secret: str | None, verify: Verify, read: Read, respond: Respond
    ) -> Response:
        """Refuse a bad signature (400, nothing published), a bad body (400), else act on it."""
        if secret is None:
            return _error(503, "not_configured", f"set PURSESTRINGS_{issuer.value.upper()}_WEBHOOK_SECRET")
        body = await request.body()
        try:
            verify(request, secret, body)
        except SignatureInvalid as error:
            SIGNATURE_FAILURES.labels(issuer.value, error.reason).inc()
            _log.warning("webhook_signature_refused", issuer=issuer.value, reason=error.reason)
            return _error(400, f"signature_{error.reason}", str(error))
        try:
            return await self._act(issuer, read(body), respond)
        except WebhookInvalid as error:
            return _error(400, "invalid_request", str(error))

    async def _act(self, issuer: Issuer, message: Ask | Notice | Ignored, respond: Respond) -> Response:
        answering: Answering = self._app.state.answering
        if isinstance(message, Ask):
            return respond(message, await answering.authorize(message))
        if isinstance(message, Ignored):
            LIFECYCLE_EVENTS.labels(issuer.value, "ignored").inc()
            return JSONResponse({"ignored": message.event_type})
        try:
            await answering.notify(message)
        except CardUnknown as error:
            # Money moved on a card we do not have: nothing to count it against. Said, not dropped.
            LIFECYCLE_EVENTS.labels(issuer.value, "card_not_found").inc()
            _log.warning("lifecycle_card_unknown", issuer=issuer.value, error=str(error))
            return JSONResponse({"ignored": "card_not_found", "detail": str(error)})
        LIFECYCLE_EVENTS.labels(issuer.value, "published").inc()
        return JSONResponse({"received": message.event_type.model_fields["type"].default})

    def routes(self) -> None:
        """Add the three endpoints to the app."""
        settings, clock = self._settings, self._clock

        @self._app.post("/webhooks/stripe", tags=["webhooks"])
        async def stripe(request: Request) -> Response:
            """Stripe Issuing: `issuing_authorization.request` answered in the body; lifecycle events published."""
            return await self.handle(
                Issuer.STRIPE,
                request,
                secret=_secret(settings.stripe_webhook_secret),
                verify=lambda r, secret, body: verify_stripe(r.headers.get(STRIPE_HEADER), body, secret, clock()),
                read=read_stripe,
                respond=lambda _, answer: JSONResponse(
                    stripe_answer(answer.approved, answer.reason),
                    headers={"Stripe-Version": settings.stripe_api_version},
                ),
            )

        @self._app.post("/webhooks/lithic", tags=["webhooks"])
        async def lithic(request: Request) -> Response:
            """Lithic Auth Stream Access: answered with `{"token", "result"}`."""
            return await self.handle(
                Issuer.LITHIC,
                request,
                secret=_secret(settings.lithic_webhook_secret),
                verify=lambda r, secret, body: verify_lithic(r.headers, body, secret, clock()),
                read=read_lithic,
                respond=lambda ask, answer: JSONResponse(lithic_answer(ask.issuer_authorization_id, answer.reason)),
            )

        @self._app.post("/webhooks/generic", tags=["webhooks"])
        async def generic(request: Request) -> Response:
            """Any other processor, in the shape docs/integrations.md documents."""
            return await self.handle(
                Issuer.GENERIC,
                request,
                secret=_secret(settings.generic_webhook_secret),
                verify=lambda r, secret, body: verify_stripe(r.headers.get(GENERIC_HEADER), body, secret, clock()),
                read=read_generic,
                respond=lambda ask, answer: JSONResponse(
                    {
                        "issuer_authorization_id": ask.issuer_authorization_id,
                        "approved": answer.approved,
                        "reason": answer.reason.value,
                    }
                ),
            )


def create_app(settings: Settings, clock: Callable[[], float] = time.time) -> FastAPI:
    """The gateway's ASGI app; `clock` (unix seconds) is what signatures are checked against."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        broker = create_broker(settings)
        await broker.start()
        pool = await create_pool(settings)
        waiter = decision_replies(settings, settings.gateway_max_pending)
        await waiter.start()
        commands = command_replies(settings, settings.gateway_max_pending)
        await commands.start()
        app.state.management = Management(pool, broker, commands, settings.topic_prefix)
        app.state.answering = Answering(
            broker=broker,
            pool=pool,
            directory=CardDirectory(pool),
            waiter=waiter,
            topic_prefix=settings.topic_prefix,
            deadline=timedelta(milliseconds=settings.auth_deadline_ms),
        )
        try:
            yield
        finally:
            await app.state.answering.close()
            await commands.stop()
            await waiter.stop()
            await pool.close()
            await broker.stop()

    app = FastAPI(title="pursestrings gateway", version="1", lifespan=lifespan)

    app.router.routes.extend(health_routes(settings))

    @app.exception_handler(HTTPException)
    async def flat_errors(_: Request, error: HTTPException) -> Response:
        """Errors as {"error": ..., "detail": ...}, like the webhooks'."""
        body = error.detail if isinstance(error.detail, dict) else {"error": "http_error", "detail": error.detail}
        return JSONResponse(body, status_code=error.status_code, headers=error.headers)

    @app.exception_handler(ValidationError)
    async def invalid_values(_: Request, error: ValidationError) -> Response:
        """A value the contracts refuse (an id in the path, say) that the request schema let through: 422."""
        errors = error.errors(include_url=False, include_input=False, include_context=False)
        detail = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors)
        return JSONResponse({"error": "invalid_request", "detail": detail}, status_code=422)

    _Webhooks(app, settings, clock).routes()
    app.include_router(management_router())
    return app

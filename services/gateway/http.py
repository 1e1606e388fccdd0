"""The gateway's HTTP surface: issuer webhooks, /healthz and /metrics (the management API joins it).

The app's lifespan starts what it needs (FastStream's Kafka broker for publishing, the Postgres
pool, the reader of auth.decisions) and stops it in reverse order. Handlers verify the signature
over the raw body first; nothing is parsed, published or recorded for a request that fails it.
Webhook POSTs are served from the ASGI scope ahead of FastAPI (`GatewayApp`): they are the hot path.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, NamedTuple

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from pydantic import SecretStr, ValidationError
from starlette.datastructures import Headers
from starlette.types import Receive, Scope, Send

from schemas.common import Issuer
from services.authorizer.rates import load_rate_table
from services.authorizer.state import NO_RATES
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
from services.platform.kafka import Publisher, create_broker
from services.platform.logging import get_logger
from services.platform.postgres import create_pool
from services.platform.settings import Settings
from services.platform.web import health_routes

_log = get_logger("gateway.http")
# The largest webhook body read: an issuer's event is a few KB (Stripe's authorization with its
# request history, ~10 KB); anything far larger is refused 413 before its signature is checked.
MAX_WEBHOOK_BYTES = 256 * 1024


def _secret(value: SecretStr | None) -> str | None:
    return None if value is None else value.get_secret_value()


class Reply(NamedTuple):
    """What a webhook is answered: status, JSON body, extra headers."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str]

    def response(self) -> JSONResponse:
        """The reply as an ASGI response, whichever path serves it."""
        return JSONResponse(self.body, self.status, self.headers)


def _refused(status: int, error: str, detail: str) -> Reply:
    return Reply(status, {"error": error, "detail": detail}, {})


def _too_large() -> Reply:
    return _refused(413, "payload_too_large", f"a webhook body is at most {MAX_WEBHOOK_BYTES} bytes")


@dataclass(frozen=True)
class _Endpoint:
    """One issuer's webhook: its secret, how it signs, how its bodies read and how it is answered."""

    issuer: Issuer
    secret: str | None
    verify: Callable[[Mapping[str, str], str, bytes], None]
    read: Callable[[bytes], Ask | Notice | Ignored]
    respond: Callable[[Ask, Answer], dict[str, Any]]
    answer_headers: dict[str, str]


class _Webhooks:
    """The three issuer endpoints: verify over the raw body, read, then answer or publish."""

    def __init__(self, app: FastAPI, settings: Settings, clock: Callable[[], float]) -> None:
        self._app = app
        self.endpoints = {
            "/webhooks/stripe": _Endpoint(
                Issuer.STRIPE,
                _secret(settings.stripe_webhook_secret),
                lambda headers, secret, body: verify_stripe(headers.get(STRIPE_HEADER), body, secret, clock()),
                read_stripe,
                lambda _, answer: stripe_answer(answer.approved, answer.reason),
                {"Stripe-Version": settings.stripe_api_version},
            ),
            "/webhooks/lithic": _Endpoint(
                Issuer.LITHIC,
                _secret(settings.lithic_webhook_secret),
                lambda headers, secret, body: verify_lithic(headers, body, secret, clock()),
                read_lithic,
                lambda ask, answer: lithic_answer(ask.issuer_authorization_id, answer.reason),
                {},
            ),
            "/webhooks/generic": _Endpoint(
                Issuer.GENERIC,
                _secret(settings.generic_webhook_secret),
                lambda headers, secret, body: verify_stripe(headers.get(GENERIC_HEADER), body, secret, clock()),
                read_generic,
                lambda ask, answer: {
                    "issuer_authorization_id": ask.issuer_authorization_id,
                    "approved": answer.approved,
                    "reason": answer.reason.value,
                },
                {},
            ),
        }

    async def process(self, endpoint: _Endpoint, headers: Mapping[str, str], body: bytes) -> Reply:
        """Refuse a bad signature (400, nothing published), a bad body (400), else act on it."""
        issuer = endpoint.issuer
        if endpoint.secret is None:
            return _refused(503, "not_configured", f"set PURSESTRINGS_{issuer.value.upper()}_WEBHOOK_SECRET")
        if len(body) > MAX_WEBHOOK_BYTES:
            return _too_large()
        try:
            endpoint.verify(headers, endpoint.secret, body)
        except SignatureInvalid as error:
            SIGNATURE_FAILURES.labels(issuer.value, error.reason).inc()
            _log.warning("webhook_signature_refused", issuer=issuer.value, reason=error.reason)
            return _refused(400, f"signature_{error.reason}", str(error))
        try:
            return await self._act(endpoint, endpoint.read(body))
        except WebhookInvalid as error:
            return _refused(400, "invalid_request", str(error))

    async def _act(self, endpoint: _Endpoint, message: Ask | Notice | Ignored) -> Reply:
        answering: Answering = self._app.state.answering
        issuer = endpoint.issuer.value
        if isinstance(message, Ask):
            answer = await answering.authorize(message)
            return Reply(200, endpoint.respond(message, answer), endpoint.answer_headers)
        if isinstance(message, Ignored):
            LIFECYCLE_EVENTS.labels(issuer, "ignored").inc()
            return Reply(200, {"ignored": message.event_type}, {})
        try:
            published = await answering.notify(message)
        except CardUnknown as error:
            # Money moved on a card we do not have: nothing to count it against. Said, not dropped.
            LIFECYCLE_EVENTS.labels(issuer, "card_not_found").inc()
            _log.warning("lifecycle_card_unknown", issuer=issuer, error=str(error))
            return Reply(200, {"ignored": "card_not_found", "detail": str(error)}, {})
        received = message.event_type.model_fields["type"].default
        if not published:
            LIFECYCLE_EVENTS.labels(issuer, "already_counted").inc()
            return Reply(200, {"received": received, "published": False, "detail": "approved by us: held already"}, {})
        LIFECYCLE_EVENTS.labels(issuer, "published").inc()
        return Reply(200, {"received": received}, {})

    def routes(self) -> None:
        """The three endpoints as FastAPI routes: what the OpenAPI document shows. `GatewayApp` serves
        the same `process` ahead of FastAPI, so these run only when its `fast_path` is off.
        """

        async def serve(request: Request) -> Response:
            reply = await self.process(self.endpoints[request.url.path], request.headers, await request.body())
            return reply.response()

        summaries = {
            "/webhooks/stripe": "Stripe Issuing: `issuing_authorization.request` answered in the body; lifecycle "
            "events published.",
            "/webhooks/lithic": 'Lithic Auth Stream Access: answered with `{"token", "result"}`.',
            "/webhooks/generic": "Any other processor, in the shape docs/integrations.md documents.",
        }
        for path, summary in summaries.items():
            self._app.add_api_route(
                path, serve, methods=["POST"], tags=["webhooks"], description=summary, name=path.rsplit("/", 1)[1]
            )


class GatewayApp(FastAPI):
    """FastAPI, with webhook POSTs served straight from the ASGI scope ahead of everything it does
    (its middleware stack, routing, exception handling, request and response objects): about a
    fifth of the gateway's CPU per authorization when they ran ahead of routing only, more before,
    measured with bench/webhook.py (decision 0006). Every other request goes on to FastAPI. Same
    `process`, same replies as the FastAPI routes; `fast_path = None` serves webhooks by those.
    """

    fast_path: _Webhooks | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A webhook POST here; anything else to FastAPI."""
        webhooks = self.fast_path
        endpoint = (
            webhooks.endpoints.get(scope["path"])
            if webhooks is not None and scope["type"] == "http" and scope["method"] == "POST"
            else None
        )
        if webhooks is None or endpoint is None:
            await super().__call__(scope, receive, send)
            return
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the issuer gave up before sending the body: nothing was read, nothing to answer
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > MAX_WEBHOOK_BYTES:  # refused without reading the rest
                await _send(_too_large(), send)
                return
        reply = await webhooks.process(endpoint, Headers(scope=scope), body)
        await _send(reply, send)


async def _send(reply: Reply, send: Send) -> None:
    """`reply` as JSONResponse sends it (same bytes, same headers, same order), without building one."""
    body = json.dumps(reply.body, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")).encode()
    headers = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in reply.headers.items()]
    headers += [(b"content-length", str(len(body)).encode("latin-1")), (b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": reply.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def create_app(settings: Settings, clock: Callable[[], float] = time.time) -> GatewayApp:
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
        publisher = Publisher(broker)  # a new producer if a Kafka restart left this one refusing sends
        rates = NO_RATES if settings.fx_rates_file is None else load_rate_table(settings.fx_rates_file)
        app.state.management = Management(pool, publisher, commands, settings.topic_prefix, rates)
        app.state.answering = Answering(
            broker=publisher,
            pool=pool,
            directory=CardDirectory(pool),
            waiter=waiter,
            topic_prefix=settings.topic_prefix,
            deadline=timedelta(milliseconds=settings.auth_deadline_ms),
        )
        # Expiries owed by declines whose expiry could not be published then (Kafka away).
        relay = asyncio.create_task(app.state.answering.run_expiry_relay())
        try:
            yield
        finally:
            relay.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await relay
            await app.state.answering.close()
            await commands.stop()
            await waiter.stop()
            await pool.close()
            await broker.stop()

    app = GatewayApp(title="pursestrings gateway", version="1", lifespan=lifespan)

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

    webhooks = _Webhooks(app, settings, clock)
    webhooks.routes()
    app.fast_path = webhooks
    app.include_router(management_router())
    return app

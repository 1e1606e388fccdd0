"""The notifier's HTTP surface: Slack's interactivity endpoint, /healthz and /metrics.

Clicks are verified with slack_sdk's `SignatureVerifier` (v0 HMAC-SHA256 of "v0:{timestamp}:{raw
body}" with the signing secret; requests older than five minutes refused) on a route of our own,
acknowledged at once (Slack wants an answer within 3 s), and decided after the answer is sent.
Why not Bolt: see docs/decisions/0008.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

from slack_sdk.signature import SignatureVerifier
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from services.notifier.core import Click, Notifier, Replayed
from services.notifier.metrics import CLICKS
from services.platform.logging import get_logger
from services.platform.settings import Settings
from services.platform.web import health_routes

INTERACTIVITY_PATH = "/slack/interactivity"
_WINDOW_S = 5 * 60
_log = get_logger("notifier")


def create_app(settings: Settings, notifier: Callable[[], Notifier | None]) -> Starlette:
    """The ASGI app; `notifier()` gives the running Notifier (None while starting)."""
    secret = settings.slack_signing_secret
    verifier = None if secret is None else SignatureVerifier(secret.get_secret_value())

    async def interactivity(request: Request) -> Response:
        body = await request.body()
        if verifier is None:
            return _error(503, "not_configured", "PURSESTRINGS_SLACK_SIGNING_SECRET is not set")
        refusal = _refuse_signature(verifier, body, dict(request.headers))
        if refusal is not None:
            CLICKS.labels(refusal.headers["x-refusal"]).inc()
            return refusal
        try:
            payload = json.loads(parse_qs(body.decode())["payload"][0])
        except (KeyError, IndexError, ValueError, UnicodeDecodeError):
            return _error(400, "bad_payload", "expected a form field 'payload' holding JSON")
        clicks = _clicks(payload)
        if not clicks:
            return Response(status_code=200)  # another interaction type: acknowledged, nothing to do
        running = notifier()
        if running is None:
            return _error(503, "starting", "the notifier is starting; Slack will retry")
        return Response(status_code=200, background=BackgroundTask(_decide_all, running, clicks))

    return Starlette(
        routes=[
            Route(INTERACTIVITY_PATH, interactivity, methods=["POST"]),
            *health_routes(settings),
        ]
    )


def _error(status: int, error: str, detail: str, refusal: str | None = None) -> JSONResponse:
    headers = {"x-refusal": refusal} if refusal else None
    return JSONResponse({"error": error, "detail": detail}, status_code=status, headers=headers)


def _refuse_signature(verifier: SignatureVerifier, body: bytes, headers: dict[str, str]) -> JSONResponse | None:
    """Why a request is not Slack's, or None when its signature and timestamp hold."""
    timestamp = headers.get("x-slack-request-timestamp", "")
    if not timestamp.isdigit() or "x-slack-signature" not in headers:
        return _error(400, "missing_signature", "X-Slack-Request-Timestamp and X-Slack-Signature are required",
                      "missing_signature")  # fmt: skip
    if abs(time.time() - int(timestamp)) > _WINDOW_S:
        return _error(401, "stale_timestamp", "the request is more than five minutes old", "stale_timestamp")
    if not verifier.is_valid_request(body, headers):
        return _error(401, "invalid_signature", "the signature does not match the body", "invalid_signature")
    return None


def _clicks(payload: dict[str, Any]) -> list[Click]:
    if payload.get("type") != "block_actions":
        return []
    user = payload.get("user") or {}
    clicks = []
    for action in payload.get("actions") or []:
        try:
            request_id = uuid.UUID(str(action.get("value")))
        except ValueError:
            continue
        clicks.append(
            Click(
                request_id=request_id,
                action=str(action.get("action_id")),
                user_id=str(user.get("id", "")),
                user_name=user.get("username") or user.get("name"),
                action_ts=str(action.get("action_ts", "")),
            )
        )
    return clicks


async def _decide_all(notifier: Notifier, clicks: list[Click]) -> None:
    for click in clicks:
        try:
            await notifier.click(click)
        except Replayed:
            _log.info("click_replayed", request_id=str(click.request_id), user=click.user_id)
        except Exception:  # noqa: BLE001 - after the answer nobody else would see it
            _log.exception("click_failed", request_id=str(click.request_id), user=click.user_id)

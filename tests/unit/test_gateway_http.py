"""The webhook endpoints answer alike whether served by the fast path ahead of FastAPI or by the
FastAPI routes the OpenAPI document shows (refusals need no Kafka or Postgres).
"""

from __future__ import annotations

import httpx
import pytest
from pydantic import SecretStr

from services.gateway.http import GatewayApp, create_app
from services.gateway.simulator import sign_for_stripe, stripe_authorization_request
from services.platform.settings import Settings

SECRET = "whsec_unit"  # noqa: S105 - a test's own secret


def _apps(monkeypatch: pytest.MonkeyPatch) -> tuple[GatewayApp, GatewayApp]:
    monkeypatch.setenv("PURSESTRINGS_DATABASE_URL", "postgresql://u:p@127.0.0.1:1/none")
    settings = Settings().model_copy(update={"stripe_webhook_secret": SecretStr(SECRET)})
    fast, routed = create_app(settings), create_app(settings)
    routed.fast_path = None  # webhooks served by the FastAPI routes
    return fast, routed


async def _answers(app: GatewayApp, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, str, bytes]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        response = await client.post(path, content=body, headers=headers)
    return response.status_code, str(response.headers.raw), response.content


@pytest.mark.parametrize(
    ("path", "signed_with", "expected_status", "expected_error"),
    [
        ("/webhooks/stripe", "whsec_wrong", 400, b'"error":"signature_mismatch"'),
        ("/webhooks/stripe", None, 400, b'"error":"signature_missing_header"'),
        ("/webhooks/lithic", SECRET, 503, b'"error":"not_configured"'),
    ],
)
async def test_refusals_are_the_same_on_both_paths(
    monkeypatch: pytest.MonkeyPatch, path: str, signed_with: str | None, expected_status: int, expected_error: bytes
) -> None:
    """Bad signature, missing header, issuer not configured: same status, headers and body."""
    fast, routed = _apps(monkeypatch)
    signed = sign_for_stripe(stripe_authorization_request("iauth_unit", "ic_unit", 100), signed_with or SECRET)
    headers = dict(signed.headers) if signed_with else {}
    first = await _answers(fast, path, signed.body, headers)
    second = await _answers(routed, path, signed.body, headers)
    assert (first, first[0], expected_error in first[2]) == (second, expected_status, True)


async def test_other_requests_go_on_to_fastapi(monkeypatch: pytest.MonkeyPatch) -> None:
    """A GET of a webhook path is FastAPI's 405; the OpenAPI document lists the webhooks."""
    fast, _ = _apps(monkeypatch)
    transport = httpx.ASGITransport(app=fast)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        wrong_method = await client.get("/webhooks/stripe")
        document = (await client.get("/openapi.json")).json()
    assert (
        wrong_method.status_code,
        {"/webhooks/stripe", "/webhooks/lithic", "/webhooks/generic"} <= set(document["paths"]),
    ) == (
        405,
        True,
    )

"""The /healthz and /metrics endpoints of a service that serves HTTP itself (the gateway, the notifier),
as Starlette routes; the other services get the same two from the platform's small health server.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from services.platform.service import health_report
from services.platform.settings import Settings


def health_routes(settings: Settings) -> list[Route]:
    """GET /healthz (Kafka and Postgres answer, else 503) and GET /metrics (Prometheus text)."""

    async def healthz(_: Request) -> Response:
        status, body = await health_report(settings)
        return Response(body, status_code=status, media_type="application/json")

    async def metrics(_: Request) -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return [Route("/healthz", healthz, include_in_schema=False), Route("/metrics", metrics, include_in_schema=False)]

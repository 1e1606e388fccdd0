"""Entry point: `python -m services.gateway` runs the gateway service until SIGINT or SIGTERM."""

from __future__ import annotations

import asyncio
import os

from services.gateway.app import DEFAULT_HEALTH_PORT, build
from services.platform.service import run
from services.platform.settings import load_settings


def main() -> None:
    """Read settings once, build the service, run it."""
    settings = load_settings(service_name="pursestrings-gateway")
    port = int(os.environ.get("PURSESTRINGS_GATEWAY_HEALTH_PORT", DEFAULT_HEALTH_PORT))
    asyncio.run(run(build(settings, health_port=port)))


if __name__ == "__main__":
    main()

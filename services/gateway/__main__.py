"""Entry point: `python -m services.gateway` runs the gateway service until SIGINT or SIGTERM."""

from __future__ import annotations

from services.gateway.app import DEFAULT_HEALTH_PORT, build
from services.platform.service import main

if __name__ == "__main__":
    main("gateway", build, DEFAULT_HEALTH_PORT)

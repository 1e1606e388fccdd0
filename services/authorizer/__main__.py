"""Entry point: `python -m services.authorizer` runs the authorizer service until SIGINT or SIGTERM."""

from __future__ import annotations

from services.authorizer.app import DEFAULT_HEALTH_PORT, build
from services.platform.service import main

if __name__ == "__main__":
    main("authorizer", build, DEFAULT_HEALTH_PORT)

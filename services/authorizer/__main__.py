"""Entry point: `python -m services.authorizer` runs the authorizer service until SIGINT or SIGTERM."""

from __future__ import annotations

import asyncio
import os

from services.authorizer.app import DEFAULT_HEALTH_PORT, build
from services.platform.service import run
from services.platform.settings import load_settings


def main() -> None:
    """Read settings once, build the service, run it."""
    settings = load_settings(service_name="pursestrings-authorizer")
    port = int(os.environ.get("PURSESTRINGS_AUTHORIZER_HEALTH_PORT", DEFAULT_HEALTH_PORT))
    asyncio.run(run(build(settings, health_port=port)))


if __name__ == "__main__":
    main()

"""Entry point: `python -m services.notifier` runs the notifier service until SIGINT or SIGTERM."""

from __future__ import annotations

from services.notifier.app import DEFAULT_HEALTH_PORT, build
from services.platform.service import main

if __name__ == "__main__":
    main("notifier", build, DEFAULT_HEALTH_PORT)

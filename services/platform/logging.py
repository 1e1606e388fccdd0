"""structlog set-up: JSON lines off a terminal, console on one; ids bound through contextvars.

Never logs secrets; never configures anything at import time (call `configure_logging`).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import structlog

LogFormat = Literal["auto", "json", "console"]


def configure_logging(level: str = "info", log_format: LogFormat = "auto") -> None:
    """Route structlog and the standard library's loggers through one renderer."""
    use_json = log_format == "json" or (log_format == "auto" and not sys.stderr.isatty())
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    # Libraries (aiokafka, asyncpg) log through the standard library; keep them at warning.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s %(message)s")


@contextmanager
def bound_ids(*, trace_id: str | None = None, wallet_id: str | None = None) -> Iterator[None]:
    """Bind `trace_id` / `wallet_id` to every log line written inside the block."""
    values = {key: value for key, value in (("trace_id", trace_id), ("wallet_id", wallet_id)) if value}
    with structlog.contextvars.bound_contextvars(**values):
        yield


def get_logger(name: str) -> structlog.typing.FilteringBoundLogger:
    """A logger carrying the component name on every line."""
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger(component=name)
    return logger

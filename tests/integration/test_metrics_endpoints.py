"""Every service, run as its own process, answers /healthz and /metrics naming its series."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from services.platform.settings import Settings
from tests.support.infra import free_port
from tests.support.processes import running, service_env

pytestmark = pytest.mark.slow

EXPECTED = {
    "gateway": ["pursestrings_gateway_answer_seconds", "pursestrings_gateway_answers",
                "pursestrings_gateway_deadline_misses", "pursestrings_gateway_signature_failures"],
    "authorizer": ["pursestrings_authorizer_decisions", "pursestrings_authorizer_decision_latency_seconds",
                   "pursestrings_authorizer_batch_records", "pursestrings_authorizer_consumer_lag_records",
                   "pursestrings_authorizer_outbox_unconfirmed"],
    "ledger": ["pursestrings_ledger_entries_recorded", "pursestrings_ledger_lag_records",
               "pursestrings_ledger_duplicates_ignored"],
    "notifier": ["pursestrings_notifier_requests_opened", "pursestrings_notifier_requests_decided",
                 "pursestrings_notifier_time_to_decision_seconds", "pursestrings_notifier_slack_errors"],
}  # fmt: skip


@pytest.fixture(scope="module")
def urls(module_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The four services as processes; each one's base URL."""
    logs = tmp_path_factory.mktemp("metrics")
    ports = {name: free_port() for name in EXPECTED}
    env = service_env(
        module_settings,
        PURSESTRINGS_GATEWAY_PORT=str(ports["gateway"]),
        PURSESTRINGS_NOTIFIER_PORT=str(ports["notifier"]),
        PURSESTRINGS_AUTHORIZER_HEALTH_PORT=str(ports["authorizer"]),
        PURSESTRINGS_LEDGER_HEALTH_PORT=str(ports["ledger"]),
    )
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    with ExitStack() as stack:
        for name in EXPECTED:
            stack.enter_context(running(f"services.{name}", env, Path(logs) / f"{name}.log", f"{urls[name]}/healthz"))
        yield urls


@pytest.mark.parametrize("service", sorted(EXPECTED))
def test_metrics_name_the_expected_series(urls: dict[str, str], service: str) -> None:
    """GET /metrics answers 200 in Prometheus' text format with the service's series."""
    response = httpx.get(f"{urls[service]}/metrics", timeout=5)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    missing = [name for name in EXPECTED[service] if f"# HELP {name}" not in response.text]
    assert not missing, f"{service} does not export {missing}"

"""`make run`'s stack end to end: deploy/run.sh starts every service and the Slack stand-in, the demo
plays the seeds' scenarios through the real webhook path, the runaway agent's cap hit produces one
approval request in the stand-in, Approve clicked there raises the cap, and the next authorization
of that agent is approved.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from services.gateway.simulator import simulated_authorization
from services.platform.settings import Settings
from tests.support.infra import ROOT

pytestmark = pytest.mark.slow
STANDIN, GATEWAY = "http://127.0.0.1:8084", "http://127.0.0.1:8080"


def _eventually(check: Callable[[], Any], timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if value := check():
                return value
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"{what}: not within {timeout_s:.0f} s")


def _port_taken(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """deploy/run.sh with the demo played once; Kafka and Postgres left to the test session."""
    taken = [port for port in (8080, 8081, 8082, 8083, 8084) if _port_taken(port)]
    if taken:
        pytest.fail(f"ports {taken} are in use (is `make run` running?): this test runs make run's stack")
    log = tmp_path_factory.mktemp("run") / "run.log"
    env = {**os.environ, "PURSESTRINGS_DEMO": "once", "PURSESTRINGS_KEEP_INFRA": "1"}
    env.pop("PURSESTRINGS_SLACK_BOT_TOKEN", None)
    with log.open("wb") as output:
        process = subprocess.Popen(["bash", "deploy/run.sh"], cwd=ROOT, env=env, stdout=output, stderr=output,
                                   start_new_session=True)  # fmt: skip
    try:
        yield log
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=90)


def _runaway_message() -> dict[str, Any] | None:
    messages = httpx.get(f"{STANDIN}/_standin/messages", timeout=5).json()["messages"]
    found = [m for m in messages if "runaway retry loop" in m["text"]]
    return found[0] if found else None


def test_the_demo_asks_slack_once_and_approve_lets_the_agent_buy_again(stack: Path) -> None:
    """One approval request for the runaway agent; Approve through the stand-in; next purchase approved."""
    message = _eventually(_runaway_message, 240, f"the demo's approval request\n{stack.read_text()[-3000:]}")
    # The demo's last purchases come after its first decline: once they are all played (it prints its
    # table), the approval below is the only thing that changes the runaway wallet's headroom.
    _eventually(lambda: "live authorizations" in stack.read_text(), 240, "the end of the demo's scenarios")
    runaway = [m for m in httpx.get(f"{STANDIN}/_standin/messages", timeout=5).json()["messages"]
               if "runaway retry loop" in m["text"]]  # fmt: skip
    assert len(runaway) == 1, "one approval request per wallet, cap and window"
    clicked = httpx.post(f"{STANDIN}/_standin/click", timeout=10, json={
        "channel": message["channel"], "ts": message["ts"], "action_id": "approve", "user": "U0APPROVER"})  # fmt: skip
    assert clicked.json()["status"] == 200

    def updated() -> bool:
        messages = httpx.get(f"{STANDIN}/_standin/messages", timeout=5).json()["messages"]
        same = [m for m in messages if (m["channel"], m["ts"]) == (message["channel"], message["ts"])]
        return bool(same) and "Approved by <@U0APPROVER>" in same[0]["text"]

    _eventually(updated, 60, "the message saying who approved")

    run_id = re.search(r"wal_demo_3_([0-9a-f]{6})", json.dumps(message["blocks"]))
    assert run_id is not None
    token = f"tok_demo_3_{run_id.group(1)}"
    state = Path(os.environ.get("PURSESTRINGS_STATE_DIR", ROOT / ".state"))
    secrets = dict(line.split("=", 1) for line in (state / "webhook-secrets.env").read_text().split())
    settings = Settings(database_url=SecretStr("postgresql://unused/x"),
                        stripe_webhook_secret=SecretStr(secrets["PURSESTRINGS_STRIPE_WEBHOOK_SECRET"]))  # fmt: skip
    signed = simulated_authorization(settings, "stripe", token, amount_minor=200)
    answer = httpx.post(f"{GATEWAY}{signed.path}", content=signed.body, headers=signed.headers, timeout=10).json()
    assert answer == {"approved": True, "metadata": {"pursestrings_reason": "approved"}}
    for url in ("http://127.0.0.1:8080", "http://127.0.0.1:8081", "http://127.0.0.1:8082", "http://127.0.0.1:8083"):
        assert "pursestrings_" in httpx.get(f"{url}/metrics", timeout=5).text

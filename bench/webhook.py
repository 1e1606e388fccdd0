"""`make bench` → bench/results/webhook.json: the answer latency of Stripe authorization webhooks at
1,000 requests/s, end to end (HTTP → gateway → Kafka → authorizer → Kafka → gateway → HTTP).

The gateway and the authorizer run as their own processes through their real entry points, on the
real Kafka and a fresh Postgres database. The load generator is vegeta (Go; installed into
.state/bin with `go install` on first use), attacking at a constant rate (open loop: a slow answer
does not slow the senders) with pre-signed Stripe `issuing_authorization.request` events, one
authorization each. Answers are checked afterwards in `gateway.answers`: every one must be an
approval.

In the same run, the same attack goes to the ceiling of this path: an HTTP server that publishes
each request to Kafka and answers when a passthrough relays it back, with no logic and no
Postgres (bench/_worker.py `webhook`). Beside it, the gateway's figures say what our code costs
and what the machine cannot give anyone (`ceiling_*` and `details.ceiling`).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr

from bench._infra import (
    cpu_seconds,
    cpu_us_per_request,
    ensure_baseline_topics,
    fresh_database,
    process,
    service_command,
    worker_command,
)
from services.gateway.keys import Scope, create_key_once
from services.gateway.simulator import sign_for_stripe, stripe_authorization_request
from services.platform.kafka import ensure_topics, project_topics
from services.platform.logging import configure_logging
from services.platform.postgres import create_pool
from services.platform.settings import Settings, load_settings
from tests.support.infra import free_port

RESULTS = Path(__file__).parent / "results" / "webhook.json"
RATE_PER_S = int(os.environ.get("BENCH_WEBHOOK_RATE", "1000"))
SECONDS = int(os.environ.get("BENCH_WEBHOOK_SECONDS", "5"))
# BENCH_PROFILE=1 records where the gateway's time goes (folded stacks, for flamegraph tools).
PROFILE = RESULTS.with_name("gateway-profile.txt") if os.environ.get("BENCH_PROFILE") else None
CARDS = 64
CONNECTIONS = 64
STATE = Path(os.environ.get("PURSESTRINGS_STATE_DIR", Path(__file__).parents[1] / ".state"))
SECRET = "whsec_bench"  # noqa: S105 - the bench's own gateway, on loopback


async def _ready(client: httpx.AsyncClient) -> None:
    for _ in range(240):
        try:
            if (await client.get("/healthz")).status_code == 200:  # noqa: PLR2004 - OK
                return
        except httpx.HTTPError:
            pass
        await asyncio.sleep(0.25)
    raise RuntimeError("the gateway did not become healthy")


async def _cards(client: httpx.AsyncClient, key: str) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    wallet = {"wallet_id": "bench", "caps": {"rolling_24h": {"amount_minor": 10**10, "currency": "USD"}}}
    (await client.post("/v1/wallets", headers=headers, json=wallet)).raise_for_status()
    for index in range(CARDS):
        card = {"card_id": f"card{index}", "issuer_card_token": f"ic_bench{index}", "last4": "4242"}
        (await client.post("/v1/wallets/bench/cards", headers=headers, json=card)).raise_for_status()


VEGETA = "github.com/tsenart/vegeta/v12@v12.12.0"


def _vegeta() -> Path:
    """The vegeta binary, installed with the machine's Go on first use."""
    binary = STATE / "bin" / "vegeta"
    if not binary.exists():
        subprocess.run(  # noqa: S603 - fixed arguments
            ["go", "install", VEGETA],  # noqa: S607 - the machine's Go
            check=True,
            env=os.environ | {"GOBIN": str(binary.parent)},
        )
    return binary


def _attack(url: str, count: int, tag: str, rate: int) -> dict[str, Any]:
    """Vegeta at `rate`/s over `count` pre-signed requests; its latency report."""
    targets = []
    for index in range(count):
        event = stripe_authorization_request(f"{tag}{index}", f"ic_bench{index % CARDS}", 100)
        signed = sign_for_stripe(event, SECRET)
        targets.append(
            json.dumps(
                {
                    "method": "POST",
                    "url": f"{url}{signed.path}",
                    "body": base64.b64encode(signed.body).decode(),
                    "header": {name: [value] for name, value in signed.headers.items()},
                }
            )
        )
    seconds = max(1, count // rate)
    attack = subprocess.run(  # noqa: S603 - our binary, fixed arguments
        [str(_vegeta()), "attack", "-format=json", f"-rate={rate}/1s", f"-duration={seconds}s", "-timeout=10s",
         f"-connections={CONNECTIONS}"],
        input="".join(f"{target}\n" for target in targets).encode(), capture_output=True, check=True,
    )  # fmt: skip
    report = subprocess.run(  # noqa: S603 - our binary, fixed arguments
        [str(_vegeta()), "report", "-type=json"], input=attack.stdout, capture_output=True, check=True
    )
    result: dict[str, Any] = json.loads(report.stdout)
    return result


async def _load(settings: Settings, count: int, tag: str, *, recorded: bool = True) -> dict[str, Any]:
    """One attack, and (when `recorded`: the gateway, not the ceiling) the answers it got as the
    gateway recorded them.
    """
    url = f"http://127.0.0.1:{settings.gateway_port}"
    report = await asyncio.to_thread(_attack, url, count, tag, RATE_PER_S)
    answers = []
    if recorded:
        pool = await create_pool(settings)
        try:
            # The authorizer's answers are recorded just after they are sent (AnswerLog): wait for the
            # last of them, for a few seconds at most.
            for _ in range(50):
                answers = await pool.fetch(
                    "SELECT approved, reason, count(*) AS n FROM gateway.answers WHERE issuer_authorization_id LIKE $1"
                    " GROUP BY 1, 2",
                    f"{tag}%",
                )
                if sum(row["n"] for row in answers) >= report["requests"]:
                    break
                await asyncio.sleep(0.1)
        finally:
            await pool.close()
    latencies = report["latencies"]
    return {
        "requests": report["requests"],
        "achieved_per_s": round(report["throughput"]),
        "p50_ms": round(latencies["50th"] / 1e6, 2),
        "p90_ms": round(latencies["90th"] / 1e6, 2),
        "p99_ms": round(latencies["99th"] / 1e6, 2),
        "max_ms": round(latencies["max"] / 1e6, 2),
        "mean_ms": round(latencies["mean"] / 1e6, 2),
        "status_codes": report["status_codes"],
        "http_errors": report.get("errors") or [],
        "answers": {f"{'approved' if row['approved'] else 'declined'}:{row['reason']}": row["n"] for row in answers},
    }


async def _ceiling(settings: Settings) -> dict[str, Any]:
    """The same attack against the webhook path with no logic (bench/_worker.py `webhook`: HTTP →
    Kafka → a passthrough → Kafka → HTTP), on the same machine in the same run: what this stack
    can do here at best, beside what the gateway and the authorizer do.
    """
    bench_in, bench_out = await ensure_baseline_topics(settings)
    with (
        process(worker_command("passthrough", bench_in, bench_out), settings) as relay,
        process(worker_command("webhook", bench_in, bench_out), settings, **_env(settings)) as server,
    ):
        systems = {"gateway": server, "authorizer": relay}
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{settings.gateway_port}", timeout=10) as client:
            await _ready(client)
        await _load(settings, RATE_PER_S, "cwarm", recorded=False)
        before = cpu_seconds(systems)
        measured = await _load(settings, RATE_PER_S * SECONDS, "c", recorded=False)
        measured["cpu_us_per_request"] = cpu_us_per_request(before, cpu_seconds(systems), measured["requests"])
        del measured["answers"]
    return measured


async def _measure() -> dict[str, Any]:
    base = load_settings("pursestrings-bench")
    base = base.model_copy(
        update={
            "topic_prefix": f"benchw-{uuid.uuid4().hex[:8]}",
            "kafka_partitions": 12,
            "gateway_port": free_port(),
            "stripe_webhook_secret": SecretStr(SECRET),
        }
    )
    async with fresh_database(base) as settings:
        await ensure_topics(settings.kafka_bootstrap_servers, project_topics(settings))
        key = await create_key_once(settings, Scope.ADMIN, label="bench")
        env = _env(settings)
        with (
            process(
                service_command("services.authorizer"), settings, PURSESTRINGS_AUTHORIZER_HEALTH_PORT="0"
            ) as authorizer,
            process(service_command("services.gateway", PROFILE), settings, **env) as gateway,
        ):
            systems = {"gateway": gateway, "authorizer": authorizer}
            limits = httpx.Limits(max_connections=CONNECTIONS, max_keepalive_connections=CONNECTIONS)
            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{settings.gateway_port}", limits=limits, timeout=10
            ) as client:
                await _ready(client)
                await _cards(client, key)
                await _load(settings, RATE_PER_S, "warm")  # connections open, caches warm
                before = cpu_seconds(systems)
                measured = await _load(settings, RATE_PER_S * SECONDS, "a")
                # CPU per request: the gateway's and the authorizer's own, and Postgres, Kafka and vegeta.
                measured["cpu_us_per_request"] = cpu_us_per_request(before, cpu_seconds(systems), measured["requests"])
                scraped = (await client.get("/metrics")).text
                measured["gateway_own_answer_seconds"] = _answer_seconds(scraped)
                measured["gateway_stage_mean_ms"] = _stage_means(scraped)
        measured["ceiling"] = await _ceiling(settings.model_copy(update={"gateway_port": free_port()}))
        return measured


def _answer_seconds(metrics: str) -> dict[str, float]:
    """The gateway's own count and mean of answer time (its histogram), to set beside the client's."""
    values = {}
    for line in metrics.splitlines():
        if (
            line.startswith("pursestrings_gateway_answer_seconds_")
            and 'issuer="stripe"' in line
            and "bucket" not in line
        ):
            name, value = line.rsplit(" ", 1)
            values[name.split("{")[0].rsplit("_", 1)[1]] = float(value)
    return {
        "count": values.get("count", 0.0),
        "mean_ms": 1000 * values.get("sum", 0.0) / max(values.get("count", 1.0), 1.0),
    }


def _stage_means(metrics: str) -> dict[str, float]:
    """Mean time of each stage of an answer (lookup, publish, decision), from the gateway's
    histogram (warm-up included).
    """
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    for line in metrics.splitlines():
        if line.startswith(("pursestrings_gateway_stage_seconds_sum", "pursestrings_gateway_stage_seconds_count")):
            name, value = line.rsplit(" ", 1)
            stage = name.split('stage="', 1)[1].split('"', 1)[0]
            (sums if name.startswith("pursestrings_gateway_stage_seconds_sum") else counts)[stage] = float(value)
    return {stage: round(1000 * sums[stage] / counts[stage], 2) for stage in sums if counts.get(stage)}


def _env(settings: Settings) -> dict[str, str]:
    return {
        "PURSESTRINGS_GATEWAY_PORT": str(settings.gateway_port),
        "PURSESTRINGS_STRIPE_WEBHOOK_SECRET": SECRET,
        "PURSESTRINGS_LOG_LEVEL": os.environ.get("BENCH_GATEWAY_LOG_LEVEL", "warning"),
    }


def main() -> None:
    """Measure and write bench/results/webhook.json."""
    configure_logging("warning")
    measured = asyncio.run(_measure())
    summary = {
        "rate_per_s": RATE_PER_S,  # BENCH_WEBHOOK_RATE; the target is set at 1,000/s
        "p50_ms": measured["p50_ms"],
        "p99_ms": measured["p99_ms"],
        "not_approved": measured["requests"] - measured["answers"].get("approved:approved", 0),
        "target_p99_ms_at_1k": 25,
        # The same attack on HTTP → Kafka → passthrough → Kafka → HTTP with no logic, same run.
        "ceiling_p50_ms": measured["ceiling"]["p50_ms"],
        "ceiling_p99_ms": measured["ceiling"]["p99_ms"],
        "ceiling_achieved_per_s": measured["ceiling"]["achieved_per_s"],
        "p99_ratio_vs_ceiling": round(measured["p99_ms"] / measured["ceiling"]["p99_ms"], 2),
        # CPU per webhook of each process (read from /proc over the attack): steadier than latency.
        "gateway_cpu_us_per_request": measured["cpu_us_per_request"].get("gateway"),
        "authorizer_cpu_us_per_request": measured["cpu_us_per_request"].get("authorizer"),
        "cores": os.cpu_count(),
        "details": measured,
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "details"} | {"details": measured}, indent=2))


if __name__ == "__main__":
    main()

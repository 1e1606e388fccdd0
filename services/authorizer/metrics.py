"""The authorizer's Prometheus series (on /metrics of its health port)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

DECISIONS = Counter("pursestrings_authorizer_decisions", "Authorizations decided, by reason code", ["reason"])
BATCH_RECORDS = Histogram(
    "pursestrings_authorizer_batch_records",
    "Records per consumed batch",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500),
)
BATCH_SECONDS = Histogram(
    "pursestrings_authorizer_batch_seconds",
    "Time per batch stage (decide, commit, publish)",
    ["stage"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
)
DECISION_AGE_SECONDS = Histogram(
    "pursestrings_authorizer_decision_latency_seconds",
    "From a request's arrival on Kafka to its batch being committed",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 1.5, 2.5, 5),
)
CONSUMER_LAG = Gauge("pursestrings_authorizer_consumer_lag_records", "Records behind the end of the input topics")
OUTBOX_IN_FLIGHT = Gauge(
    "pursestrings_authorizer_outbox_unconfirmed", "Committed outbox rows whose publication is not yet confirmed"
)
DEAD_LETTERS = Counter("pursestrings_authorizer_dead_letters", "Bad messages sent to a dead-letter topic", ["topic"])

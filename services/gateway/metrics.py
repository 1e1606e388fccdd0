"""The gateway's Prometheus series, served on /metrics."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

# Buckets around the deadline (1.5 s by default, Stripe's limit 2 s): where answers fall matters most there.
ANSWER_SECONDS = Histogram(
    "pursestrings_gateway_answer_seconds",
    "Time from an authorization webhook's arrival to its answer",
    ["issuer"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 1.25, 1.5, 1.75, 2.0, 3.0),
)
ANSWERS = Counter(
    "pursestrings_gateway_answers",
    "Authorization answers given, by outcome and reason",
    ["issuer", "outcome", "reason"],
)
DEADLINE_MISSES = Counter(
    "pursestrings_gateway_deadline_misses", "Authorizations declined because no decision came in time", ["issuer"]
)
SIGNATURE_FAILURES = Counter(
    "pursestrings_gateway_signature_failures", "Webhooks refused for their signature, by reason", ["issuer", "reason"]
)
LIFECYCLE_EVENTS = Counter(
    "pursestrings_gateway_lifecycle_events",
    "Issuer lifecycle events received, by what became of them",
    ["issuer", "fate"],
)
# Where an authorizer-answered authorization's time goes: looking up an earlier answer and the card,
# publishing the request (Kafka's ack), waiting for the decision (its record follows the answer).
STAGE_SECONDS = Histogram(
    "pursestrings_gateway_stage_seconds",
    "Time of each stage of an authorization answered by the authorizer",
    ["stage"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 1.5),
)

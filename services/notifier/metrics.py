"""The notifier's Prometheus series (served on /metrics of its HTTP port)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

REQUESTS_OPENED = Counter("pursestrings_notifier_requests_opened", "Approval requests opened", ["cap"])
DECLINES_FOLDED = Counter(
    "pursestrings_notifier_declines_folded", "Cap declines folded into an already open request of their window"
)
BREACHES_NOTICED = Counter(
    "pursestrings_notifier_breaches_noticed", "Caps the issuer's money pushed over, said in Slack (once per breach)"
)
DECIDED = Counter("pursestrings_notifier_requests_decided", "Approval requests decided, by outcome", ["outcome"])
TIME_TO_DECISION = Histogram(
    "pursestrings_notifier_time_to_decision_seconds",
    "From a request's opening to a human's click",
    buckets=(10, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600, 12 * 3600, 24 * 3600),
)
CLICKS = Counter("pursestrings_notifier_clicks", "Slack clicks received, by outcome", ["outcome"])
SLACK_CALLS = Counter(
    "pursestrings_notifier_slack_calls", "Slack Web API calls, by method and result", ["method", "result"]
)
SLACK_ERRORS = Counter("pursestrings_notifier_slack_errors", "Slack Web API failures, by kind", ["kind"])

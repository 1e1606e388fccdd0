#!/usr/bin/env bash
# `make run`: Kafka, Postgres and every service process that exists, until Ctrl-C (or `make stop`).
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$PURSESTRINGS_ROOT"

SERVICES=(authorizer ledger notifier gateway)
declare -A MODULE=([authorizer]=services.authorizer [ledger]=services.ledger [notifier]=services.notifier
                   [gateway]=services.gateway [slack-standin]=services.notifier.standin)
declare -A HEALTH_URL=([gateway]=http://127.0.0.1:8080/healthz [authorizer]=http://127.0.0.1:8081/healthz
                       [ledger]=http://127.0.0.1:8082/healthz [notifier]=http://127.0.0.1:8083/healthz
                       [slack-standin]=http://127.0.0.1:8084/_standin/messages)
RUN_DIR="$PURSESTRINGS_STATE_DIR/run"
LOG_DIR="$PURSESTRINGS_STATE_DIR/logs"
mkdir -p "$RUN_DIR" "$LOG_DIR"
export PURSESTRINGS_ENV_FILE="$PURSESTRINGS_STATE_DIR/local.env"
export PURSESTRINGS_LOG_FORMAT="${PURSESTRINGS_LOG_FORMAT:-json}"

stop_all() {
    trap - INT TERM EXIT
    for name in "${SERVICES[@]}"; do stop_pid "$RUN_DIR/$name.pid" "$name"; done
    # PURSESTRINGS_KEEP_INFRA=1 leaves Kafka and Postgres running (a test that runs this stack does).
    [[ "${PURSESTRINGS_KEEP_INFRA:-0}" == "1" ]] || "$PURSESTRINGS_ROOT/deploy/infra.sh" down
    log "stopped"
}

"$PURSESTRINGS_ROOT/deploy/infra.sh" up
# Local webhook secrets, made once and kept in the state folder (issuers and the CLI's `simulate` sign
# with them); a value already in the environment wins.
SECRETS_FILE="$PURSESTRINGS_STATE_DIR/webhook-secrets.env"
if [[ ! -s "$SECRETS_FILE" ]]; then
    (umask 077; for name in STRIPE LITHIC GENERIC; do
        echo "PURSESTRINGS_${name}_WEBHOOK_SECRET=whsec_$(head -c 24 /dev/urandom | base64 | tr -d '/+=')"
    done > "$SECRETS_FILE")
fi
while IFS='=' read -r key value; do
    [[ -n "$key" && -z "${!key:-}" ]] && export "$key=$value"
done < "$SECRETS_FILE"
# Slack: real credentials from the environment, or else the local stand-in on :8084 plays Slack, with a
# bot token and signing secret made once for it.
if [[ -z "${PURSESTRINGS_SLACK_BOT_TOKEN:-}" ]]; then
    SLACK_FILE="$PURSESTRINGS_STATE_DIR/slack-standin.env"
    if [[ ! -s "$SLACK_FILE" ]]; then
        (umask 077
         echo "PURSESTRINGS_SLACK_BOT_TOKEN=xoxb-local-$(head -c 18 /dev/urandom | base64 | tr -d '/+=')"
         echo "PURSESTRINGS_SLACK_SIGNING_SECRET=$(head -c 24 /dev/urandom | base64 | tr -d '/+=')") > "$SLACK_FILE"
    fi
    while IFS='=' read -r key value; do [[ -n "$key" ]] && export "$key=$value"; done < "$SLACK_FILE"
    export PURSESTRINGS_SLACK_API_URL="http://127.0.0.1:8084/api/"
    SERVICES=(slack-standin "${SERVICES[@]}")
fi
"$PURSESTRINGS_PYTHON" -m services.cli migrate
"$PURSESTRINGS_PYTHON" -m services.cli topics >/dev/null
trap 'stop_all; exit 0' INT TERM
trap stop_all EXIT


for name in "${SERVICES[@]}"; do
    if pid_alive "$RUN_DIR/$name.pid"; then log "$name already running"; continue; fi
    "$PURSESTRINGS_PYTHON" -m "${MODULE[$name]}" >>"$LOG_DIR/$name.log" 2>&1 &
    echo $! > "$RUN_DIR/$name.pid"
done

# Each service answers /healthz once it has prepared Kafka and Postgres.
for name in "${SERVICES[@]}"; do
    url="${HEALTH_URL[$name]}"
    for _ in $(seq 1 120); do
        curl -fsS "$url" >/dev/null 2>&1 && break
        pid_alive "$RUN_DIR/$name.pid" || { tail -n 20 "$LOG_DIR/$name.log" >&2; die "$name exited"; }
        sleep 0.5
    done
    curl -fsS "$url" >/dev/null 2>&1 || die "$name did not become healthy; see $LOG_DIR/$name.log"
done

cat <<EOF2

pursestrings is up.
  Kafka       127.0.0.1:$PURSESTRINGS_KAFKA_PORT   (logs: $PURSESTRINGS_STATE_DIR/kafka/logs/)
  PostgreSQL  127.0.0.1:$PURSESTRINGS_PG_PORT   (URL in $PURSESTRINGS_ENV_FILE)
$(for name in "${SERVICES[@]}"; do printf '  %-13s %s   (log: %s)\n' "$name" "${HEALTH_URL[$name]}" "$LOG_DIR/$name.log"; done)

  Metrics     http://127.0.0.1:8080/metrics (gateway), :8081/metrics (authorizer), :8082/metrics (ledger), :8083/metrics (notifier)
  API docs    http://127.0.0.1:8080/docs   (admin key: \`PURSESTRINGS_ENV_FILE=$PURSESTRINGS_ENV_FILE .venv/bin/pursestrings keys create --scope admin\`)
  Webhooks    http://127.0.0.1:8080/webhooks/{stripe,lithic,generic}   (secrets: $SECRETS_FILE)
  Slack       ${PURSESTRINGS_SLACK_API_URL:-https://slack.com/api/}   (approvals post to Slack; clicks come back to http://127.0.0.1:8083/slack/interactivity)
$([[ -n "${SLACK_FILE:-}" ]] && echo "  Slack page  http://127.0.0.1:8084/   (the local stand-in: approval messages with working Approve/Deny buttons)")

Ctrl-C stops everything (or run \`make stop\` from another terminal).
EOF2

# The demo (services/demo.py): the seeds' scenarios through the real webhook path, with a live view.
# PURSESTRINGS_DEMO=0 skips it; PURSESTRINGS_DEMO=once plays the scenarios once and goes on waiting.
case "${PURSESTRINGS_DEMO:-live}" in
    0) ;;
    once) "$PURSESTRINGS_PYTHON" -m services.demo --once || log "the demo failed; the services keep running" ;;
    *) "$PURSESTRINGS_PYTHON" -m services.demo || log "the demo stopped; the services keep running (Ctrl-C stops them)" ;;
esac

# Wait until a service dies or we are told to stop (`make stop` leaves a marker first).
rm -f "$RUN_DIR/stop-requested"
while true; do
    if [[ -e "$RUN_DIR/stop-requested" ]]; then rm -f "$RUN_DIR/stop-requested"; stop_all; exit 0; fi
    for name in "${SERVICES[@]}"; do
        pid_alive "$RUN_DIR/$name.pid" || { tail -n 20 "$LOG_DIR/$name.log" >&2; die "$name exited"; }
    done
    sleep 1
done

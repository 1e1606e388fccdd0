#!/usr/bin/env bash
# `make run`: Kafka, Postgres and every service process that exists, until Ctrl-C (or `make stop`).
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$PURSESTRINGS_ROOT"

SERVICES=(authorizer ledger notifier gateway)
RUN_DIR="$PURSESTRINGS_STATE_DIR/run"
LOG_DIR="$PURSESTRINGS_STATE_DIR/logs"
mkdir -p "$RUN_DIR" "$LOG_DIR"
export PURSESTRINGS_ENV_FILE="$PURSESTRINGS_STATE_DIR/local.env"
export PURSESTRINGS_LOG_FORMAT="${PURSESTRINGS_LOG_FORMAT:-json}"

stop_all() {
    trap - INT TERM EXIT
    for name in "${SERVICES[@]}"; do stop_pid "$RUN_DIR/$name.pid" "$name"; done
    "$PURSESTRINGS_ROOT/deploy/infra.sh" down
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
"$PURSESTRINGS_PYTHON" -m services.cli migrate
"$PURSESTRINGS_PYTHON" -m services.cli topics >/dev/null
trap stop_all INT TERM EXIT


for name in "${SERVICES[@]}"; do
    if pid_alive "$RUN_DIR/$name.pid"; then log "$name already running"; continue; fi
    "$PURSESTRINGS_PYTHON" -m "services.$name" >>"$LOG_DIR/$name.log" 2>&1 &
    echo $! > "$RUN_DIR/$name.pid"
done

# Each service answers /healthz once it has prepared Kafka and Postgres.
declare -A HEALTH_PORT=([gateway]=8080 [authorizer]=8081 [ledger]=8082 [notifier]=8083)
for name in "${SERVICES[@]}"; do
    url="http://127.0.0.1:${HEALTH_PORT[$name]}/healthz"
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
$(for name in "${SERVICES[@]}"; do printf '  %-11s http://127.0.0.1:%s/healthz   (log: %s)\n' "$name" "${HEALTH_PORT[$name]}" "$LOG_DIR/$name.log"; done)

  API docs    http://127.0.0.1:8080/docs   (admin key: \`PURSESTRINGS_ENV_FILE=$PURSESTRINGS_ENV_FILE .venv/bin/pursestrings keys create --scope admin\`)
  Webhooks    http://127.0.0.1:8080/webhooks/{stripe,lithic,generic}   (secrets: $SECRETS_FILE)

Ctrl-C stops everything (or run \`make stop\` from another terminal).
EOF2

# Wait until a service dies or we are told to stop (`make stop` leaves a marker first).
rm -f "$RUN_DIR/stop-requested"
while true; do
    if [[ -e "$RUN_DIR/stop-requested" ]]; then rm -f "$RUN_DIR/stop-requested"; stop_all; exit 0; fi
    for name in "${SERVICES[@]}"; do
        pid_alive "$RUN_DIR/$name.pid" || { tail -n 20 "$LOG_DIR/$name.log" >&2; die "$name exited"; }
    done
    sleep 1
done

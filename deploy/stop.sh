#!/usr/bin/env bash
# `make stop`: stop every service `make run` started, then Kafka and Postgres.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
mkdir -p "$PURSESTRINGS_STATE_DIR/run"
touch "$PURSESTRINGS_STATE_DIR/run/stop-requested"
for pidfile in "$PURSESTRINGS_STATE_DIR"/run/*.pid; do
    [[ -e "$pidfile" ]] && stop_pid "$pidfile" "$(basename "$pidfile" .pid)"
done
"$PURSESTRINGS_ROOT/deploy/infra.sh" down

#!/usr/bin/env bash
# Shared settings for the local (no Docker) infrastructure scripts: paths, ports, and small helpers.
# Every value can be overridden from the environment; the defaults keep clear of common ports.
set -euo pipefail

PURSESTRINGS_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PURSESTRINGS_STATE_DIR="${PURSESTRINGS_STATE_DIR:-$PURSESTRINGS_ROOT/.state}"
export PURSESTRINGS_KAFKA_VERSION="${PURSESTRINGS_KAFKA_VERSION:-4.1.1}"
export PURSESTRINGS_KAFKA_PORT="${PURSESTRINGS_KAFKA_PORT:-19092}"
export PURSESTRINGS_KAFKA_CONTROLLER_PORT="${PURSESTRINGS_KAFKA_CONTROLLER_PORT:-19093}"
export PURSESTRINGS_KAFKA_HEAP="${PURSESTRINGS_KAFKA_HEAP:-512m}"
export PURSESTRINGS_PG_PORT="${PURSESTRINGS_PG_PORT:-15433}"
export PURSESTRINGS_PG_BIN="${PURSESTRINGS_PG_BIN:-/usr/lib/postgresql/15/bin}"
# Where the Kafka jars live once fetched; outside the state folder so `make clean-state` keeps them.
export PURSESTRINGS_KAFKA_LIB="${PURSESTRINGS_KAFKA_LIB:-$PURSESTRINGS_STATE_DIR/kafka-lib/$PURSESTRINGS_KAFKA_VERSION}"
# The Python that runs readiness checks (an admin/metadata call through aiokafka).
export PURSESTRINGS_PYTHON="${PURSESTRINGS_PYTHON:-$PURSESTRINGS_ROOT/.venv/bin/python}"

log() { printf '[%s] %s\n' "$(basename "$0" .sh)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# pid_alive PIDFILE: true when the file names a running process.
pid_alive() {
    [[ -s "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null
}

# stop_pid PIDFILE NAME: TERM, wait up to 30 s, then KILL; removes the pid file.
stop_pid() {
    local pidfile="$1" name="$2" pid
    if ! pid_alive "$pidfile"; then rm -f "$pidfile"; return 0; fi
    pid="$(cat "$pidfile")"
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 300); do
        kill -0 "$pid" 2>/dev/null || { rm -f "$pidfile"; return 0; }
        sleep 0.1
    done
    log "$name did not stop in 30 s; killing it"
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$pidfile"
}

#!/usr/bin/env bash
# Real Apache Kafka (KRaft, one combined broker+controller) from Maven Central jars, without Docker.
# Usage: kafka.sh fetch|up|down|status. Idempotent: `up` reuses a running broker, `down` leaves no process.
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"

KAFKA_DIR="$PURSESTRINGS_STATE_DIR/kafka"
DATA_DIR="$KAFKA_DIR/data"
LOG_DIR="$KAFKA_DIR/logs"
PROPS="$KAFKA_DIR/server.properties"
PIDFILE="$KAFKA_DIR/kafka.pid"
POM="$PURSESTRINGS_ROOT/deploy/kafka/pom.xml"
BOOTSTRAP="127.0.0.1:$PURSESTRINGS_KAFKA_PORT"

fetch() {
    if [[ -f "$PURSESTRINGS_KAFKA_LIB/.complete" ]]; then return 0; fi
    command -v mvn >/dev/null || die "Maven (mvn) is needed to assemble Kafka from Maven Central"
    command -v java >/dev/null || die "a Java 17+ runtime is needed to run Kafka"
    log "assembling Kafka $PURSESTRINGS_KAFKA_VERSION from Maven Central into $PURSESTRINGS_KAFKA_LIB"
    local tmp="$PURSESTRINGS_KAFKA_LIB.partial"
    rm -rf "$tmp"
    mvn -q -B -f "$POM" -Dkafka.version="$PURSESTRINGS_KAFKA_VERSION" \
        dependency:copy-dependencies -DoutputDirectory="$tmp" -DincludeScope=runtime \
        || die "mvn could not assemble the Kafka jars (see the output above)"
    ls "$tmp"/kafka_2.13-"$PURSESTRINGS_KAFKA_VERSION".jar >/dev/null || die "kafka_2.13 jar missing after mvn"
    touch "$tmp/.complete"
    rm -rf "$PURSESTRINGS_KAFKA_LIB"
    mkdir -p "$(dirname "$PURSESTRINGS_KAFKA_LIB")"
    mv "$tmp" "$PURSESTRINGS_KAFKA_LIB"
}

write_config() {
    mkdir -p "$DATA_DIR" "$LOG_DIR"
    sed -e "s|@KAFKA_PORT@|$PURSESTRINGS_KAFKA_PORT|g" \
        -e "s|@CONTROLLER_PORT@|$PURSESTRINGS_KAFKA_CONTROLLER_PORT|g" \
        -e "s|@DATA_DIR@|$DATA_DIR|g" \
        "$PURSESTRINGS_ROOT/deploy/kafka/server.properties.in" > "$PROPS"
    sed -e "s|@LOG_DIR@|$LOG_DIR|g" \
        "$PURSESTRINGS_ROOT/deploy/kafka/log4j2.properties.in" > "$KAFKA_DIR/log4j2.properties"
}

# The classpath wildcard is quoted on purpose: java expands it, the shell must not.
JAVA_CMD=(java -Xms128m "-Xmx$PURSESTRINGS_KAFKA_HEAP" -XX:+UseG1GC -Djava.awt.headless=true
    "-Dlog4j2.configurationFile=$KAFKA_DIR/log4j2.properties" "-Dkafka.logs.dir=$LOG_DIR"
    -cp "$PURSESTRINGS_KAFKA_LIB/*")

run_java() { "${JAVA_CMD[@]}" "$@"; }

format_storage() {
    if [[ -f "$DATA_DIR/meta.properties" ]]; then return 0; fi
    local cluster_id
    cluster_id="$(run_java kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1)"
    [[ -n "$cluster_id" ]] || die "StorageTool random-uuid printed nothing"
    log "formatting KRaft storage (cluster $cluster_id)"
    run_java kafka.tools.StorageTool format -t "$cluster_id" -c "$PROPS" --standalone \
        >"$LOG_DIR/format.log" 2>&1 || { cat "$LOG_DIR/format.log" >&2; die "storage format failed"; }
}

ready() {
    "$PURSESTRINGS_PYTHON" -m services.platform.health --kafka "$BOOTSTRAP" --timeout-s "${1:-0}" >/dev/null 2>&1
}

up() {
    fetch
    if pid_alive "$PIDFILE" && ready 5; then
        log "Kafka already running on $BOOTSTRAP (pid $(cat "$PIDFILE"))"
        return 0
    fi
    if ready 1; then die "something else answers on $BOOTSTRAP; set PURSESTRINGS_KAFKA_PORT"; fi
    stop_pid "$PIDFILE" kafka
    write_config
    format_storage
    local started=$SECONDS
    log "starting Kafka $PURSESTRINGS_KAFKA_VERSION on $BOOTSTRAP"
    # setsid: the broker must outlive the make recipe that started it, and not get its Ctrl-C.
    setsid "${JAVA_CMD[@]}" kafka.Kafka "$PROPS" >"$LOG_DIR/stdout.log" 2>&1 < /dev/null &
    echo $! > "$PIDFILE"
    if ! ready 120; then
        tail -n 40 "$LOG_DIR/stdout.log" "$LOG_DIR/server.log" >&2 2>/dev/null || true
        stop_pid "$PIDFILE" kafka
        die "Kafka did not answer a metadata request within 120 s"
    fi
    log "Kafka ready on $BOOTSTRAP in $((SECONDS - started)) s"
}

down() {
    stop_pid "$PIDFILE" kafka
    # A broker whose pid file was lost still holds our properties file on its command line.
    local stray
    stray="$(pgrep -f "kafka.Kafka $PROPS" || true)"
    if [[ -n "$stray" ]]; then log "stopping stray Kafka $stray"; kill -KILL $stray 2>/dev/null || true; fi
}

status() {
    if pid_alive "$PIDFILE" && ready 2; then echo "kafka: running on $BOOTSTRAP (pid $(cat "$PIDFILE"))"; return 0; fi
    echo "kafka: stopped"; return 1
}

case "${1:-}" in
    fetch) fetch ;;
    up) up ;;
    down) down ;;
    status) status ;;
    *) die "usage: $0 fetch|up|down|status" ;;
esac

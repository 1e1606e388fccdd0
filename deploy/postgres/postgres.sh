#!/usr/bin/env bash
# The machine's own PostgreSQL 15 server, run from a data directory of the project's own on its own
# loopback port; no Docker. Usage: postgres.sh up|down|status|url. Idempotent; `down` leaves no process.
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"

PG_DIR="${PURSESTRINGS_PG_DIR:-$PURSESTRINGS_STATE_DIR/postgres}"
PG_USER_NAME=pursestrings
PG_DATABASE=pursestrings
# The password is made at first start and kept beside the env file, never in the repository.
PASSWORD_FILE="$PURSESTRINGS_STATE_DIR/postgres.password"
ENV_FILE="$PURSESTRINGS_STATE_DIR/local.env"

# As root, the server runs as the `postgres` user (initdb refuses root); otherwise as ourselves.
if [[ "$(id -u)" == 0 ]]; then
    as_server() { runuser -u postgres -- "$@"; }
else
    as_server() { "$@"; }
fi

install_server() {
    if [[ -x "$PURSESTRINGS_PG_BIN/initdb" ]]; then return 0; fi
    [[ "$(id -u)" == 0 ]] || die "PostgreSQL 15 server binaries missing; install postgresql-15"
    log "installing Debian's postgresql-15"
    apt-get update -qq && apt-get install -y -qq --no-install-recommends postgresql-15 >/dev/null \
        || die "apt-get could not install postgresql-15"
}

choose_directory() {
    mkdir -p "$PURSESTRINGS_STATE_DIR"
    if [[ "$(id -u)" == 0 ]] && ! runuser -u postgres -- test -x "$PURSESTRINGS_STATE_DIR" 2>/dev/null \
        && [[ -z "${PURSESTRINGS_PG_DIR:-}" ]]; then
        # The checkout is not reachable by the postgres user (a private home, say): keep the
        # cluster in a folder named after the checkout instead, and say where.
        PG_DIR="/var/tmp/pursestrings-postgres-$(printf '%s' "$PURSESTRINGS_STATE_DIR" | md5sum | cut -c1-12)"
        log "the postgres user cannot reach $PURSESTRINGS_STATE_DIR; using $PG_DIR"
    fi
    DATA="$PG_DIR/data"; RUN="$PG_DIR/run"; LOGS="$PG_DIR/logs"
}

password() {
    if [[ ! -s "$PASSWORD_FILE" ]]; then
        (umask 077; head -c 18 /dev/urandom | base64 | tr -d '/+=' > "$PASSWORD_FILE")
    fi
    cat "$PASSWORD_FILE"
}

database_url() {
    echo "postgresql://$PG_USER_NAME:$(password)@127.0.0.1:$PURSESTRINGS_PG_PORT/$PG_DATABASE"
}

init_cluster() {
    if [[ -f "$DATA/PG_VERSION" ]]; then return 0; fi
    log "initialising a PostgreSQL cluster in $DATA"
    mkdir -p "$PG_DIR"
    [[ "$(id -u)" == 0 ]] && chown postgres:postgres "$PG_DIR"
    as_server mkdir -p "$DATA" "$RUN" "$LOGS"
    as_server "$PURSESTRINGS_PG_BIN/initdb" -D "$DATA" -U postgres --auth-local=trust \
        --auth-host=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8 >"$PG_DIR/initdb.log" 2>&1 \
        || { cat "$PG_DIR/initdb.log" >&2; die "initdb failed"; }
}

server_ready() {
    "$PURSESTRINGS_PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PURSESTRINGS_PG_PORT" -t "${1:-1}"
}

start_server() {
    as_server "$PURSESTRINGS_PG_BIN/pg_ctl" -D "$DATA" -l "$LOGS/postgres.log" -w -t 60 start -o \
        "-c listen_addresses=127.0.0.1 -c port=$PURSESTRINGS_PG_PORT -c unix_socket_directories=$RUN \
         -c max_connections=200 -c shared_buffers=128MB -c fsync=on" >/dev/null \
        || { tail -n 30 "$LOGS/postgres.log" >&2; die "PostgreSQL did not start"; }
    for _ in $(seq 1 120); do server_ready 1 && return 0; sleep 0.5; done
    die "pg_isready did not answer within 60 s"
}

create_role_and_database() {
    local psql=("$PURSESTRINGS_PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$RUN" -p "$PURSESTRINGS_PG_PORT" -U postgres)
    # The application role may create databases (tests) and roles (the read-only reader role).
    as_server "${psql[@]}" -d postgres -v password="$(password)" <<'SQL'
SELECT format('CREATE ROLE pursestrings LOGIN CREATEDB CREATEROLE PASSWORD %L', :'password')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'pursestrings') \gexec
SELECT format('ALTER ROLE pursestrings PASSWORD %L', :'password') \gexec
SELECT 'CREATE DATABASE pursestrings OWNER pursestrings'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'pursestrings') \gexec
SQL
}

write_env_file() {
    # Read by services and tests through PURSESTRINGS_ENV_FILE; environment variables still win.
    (umask 077; cat > "$ENV_FILE.tmp" <<EOF2
PURSESTRINGS_DATABASE_URL=$(database_url)
PURSESTRINGS_KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:$PURSESTRINGS_KAFKA_PORT
EOF2
    mv "$ENV_FILE.tmp" "$ENV_FILE")
}

up() {
    install_server
    choose_directory
    if [[ -f "$DATA/postmaster.pid" ]] && server_ready 1; then
        log "PostgreSQL already running on 127.0.0.1:$PURSESTRINGS_PG_PORT"
    else
        if server_ready 1; then die "something else answers on port $PURSESTRINGS_PG_PORT; set PURSESTRINGS_PG_PORT"; fi
        init_cluster
        local started=$SECONDS
        start_server
        log "PostgreSQL ready on 127.0.0.1:$PURSESTRINGS_PG_PORT in $((SECONDS - started)) s"
    fi
    create_role_and_database
    write_env_file
}

down() {
    choose_directory
    if [[ -f "$DATA/postmaster.pid" ]]; then
        log "stopping PostgreSQL"
        as_server "$PURSESTRINGS_PG_BIN/pg_ctl" -D "$DATA" -m fast -w -t 60 stop >/dev/null 2>&1 \
            || as_server "$PURSESTRINGS_PG_BIN/pg_ctl" -D "$DATA" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    local stray
    stray="$(pgrep -f "postgres -D $DATA" || true)"
    if [[ -n "$stray" ]]; then log "stopping stray PostgreSQL $stray"; kill -KILL $stray 2>/dev/null || true; fi
}

status() {
    choose_directory
    if [[ -f "$DATA/postmaster.pid" ]] && server_ready 1; then
        echo "postgres: running on 127.0.0.1:$PURSESTRINGS_PG_PORT ($DATA)"; return 0
    fi
    echo "postgres: stopped"; return 1
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    status) status ;;
    url) database_url ;;
    *) die "usage: $0 up|down|status|url" ;;
esac

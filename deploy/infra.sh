#!/usr/bin/env bash
# Kafka and PostgreSQL together: infra.sh up|down|status. What `make infra-up` / `infra-down` call.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
here="$PURSESTRINGS_ROOT/deploy"

case "${1:-}" in
    up)
        "$here/postgres/postgres.sh" up
        "$here/kafka/kafka.sh" up
        ;;
    down)
        "$here/kafka/kafka.sh" down
        "$here/postgres/postgres.sh" down
        ;;
    status)
        rc=0
        "$here/kafka/kafka.sh" status || rc=1
        "$here/postgres/postgres.sh" status || rc=1
        exit $rc
        ;;
    *) die "usage: $0 up|down|status" ;;
esac

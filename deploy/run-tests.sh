#!/usr/bin/env bash
# `make test`: start (or reuse) Kafka and Postgres, run the whole suite, and stop what this run
# started. Passes pytest's exit code through, except 5 ("no tests collected"), reported plainly.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$PURSESTRINGS_ROOT"

already_running=0
"$PURSESTRINGS_ROOT/deploy/infra.sh" status >/dev/null 2>&1 && already_running=1
stop_if_ours() {
    if [[ $already_running == 0 ]]; then "$PURSESTRINGS_ROOT/deploy/infra.sh" down; fi
}
trap stop_if_ours EXIT

started=$SECONDS
"$PURSESTRINGS_ROOT/deploy/infra.sh" up
log "infrastructure up in $((SECONDS - started)) s"

set +e
"$PURSESTRINGS_ROOT/.venv/bin/pytest" "$@"
rc=$?
set -e
if [[ $rc == 5 ]]; then
    log "pytest collected no tests (exit 5): treated as success, but nothing was proven"
    rc=0
fi
exit $rc

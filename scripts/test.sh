#!/usr/bin/env bash
# Runs the whole suite twice, both passes at once: on the embedded SQLite default and on PostgreSQL.
# KIZUNA_TEST_DATABASES=sqlite (or postgres) runs just one; extra arguments go to pytest.
set -uo pipefail
cd "$(dirname "$0")/.."

# Browser tests drive Debian's Chromium; install it when we can (root with apt), else say how.
if [ ! -x /usr/bin/chromium ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "Installing Debian's chromium for the browser tests..."
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
            || echo "warning: could not install chromium; browser tests will fail" >&2
    else
        echo "Browser tests need /usr/bin/chromium: run 'sudo apt-get install chromium'." >&2
    fi
fi

pg_url=${KIZUNA_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/kizuna}
dbs=${KIZUNA_TEST_DATABASES:-sqlite postgres}

.venv/bin/ruff check kizuna tests bench || exit 1

# One pass: pytest on the named database, extra arguments passed through.
run_pass() {
    local db=$1; shift
    if [ "$db" = postgres ]; then
        if ! .venv/bin/python scripts/wait_for_postgres.py "$pg_url"; then
            echo "PostgreSQL is not reachable at $pg_url (set KIZUNA_TEST_POSTGRES_URL)." >&2
            return 1
        fi
        KIZUNA_DATABASE_URL=$pg_url .venv/bin/python -m pytest "$@"
    else
        env -u KIZUNA_DATABASE_URL .venv/bin/python -m pytest "$@"
    fi
    local rc=$?
    [ $rc = 5 ] && echo "no tests were collected on $db" >&2
    return $rc
}

# Both passes at once (each session has its own data directory, ports and test database): much
# of a pass is spent waiting on browsers, subprocesses and the network, so two overlap well.
# KIZUNA_TEST_SERIAL=1 runs them one after the other, with their output as it comes.
count=$(echo $dbs | wc -w)
status=0
if [ "$count" -gt 1 ] && [ "${KIZUNA_TEST_SERIAL:-0}" != 1 ]; then
    logs=$(mktemp -d)
    declare -A pids
    for db in $dbs; do
        echo "=== tests on $db: started $(date -u +%H:%M:%S), output at the end ==="
        run_pass "$db" "$@" > "$logs/$db.log" 2>&1 &
        pids[$db]=$!
    done
    for db in $dbs; do
        wait "${pids[$db]}" || status=1
    done
    for db in $dbs; do
        echo "=== tests on $db ==="
        cat "$logs/$db.log"
    done
    rm -rf "$logs"
else
    for db in $dbs; do
        echo "=== tests on $db ==="
        run_pass "$db" "$@" || status=1
    done
fi
exit $status

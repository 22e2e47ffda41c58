#!/usr/bin/env bash
# pgharness.sh — a private, throwaway PostgreSQL cluster for the test suite.
#
#   pgharness.sh start STATE_FILE [MIGRATIONS_DIR CG_MIGRATE]
#   pgharness.sh restart STATE_FILE [MODE [PAUSE_S]]  # stop (fast) and start the same cluster
#   pgharness.sh stop STATE_FILE                      # stop it and remove all its files
#
# start: initdb into a fresh temporary directory, listen on a free port on 127.0.0.1 and on
# its own socket directory, create the database "coregroup" migrated by cg-migrate and a
# template "cg_template" of it, and write the connection settings to STATE_FILE as KEY=VALUE
# lines (CG_TEST_DSN, CG_TEST_PGHOST, CG_TEST_PGPORT, ...). Cores log in as a role of their
# group (a member of coregroup_app mapped to the group, so that row-level security confines
# them), which the suites create and map as they need them (tests/testutil.c). ctest runs
# start as a fixture setup and stop as its cleanup, so the cluster goes away even when tests
# fail; a start first stops whatever cluster a killed earlier run left behind.
set -euo pipefail

cmd=${1:?usage: pgharness.sh start|restart|stop STATE_FILE}
state=${2:?usage: pgharness.sh start|restart|stop STATE_FILE}
. "$(dirname "$0")/pgcluster.sh"

log() { echo "pgharness: $*"; }

stop_cluster() {
  [ -f "$state" ] || return 0
  . "$state"
  if [ -n "${CG_TEST_ROOT:-}" ] && [ -d "$CG_TEST_ROOT" ]; then
    pgc_stop "$CG_TEST_PGDATA" immediate
    rm -rf "$CG_TEST_ROOT"
    log "stopped and removed the cluster on port $CG_TEST_PGPORT"
  fi
  rm -f "$state"
}

case "$cmd" in
stop)
  stop_cluster
  ;;
restart)
  . "$state"
  pgc_stop "$CG_TEST_PGDATA" "${3:-fast}"
  sleep "${4:-0}"
  pgc_start "$CG_TEST_PGDATA" "$CG_TEST_PGPORT" "$CG_TEST_PGHOST" "$CG_TEST_ROOT/server.log"
  ;;
start)
  migrations=${3:-}
  cgmigrate=${4:-}
  stop_cluster
  root=$(mktemp -d "${TMPDIR:-/tmp}/coregroup-pg.XXXXXX")
  chmod 755 "$root"
  mkdir -p "$root/sock"
  if [ "$(id -u)" = 0 ]; then chown postgres: "$root" "$root/sock"; fi
  cat >"$root/settings" <<CONF
# throwaway test cluster: durability off for speed, room for the concurrency tests
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 300
shared_buffers = 128MB
log_min_messages = warning
CONF
  pgc_init "$root/data" "$root/settings"
  # One role authenticates with a password, so a wrong password can be tested.
  pgc_as_pg sh -c "{ echo 'host all cg_password 127.0.0.1/32 scram-sha-256'; cat '$root/data/pg_hba.conf'; } > '$root/data/hba' && mv '$root/data/hba' '$root/data/pg_hba.conf'"
  port=""
  for _ in $(seq 1 20); do
    candidate=$((20000 + RANDOM % 40000))
    pgc_port_free "$candidate" || continue
    if pgc_start "$root/data" "$candidate" "$root/sock" "$root/server.log"; then
      port=$candidate
      break
    fi
  done
  if [ -z "$port" ]; then
    echo "pgharness: could not start PostgreSQL on a free port; server log:" >&2
    cat "$root/server.log" >&2 || true
    rm -rf "$root"
    exit 1
  fi
  cat >"$state" <<ST
CG_TEST_ROOT=$root
CG_TEST_PGDATA=$root/data
CG_TEST_PGHOST=$root/sock
CG_TEST_PGPORT=$port
CG_TEST_PGBIN=$PGC_BIN
CG_TEST_HARNESS=$(cd "$(dirname "$0")" && pwd)/pgharness.sh
CG_TEST_DSN="host=$root/sock port=$port user=postgres dbname=coregroup"
CG_TEST_ADMIN_DSN="host=$root/sock port=$port user=postgres dbname=postgres"
ST
  psql() { "$PGC_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$root/sock" -p "$port" -U postgres "$@"; }
  psql -d postgres -c "CREATE ROLE cg_password LOGIN PASSWORD 'right-password'" \
    -c "CREATE DATABASE coregroup"
  if [ -n "$migrations" ]; then
    "$cgmigrate" -q -m "$migrations" -d "host=$root/sock port=$port user=postgres dbname=coregroup" up
    psql -d postgres -c "CREATE DATABASE cg_template TEMPLATE coregroup"
  fi
  log "PostgreSQL $("$PGC_BIN/postgres" --version | awk '{print $3}') on port $port, socket $root/sock${migrations:+, migrated}"
  ;;
*)
  echo "pgharness: unknown command $cmd (start, restart or stop)" >&2
  exit 2
  ;;
esac

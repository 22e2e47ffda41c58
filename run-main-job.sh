#!/usr/bin/env bash
# run-main-job.sh — the main job, from a fresh Debian 12 machine.
#
# Installs missing Debian packages, builds, starts the local repository (a private PostgreSQL
# cluster under run/, created on the first run and reused afterwards), migrates it with
# cg-migrate, and shows the DBA's view: the migration status and the tables.
#
#   ./run-main-job.sh          start (or reuse) the repository and show it
#   ./run-main-job.sh stop     stop the local repository
# Environment: CG_PORT (default 54329), the repository's port on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")"
. tests/bootstrap.sh

case "${1:-}" in
-h | --help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
"" | stop) ;;
*) echo "run-main-job.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
esac

cg_install_packages
. tests/pgcluster.sh
port=${CG_PORT:-54329}
run=$CG_ROOT/run

if [ "${1:-}" = stop ]; then
  if [ -d "$run/pg/data" ] && pgc_running "$run/pg/data"; then
    pgc_stop "$run/pg/data"
    echo "==> stopped the local repository"
  else
    echo "==> the local repository is not running"
  fi
  exit 0
fi

cg_build build
pgdir=$(pgc_make_dir "$run/pg")
if [ ! -f "$pgdir/data/PG_VERSION" ]; then
  echo "==> creating the local repository in run/pg (port $port)"
  mkdir -p "$pgdir/sock"
  [ "$(id -u)" = 0 ] && chown postgres: "$pgdir/sock"
  printf 'max_connections = 200\nlog_min_messages = warning\n' >"$pgdir/settings"
  pgc_init "$pgdir/data" "$pgdir/settings"
fi
if pgc_running "$pgdir/data"; then
  echo "==> the local repository is already running (port $port)"
else
  pgc_port_free "$port" || { echo "port $port is taken: set CG_PORT to a free port" >&2; exit 1; }
  pgc_start "$pgdir/data" "$port" "$pgdir/sock" "$pgdir/server.log"
  echo "==> started the local repository on 127.0.0.1:$port"
fi
psql() { "$PGC_BIN/psql" -X -q -h "$pgdir/sock" -p "$port" -U postgres "$@"; }
psql -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'coregroup'" | grep -q 1 ||
  psql -d postgres -c "CREATE DATABASE coregroup"
dsn="host=$pgdir/sock port=$port user=postgres dbname=coregroup"

echo "==> cg-migrate up"
build/cg-migrate -m migrations -d "$dsn" up
echo
echo "==> cg-migrate verify"
build/cg-migrate -m migrations -d "$dsn" verify
echo
echo "==> the tables (psql \\dt+)"
psql -d coregroup -c '\dt+'
echo "==> the repository keeps running; connect with:"
echo "    psql \"$dsn\""
echo "    stop it with: ./run-main-job.sh stop"

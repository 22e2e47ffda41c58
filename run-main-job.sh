#!/usr/bin/env bash
# run-main-job.sh — the main job, from a fresh Debian 12 machine: a local repository, two bus
# forwarders and four cores doing real work that a person can follow on screen.
#
#   ./run-main-job.sh          start (or reuse) everything, run the scenario, leave it running
#   ./run-main-job.sh stop     stop the cores, the forwarders, the watcher and the repository
#
# It installs missing Debian packages, builds (into build-main/), starts the repository (a
# private PostgreSQL cluster under run/, created on the first run and reused afterwards),
# migrates it with cg-migrate and maps a login role to each group (cg-migrate map-role),
# starts two cg-busd forwarders, three coregroupd cores of the group "demo" (all logged in as
# cg_demo) and one core of its own private group, and a cg-watch on the bus. Then:
# register services, read them from every core (cache hits), update one part from two cores
# at once (one wins, one gets "stale" and retries), show the invalidations arriving, kill a
# core with SIGKILL and show the others declaring it failed, stop a forwarder and show the
# caches still converge, and print a summary table. Everything runs on 127.0.0.1; logs and
# configuration are in run/.
# Environment: CG_PORT (default 54329) the repository's port; CG_BASE_PORT (default 7100) the
# first of the ports used by the forwarders (4) and the cores (4).
set -euo pipefail
cd "$(dirname "$0")"
. tests/bootstrap.sh

case "${1:-}" in
-h | --help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
"" | stop) ;;
*) echo "run-main-job.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
esac

cg_install_packages jq
. tests/pgcluster.sh
port=${CG_PORT:-54329}
base=${CG_BASE_PORT:-7100}
run=$CG_ROOT/run
bin=$CG_ROOT/build-main
cores=(core-a core-b core-c core-p)

say() { printf '\n\033[1m== %s\033[0m\n' "$*" 2>/dev/null || printf '\n== %s\n' "$*"; }
alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

stop_all() {
  local c
  for c in "${cores[@]}"; do
    [ -f "$run/$c.ini" ] && "$bin/cgctl" -c "$run/$c.ini" stop || true
  done
  for p in busd-1 busd-2 watch; do
    if alive "$run/$p.pid"; then kill "$(cat "$run/$p.pid")"; echo "stopped $p"; fi
    rm -f "$run/$p.pid"
  done
  if [ -d "$run/pg/data" ] && pgc_running "$run/pg/data"; then
    pgc_stop "$run/pg/data"
    echo "stopped the local repository"
  fi
}

if [ "${1:-}" = stop ]; then
  stop_all
  exit 0
fi

cg_build build-main -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCG_BUILD_TESTS=OFF
mkdir -p "$run"

say "the repository: PostgreSQL under run/pg, port $port"
pgdir=$(pgc_make_dir "$run/pg")
if [ ! -f "$pgdir/data/PG_VERSION" ]; then
  mkdir -p "$pgdir/sock"
  [ "$(id -u)" = 0 ] && chown postgres: "$pgdir/sock"
  printf 'max_connections = 200\nlog_min_messages = warning\n' >"$pgdir/settings"
  pgc_init "$pgdir/data" "$pgdir/settings"
  echo "created a new cluster"
fi
if pgc_running "$pgdir/data"; then
  echo "already running"
else
  pgc_port_free "$port" || { echo "port $port is taken: set CG_PORT to a free port" >&2; exit 1; }
  pgc_start "$pgdir/data" "$port" "$pgdir/sock" "$pgdir/server.log"
  echo "started"
fi
psql() { "$PGC_BIN/psql" -X -q -h "$pgdir/sock" -p "$port" -U postgres "$@"; }
psql -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'coregroup'" | grep -q 1 ||
  psql -d postgres -c "CREATE DATABASE coregroup"
dba_dsn="host=$pgdir/sock port=$port user=postgres dbname=coregroup"
"$bin/cg-migrate" -m migrations -d "$dba_dsn" up
# one login role per group, mapped by the DBA: row-level security confines every session to
# the group its login is mapped to (idempotent; local logins are trusted in this cluster)
"$bin/cg-migrate" -d "$dba_dsn" map-role cg_demo demo
"$bin/cg-migrate" -d "$dba_dsn" map-role cg_private_core_p private.core-p

say "the bus: two cg-busd forwarders"
busd_start() { # name front back
  if alive "$run/$1.pid"; then
    echo "$1 already running"
    return
  fi
  setsid "$bin/cg-busd" --name "$1" --frontend "tcp://127.0.0.1:$2" --backend "tcp://127.0.0.1:$3" \
    --stats-interval 60 >>"$run/$1.log" 2>&1 </dev/null &
  echo $! >"$run/$1.pid"
  echo "$1: publishers -> tcp://127.0.0.1:$2, subscribers <- tcp://127.0.0.1:$3"
}
busd_start busd-1 "$base" $((base + 1))
busd_start busd-2 $((base + 2)) $((base + 3))

say "four cores: core-a, core-b, core-c in group \"demo\", core-p in a private group"
i=0
for c in "${cores[@]}"; do
  group="group = demo" role=cg_demo
  [ "$c" = core-p ] && group="; no group: the private group private.core-p" role=cg_private_core_p
  cat >"$run/$c.ini" <<INI
; written by run-main-job.sh
[repository]
dsn = host=$pgdir/sock port=$port user=$role dbname=coregroup
[core]
name = $c
$group
failure_timeout_ms = 1500
log_level = info
[bus]
publish = tcp://127.0.0.1:$base, tcp://127.0.0.1:$((base + 2))
subscribe = tcp://127.0.0.1:$((base + 1)), tcp://127.0.0.1:$((base + 3))
heartbeat_interval_ms = 200
poll_interval_ms = 1000
[daemon]
listen = tcp://127.0.0.1:$((base + 4 + i))
pidfile = $run/$c.pid
INI
  printf '%s: ' "$c"
  "$bin/cgctl" -c "$run/$c.ini" start --log "$run/$c.log"
  i=$((i + 1))
done
if ! alive "$run/watch.pid"; then
  setsid "$bin/cg-watch" --connect "tcp://127.0.0.1:$((base + 3))" --group demo \
    >>"$run/watch.log" 2>&1 </dev/null &
  echo $! >"$run/watch.pid"
fi
sleep 1
ctl() { local c=$1; shift; "$bin/cgctl" -c "$run/$c.ini" "$@"; }

say "register three services on core-a and bind their names in the root folder"
handles=()
for svc in printer-1 printer-2 scanner-1; do
  h=$(ctl core-a register --kind service --service-id "${svc%-*}" --state '{"jobs":0}')
  ctl core-a bind 0 "$svc-$h" "$h" >/dev/null
  handles+=("$h")
  echo "core-a registered $svc as handle $h (service id ${svc%-*})"
done
h=${handles[0]}
echo "core-a: the last names in the root folder (the repository keeps earlier runs' too):"
ctl core-a list 0 | tail -n 3
echo "core-a finds the replicas of service \"printer\": $(ctl core-a find printer | tr '\n' ' ')"
hp=$(ctl core-p register --kind service --state '{"private":true}')
echo "core-p (private group) registered handle $hp; core-a asking for it:"
ctl core-a get "$hp" state || true

say "read the state of handle $h from every core: the first read fills the cache, the second is a hit"
for c in core-a core-b core-c; do
  ctl "$c" get "$h" state >/dev/null
  ctl "$c" get "$h" state >/dev/null
  printf '%s: %s   (cache hits so far: %s)\n' "$c" "$(ctl "$c" get "$h" state | head -n 1)" \
    "$(ctl "$c" --json stats | jq -r '.stats.cache_hits // .cache_hits')"
done

say "core-b and core-c update the same part at once, both based on the version they read"
v=$(ctl core-b --json get "$h" state | jq -r '.. | objects | select(has("version")) | .version' | head -n 1)
racers=()
for c in core-b core-c; do
  (rc=0
    ctl "$c" update "$h" state "$v" "{\"jobs\":1,\"by\":\"$c\"}" >"$run/$c.update" 2>&1 || rc=$?
    echo "$rc" >"$run/$c.update.rc") &
  racers+=($!)
done
wait "${racers[@]}"
for c in core-b core-c; do
  if [ "$(cat "$run/$c.update.rc")" = 0 ]; then
    echo "$c won: version $v -> $(cat "$run/$c.update")"
  else
    echo "$c lost: $(cat "$run/$c.update")"
    cur=$(ctl "$c" --json get "$h" state | jq -r '.. | objects | select(has("version")) | .version' | head -n 1)
    echo "$c re-reads (version $cur) and retries: version $cur -> $(ctl "$c" update "$h" state "$cur" "{\"jobs\":2,\"by\":\"$c\"}")"
  fi
done

say "the invalidations arriving on the bus (cg-watch, via busd-2)"
sleep 0.5
grep " inval " "$run/watch.log" | tail -n 2
for c in core-a core-b core-c; do
  printf '%s now serves: %s\n' "$c" "$(ctl "$c" get "$h" state | head -n 1)"
done

say "kill core-c with SIGKILL: the others declare it failed and fence it"
kill -9 "$(cat "$run/core-c.pid")"
for _ in $(seq 1 50); do
  ctl core-a --json members | jq -e '.. | objects | select(.name? == "core-c" and .state? == "failed")' >/dev/null 2>&1 && break
  sleep 0.2
done
ctl core-a members

say "stop forwarder busd-1: the caches still converge through busd-2"
kill "$(cat "$run/busd-1.pid")" && rm -f "$run/busd-1.pid"
v=$(ctl core-a --json get "$h" state | jq -r '.. | objects | select(has("version")) | .version' | head -n 1)
t0=$(date +%s%N)
nv=$(ctl core-a update "$h" state "$v" '{"jobs":3,"by":"core-a"}')
for _ in $(seq 1 200); do
  ctl core-b get "$h" state | head -n 1 | grep -q "version $nv" && break
  sleep 0.01
done
echo "core-a wrote version $nv; core-b served it $(( ($(date +%s%N) - t0) / 1000000 )) ms later"
grep " inval " "$run/watch.log" | tail -n 1

say "summary"
printf '%-8s %7s %7s %7s %7s %7s %7s %5s\n' core calls hits misses stale sent recvd gaps
for c in core-a core-b core-p; do
  ctl "$c" --json stats | jq -r --arg c "$c" '(.stats // .) as $s |
    [$c, $s.calls_committed, $s.cache_hits, $s.cache_misses, $s.stale_errors,
     $s.invalidations_sent, $s.invalidations_received, $s.gaps] | @tsv' |
    awk -F'\t' '{ printf "%-8s %7s %7s %7s %7s %7s %7s %5s\n", $1, $2, $3, $4, $5, $6, $7, $8 }'
done
echo "core-c   (killed)"

say "still running"
echo "cores core-a, core-b, core-p; forwarder busd-2; the repository on port $port (run/ has logs)"
echo "watch the bus:   $bin/cg-watch --connect tcp://127.0.0.1:$((base + 3)) --group demo"
echo "ask a core:      $bin/cgctl -c run/core-a.ini members"
echo "run it again:    ./run-main-job.sh   (restarts what was stopped)"
echo "stop it all:     ./run-main-job.sh stop"

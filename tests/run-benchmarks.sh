#!/usr/bin/env bash
# run-benchmarks.sh — print coregroup's figures, each against a baseline measured in the same
# run (benchmarks print numbers; they never pass or fail on timing).
#
#   tests/run-benchmarks.sh [SECONDS]     default 1 s per measurement
#
# Builds (optimised), starts a private PostgreSQL cluster (as the test harness does: fsync off,
# so the figures compare CPU and round trips, not the disk), runs every bench_* program and
# removes the cluster.
set -euo pipefail
cd "$(dirname "$0")/.."
. tests/bootstrap.sh
seconds=${1:-1}

cg_install_packages
cg_build build-bench -DCMAKE_BUILD_TYPE=Release
state=$(mktemp)
trap 'tests/pgharness.sh stop "$state" >/dev/null; rm -f "$state"' EXIT
tests/pgharness.sh start "$state" "$PWD/migrations" "$PWD/build-bench/cg-migrate"
. "$state"
# the cores log in as their group's role (row-level security confines each to its group)
build-bench/cg-migrate -q -d "$CG_TEST_DSN" map-role cg_bench bench
build-bench/cg-migrate -q -d "$CG_TEST_DSN" map-role cg_bench_bus bench-bus
build-bench/cg-migrate -q -d "$CG_TEST_DSN" map-role cg_bench_daemon bench-daemon
echo "== machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
for b in build-bench/tests/bench_*; do
  echo "== $(basename "$b")"
  case "$(basename "$b")" in
  bench_core) "$b" --dsn "$CG_TEST_DSN user=cg_bench" --seconds "$seconds" ;;
  bench_bus) "$b" --dsn "$CG_TEST_DSN user=cg_bench_bus" --busd build-bench/cg-busd ;;
  bench_daemon)
    "$b" --dsn "$CG_TEST_DSN user=cg_bench_daemon" --coregroupd build-bench/coregroupd \
      --group bench-daemon --seconds "$seconds"
    ;;
  *) "$b" --seconds "$seconds" ;;
  esac
done

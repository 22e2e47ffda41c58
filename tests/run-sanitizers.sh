#!/usr/bin/env bash
# run-sanitizers.sh — the test suite under a sanitizer that needs a build directory of its own.
#
#   tests/run-sanitizers.sh tsan [--full | --short] [-- CTEST_ARGS...]
#
# Modes:
#   tsan   ThreadSanitizer. Configures and builds build-tsan (CMake option CG_TSAN: gcc
#          -fsanitize=thread -g -O1, with CG_WERROR and CG_TEST_HOOKS), then runs ctest there
#          with TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 and the suppressions of
#          tests/tsan.supp (third-party libraries only, each with its reason). Every
#          instrumented process, the coregroupd, cg-busd and cgctl the suites start included,
#          writes its reports to build-tsan/tsan/report.<pid>; they are printed at the end.
#            --full   every ctest test (the default; about 4-5 minutes on 2 CPUs)
#            --short  the suites that drive the threads, about 2-3 minutes with the build:
#                     cache (sharded locks, single flight), concurrency (one core's pool
#                     under 16 writers), bus (publisher, subscriber and apply threads,
#                     forwarders), membership (housekeeping: heartbeats, fencing,
#                     recovery), daemon (coregroupd's broker and workers), systemd
#                     (coregroupd's watchdog prober) and metrics (libmicrohttpd scraping
#                     while workers serve)
# Extra arguments after -- go to ctest (for example: tsan --full -- -R call).
# Progress lines start with "==>". Exit status: 0 clean; 1 a finding (a sanitizer report, or
# a test that failed under the sanitizer); 2 bad usage or a configure or build error.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)

usage() { awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; }
die_usage() {
  echo "run-sanitizers.sh: $1 (try --help)" >&2
  exit 2
}

# The suites of `tsan --short` (ctest names; each is tests/test_<name>.c). Chosen by measuring
# a TSan build on 2 CPUs: these seven take about 2 minutes together and run every long-lived
# thread of a core and of coregroupd; the others mostly repeat those threads on other paths.
TSAN_SHORT=(cache concurrency bus membership daemon systemd metrics)

# build DIR CMAKE_ARGS...: configure DIR, and build all its targets or those in $targets.
build() {
  local dir=$1
  shift
  mkdir -p "$dir"
  echo "==> configuring ${dir#"$root"/} ($*)"
  if ! cmake -S "$root" -B "$dir" "$@" >"$dir/configure.log" 2>&1; then
    cat "$dir/configure.log" >&2
    echo "run-sanitizers.sh: configure failed (log: ${dir#"$root"/}/configure.log)" >&2
    exit 2
  fi
  echo "==> building ${targets[*]:-all targets}"
  if ! cmake --build "$dir" -j "$(nproc)" ${targets[@]+--target "${targets[@]}"} \
    >"$dir/build.log" 2>&1; then
    tail -n 40 "$dir/build.log" >&2
    echo "run-sanitizers.sh: build failed (log: ${dir#"$root"/}/build.log)" >&2
    exit 2
  fi
}

run_tsan() {
  local dir="$root/build-tsan" selection=() what status=0 reports f
  targets=()
  scope=${scope:-full}
  case "$scope" in
  full) what="every ctest test" ;;
  short)
    what="${TSAN_SHORT[*]}"
    targets=(cg-migrate) # pg_start's
    local s re=""
    for s in "${TSAN_SHORT[@]}"; do
      targets+=("test_$s") # their programs come with them (add_dependencies)
      re+="${re:+|}$s"
    done
    # the pg fixture's pg_start and pg_stop are added by ctest itself
    selection=(-R "^($re)\$")
    ;;
  esac
  [ ${#ctest_args[@]} -eq 0 ] || what+="; ctest arguments: ${ctest_args[*]}"
  build "$dir" -DCMAKE_BUILD_TYPE=Debug -DCG_TSAN=ON -DCG_WERROR=ON -DCG_TEST_HOOKS=ON

  # A kernel with more mmap randomisation than this TSan runtime knows (vm.mmap_rnd_bits
  # above 28) makes every instrumented program die at start: say so instead of failing 30
  # tests.
  local smoke
  if ! smoke=$("$dir/cg-migrate" --help 2>&1 >/dev/null); then
    echo "$smoke" | head -n 5 >&2
    echo "run-sanitizers.sh: a ThreadSanitizer program does not start here (if it says" \
      "'unexpected memory mapping': sysctl vm.mmap_rnd_bits=28)" >&2
    exit 2
  fi

  rm -rf "$dir/tsan"
  mkdir -p "$dir/tsan"
  echo "==> running ctest under ThreadSanitizer ($scope: $what)"
  (cd "$dir" &&
    TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:suppressions=$root/tests/tsan.supp:log_path=$dir/tsan/report" \
      ctest --output-on-failure ${selection[@]+"${selection[@]}"} ${ctest_args[@]+"${ctest_args[@]}"}) ||
    status=$?

  mapfile -t reports < <(find "$dir/tsan" -type f -name 'report.*' | sort)
  if [ ${#reports[@]} -gt 0 ]; then
    # one file per process that reported (halt_on_error: its first report ended it)
    echo "==> ThreadSanitizer reports from ${#reports[@]} processes (build-tsan/tsan/):"
    for f in "${reports[@]}"; do
      echo "--- ${f#"$root"/}"
      head -n 80 "$f"
    done
    grep -h '^SUMMARY: ThreadSanitizer' "${reports[@]}" | sort | uniq -c | sed 's/^ */==> /'
    echo "==> tsan: FINDING: ThreadSanitizer reported (fix the code; tests/tsan.supp is for" \
      "third-party libraries only)"
    return 1
  fi
  if [ "$status" -ne 0 ]; then
    echo "==> tsan: FINDING: ctest failed under ThreadSanitizer without a report (exit $status;" \
      "a test's timing under the slowdown, or a real failure: see its output above)"
    return 1
  fi
  echo "==> tsan: clean ($scope: $(grep -cE '^[0-9]+/[0-9]+ Testing: ' \
    "$dir/Testing/Temporary/LastTest.log") ctest tests passed, no ThreadSanitizer report)"
}

mode=""
scope=""
ctest_args=()
while [ $# -gt 0 ]; do
  case "$1" in
  -h | --help)
    usage
    exit 0
    ;;
  --full | --short)
    [ -z "$scope" ] || die_usage "one of --full and --short"
    scope=${1#--}
    ;;
  --)
    shift
    ctest_args=("$@")
    break
    ;;
  -*) die_usage "unknown option $1" ;;
  *)
    [ -z "$mode" ] || die_usage "one mode at a time"
    mode=$1
    ;;
  esac
  shift
done

case "$mode" in
tsan)
  run_tsan
  ;;
"") die_usage "no mode given" ;;
*) die_usage "unknown mode $mode" ;;
esac

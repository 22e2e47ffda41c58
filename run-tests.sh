#!/usr/bin/env bash
# run-tests.sh — the whole test suite, from a fresh Debian 12 machine.
#
# Installs missing Debian packages, checks the formatting (clang-format), builds with warnings
# as errors and runs every Check suite through ctest against a private PostgreSQL cluster that
# the harness creates and removes; then builds again with AddressSanitizer and
# UndefinedBehaviorSanitizer and runs the suite once more, then runs the suites that drive the
# threads under ThreadSanitizer (tests/run-sanitizers.sh tsan --short, about 3 minutes; `tsan
# --full` runs them all), and last runs each libFuzzer target (bus messages, repository.ini,
# migration files) for 15 seconds on its seed corpus. After the first ctest pass it runs every
# fault scenario of tests/fault/run-faults.py in its short form (not when arguments are given
# to ctest).
#
#   ./run-tests.sh            everything (this is what CI runs)
#   ./run-tests.sh --quick    skip the sanitizer passes and the fuzzers
# Extra arguments after -- go to ctest (for example: -- -R migrate).
# Exit status: 0 when every step passed, else the first failing step's status.
set -euo pipefail
cd "$(dirname "$0")"
. tests/bootstrap.sh

quick=0
ctest_args=()
while [ $# -gt 0 ]; do
  case "$1" in
  --quick) quick=1 ;;
  -h | --help)
    sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
  --) shift; ctest_args=("$@"); break ;;
  *) echo "run-tests.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
  esac
  shift
done

cg_install_packages

echo "==> checking the format of every C file (clang-format --dry-run -Werror)"
git ls-files '*.c' '*.h' | xargs clang-format --dry-run -Werror

cg_build build -DCG_WERROR=ON -DCG_TEST_HOOKS=ON
# check_summary DIR: every Check suite's own count of the tests it ran.
check_summary() {
  echo "==> Check suites ($1):"
  grep -hE '^Running suite|^[0-9]+%: Checks:' "$1/Testing/Temporary/LastTest.log" | paste - - |
    sed 's/Running suite(s): /    /'
}

echo "==> running the test suite"
(cd build && ctest --output-on-failure "${ctest_args[@]}")
check_summary build

if [ ${#ctest_args[@]} -eq 0 ]; then
  # Every fault scenario in its short form, against the programs just built (they have the
  # fault-injection hooks): its own PostgreSQL, forwarders and cores, a load, the history
  # checker. The partitions need root, ip and nft; without them it says SKIPPED. The event
  # log goes to build/fault-quick.log, shown when it fails.
  echo "==> fault scenarios, short form (tests/fault/run-faults.py --quick)"
  if ! /usr/bin/python3 tests/fault/run-faults.py --quick --bin build \
    --markdown build/fault-quick.md --json build/fault-quick.json 2>build/fault-quick.log; then
    tail -n 40 build/fault-quick.log >&2
    echo "fault scenarios failed (event log: build/fault-quick.log)" >&2
    exit 1
  fi
fi

if [ "$quick" = 0 ]; then
  cg_build build-asan -DCG_WERROR=ON -DCG_SANITIZE=ON -DCG_TEST_HOOKS=ON -DCMAKE_BUILD_TYPE=Debug
  echo "==> running the test suite under AddressSanitizer + UndefinedBehaviorSanitizer"
  (cd build-asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 ctest --output-on-failure "${ctest_args[@]}")
  check_summary build-asan
  # its own build-tsan; prints its progress (==>) and every report, exits 1 on a finding
  tests/run-sanitizers.sh tsan --short -- "${ctest_args[@]}"
  check_summary build-tsan
  echo "==> fuzzing every decoder of outside input for a bounded time (libFuzzer, clang)"
  tests/fuzz/run-fuzzers.sh 15
fi
# Reached only when every step passed (set -e): one closing line with the ctest count.
total=0
dirs=(build)
[ "$quick" = 0 ] && dirs+=(build-asan)
for d in "${dirs[@]}"; do
  total=$((total + $(cd "$d" && ctest -N | sed -n 's/^Total Tests: //p')))
done
# the ThreadSanitizer pass runs a subset: count the tests it ran
if [ "$quick" = 0 ]; then
  total=$((total + $(grep -cE '^[0-9]+/[0-9]+ Testing: ' build-tsan/Testing/Temporary/LastTest.log)))
fi
echo "==> all tests passed"
echo "ctest: $total passed, 0 failed"

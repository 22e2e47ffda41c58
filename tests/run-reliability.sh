#!/usr/bin/env bash
# run-reliability.sh — the reliability and security suite in its long forms, and the figures
# table it leaves behind (tests/fault/RESULTS.md, linked from the README).
#
#   tests/run-reliability.sh            everything, long forms (about 35 minutes on 2 CPUs)
#   tests/run-reliability.sh --short    the same steps in their short forms (about 10 minutes)
#   tests/run-reliability.sh --out FILE write the table to FILE instead
#
# The steps, one after the other (never two heavy ones at once: the timing-sensitive checks and
# the figures both suffer on a small machine):
#   1. faults:  tests/fault/run-faults.py, every scenario (kills, pauses, forwarders,
#               PostgreSQL restarts, bus loss, a locked counter, a pruned outbox, hostile SQL and
#               forged bus messages, partitions between hosts in network namespaces), --full
#               (40 s each) or --quick (10 s each), judged by tests/fault/checker.py;
#   2. soak:    the daemons under valgrind memcheck under the load generator (0 errors, 0
#               definitely or indirectly lost bytes), with the scenarios the daemons survive;
#   3. tsan:    the whole ctest suite under ThreadSanitizer (tests/run-sanitizers.sh tsan);
#   4. fuzz:    the four libFuzzer targets, 60 s each (--short: 15 s), on their corpora and
#               regression inputs (tests/fuzz/run-fuzzers.sh).
# Needs root for the partitions (network namespaces, nftables); without root they are reported
# as skipped in the table, never run without their fault.
#
# Exit status: 0 every step passed; 1 a step found a violation (a lost update, a stale read, a
# race, a leak, a crash...); 2 the suite itself failed (a build, a missing tool, bad usage).
# Each step's own output is kept in build-reliability/ (the table names the files).
set -uo pipefail
cd "$(dirname "$0")/.."
. tests/bootstrap.sh

short=0
out=tests/fault/RESULTS.md
while [ $# -gt 0 ]; do
  case "$1" in
  --short) short=1 ;;
  --out)
    [ $# -ge 2 ] || { echo "run-reliability.sh: --out needs a file" >&2; exit 2; }
    out=$2
    shift
    ;;
  -h | --help)
    sed -n '2,26p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
  *) echo "run-reliability.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
  esac
  shift
done

cg_install_packages || exit 2
cg_build build-reliability -DCG_TEST_HOOKS=ON || exit 2
work=build-reliability/results
rm -rf "$work"
mkdir -p "$work"
py=/usr/bin/python3
status=0
# note STEP RC: remember the worst outcome (2 beats 1 beats 0)
note() {
  echo "==> $1: exit $2"
  if [ "$2" -ge 2 ]; then status=2; elif [ "$2" = 1 ] && [ "$status" = 0 ]; then status=1; fi
}
start=$(date +%s)

if [ "$short" = 1 ]; then form=--quick soak_s=15 fuzz_s=15 tsan=--short; else
  form=--full soak_s=45 fuzz_s=60 tsan=--full
fi

echo "==> faults ($form): tests/fault/run-faults.py"
$py tests/fault/run-faults.py $form --bin build-reliability --json "$work/faults.json" \
  --markdown "$work/faults.md" >"$work/faults.log" 2>&1
rc=$?
tail -n 25 "$work/faults.log"
note faults $rc

# The soak: fewer clients, since every daemon runs some twenty times slower under memcheck.
echo "==> soak: the daemons under valgrind memcheck, ${soak_s} s per scenario"
$py tests/fault/run-faults.py --valgrind --quick --duration "$soak_s" --bin build-reliability \
  --writers 6 --readers 3 --timeout-ms 5000 \
  --scenario stop-core --scenario kill-forwarder --scenario pg-restart-fast \
  --scenario slow-repository --scenario isolation-attacks --scenario partition-repository \
  --json "$work/soak.json" --markdown "$work/soak.md" >"$work/soak.log" 2>&1
rc=$?
tail -n 20 "$work/soak.log"
note soak $rc

echo "==> tsan ($tsan): tests/run-sanitizers.sh"
tests/run-sanitizers.sh tsan "$tsan" >"$work/tsan.log" 2>&1
rc=$?
tail -n 15 "$work/tsan.log"
note tsan $rc

echo "==> fuzz: ${fuzz_s} s per target"
tests/fuzz/run-fuzzers.sh "$fuzz_s" >"$work/fuzz.log" 2>&1
rc=$?
sed -n '/^==> summary/,$p' "$work/fuzz.log"
note fuzz $rc

minutes=$((($(date +%s) - start + 59) / 60))
{
  echo "# Reliability and security figures"
  echo
  echo "The last run of \`tests/run-reliability.sh$([ "$short" = 1 ] && echo " --short")\`, $(date -u +%Y-%m-%d), ${minutes} minutes;"
  echo "overall exit status $status (0: nothing found). Regenerate with the same command; each step's"
  echo "own log is in \`build-reliability/results/\`. What the columns mean: \`tests/fault/run-faults.py --help\`"
  echo "and the header of \`tests/fault/checker.py\`."
  echo
  echo "## Faults under load (tests/fault/run-faults.py $form)"
  echo
  if [ -s "$work/faults.md" ]; then cat "$work/faults.md"; else
    echo "No table: the harness failed (exit status in faults.log):"
    echo
    tail -n 5 "$work/faults.log" | sed 's/^/    /'
  fi
  echo
  echo "## Soak under valgrind memcheck (${soak_s} s per scenario, 6 writers, 3 readers)"
  echo
  if [ -s "$work/soak.md" ]; then cat "$work/soak.md"; else
    echo "No table: the soak failed:"
    echo
    tail -n 5 "$work/soak.log" | sed 's/^/    /'
  fi
  echo
  echo "## ThreadSanitizer (tests/run-sanitizers.sh tsan $tsan)"
  echo
  grep -E '^==>|tests passed|Total Test time|WARNING: ThreadSanitizer' "$work/tsan.log" | tail -n 12 |
    sed 's/^/    /'
  echo
  echo "## Fuzzing (tests/fuzz/run-fuzzers.sh $fuzz_s)"
  echo
  echo "| target | what was tried | what survived |"
  echo "| --- | --- | --- |"
  sed -n '/^==> summary/,$p' "$work/fuzz.log" | grep '^fuzz_' | while IFS= read -r line; do
    t=${line%%:*}
    echo "| $t | ${line#*: } | $(case "$line" in *"no crash"*) echo "no crash, leak or timeout" ;; *) echo "**FAILED**" ;; esac) |"
  done
  echo
  echo "Regression inputs in tests/fuzz/regressions/, replayed by ctest in every build (\`fuzz_replay_<target>\`): $(find tests/fuzz/regressions -mindepth 2 -type f 2>/dev/null | wc -l)."
} >"$out"
echo "==> wrote $out"
echo "==> reliability suite: exit $status"
exit "$status"

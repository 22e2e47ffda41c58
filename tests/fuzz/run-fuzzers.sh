#!/usr/bin/env bash
# run-fuzzers.sh SECONDS — build the libFuzzer targets and run each one for SECONDS.
#
# Configures a separate build directory, build-fuzz, with clang and -DCG_FUZZ=ON (the library
# instrumented for libFuzzer, AddressSanitizer and UndefinedBehaviorSanitizer), then runs
# fuzz_message, fuzz_config, fuzz_sqlsplit and fuzz_request one after the other, each on a
# fresh COPY of its seed corpus in tests/fuzz/corpus/ and of its regressions in
# tests/fuzz/regressions/ (the repository's files are never modified), with inputs up to
# 64 KiB. Prints one summary line per fuzzer.
#
#   tests/fuzz/run-fuzzers.sh 20
#
# Kept in build-fuzz/fuzz/<target>/: the grown corpus, the full log, and any crash, leak,
# timeout or out-of-memory reproducer (rerun one with: build-fuzz/<target> <file>).
#
# A crash found here becomes a regression: copy its reproducer into
# tests/fuzz/regressions/<target>/ under a name that says what it is, fix the bug, and commit
# both (tests/fuzz/regressions/README.md lists where each input came from). The ctest test
# fuzz_replay_<target> then runs it in every build, through tests/fuzz/replay.c with gcc too,
# and under AddressSanitizer in the sanitizer pass; and this script seeds with it from then on.
# Exit status: 0 when no fuzzer found anything, 1 when one did, 2 on a usage or build error.
set -euo pipefail

if [ $# -ne 1 ] || ! [[ "$1" =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: $0 SECONDS   (seconds per fuzzer, a positive integer)" >&2
  exit 2
fi
seconds=$1
root=$(cd "$(dirname "$0")/../.." && pwd)
build="$root/build-fuzz"

if ! command -v clang >/dev/null; then
  echo "run-fuzzers.sh: clang is required (Debian: apt-get install -y clang)" >&2
  exit 2
fi

echo "==> configuring $build (clang, CG_FUZZ=ON)"
mkdir -p "$build"
if ! CC=clang cmake -S "$root" -B "$build" -DCG_FUZZ=ON -DCG_BUILD_TESTS=OFF \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo >"$build/configure.log" 2>&1; then
  cat "$build/configure.log" >&2
  exit 2
fi
echo "==> building the fuzzers"
if ! cmake --build "$build" -j"$(nproc)" \
  --target fuzz_message fuzz_config fuzz_sqlsplit fuzz_request >"$build/build.log" 2>&1; then
  tail -n 40 "$build/build.log" >&2
  echo "run-fuzzers.sh: build failed (full log: $build/build.log)" >&2
  exit 2
fi

found=0
summary=()
for name in message config sqlsplit request; do
  target="fuzz_$name"
  out="$build/fuzz/$target"
  rm -rf "$out"
  mkdir -p "$out/artifacts"
  cp -R "$root/tests/fuzz/corpus/$name" "$out/corpus"
  # every input that ever crashed a decoder or hit one of its edges is a seed too
  for f in "$root/tests/fuzz/regressions/$name"/*; do
    if [ -f "$f" ]; then cp "$f" "$out/corpus/regression-$(basename "$f")"; fi
  done
  # the real inputs are seeds too, taken from where they live so they never go stale
  case "$name" in
  config) cp "$root/repository.ini.example" "$out/corpus/" ;;
  sqlsplit) cp "$root"/migrations/*.sql "$out/corpus/" ;;
  esac
  seeds=$(find "$out/corpus" -type f | wc -l)
  echo "==> $target for ${seconds}s on a copy of tests/fuzz/{corpus,regressions}/$name ($seeds seeds)"
  status=0
  "$build/$target" -max_total_time="$seconds" -max_len=65536 -print_final_stats=1 \
    -artifact_prefix="$out/artifacts/" "$out/corpus" >"$out/log" 2>&1 || status=$?
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$out/log" | tail -n 1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$out/log" | tail -n 1)
  corpus=$(find "$out/corpus" -type f | wc -l)
  artifacts=$(find "$out/artifacts" -type f | wc -l)
  if [ "$status" -ne 0 ] || [ "$artifacts" -ne 0 ]; then
    found=1
    line="$target: FAILED (exit $status) after ${runs:-?} runs; reproducers in $out/artifacts/, log $out/log"
    grep -m 1 -E '^==[0-9]+==ERROR|runtime error|^SUMMARY' "$out/log" >&2 || true
  else
    line="$target: ok, ${runs:-?} runs in ${seconds}s (${rate:-?}/s), corpus $seeds -> $corpus files, no crash"
  fi
  echo "$line"
  summary+=("$line")
done

echo "==> summary"
printf '%s\n' "${summary[@]}"
exit "$found"

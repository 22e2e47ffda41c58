#!/usr/bin/env bash
# run-benchmarks.sh — coregroup's benchmark suite in one command: the Swatch mix under the three
# cache strategies (in-process and through coregroupd), its scaling curves over cores and write
# fractions, and the micro-benchmarks, each against a baseline measured in the same run.
#
#   tests/run-benchmarks.sh [--quick] [--out DIR] [...]     (--help: every option)
#
# Installs what a fresh Debian 12 machine lacks (python3-matplotlib for the plots), builds
# optimised into build-bench/, and runs tests/bench/bench.py, which starts its own PostgreSQL,
# forwarder and cores, stops them all at the end, and writes results.json, results.md and PNG
# plots to DIR (default tests/bench/results; --quick: tests/bench/results/quick, not kept in
# git). --quick takes under 2 minutes, the full run under 15. Benchmarks print figures; they
# never pass or fail on timing. Exit status: 0 done, 1 a run failed or lost an update, 2 bad
# usage.
set -euo pipefail
cd "$(dirname "$0")/.."
. tests/bootstrap.sh

cg_install_packages python3-matplotlib
# refuse bad options before spending minutes on a build
/usr/bin/python3 tests/bench/bench.py --validate "$@"
case " $* " in *" --help "* | *" -h "*) exit 0 ;; esac
cg_build build-bench -DCMAKE_BUILD_TYPE=Release
exec /usr/bin/python3 tests/bench/bench.py --build "$PWD/build-bench" "$@"

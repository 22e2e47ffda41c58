# bootstrap.sh — sourced by run-tests.sh and run-main-job.sh: install what a fresh Debian 12
# machine lacks, and build. Nothing runs on sourcing.

# docker-compose (v1) validates docker/compose.yaml without an engine (tests/docker_test.sh).
# libsystemd-dev: sd_notify (Type=notify, watchdog) in coregroupd and cg-busd; optional to build.
CG_DEBIAN_PACKAGES=(build-essential cmake pkg-config postgresql postgresql-client libpq-dev
  libzmq3-dev libcjson-dev check libinih-dev clang clang-format docker-compose python3-zmq python3-psycopg2
  libsystemd-dev)
# The man pages (man/): help2man from each program's --help, python3 for repository.ini(5), and
# man-db and groff-base to render and check them (ctest test `man`).
CG_DEBIAN_PACKAGES+=(help2man python3 man-db groff-base)
# The /metrics endpoint of coregroupd and cg-busd (libmicrohttpd), and the Prometheus parser that
# tests/test_metrics.c reads their scrapes with (Debian's python3-prometheus-client).
CG_DEBIAN_PACKAGES+=(libmicrohttpd-dev python3-prometheus-client)
# Userspace RCU (liburcu-bp): read-side sections and deferred reclamation for the cache's
# lock-free hits (coregroup/reclaim.h).
CG_DEBIAN_PACKAGES+=(liburcu-dev)
# The fault harness (tests/fault/): each core on a host of its own, a network namespace joined
# by veth pairs to a bridge (iproute2), partitions as nftables rules; the daemons' soak under
# valgrind memcheck (tests/run-reliability.sh).
CG_DEBIAN_PACKAGES+=(iproute2 nftables valgrind)

# Install the Debian packages that are missing (apt-get update first, once).
cg_install_packages() {
  local missing=() p
  for p in "${CG_DEBIAN_PACKAGES[@]}" "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "==> installing Debian packages: ${missing[*]}"
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
}

# cg_build DIR [CMAKE_ARGS...]: configure and build the project into DIR.
cg_build() {
  local dir=$1
  shift
  echo "==> building in $dir ($*)"
  cmake -S "$CG_ROOT" -B "$CG_ROOT/$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >/dev/null
  if ! cmake --build "$CG_ROOT/$dir" -j "$(nproc)" >"$CG_ROOT/$dir/build.log" 2>&1; then
    cat "$CG_ROOT/$dir/build.log" >&2
    echo "build failed (log: $dir/build.log)" >&2
    return 1
  fi
}

CG_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

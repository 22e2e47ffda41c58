#!/usr/bin/env bash
# systemd_units_test.sh BUILD_DIR NOTIFY — the systemd units as `cmake --install` writes them:
# installed into a temporary prefix, with ExecStart naming that prefix's binaries and Type=
# matching the build (NOTIFY is 1 when built with libsystemd: Type=notify and a WatchdogSec=,
# else Type=exec and none); `systemd-analyze verify` accepts both templates instantiated
# (coregroupd@core-a, cg-busd@a) without a single warning, `systemd-analyze security` rates
# each sandbox at an exposure of 2.0 or less, and the sandbox leaves libzmq what it needs. Without systemd-analyze it says so and
# exits 77, which ctest reports as skipped.
set -euo pipefail
build=$1
notify=$2
if ! command -v systemd-analyze >/dev/null 2>&1; then
  echo "systemd_units: SKIPPED: systemd-analyze is not installed (Debian: systemd)"
  exit 77
fi
prefix=$(mktemp -d)
trap 'rm -rf "$prefix"' EXIT
cmake --install "$build" --prefix "$prefix" >/dev/null
units=$prefix/lib/systemd/system
fail() { echo "systemd_units: $*" >&2; exit 1; }
for f in "$units/coregroupd@.service" "$units/cg-busd@.service" \
  "$prefix/lib/sysusers.d/coregroup.conf" "$prefix/share/coregroup/cg-busd.env.example"; do
  [ -f "$f" ] || fail "not installed: ${f#"$prefix"/}"
done
grep -qx "ExecStart=$prefix/bin/coregroupd -c /etc/coregroup/%i.ini" "$units/coregroupd@.service" ||
  fail "coregroupd@.service does not start $prefix/bin/coregroupd"
grep -q "^ExecStart=$prefix/bin/cg-busd --name %i " "$units/cg-busd@.service" ||
  fail "cg-busd@.service does not start $prefix/bin/cg-busd"
for u in coregroupd@.service cg-busd@.service; do
  ! grep -q '@[A-Z_]*@' "$units/$u" || fail "$u: unconfigured @VARIABLE@ left"
  if [ "$notify" = 1 ]; then
    grep -qx 'Type=notify' "$units/$u" || fail "$u: not Type=notify in a build with libsystemd"
    grep -q '^WatchdogSec=' "$units/$u" || fail "$u: no WatchdogSec="
  else
    grep -qx 'Type=exec' "$units/$u" || fail "$u: not Type=exec in a build without libsystemd"
    ! grep -q '^WatchdogSec=' "$units/$u" || fail "$u: WatchdogSec= without sd_notify"
  fi
  # libzmq aborts when getifaddrs() cannot open a netlink socket (binding tcp://IP:PORT) and
  # when sched_setscheduler() is refused (every thread it starts): tightening either kills
  # the daemon at start.
  grep -q '^RestrictAddressFamilies=.*AF_NETLINK' "$units/$u" ||
    fail "$u: RestrictAddressFamilies= without AF_NETLINK: libzmq aborts binding tcp://"
  ! grep -q '^SystemCallFilter=~.*@resources' "$units/$u" ||
    fail "$u: SystemCallFilter= denies @resources: libzmq aborts on sched_setscheduler"
done
# verify loads each template through an instance beside it, and checks that ExecStart and
# ExecReload name executables.
for inst in coregroupd@core-a.service cg-busd@a.service; do
  out=$(cd "$units" && systemd-analyze verify "$units/$inst" 2>&1) ||
    fail "systemd-analyze verify $inst failed: $out"
  [ -z "$out" ] || fail "systemd-analyze verify $inst warned: $out"
  score=$(cd "$units" && systemd-analyze security --offline=true --threshold=20 "$units/$inst" 2>&1 |
    sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p') ||
    fail "systemd-analyze security $inst: exposure above 2.0: $score"
  echo "systemd_units: $inst verified, exposure $score"
done
echo "systemd_units: units installed for $prefix/bin and verified (notify=$notify)"

#!/bin/bash
# metrics-probe.sh PORT [PATTERN] — a container healthcheck that reads the daemon's own
# /metrics endpoint (coregroupd's [daemon] metrics_listen, cg-busd's --metrics) on this
# container's loopback and succeeds when the endpoint answers 200 and, with PATTERN, a line of
# the exposition matches it (an extended regular expression, e.g. a gauge at 0).
#
# The images carry no HTTP client (Debian packages only, nothing fetched; see the Dockerfile),
# so this uses bash's /dev/tcp for one HTTP/1.0 GET; the server side is libmicrohttpd's.
# Exit: 0 healthy, 1 not (Docker's meanings).
set -u
port=${1:?usage: metrics-probe.sh PORT [PATTERN]}
pattern=${2:-^coregroup_build_info}
exec 3<>"/dev/tcp/127.0.0.1/$port" || exit 1
printf 'GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3
reply=$(timeout 4 cat <&3) || exit 1
exec 3<&-
case "$reply" in
"HTTP/1."?" 200"*) ;;
*) echo "metrics-probe: no 200 from 127.0.0.1:$port/metrics" >&2; exit 1 ;;
esac
printf '%s\n' "$reply" | tr -d '\r' | grep -Eq -- "$pattern" && exit 0
echo "metrics-probe: nothing on 127.0.0.1:$port/metrics matches $pattern" >&2
exit 1

#!/bin/sh
# docker-entrypoint.sh — the images' entry point: run any coregroup program, coregroupd by
# default. The programs are on PATH (/opt/coregroup/bin), so
#
#     docker run IMAGE                                   coregroupd -c /etc/coregroup/repository.ini
#     docker run IMAGE -c /etc/coregroup/other.ini       coregroupd -c /etc/coregroup/other.ini
#     docker run IMAGE cg-busd --frontend ... --backend ...
#     docker run IMAGE cg-migrate -d DSN up
#
# Arguments that start with "-" go to coregroupd; anything else is a command. The program
# replaces this shell (exec), so it receives the container's signals itself.
set -e
case "${1-}" in
"" | -*) set -- coregroupd "$@" ;;
esac
exec "$@"

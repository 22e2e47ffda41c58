#!/bin/sh
# help2man.sh PROGRAM INCLUDE OUTPUT — PROGRAM(1) from PROGRAM's --help and --version alone,
# plus INCLUDE (help2man's include format) for what --help does not say: the NAME line,
# FILES, SEE ALSO.
#
# Every program's --help ends with an "Exit status: ..." paragraph; help2man leaves it as a
# paragraph of OPTIONS, so it is promoted here to an EXIT STATUS section, whose text stays
# the one in --help (it is never written twice). Output is written beside OUTPUT and renamed,
# so a failed run leaves no half page behind. Exit status: help2man's, or 1 when the program
# printed no "Exit status:" paragraph. $HELP2MAN, if set, is the help2man to run.
set -eu
prog=$1
include=$2
out=$3
trap 'rm -f "$out.tmp" "$out.tmp2"' EXIT
"${HELP2MAN:-help2man}" --no-info --section=1 --include="$include" --output="$out.tmp" "$prog"
if ! grep -q '^Exit status: ' "$out.tmp"; then
  echo "help2man.sh: $prog --help has no \"Exit status:\" paragraph" >&2
  exit 1
fi
# ".PP" then "Exit status: X" becomes '.SH "EXIT STATUS"' then "X" (the paragraph is the
# last of --help, so the section runs to the include file's FILES and SEE ALSO).
sed -e '/^\.PP$/{N' -e 's/^\.PP\nExit status: /.SH "EXIT STATUS"\n/' -e '}' "$out.tmp" >"$out.tmp2"
mv "$out.tmp2" "$out"

#!/usr/bin/env bash
# man_test.sh PAGE_DIR EXAMPLE HELP2MAN PYTHON3 PROGRAM... — the ctest test `man`: every page
# the build made renders with man(1) and groff without a single warning, is not empty, has a
# whatis line man-db can index, and says what its source says: each program's page names every
# option that program's --help lists, and repository.ini.5 every section and key of EXAMPLE.
#
# HELP2MAN and PYTHON3 are what CMake found (or *-NOTFOUND): without them the build makes no
# pages, and without man-db or groff nothing can be rendered; then, and only then, the test is
# skipped (exit 77, ctest's SKIP_RETURN_CODE), naming the missing tool. Any other problem,
# a page missing included, fails it.
set -euo pipefail
pages=$1 example=$2 help2man=$3 python3=$4
shift 4
programs=("$@")

skip() {
  echo "SKIP: $1 is not installed (Debian: $2); no man page can be checked" >&2
  exit 77
}
case $help2man in *NOTFOUND | "") skip "help2man (when CMake configured the build)" help2man ;; esac
case $python3 in *NOTFOUND | "") skip "python3 (when CMake configured the build)" python3 ;; esac
command -v man >/dev/null || skip man man-db
command -v lexgrog >/dev/null || skip lexgrog man-db
command -v groff >/dev/null || skip groff groff-base

failed=0 # failures so far
fail() {
  echo "FAIL: $*" >&2
  failed=$((failed + 1))
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# check_page PAGE: renders cleanly and is not empty; sets text to the page's text, one long
# line per paragraph (no hyphenation, no justification), ASCII, for the content checks.
check_page() {
  local page=$1 warnings
  text=""
  if [ ! -s "$page" ]; then
    fail "$page: missing or empty"
    return 1
  fi
  warnings=$(MANROFFSEQ='' MANWIDTH=80 man --warnings=w -E UTF-8 -l -Tutf8 "$page" 2>&1 >/dev/null) ||
    fail "$page: man -l failed"
  [ -z "$warnings" ] || fail "$page: man --warnings: $warnings"
  warnings=$(groff -man -ww -z "$page" 2>&1) || fail "$page: groff failed"
  [ -z "$warnings" ] || fail "$page: groff -ww: $warnings"
  lexgrog "$page" >/dev/null || fail "$page: lexgrog finds no whatis (NAME) line"
  MANROFFSEQ='' MANWIDTH=1000 man --nh --nj -E ascii -l "$page" >"$tmp/page" 2>/dev/null ||
    fail "$page: man -l -E ascii failed"
  text=$(sed 's/.\x08//g' "$tmp/page")
  local section
  for section in NAME SYNOPSIS DESCRIPTION; do
    grep -q "^$section\$" <<<"$text" || fail "$page: no $section section"
  done
  [ "$(grep -c '[[:alnum:]]' <<<"$text")" -ge 10 ] || fail "$page: fewer than 10 lines of text"
}

# mentions TEXT WORD: WORD occurs in TEXT as a word of its own (an option, not a prefix of one)
mentions() {
  grep -qE -- "(^|[^[:alnum:]-])$2([^[:alnum:]-]|\$)" <<<"$1"
}

for prog in "${programs[@]}"; do
  name=$(basename "$prog")
  page="$pages/$name.1"
  before=$failed
  check_page "$page" || continue
  grep -q '^EXIT STATUS$' <<<"$text" || fail "$page: no EXIT STATUS section"
  help=$("$prog" --help) || fail "$name --help failed"
  # every option --help lists: long ones anywhere, short ones where they stand as options
  options=$(grep -oE -- '--[[:alnum:]][[:alnum:]-]*' <<<"$help" | sort -u)
  options+=$'\n'$(grep -oE -- '(^|[[:space:][|,])-[[:alpha:]]([],[:space:]|]|$)' <<<"$help" |
    grep -oE -- '-[[:alpha:]]' | sort -u)
  n=0
  for opt in $options; do
    n=$((n + 1))
    mentions "$text" "$opt" || fail "$page does not mention $opt, which $name --help lists"
  done
  [ "$n" -ge 2 ] || fail "$name --help: found only $n options (expected at least --help, --version)"
  [ "$failed" -ne "$before" ] || echo "ok $page ($n options)"
done

page="$pages/repository.ini.5"
before=$failed
if check_page "$page"; then
  n=0
  while IFS= read -r line; do
    if [[ $line =~ ^\[([A-Za-z0-9_.-]+)\] ]]; then
      grep -qF "[${BASH_REMATCH[1]}]" <<<"$text" || fail "$page: no section [${BASH_REMATCH[1]}]"
    elif [[ $line =~ ^[\;#]?([A-Za-z0-9_]+)[[:space:]]*= ]]; then
      n=$((n + 1))
      grep -qE "^ +${BASH_REMATCH[1]} = " <<<"$text" ||
        fail "$page: no key ${BASH_REMATCH[1]}, which $example has"
    fi
  done <"$example"
  [ "$n" -ge 10 ] || fail "$example: found only $n keys"
  [ "$failed" -ne "$before" ] || echo "ok $page ($n keys)"
fi

if [ "$failed" -ne 0 ]; then
  echo "man: $failed failures" >&2
  exit 1
fi
echo "man: every page rendered without warnings and says what its source says"

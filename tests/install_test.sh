#!/usr/bin/env bash
# install_test.sh BUILD_DIR — `cmake --install` into a temporary prefix must give the headers,
# both libraries, coregroup.pc, the programs and the migrations; and a program built against
# the installed library with nothing but `pkg-config coregroup` must compile, link and run.
set -euo pipefail
build=$1
prefix=$(mktemp -d)
trap 'rm -rf "$prefix"' EXIT
cmake --install "$build" --prefix "$prefix" >/dev/null
libdir=$(ls -d "$prefix"/lib*/ | head -n 1)
for f in include/coregroup.h include/coregroup/errors.h include/coregroup/config.h \
  bin/cg-migrate share/coregroup/migrations/0001_initial.up.sql share/coregroup/schema.sql \
  share/coregroup/repository.ini.example; do
  [ -e "$prefix/$f" ] || { echo "not installed: $f" >&2; exit 1; }
done
for f in libcoregroup.so libcoregroup.a pkgconfig/coregroup.pc; do
  [ -e "$libdir/$f" ] || { echo "not installed: lib/$f" >&2; exit 1; }
done
cat >"$prefix/hello.c" <<'C'
#include <coregroup.h>
#include <stdio.h>
#include <string.h>
int main(void)
{
    cg_config *cfg = NULL;
    const char *ini = "[repository]\ndsn = dbname=x\n[core]\nname = hello\n";
    if (cg_config_parse(&cfg, ini, strlen(ini), "hello.ini") != 0)
        return 1;
    printf("%s %s\n", CG_VERSION, cfg->group_id);
    cg_config_free(cfg);
    return 0;
}
C
export PKG_CONFIG_PATH="$libdir/pkgconfig"
# shellcheck disable=SC2046
cc -std=c11 -o "$prefix/hello" "$prefix/hello.c" $(pkg-config --cflags --libs coregroup)
out=$(LD_LIBRARY_PATH="$libdir" "$prefix/hello")
[ "$out" = "$(pkg-config --modversion coregroup) private.hello" ] || { echo "unexpected: $out" >&2; exit 1; }
# the installed cg-migrate finds the installed migrations by default
"$prefix/bin/cg-migrate" --help | grep -q "/share/coregroup/migrations" ||
  { echo "cg-migrate does not default to the installed migrations" >&2; exit 1; }
echo "install: headers, libraries, coregroup.pc, programs and migrations installed; pkg-config build ran: $out"

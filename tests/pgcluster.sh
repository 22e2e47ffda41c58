# pgcluster.sh — shell functions for a private PostgreSQL cluster, sourced by the test
# harness (pgharness.sh) and the main job (run-main-job.sh). Nothing runs on sourcing.
#
# PostgreSQL refuses to run as root: as root, the server runs as the "postgres" user, so its
# directories must be owned by and reachable for that user.

# Directory holding initdb, pg_ctl, postgres, psql and pg_dump of the newest installed server.
pgc_bindir() {
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  if [ -z "$d" ] || [ ! -x "$d/initdb" ]; then
    d=$(dirname "$(command -v initdb 2>/dev/null || echo /nonexistent/initdb)")
  fi
  if [ ! -x "$d/initdb" ]; then
    echo "PostgreSQL server binaries (initdb, pg_ctl) not found; install the postgresql package" >&2
    return 1
  fi
  echo "$d"
}

pgc_as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# pgc_init DATADIR: initdb with local trust authentication and settings for SETTINGS_FILE (a
# file of postgresql.conf lines, may be empty).
pgc_init() {
  local data=$1 settings=${2:-}
  mkdir -p "$data"
  if [ "$(id -u)" = 0 ]; then chown postgres: "$data"; fi
  pgc_as_pg "$PGC_BIN/initdb" -D "$data" -U postgres --auth-local=trust --auth-host=trust \
    -E UTF8 --locale=C.UTF-8 >"$data.initdb.log" 2>&1 || { cat "$data.initdb.log" >&2; return 1; }
  if [ -n "$settings" ]; then
    pgc_as_pg sh -c "cat >> '$data/postgresql.conf'" <"$settings"
  fi
}

# pgc_start DATADIR PORT SOCKETDIR LOGFILE [ADDRESSES]: start listening on PORT of ADDRESSES
# (listen_addresses, 127.0.0.1 by default) and on the socket.
pgc_start() {
  pgc_as_pg "$PGC_BIN/pg_ctl" -D "$1" -l "$4" -w -t 60 \
    -o "-p $2 -k $3 -c listen_addresses=${5:-127.0.0.1}" start >/dev/null
}

# pgc_stop DATADIR [MODE]: stop if running (MODE fast by default).
pgc_stop() {
  pgc_as_pg "$PGC_BIN/pg_ctl" -D "$1" -m "${2:-fast}" -w stop >/dev/null 2>&1 || true
}

pgc_running() {
  pgc_as_pg "$PGC_BIN/pg_ctl" -D "$1" status >/dev/null 2>&1
}

# pgc_port_free PORT: nothing listens on 127.0.0.1:PORT.
pgc_port_free() {
  ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# pgc_make_dir DIR: create DIR so that the server's user can reach it; prints the directory
# to use, which is DIR itself or, when the server's user cannot traverse DIR's parents (a
# checkout under root's home), a directory under /var/lib/coregroup that DIR links to.
pgc_make_dir() {
  local dir=$1 real
  mkdir -p "$(dirname "$dir")"
  if [ -L "$dir" ]; then readlink -f "$dir"; return 0; fi
  mkdir -p "$dir"
  if [ "$(id -u)" = 0 ]; then
    chown postgres: "$dir"
    if ! runuser -u postgres -- test -w "$dir"; then
      rmdir "$dir"
      real=/var/lib/coregroup/$(echo "$dir" | md5sum | cut -c1-12)
      mkdir -p "$real"
      chown postgres: "$real"
      ln -s "$real" "$dir"
      echo "$real"
      return 0
    fi
  fi
  echo "$dir"
}

PGC_BIN=$(pgc_bindir) || return 1 2>/dev/null || exit 1

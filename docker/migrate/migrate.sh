#!/bin/sh
# migrate.sh — the compose file's one-shot `migrate` service: bring the repository schema up to
# date, then make sure the login role of the cores' group exists, is mapped to that group and
# has the cores' password.
#
# Runs as the database owner (a superuser here: the DBA's role). Every step is idempotent, so
# the service runs on every `docker compose up`: cg-migrate applies only pending migrations
# (concurrent runs wait on an advisory lock), `cg-migrate map-role` creates the role once (a
# member of coregroup_app, LOGIN, no password) and maps it to the group (row-level security
# then confines the role's sessions to that group), and core-role.sql (re)sets its password
# and attributes.
#
# Environment (set in compose.yaml):
#   PGHOST PGPORT PGDATABASE PGUSER PGPASSWORD   the DBA's connection, as for psql
#   CG_CORE_ROLE        the role the cores log in as (their [repository] dsn user=)
#   CG_CORE_GROUP       the cores' group ([core] group): the one group CG_CORE_ROLE may see
#   CG_CORE_PASSWORD    its password (the cores get the same one as PGPASSWORD)
#   CG_ROLE_SQL         the password script (default: core-role.sql beside this script)
set -eu
: "${CG_CORE_ROLE:?CG_CORE_ROLE must name the cores login role}"
: "${CG_CORE_GROUP:?CG_CORE_GROUP must name the cores group}"
: "${CG_CORE_PASSWORD:?CG_CORE_PASSWORD must be set}"
sql=${CG_ROLE_SQL:-$(dirname "$0")/core-role.sql}

echo "migrate: applying migrations to ${PGDATABASE:-?} on ${PGHOST:-?}"
cg-migrate up
echo "migrate: login role ${CG_CORE_ROLE} of group ${CG_CORE_GROUP}"
cg-migrate map-role "$CG_CORE_ROLE" "$CG_CORE_GROUP"
psql -X -q -v ON_ERROR_STOP=1 -v core_role="$CG_CORE_ROLE" \
  -v core_password="$CG_CORE_PASSWORD" -f "$sql"
echo "migrate: done"

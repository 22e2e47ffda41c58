#!/bin/sh
# migrate.sh — the compose file's one-shot `migrate` service: bring the repository schema up to
# date, then make sure the cores' login role exists and is a member of coregroup_app.
#
# Runs as the database owner (a superuser here: the DBA's role). Both steps are idempotent, so
# the service runs on every `docker compose up`: cg-migrate applies only pending migrations
# (concurrent runs wait on an advisory lock) and core-role.sql creates the role only once.
#
# Environment (set in compose.yaml):
#   PGHOST PGPORT PGDATABASE PGUSER PGPASSWORD   the DBA's connection, as for psql
#   CG_CORE_ROLE        the role the cores log in as (their [repository] dsn user=)
#   CG_CORE_PASSWORD    its password (the cores get the same one as PGPASSWORD)
#   CG_ROLE_SQL         the role script (default: core-role.sql beside this script)
set -eu
: "${CG_CORE_ROLE:?CG_CORE_ROLE must name the cores login role}"
: "${CG_CORE_PASSWORD:?CG_CORE_PASSWORD must be set}"
sql=${CG_ROLE_SQL:-$(dirname "$0")/core-role.sql}

echo "migrate: applying migrations to ${PGDATABASE:-?} on ${PGHOST:-?}"
cg-migrate up
echo "migrate: login role ${CG_CORE_ROLE} for the cores, member of coregroup_app"
psql -X -q -v ON_ERROR_STOP=1 -v core_role="$CG_CORE_ROLE" \
  -v core_password="$CG_CORE_PASSWORD" -f "$sql"
echo "migrate: done"

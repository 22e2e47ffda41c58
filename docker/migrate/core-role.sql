-- core-role.sql — the login role the cores use, run by migrate.sh after `cg-migrate up`:
--     psql -v core_role=cg_core -v core_password=... -f core-role.sql
--
-- Migration 0002 creates coregroup_app (NOLOGIN) and grants it the data privileges; the cores
-- log in as a member of it. The role is an ordinary one on purpose: superusers and roles with
-- BYPASSRLS skip row-level security, and row-level security is what keeps each core to its
-- group. Idempotent: the role is created once; its password and attributes are (re)set on
-- every run, so changing CG_CORE_PASSWORD and re-running `migrate` takes effect.

SET client_min_messages = warning; -- no notice when the role is already a member

SELECT format('CREATE ROLE %I LOGIN', :'core_role')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'core_role')
\gexec

SELECT format('ALTER ROLE %I LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE PASSWORD %L',
              :'core_role', :'core_password')
\gexec

SELECT format('GRANT coregroup_app TO %I', :'core_role')
\gexec

-- core-role.sql — the password and attributes of the cores' login role, run by migrate.sh
-- after `cg-migrate up` and `cg-migrate map-role ROLE GROUP`:
--     psql -v core_role=cg_payments -v core_password=... -f core-role.sql
--
-- `cg-migrate map-role` created the role (LOGIN, a member of coregroup_app, no password) and
-- mapped it to its group: row-level security shows its sessions that group's rows only. This
-- script gives it the cores' password and keeps it an ordinary role: superusers and roles
-- with BYPASSRLS skip row-level security. Idempotent: run on every `migrate`, so changing
-- CG_CORE_PASSWORD and re-running `migrate` takes effect.

SELECT format('ALTER ROLE %I LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE PASSWORD %L',
              :'core_role', :'core_password')
\gexec

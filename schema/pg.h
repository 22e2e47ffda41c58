/*
 * pg.h — small helpers shared by every user of libpq in the library (private).
 */
#ifndef CG_PG_H
#define CG_PG_H

#include <libpq-fe.h>

/*
 * Turn a failed result (or a failed connection when res is NULL) into a cg_error and return
 * its code: connection loss, class 08, 57P0x (57P01: the session was terminated), 40001,
 * 40P01, 55P03 (lock_timeout) and 25P03 (idle_in_transaction_session_timeout) are
 * CG_ERETRYABLE; 23505 is CG_EEXISTS; other integrity and data errors (classes 22, 23)
 * CG_EINVALID; the rest CG_ERROR. `what` says what was being done ("apply 0002_rls.up.sql:14"); the
 * message carries the server's primary message, detail and SQLSTATE on one line.
 */
int cg_pg_error(PGconn *conn, const PGresult *res, const char *what);

/* 1 when `sqlstate` (5 characters) matches an entry of `list` (classes of 2 or codes of 5). */
int cg_pg_sqlstate_in(const char *sqlstate, const char (*list)[6], size_t n);

/*
 * Open a connection from a conninfo string or URI (NULL or "" uses libpq's PG* environment).
 * Sets TCP keepalives, tcp_user_timeout (keepalive_idle_s seconds: unacknowledged data that
 * long means the peer is gone) and connect_timeout (10 s) when the string does not,
 * application_name when missing, and fails
 * with CG_ERETRYABLE (server unreachable) or CG_EINVALID (bad string, authentication) and
 * libpq's message on one line. The caller finishes the connection with PQfinish().
 */
int cg_pg_connect(PGconn **out, const char *dsn, const char *application_name,
                  int keepalive_idle_s);

/* Run a command that returns no rows; 0 or cg_pg_error(). */
int cg_pg_exec(PGconn *conn, const char *sql);

#endif

/*
 * testutil.h — what every Check suite shares: the harness's PostgreSQL, fresh databases,
 * running programs, reading and writing files. Failures inside these helpers fail the test.
 */
#ifndef CG_TESTUTIL_H
#define CG_TESTUTIL_H

#include <check.h>
#include <stdint.h>
#include <libpq-fe.h>

/* A value from the harness's state file (CG_TEST_DSN, CG_TEST_PGHOST, ...); fails if absent. */
const char *cgt_env(const char *key);

/* Create an empty (migrated = 0) or fully migrated (1) database with a fresh name; returns its
 * DSN in a new string the caller frees. */
char *cgt_createdb(const char *prefix, int migrated);

/* Connect or fail the test. */
PGconn *cgt_connect(const char *dsn);

/* Run a query that must succeed; returns the first value of the first row as a new string
 * ("" when there is no row), the caller frees it. */
char *cgt_query1(PGconn *conn, const char *sql);
/* The first column of the first row as an integer (0 when there is no row). */
int64_t cgt_query_i64(PGconn *conn, const char *sql);
/* Fails the test unless the query's first value is `want`. */
void cgt_expect_query(PGconn *conn, const char *sql, const char *want);

/* Run a shell command, capturing stdout and stderr together; *status gets the exit code.
 * Returns the output as a new string the caller frees. */
char *cgt_run(int *status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* A CURVE key pair in PREFIX.key and PREFIX.pub, written by `cg-busd --keygen`. */
void cgt_keygen(const char *prefix);

/* Write `text` to `path` (fails the test on error). */
void cgt_write_file(const char *path, const char *text);

/* A new empty temporary directory, removed when the process exits; the caller frees the
 * string. */
char *cgt_tmpdir(void);

/* Paths of the source and build trees (from the environment ctest sets). */
const char *cgt_source_dir(void);
const char *cgt_binary_dir(void);

/*
 * fork() copies only the calling thread: a lock some other thread held at that moment (the
 * sanitizer's allocator, libzmq, a core's own) stays locked for ever in the child. A test that
 * needs a child process running a core therefore forks it before opening any core itself, and
 * hands it what it needs later (a handle) down a pipe: cgt_send_i64 in the parent,
 * cgt_child_recv_i64 in the child, which closes its copy of the write end first and exits 3
 * when the parent is gone before sending.
 */
void cgt_send_i64(int chan[2], int64_t v);
int64_t cgt_child_recv_i64(int chan[2]);

/* Run a suite and return an exit status for main(). */
int cgt_run_suite(Suite *s);

#endif

#include "coregroup.h"

/* The n-th (1..9) login role of `group` on the database of `dsn` (a superuser DSN from
 * cgt_createdb): "cgt_GROUP" for n = 1, "cgtN_GROUP" otherwise (a hash for a group too long
 * for a role name); a member of coregroup_app, created in the cluster and mapped to `group`
 * in that database on first use, as `cg-migrate map-role` does. Row-level security confines
 * it to `group`. Returns one of four rotating per-thread buffers. */
const char *cgt_group_login(const char *dsn, const char *group, int n);

/* The DSN `dsn` logged in as the first login role of `group` (cgt_group_login(dsn, group,
 * 1)), subject to row-level security. The caller frees it. */
char *cgt_core_dsn(const char *dsn, const char *group);

/* Open a core of `group` (NULL: a private group, "private.<name>") named `name` on the
 * database of `dsn` (a superuser DSN from cgt_createdb; the core logs in as its group's
 * role, cgt_core_dsn). It has no bus and its poll backstop never fires, so a test decides
 * when it learns of other cores' changes. Fails the test on error. */
cg_core *cgt_core_open(const char *dsn, const char *name, const char *group);

/* As cgt_core_open with a prepared configuration to adjust: fill *cfg, change it, then call
 * cgt_core_open_cfg. */
cg_config *cgt_core_config(const char *dsn, const char *name, const char *group);
cg_core *cgt_core_open_cfg(cg_config *cfg);

/* Restart the shared test cluster in the background: stop it (mode "fast" or "immediate"),
 * keep it down pause_s seconds, start it. The restart runs in a session of its own, so it
 * finishes even if the test's process group is killed; cgt_restart_wait() waits (at most 60 s)
 * until it has, and a test that restarts must call it before it ends, so no later suite finds
 * the cluster down. */
void cgt_restart_async(const char *mode, double pause_s);
void cgt_restart_wait(void);

/* The path of a program built in this tree (cgctl, coregroupd, cg-busd, ...); one of four
 * rotating buffers, so up to four may be in use at once. */
const char *cgt_bin(const char *prog);

/* The first line of `out` that is a JSON object, parsed (the caller frees with cJSON_Delete);
 * fails the test if there is none or it does not parse. */
struct cJSON *cgt_json_line(const char *out);
/* The value at a dotted path ("a.b.0.c": array items by index); fails the test if absent. */
const struct cJSON *cgt_jget(const struct cJSON *o, const char *path);
/* A number (or a boolean, as 0 or 1) at a path; fails the test if it is neither. */
long long cgt_jint(const struct cJSON *o, const char *path);
/* A string at a path; fails the test if it is not one. */
const char *cgt_jstr(const struct cJSON *o, const char *path);

/* A new resource (empty parts) created by `core` in a call of its own; its handle. */
int64_t cgt_create(cg_core *core);
/* Move the state part of `h` one version on from `core`, reading it locked; the new version. */
int64_t cgt_bump(cg_core *core, int64_t h);
/* The state part's version as cg_part_read on `core` returns it, or the negative error code. */
int64_t cgt_read_version(cg_core *core, int64_t h);

/* Assert that `expr` returns `code`, printing cg_error_last() on mismatch. */
#define CGT_EXPECT(code, expr)                                                                     \
    do {                                                                                           \
        int got_ = (expr);                                                                         \
        ck_assert_msg(got_ == (code), "%s: expected %s, got %s (%s)", #expr, cg_error_name(code),  \
                      cg_error_name(got_), cg_error_last()->message);                              \
    } while (0)
#define CGT_OK(expr) CGT_EXPECT(0, expr)

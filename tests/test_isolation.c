/*
 * test_isolation.c — group isolation (I1): two groups on one repository, with colliding
 * handles (every root folder is handle 0, and the DBA plants the same handle in both), never
 * read or change each other's rows; and row-level security, the second fence, confines even a
 * statement that forgot its group filter.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

static char *dsn;
static PGconn *dba;

static void setup(void)
{
    dsn = cgt_createdb("iso", 1);
    dba = cgt_connect(dsn);
}

static void teardown(void)
{
    PQfinish(dba);
    free(dsn);
}

static void expect_query(const char *sql, const char *want)
{
    char *got = cgt_query1(dba, sql);
    ck_assert_msg(strcmp(got, want) == 0, "%s: got %s, want %s", sql, got, want);
    free(got);
}

static char *body_of(cg_core *core, int64_t h, int64_t *version)
{
    cg_call *call;
    cg_part *p;
    char *s;
    CGT_OK(cg_call_begin(&call, core));
    CGT_OK(cg_part_get(&p, call, h, CG_PART_STATE));
    CGT_OK(cg_call_commit(call));
    s = strdup(cg_part_body(p));
    *version = cg_part_version(p);
    cg_part_free(p);
    return s;
}

START_TEST(groups_do_not_see_each_other)
{
    cg_core *a = cgt_core_open(dsn, "iso-a", "grp-a"), *b = cgt_core_open(dsn, "iso-b", "grp-b");
    cg_resource_options o = CG_RESOURCE_OPTIONS_INIT;
    cg_name_list list;
    cg_call *call;
    char sql[512], *body;
    int64_t h, v, target;

    o.state = "{\"owner\":\"a\"}";
    o.service_id = "shared-service";
    CGT_OK(cg_call_begin(&call, a));
    CGT_OK(cg_resource_create(&h, call, &o));
    CGT_OK(cg_name_bind(call, CG_ROOT_FOLDER, "svc", h));
    CGT_OK(cg_call_commit(call));
    /* the DBA plants the same handle in group b */
    snprintf(sql, sizeof(sql),
             "INSERT INTO resources (group_id, handle, kind, service_id) VALUES ('grp-b', %" PRId64
             ", 'service', 'shared-service'); INSERT INTO resource_parts (group_id, handle, part, "
             "body) SELECT 'grp-b', %" PRId64 ", p, '{\"owner\":\"b\"}' FROM unnest(ARRAY["
             "'specification', 'description', 'state']) p",
             h, h);
    free(cgt_query1(dba, sql));

    body = body_of(a, h, &v);
    ck_assert_str_eq(body, "{\"owner\": \"a\"}");
    free(body);
    body = body_of(b, h, &v);
    ck_assert_str_eq(body, "{\"owner\": \"b\"}");
    free(body);

    /* names: each group has its own root folder 0 */
    CGT_OK(cg_call_begin(&call, b));
    CGT_OK(cg_name_list_get(&list, call, CG_ROOT_FOLDER));
    ck_assert_uint_eq(list.n, 0);
    CGT_EXPECT(CG_ENOTFOUND, cg_name_lookup(&target, call, CG_ROOT_FOLDER, "svc"));
    CGT_OK(cg_name_bind(call, CG_ROOT_FOLDER, "svc", h)); /* b's own handle h, its own name */
    /* writes: b updates its h; a's h is untouched */
    CGT_OK(cg_part_update(&v, call, h, CG_PART_STATE, 1, "{\"owner\":\"b2\"}"));
    CGT_OK(cg_call_commit(call));
    body = body_of(a, h, &v);
    ck_assert_str_eq(body, "{\"owner\": \"a\"}");
    ck_assert_int_eq(v, 1);
    free(body);

    /* locator: each group finds only its own replica */
    {
        cg_handle_list found;
        CGT_OK(cg_call_begin(&call, a));
        CGT_OK(cg_resource_find(&found, call, "shared-service"));
        ck_assert_uint_eq(found.n, 1);
        cg_handle_list_dispose(&found);
        /* deleting in a leaves b's resource and b's binding */
        CGT_OK(cg_resource_delete(call, h));
        CGT_OK(cg_call_commit(call));
    }
    expect_query("SELECT string_agg(group_id, ',' ORDER BY group_id) FROM resources WHERE "
                 "handle <> 0",
                 "grp-b");
    expect_query("SELECT string_agg(group_id || ':' || name, ',') FROM name_bindings", "grp-b:svc");
    /* the outbox rows are the writer's group's only */
    expect_query("SELECT string_agg(DISTINCT group_id || '/' || origin_core, ',') FROM "
                 "invalidations",
                 "grp-a/iso-a,grp-b/iso-b");
    cg_core_close(a);
    cg_core_close(b);
}
END_TEST

static PGresult *as_core(PGconn *c, const char *sql)
{
    return PQexec(c, sql);
}

START_TEST(row_level_security_is_the_second_fence)
{
    char *cdsn = cgt_core_dsn(dsn), *v;
    PGconn *c;
    PGresult *r;
    cg_core *a = cgt_core_open(dsn, "rls-a", "rls-a"), *b = cgt_core_open(dsn, "rls-b", "rls-b");
    cg_call *call;
    int64_t h;

    CGT_OK(cg_call_begin(&call, a));
    CGT_OK(cg_resource_create(&h, call, NULL));
    CGT_OK(cg_call_commit(call));
    CGT_OK(cg_call_begin(&call, b));
    CGT_OK(cg_resource_create(&h, call, NULL));
    CGT_OK(cg_call_commit(call));

    c = PQconnectdb(cdsn);
    ck_assert_int_eq(PQstatus(c), CONNECTION_OK);
    /* without a group the session fails closed */
    r = as_core(c, "SELECT count(*) FROM resources");
    ck_assert_int_eq(PQresultStatus(r), PGRES_FATAL_ERROR);
    PQclear(r);
    free(cgt_query1(c, "SELECT set_config('coregroup.group', 'rls-a', false)"));
    /* statements with no group filter at all still see and touch only rls-a */
    v = cgt_query1(c, "SELECT string_agg(DISTINCT group_id, ',') FROM resources");
    ck_assert_str_eq(v, "rls-a");
    free(v);
    free(cgt_query1(c, "UPDATE resource_parts SET body = '{\"hacked\":1}'"));
    v = cgt_query1(dba, "SELECT count(*) FROM resource_parts WHERE group_id = 'rls-b' AND body ? "
                        "'hacked'");
    ck_assert_str_eq(v, "0");
    free(v);
    r = as_core(c, "INSERT INTO resources (group_id, kind) VALUES ('rls-b', 'service')");
    ck_assert_int_eq(PQresultStatus(r), PGRES_FATAL_ERROR);
    ck_assert_str_eq(PQresultErrorField(r, PG_DIAG_SQLSTATE), "42501");
    PQclear(r);
    r = as_core(c, "UPDATE core_groups SET event_seq = 1000 WHERE group_id = 'rls-b'");
    ck_assert_int_eq(PQresultStatus(r), PGRES_COMMAND_OK);
    ck_assert_str_eq(PQcmdTuples(r), "0");
    PQclear(r);
    PQfinish(c);
    free(cdsn);
    cg_core_close(a);
    cg_core_close(b);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("isolation");
    TCase *tc = tcase_create("groups");
    tcase_add_unchecked_fixture(tc, setup, teardown);
    tcase_add_test(tc, groups_do_not_see_each_other);
    tcase_add_test(tc, row_level_security_is_the_second_fence);
    suite_add_tcase(s, tc);
    return cgt_run_suite(s);
}
